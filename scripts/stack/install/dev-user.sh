#!/usr/bin/env bash
# The unprivileged `dev` user: home /workspace/data/coding (on the volume), bash, group sudo;
# its password is locked here and set at boot by startup.sh (DEV_PASSWORD), never baked in.
# `CONCLAVE_SYSROOT=DIR` makes it in DIR/etc instead (test-security.sh checks the real step there).
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
root=(${CONCLAVE_SYSROOT:+--root "$CONCLAVE_SYSROOT"})
if ! grep -q '^dev:' "${CONCLAVE_SYSROOT:-}/etc/passwd"; then
  useradd "${root[@]}" --no-create-home --home-dir /workspace/data/coding --shell /bin/bash --groups sudo --user-group dev
  log "dev user made (home /workspace/data/coding, group sudo)"
fi
usermod "${root[@]}" --lock dev
