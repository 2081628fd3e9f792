#!/usr/bin/env bash
# Synapse in its own venv, with psycopg2 for PostgreSQL (the binary wheel: no compiler or libpq
# headers needed in the image).
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
venv_install "$CONCLAVE_PREFIX/synapse-venv" synapse \
  "matrix-synapse==$SYNAPSE_VERSION" "psycopg2-binary==$PSYCOPG2_VERSION"
