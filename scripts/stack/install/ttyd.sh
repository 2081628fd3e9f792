#!/usr/bin/env bash
# ttyd's static release binary. Image only.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
if [ -x /usr/local/bin/ttyd ] && /usr/local/bin/ttyd --version 2>&1 | grep -q "$TTYD_VERSION"; then
  log "ttyd $TTYD_VERSION already installed"
  exit 0
fi
curl -fsSL "https://github.com/tsl0922/ttyd/releases/download/$TTYD_VERSION/ttyd.x86_64" -o /usr/local/bin/ttyd
chmod 755 /usr/local/bin/ttyd
log "ttyd: $(/usr/local/bin/ttyd --version 2>&1)"
