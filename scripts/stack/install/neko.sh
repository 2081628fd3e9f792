#!/usr/bin/env bash
# N.eko built from source at $NEKO_VERSION (the seed's plan; no distribution package): the Go
# server and the Vue client, installed as /usr/local/bin/neko and /var/www/neko. It streams the
# Chromium of the BROWSER toggle (display :99). Image only; needs Go and Node at build time.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
[ -x /usr/local/bin/neko ] && [ "$(cat /usr/local/share/neko-version 2>/dev/null)" = "$NEKO_VERSION" ] &&
  { log "neko $NEKO_VERSION already installed"; exit 0; }
bash "$(dirname "$0")/node.sh"
apt_install golang-go git build-essential pkg-config libx11-dev libxrandr-dev libxtst-dev libgtk-3-dev \
  libxcvt-dev libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-plugins-base \
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-pulseaudio
tmp=$(mktemp -d)
git clone --depth 1 --branch "$NEKO_VERSION" https://github.com/m1k1o/neko.git "$tmp/neko"
(cd "$tmp/neko/server" && ./build && install -m 0755 bin/neko /usr/local/bin/neko)
(cd "$tmp/neko/client" && npm ci --no-audit --no-fund && npm run build && rm -rf /var/www/neko && mkdir -p /var/www && cp -r dist /var/www/neko)
echo "$NEKO_VERSION" >/usr/local/share/neko-version
rm -rf "$tmp"
log "neko $NEKO_VERSION in /usr/local/bin/neko"
