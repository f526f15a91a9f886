#!/usr/bin/env bash
# Debian packages the local stack and the tests use. Idempotent; run as root (CI does).
set -euo pipefail
# curl, jq: the spec examples the tests run; tmux: drives `tether shell` in a test.
# xvfb, x11vnc, x11-xserver-utils (xsetroot), firefox-esr, x11-utils (xdpyinfo), xdotool: desktop
# workspaces (the firefox-browser template). chromium: the viewer test opens noVNC in it.
PACKAGES=(bubblewrap curl jq tmux xvfb x11vnc x11-xserver-utils firefox-esr x11-utils xdotool chromium)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
