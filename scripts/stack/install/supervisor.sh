#!/usr/bin/env bash
# supervisord from PyPI (the distribution's is older), in its own venv.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
venv_install "$CONCLAVE_PREFIX/supervisor-venv" supervisor "supervisor==$SUPERVISOR_VERSION"
