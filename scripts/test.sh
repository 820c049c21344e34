#!/usr/bin/env bash
# Set-up command 2: installs what the tests need (a software renderer for the UI tests) and runs every test.
# All tests run in the release profile: the training tests need optimised code, and one profile builds once.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh --test --build
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --release "$@"
