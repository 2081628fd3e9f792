#!/usr/bin/env bash
# supervisord's conclave-agent program: waits (bounded, logged) until PostgreSQL and Synapse
# answer, then becomes `conclave-agent serve`. A failed wait exits 1, and supervisord retries.
set -euo pipefail
LOG_TAG=conclave-agent
. "$(dirname "$0")/lib.sh"
pg_ready() { "$PG_BINDIR/pg_isready" -q -h "$CONCLAVE_RUN/postgresql" -p "$POSTGRES_PORT"; }
wait_until "postgres (pg_isready)" 60 pg_ready || exit 1
wait_until "synapse (/_matrix/client/versions)" 120 http_ok "http://127.0.0.1:$SYNAPSE_PORT/_matrix/client/versions" || exit 1
export RUST_LOG="${RUST_LOG:-info,sqlx=warn}"
exec "$CONCLAVE_AGENT_BIN" --config "$CONCLAVE_ROOT/config/conclave-agent/conclave.toml" serve
