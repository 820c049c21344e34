#!/usr/bin/env bash
# Installs what Tessera needs on Debian/Ubuntu (each part skipped when already present).
#   scripts/system-deps.sh          runtime: window (X11/Wayland keyboard), Vulkan/GL drivers incl. a software renderer
#   scripts/system-deps.sh --test   also a virtual display (Xvfb) and tools for UI tests and screenshots
#   scripts/system-deps.sh --build  (with either) also a C compiler and, when `cargo` is missing, Rust via rustup
# Sourcing is not needed: when rustup is installed here, run-demo.sh and test.sh add ~/.cargo/bin to PATH themselves.
set -euo pipefail
pkgs=(libxkbcommon-x11-0 libvulkan1 mesa-vulkan-drivers libgl1 libegl1 pkg-config)
build=false
for arg in "$@"; do
  case "$arg" in
    --test) pkgs+=(xvfb xdotool x11-utils imagemagick) ;;
    --build) build=true ;;
    *) echo "unknown option $arg (expected --test, --build)" >&2; exit 2 ;;
  esac
done
# Building needs a C compiler (mimalloc and gemm's build scripts) and, for rustup, curl.
if $build; then pkgs+=(build-essential ca-certificates curl); fi
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "Please install these packages with your package manager: ${missing[*]}" >&2; exit 1
  fi
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "Installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if $build; then
  export PATH="$HOME/.cargo/bin:$PATH"
  if ! command -v cargo >/dev/null; then
    # Debian's and Ubuntu's own rustc packages are older than the dependencies need; rustup gives the current stable.
    echo "Installing Rust (stable) with rustup into ~/.cargo ..."
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  fi
  # The dependencies (egui 0.37, candle 0.11) need a recent compiler.
  need=1.85
  have=$(rustc --version | awk '{print $2}')
  if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
    echo "rustc $have is older than $need: run 'rustup update stable' (or install Rust from rustup.rs)" >&2; exit 1
  fi
fi
