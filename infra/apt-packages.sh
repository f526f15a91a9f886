#!/usr/bin/env bash
# Debian packages the local stack and the tests use. Idempotent; run as root (CI does).
set -euo pipefail
PACKAGES=(bubblewrap curl)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
