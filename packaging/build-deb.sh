#!/usr/bin/env bash
# Builds the Linux .deb with cargo-deb.
#   packaging/build-deb.sh                    distribution build: profile `dist` (thin LTO, stripped)
#   packaging/build-deb.sh --install-and-smoke  CI: package the existing release build, install it, start it headless
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
mkdir -p packaging/completions
if [ "${1:-}" = "--install-and-smoke" ]; then
  cargo build --release --quiet
  target/release/tessera completions bash > packaging/completions/tessera.bash
  deb=$(cargo deb --no-build --profile release --quiet --output target/debian/ 2>&1 | tail -1)
  [ -f "$deb" ] || deb=$(ls -t target/debian/*.deb | head -1)
  echo "built $deb ($(du -h "$deb" | cut -f1))"
  dpkg -i "$deb" >/dev/null
  /usr/bin/tessera --version
  test -f /usr/share/applications/tessera.desktop
  test -f /usr/share/icons/hicolor/256x256/apps/tessera.png
  test -f /usr/share/tessera/assets/demo-detect/checkpoint.json
  test -f /usr/share/tessera/assets/demo-detect/weights.safetensors
  command -v desktop-file-validate >/dev/null && desktop-file-validate /usr/share/applications/tessera.desktop || true
  # Start the installed app once under a virtual display and check it stays up (no crash on start).
  export HOME=$(mktemp -d)
  xvfb-run -a -s "-screen 0 1280x800x24" timeout 20 /usr/bin/tessera > /tmp/tessera-deb-smoke.log 2>&1 && rc=0 || rc=$?
  if [ "$rc" != 124 ]; then echo "installed app exited early (rc=$rc):"; tail -20 /tmp/tessera-deb-smoke.log; exit 1; fi
  echo "installed app ran 20 s under Xvfb without crashing"
else
  cargo build --profile dist
  target/dist/tessera completions bash > packaging/completions/tessera.bash
  cargo deb --no-build --profile dist --output target/debian/
  ls -l target/dist/tessera target/debian/*.deb
fi
