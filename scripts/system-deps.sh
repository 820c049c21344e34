#!/usr/bin/env bash
# Installs the system packages Tessera needs on Debian/Ubuntu (skipped when already present).
#   scripts/system-deps.sh          runtime: window (X11/Wayland keyboard), Vulkan/GL drivers incl. a software renderer
#   scripts/system-deps.sh --test   also a virtual display (Xvfb) and tools for UI tests and screenshots
set -euo pipefail
pkgs=(libxkbcommon-x11-0 libvulkan1 mesa-vulkan-drivers libgl1 libegl1 pkg-config)
if [ "${1:-}" = "--test" ]; then pkgs+=(xvfb xdotool x11-utils imagemagick); fi
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
