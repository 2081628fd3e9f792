#!/usr/bin/env bash
# Oneshot after boot: the chat model and the embedding model in Ollama, pulled once and kept on
# the volume. Waits (bounded) for Ollama's /api/tags first.
set -euo pipefail
LOG_TAG=ollama-pull
. "$(dirname "$0")/lib.sh"
export OLLAMA_HOST="127.0.0.1:$OLLAMA_PORT"
wait_until "ollama (/api/tags)" 120 http_ok "http://$OLLAMA_HOST/api/tags" || exit 1
for model in "${DEFAULT_OLLAMA_MODEL:-llama3.1:8b}" "${EMBEDDING_MODEL:-nomic-embed-text}"; do
  if ollama list | awk 'NR > 1 {print $1}' | grep -qx -e "$model" -e "$model:latest"; then
    log "$model already cached"
  else
    log "pulling $model"
    ollama pull "$model"
  fi
done
