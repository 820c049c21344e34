#!/usr/bin/env bash
# One-command set-up of the PyTorch reference on Debian 12 / Ubuntu: PyTorch 1.13 (CPU), NumPy, OpenBLAS from the
# distribution (no pip, no network beyond apt). Then: python3 benches/reference/bench.py --help
set -euo pipefail
if /usr/bin/python3 -c "import torch, numpy" 2>/dev/null; then
    echo "already installed: $(/usr/bin/python3 -c 'import torch; print("torch", torch.__version__)')"
    exit 0
fi
SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends python3 python3-numpy python3-torch libopenblas0-pthread util-linux
/usr/bin/python3 -c "import torch; print('torch', torch.__version__, 'threads', torch.get_num_threads())"
