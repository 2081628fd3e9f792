#!/usr/bin/env bash
# Ollama's Linux release (binary and its GPU libraries under /usr). Models are pulled at boot
# into the volume by ollama-pull.sh, never into the image. Image only.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
if command -v ollama >/dev/null && ollama --version 2>/dev/null | grep -q "$OLLAMA_VERSION"; then
  log "ollama $OLLAMA_VERSION already installed"
  exit 0
fi
apt_install ca-certificates curl zstd
curl -fsSL "https://github.com/ollama/ollama/releases/download/v$OLLAMA_VERSION/ollama-linux-amd64.tgz" | tar -xz -C /usr
log "ollama: $(/usr/bin/ollama --version 2>&1 | tail -n 1)"
