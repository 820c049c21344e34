#!/usr/bin/env bash
# Set-up command 1: installs what the window needs, builds Tessera, and opens it on its embedded demo project.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh
cargo build --release
exec target/release/tessera "$@"
