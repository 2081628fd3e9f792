#!/usr/bin/env bash
# The container's HEALTHCHECK: 0 when every service that is on answers its real readiness query,
# else 1 with the first that does not. Reads the ports startup.sh wrote to $CONCLAVE_RUN/stack.env.
set -uo pipefail
LOG_TAG=healthcheck
CONCLAVE_RUN="${CONCLAVE_RUN:-/var/run/conclave}"
# shellcheck disable=SC1091
[ -f "$CONCLAVE_RUN/stack.env" ] && set -a && . "$CONCLAVE_RUN/stack.env" && set +a
. "$(dirname "$0")/lib.sh"
check() { # NAME CMD...
  local name=$1 out
  shift
  if ! out=$("$@" 2>&1); then
    echo "unhealthy: $name ${out:0:200}" >&2
    exit 1
  fi
}
on() { enabled "$1"; }
if on POSTGRES; then check postgres "$PG_BINDIR/pg_isready" -h "$CONCLAVE_RUN/postgresql" -p "$POSTGRES_PORT"; fi
if on NGINX; then check nginx http_ok "http://127.0.0.1:$NGINX_PORT/.well-known/matrix/client"; fi
if on SYNAPSE; then check synapse http_ok "http://127.0.0.1:$SYNAPSE_PORT/_matrix/client/versions"; fi
if on CHROMADB; then check chromadb http_ok "http://127.0.0.1:$CHROMA_PORT/api/v2/heartbeat"; fi
if on OLLAMA; then check ollama http_ok "http://127.0.0.1:$OLLAMA_PORT/api/tags"; fi
if on EMBEDDER; then check embedder http_ok "http://127.0.0.1:$EMBEDDER_PORT/health"; fi
if on PLANKA; then check planka http_ok "http://127.0.0.1:$PLANKA_PORT/api/config"; fi
if on AGENT; then check conclave-agent http_ok "http://127.0.0.1:$AGENT_PORT/ready"; fi
echo healthy
