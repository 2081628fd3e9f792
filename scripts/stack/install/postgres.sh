#!/usr/bin/env bash
# PostgreSQL server from the distribution (Debian 12: 15; Ubuntu 22.04: 14). Nothing is started:
# startup.sh makes the cluster under $CONCLAVE_ROOT/data/postgres.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
pg_bindir >/dev/null 2>&1 || apt_install postgresql
dir=$(pg_bindir) || die "no PostgreSQL server binaries after installing postgresql"
log "postgresql: $dir"
