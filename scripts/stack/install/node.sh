#!/usr/bin/env bash
# Node.js $NODE_MAJOR from NodeSource's apt repository (Planka and the coding agents need a newer
# one than Ubuntu 22.04 has). Sourced by planka.sh and coding-agents.sh.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
if command -v node >/dev/null && [ "$(node -p 'process.versions.node.split(".")[0]')" = "$NODE_MAJOR" ]; then
  log "node $(node --version) already installed"
  exit 0
fi
apt_install ca-certificates curl gnupg
install -d -m 0755 /etc/apt/keyrings
curl -fsSL https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key | gpg --dearmor --yes -o /etc/apt/keyrings/nodesource.gpg
echo "deb [signed-by=/etc/apt/keyrings/nodesource.gpg] https://deb.nodesource.com/node_$NODE_MAJOR.x nodistro main" \
  >/etc/apt/sources.list.d/nodesource.list
_APT_UPDATED=""
apt_install nodejs
log "node $(node --version)"
