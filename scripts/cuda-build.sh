#!/usr/bin/env bash
# Builds or checks Tessera with `--features cuda` on a machine that has no CUDA toolkit and no GPU (CI, a laptop):
# the CUDA 13.0 toolkit (nvcc, headers, cuBLAS, cuRAND) comes from NVIDIA's wheels on PyPI, unpacked into a folder.
#
#   scripts/cuda-build.sh check   cargo check --features cuda: compiles candle's CUDA kernels with nvcc and
#                                 type-checks every Rust line of the CUDA path (what CI runs; ~8 min on 2 cores)
#   scripts/cuda-build.sh build   cargo build --profile dist --features cuda → $CARGO_TARGET_DIR/dist/tessera
#                                 (~13 min on 2 cores, 41 MB; thin LTO drops candle's unused quantized kernels)
#
# The binary needs libcuda.so.1 (the NVIDIA driver) and libcublas.so.13 / libcurand.so.10 (CUDA 13.x: the toolkit,
# or the nvidia-cublas / nvidia-curand wheels PyTorch installs) at run time; benchmarks/gpu.sh finds them.
# A machine with CUDA 13 installed does not need this script: `cargo build --release --features cuda`.
#
# Environment: CUDA_COMPUTE_CAP (default 90 = H100/H200; e.g. 80 for A100, 89 for RTX 40xx), TOOLKIT_DIR (default
# target/cuda13-toolkit), CARGO_TARGET_DIR (default target/cuda, apart from the CPU build's).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-check}
TOOLKIT_DIR=$(realpath -m "${TOOLKIT_DIR:-target/cuda13-toolkit}")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
WHEELS="nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-runtime==13.0.96
        nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35"

HOME_DIR=$TOOLKIT_DIR/home
if [ ! -x "$HOME_DIR/bin/nvcc" ]; then
    echo "cuda-build: fetching the CUDA 13.0 toolkit wheels into $TOOLKIT_DIR"
    mkdir -p "$TOOLKIT_DIR/whl" "$TOOLKIT_DIR/site"
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 -d "$TOOLKIT_DIR/whl" $WHEELS
    python3 - "$TOOLKIT_DIR/whl" "$TOOLKIT_DIR/site" <<'PY'
import pathlib, sys, zipfile
src, dst = map(pathlib.Path, sys.argv[1:])
for whl in sorted(src.glob("*.whl")):
    with zipfile.ZipFile(whl) as z:
        z.extractall(dst)
PY
    CU=$TOOLKIT_DIR/site/nvidia/cu13
    # Wheels do not keep the execute bit.
    chmod +x "$CU"/bin/* "$CU"/nvvm/bin/* 2>/dev/null || true
    mkdir -p "$HOME_DIR/lib64/stubs"
    ln -sfn "$CU/bin" "$HOME_DIR/bin"
    ln -sfn "$CU/include" "$HOME_DIR/include"
    ln -sfn "$CU/nvvm" "$HOME_DIR/nvvm"
    ln -sfn lib64 "$HOME_DIR/lib"
    for f in "$CU"/lib/*.so* "$CU"/lib/*.a; do
        [ -e "$f" ] || continue
        ln -sfn "$f" "$HOME_DIR/lib64/$(basename "$f")"
        # Unversioned names for the linker (libcublas.so -> libcublas.so.13).
        base=$(basename "$f"); case $base in *.so.*) ln -sfn "$base" "$HOME_DIR/lib64/${base%%.so.*}.so" ;; esac
    done
fi

if [ "$MODE" = build ] && [ ! -e "$HOME_DIR/lib64/stubs/libcuda.so" ]; then
    # libcuda.so.1 belongs to the driver and has no wheel. Linking needs its symbols only: a stub with every driver
    # function cudarc declares (run time uses the real one; never put the stub on LD_LIBRARY_PATH).
    cargo fetch -q
    SYS=$(find "${CARGO_HOME:-$HOME/.cargo}"/registry/src -path '*/cudarc-0.19.*/src/driver/sys/mod.rs' | head -1)
    [ -n "$SYS" ] || { echo "cuda-build: cudarc's driver bindings not found" >&2; exit 1; }
    grep -oE '^\s+fn cu[A-Za-z0-9_]+\(' "$SYS" | sed -E 's/^\s+fn //; s/\($//' | sort -u |
        sed 's/.*/int &(void) { return 999; }/' > "$TOOLKIT_DIR/libcuda_stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$HOME_DIR/lib64/stubs/libcuda.so" "$TOOLKIT_DIR/libcuda_stub.c"
fi

export CUDA_HOME=$HOME_DIR
export PATH=$CUDA_HOME/bin:$PATH
export CUDARC_CUDA_VERSION=13000
# CUDA 13.0 supports gcc up to 14; pick the default one unless told otherwise.
export NVCC_CCBIN=${NVCC_CCBIN:-$(command -v g++)}
# Compressed fatbins: about 4× smaller kernels in the binary.
export NVCC_APPEND_FLAGS=${NVCC_APPEND_FLAGS:---compress-mode=size}
nvcc --version | tail -2

case $MODE in
    check) time cargo check --release --features cuda --bin tessera ;;
    build)
        # cudarc's build script adds $CUDA_HOME/lib64 and lib64/stubs to the link search path.
        time cargo build --profile dist --features cuda --bin tessera
        ls -la "$CARGO_TARGET_DIR/dist/tessera"
        ;;
    *) echo "usage: scripts/cuda-build.sh check|build" >&2; exit 2 ;;
esac
