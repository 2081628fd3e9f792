#!/usr/bin/env bash
# Planka's prebuilt release in /opt/planka, its dependencies from npm. Its data lives on the
# volume (startup.sh links /opt/planka/.env and the data directories). Image only.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
bash "$(dirname "$0")/node.sh"
apt_install unzip build-essential
if [ -f /opt/planka/.conclave-version ] && [ "$(cat /opt/planka/.conclave-version)" = "$PLANKA_VERSION" ]; then
  log "planka $PLANKA_VERSION already in /opt/planka"
  exit 0
fi
tmp=$(mktemp -d)
curl -fsSL "https://github.com/plankanban/planka/releases/download/v$PLANKA_VERSION/planka-prebuild.zip" -o "$tmp/planka.zip"
rm -rf /opt/planka && unzip -q "$tmp/planka.zip" -d /opt
(cd /opt/planka && npm install --omit=dev --no-audit --no-fund)
echo "$PLANKA_VERSION" >/opt/planka/.conclave-version
rm -rf "$tmp"
log "planka $PLANKA_VERSION in /opt/planka"
