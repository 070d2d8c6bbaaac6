#!/usr/bin/env bash
# Installs the Debian packages swift-tarflow needs (skips what is already there).
set -euo pipefail
packages=(libopenblas-dev libpng-dev libjpeg-dev zlib1g-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler pkg-config make gcc time)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
