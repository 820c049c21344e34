#!/usr/bin/env bash
# Set-up command 1: installs what the window needs (and Rust, if missing), builds Tessera, and opens it on its
# embedded demo project. The binary is target/release/tessera; `cargo install --path .` puts `tessera` on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh --build
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release
echo "Built target/release/tessera (for the command line: cargo install --locked --path . , or add target/release to PATH)"
exec target/release/tessera "$@"
