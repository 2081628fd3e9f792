#!/usr/bin/env bash
# Oneshot after supervisord started everything (every boot; each step is idempotent):
#   1. waits, bounded and logged, for every service that is on to answer its real readiness query
#   2. the admin user in Matrix (Synapse's shared-secret registration; an existing one is kept)
#   3. Planka: the agent's user and API key, into the agent's config (then the agent restarts)
#   4. the agent's /ready, then the rooms (`conclave-agent bootstrap`)
#   5. the coding agents' tokens (`conclave-agent token`) into config/agent-env.sh (0600, dev's)
# Ends with "create-users: done" and the boot's duration. A failure exits non-zero with the reason.
set -euo pipefail
LOG_TAG=create-users
. "$(dirname "$0")/lib.sh"
C=$CONCLAVE_ROOT/config
AGENT=("$CONCLAVE_AGENT_BIN" --config "$C/conclave-agent/conclave.toml")
SUPERVISORCTL=("$CONCLAVE_PREFIX/supervisor-venv/bin/supervisorctl" -c "$CONCLAVE_HOME/configs/supervisord.conf")
HS=http://127.0.0.1:$SYNAPSE_PORT

# ---- 1. Readiness ----
pg_ready() { "$PG_BINDIR/pg_isready" -q -h "$CONCLAVE_RUN/postgresql" -p "$POSTGRES_PORT"; }
enabled POSTGRES && { wait_until "postgres (pg_isready)" 60 pg_ready || exit 1; }
enabled SYNAPSE && { wait_until "synapse (/_matrix/client/versions)" 180 http_ok "$HS/_matrix/client/versions" || exit 1; }
enabled CHROMADB && { wait_until "chromadb (/api/v2/heartbeat)" 120 http_ok "http://127.0.0.1:$CHROMA_PORT/api/v2/heartbeat" || exit 1; }
enabled EMBEDDER && { wait_until "embedder (/health)" 120 http_ok "http://127.0.0.1:$EMBEDDER_PORT/health" || exit 1; }
enabled OLLAMA && { wait_until "ollama (/api/tags)" 120 http_ok "http://127.0.0.1:$OLLAMA_PORT/api/tags" || exit 1; }
enabled PLANKA && { wait_until "planka (/api/config)" 180 http_ok "http://127.0.0.1:$PLANKA_PORT/api/config" || exit 1; }

# ---- 2. Matrix admin ----
ADMIN_MATRIX_PASSWORD=$(sed -n 's/^ADMIN_MATRIX_PASSWORD=//p' "$C/generated-secrets.env")
[ -n "$ADMIN_MATRIX_PASSWORD" ] || die "no ADMIN_MATRIX_PASSWORD in $C/generated-secrets.env"
# The password goes through a file descriptor, never a command line.
out=$("$CONCLAVE_PREFIX/synapse-venv/bin/register_new_matrix_user" -c "$C/synapse/homeserver.yaml" \
  --user admin --password-file <(printf '%s' "$ADMIN_MATRIX_PASSWORD") --admin --exists-ok "$HS" 2>&1) ||
  die "registering @admin:$MATRIX_SERVER_NAME: $out"
log "matrix: @admin:$MATRIX_SERVER_NAME ($(grep -qi exists <<<"$out" && echo kept || echo created)); @$CONCLAVE_AGENT_USER is the appservice's own user"

# ---- 3. Planka: the agent's user and API key ----
if enabled PLANKA; then
  key=$(sed -n 's/^AGENT_PLANKA_API_KEY=//p' "$C/generated-secrets.env")
  if [ -n "$key" ]; then
    log "planka: the agent's API key is kept"
  else
    key=$(PLANKA_URL="http://127.0.0.1:$PLANKA_PORT" SECRETS="$C/generated-secrets.env" AGENT_USER="$CONCLAVE_AGENT_USER" \
      python3 "$CONCLAVE_HOME/scripts/stack/planka-agent.py") || die "planka: could not make the agent's user and API key"
    # Into the secrets (the next render puts it into the agent's config), then the config now.
    tmp=$(mktemp "$C/.secrets.XXXXXX")
    grep -v '^AGENT_PLANKA_API_KEY=' "$C/generated-secrets.env" >"$tmp"
    printf 'AGENT_PLANKA_API_KEY=%s\n' "$key" >>"$tmp"
    chmod 600 "$tmp" && mv -f "$tmp" "$C/generated-secrets.env"
    sed -i "s|^api_key = \"\"$|api_key = \"$key\"|" "$C/conclave-agent/conclave.toml"
    "${SUPERVISORCTL[@]}" restart conclave-agent >/dev/null
    log "planka: the agent's user and API key made; the agent restarted to use it"
  fi
else
  log "planka: off (CONCLAVE_ENABLE_PLANKA=0); no Planka users"
fi

if ! enabled AGENT; then
  log "conclave-agent: off (CONCLAVE_ENABLE_AGENT=0); no rooms, no coding-agent tokens"
  log "create-users: done"
  exit 0
fi

# ---- 4. The agent, then the rooms ----
wait_until "conclave-agent (/ready)" 120 http_ok "http://127.0.0.1:$AGENT_PORT/ready" || exit 1
ROOMS="${CONCLAVE_ROOMS_FILE:-$C/rooms.toml}"
"${AGENT[@]}" bootstrap --rooms "$ROOMS" | while IFS= read -r line; do log "rooms: $line"; done
[ "${PIPESTATUS[0]}" = 0 ] || die "conclave-agent bootstrap failed (the lines above say which room)"

started=$(cat "$CONCLAVE_RUN/boot-started" 2>/dev/null || date +%s)
log "workspace ready $(($(date +%s) - started))s after startup.sh began"

# ---- 5. Coding-agent tokens ----
ENV_FILE=$C/agent-env.sh
if ! "${AGENT[@]}" token --help >/dev/null 2>&1; then
  log "coding agents: this conclave-agent has no \`token\` command (it comes with the coding-agents issue); $ENV_FILE not written"
  log "create-users: done, without coding-agent tokens"
  exit 3
fi
[ -f "$ENV_FILE" ] || {
  printf '# Coding agents: the agent API and each agent'"'"'s token (tmux-workspace.sh gives each window its own).\n'
  printf 'export CONCLAVE_AGENT_URL=http://127.0.0.1:%s\n' "$AGENT_PORT"
} | write_private "$ENV_FILE"
for name in ${CODING_AGENT_NAMES:-pi claude}; do
  var="CONCLAVE_AGENT_TOKEN_$(tr '[:lower:]-' '[:upper:]_' <<<"$name")"
  if grep -q "^export $var=" "$ENV_FILE"; then
    log "coding agents: $name's token kept"
    continue
  fi
  # Refused (exit 1) when the agent already has one, whose value only this file held: rotate it.
  token=$("${AGENT[@]}" token --agent "$name" 2>/dev/null) || token=$("${AGENT[@]}" token --agent "$name" --rotate) ||
    die "conclave-agent token --agent $name failed"
  printf 'export %s=%s\n' "$var" "$token" >>"$ENV_FILE"
  log "coding agents: $name's token written"
done
chmod 600 "$ENV_FILE"
if id dev >/dev/null 2>&1; then chown dev:dev "$ENV_FILE"; fi

log "create-users: done"
