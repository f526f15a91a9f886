#!/usr/bin/env bash
# Debian packages the local stack and the tests use. Idempotent; run as root (CI does).
set -euo pipefail
# Local workspaces: bubblewrap (the sandbox), util-linux (setpriv, mount), libseccomp2 (the
# filter, through pyseccomp), slirp4netns and iproute2 (egress and its fences), e2fsprogs (each
# workspace's own filesystem), runsc (TETHER_SANDBOX=gvisor), python3 and python-is-python3
# (`python` in the python template; the attack suite's probes and test host), gcc (its LD_PRELOAD probe).
# curl, jq: the spec examples the tests run; tmux: drives `tether shell` in a test.
# xvfb, x11vnc, openbox (the desktops' window manager), x11-xserver-utils (xsetroot), firefox-esr,
# x11-utils (xdpyinfo, xprop), xdotool: desktop workspaces (the firefox-browser template). chromium: the viewer test opens noVNC in it.
# pulseaudio, pulseaudio-utils: the desktop agent's audio (tests run a real server with null sinks).
PACKAGES=(bubblewrap util-linux libseccomp2 slirp4netns iproute2 e2fsprogs runsc python3 python-is-python3 procps gcc curl jq tmux xvfb x11vnc openbox x11-xserver-utils firefox-esr x11-utils xdotool chromium openssl pulseaudio pulseaudio-utils)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
