#!/usr/bin/env bash
# Local run: a real Synapse and the agent (SQLite store), a human user, and a room that already
# holds the agent. State lives in .local/ (delete it to start over). Ctrl-C stops both.
#   SYNAPSE_PORT (8008)  AGENT_PORT (9009)  SERVER_NAME (conclave.local)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=$ROOT/.local
SYNAPSE_PORT=${SYNAPSE_PORT:-8008}
AGENT_PORT=${AGENT_PORT:-9009}
SERVER_NAME=${SERVER_NAME:-conclave.local}
HS=http://127.0.0.1:$SYNAPSE_PORT
TOOLS="${CONCLAVE_TOOLS:-$HOME/.cache/conclave}"
PY=$TOOLS/synapse-venv/bin/python
mkdir -p "$STATE/synapse"

bash scripts/setup.sh --synapse-only
cargo build --quiet
AGENT=$ROOT/target/debug/conclave-agent
export CONCLAVE_CONFIG=$STATE/conclave.toml
export CONCLAVE_APPSERVICE__LISTEN=127.0.0.1:$AGENT_PORT
export CONCLAVE_APPSERVICE__URL=http://127.0.0.1:$AGENT_PORT
export CONCLAVE_DATABASE__URL=sqlite://$STATE/agent.db

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
wait_http() { # url what
  for _ in $(seq 1 150); do curl -sf -o /dev/null "$1" && return 0; sleep 0.2; done
  echo "$2 did not come up; see its log in $STATE" >&2; exit 1
}

[ -f "$CONCLAVE_CONFIG" ] || "$AGENT" init --server-name "$SERVER_NAME" --homeserver-url "$HS" --out "$CONCLAVE_CONFIG"
"$AGENT" registration --out "$STATE/registration.yaml" >/dev/null

if [ ! -f "$STATE/synapse/homeserver.yaml" ]; then
  # From inside the data dir: the generated log config puts `homeserver.log` in the cwd.
  (cd "$STATE/synapse" && "$PY" -m synapse.app.homeserver --server-name "$SERVER_NAME" \
    --config-path "$STATE/synapse/homeserver.yaml" --data-directory "$STATE/synapse" \
    --generate-config --report-stats=no >/dev/null)
fi
cat > "$STATE/synapse/overrides.yaml" <<YAML
listeners:
  - port: $SYNAPSE_PORT
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
app_service_config_files: ["$STATE/registration.yaml"]
trusted_key_servers: []
suppress_key_server_warning: true
YAML

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
"$PY" -m synapse.app.homeserver -c "$STATE/synapse/homeserver.yaml" -c "$STATE/synapse/overrides.yaml" \
  >"$STATE/synapse/synapse.out" 2>&1 &
pids+=($!)
wait_http "$HS/_matrix/client/versions" "Synapse"
"$AGENT" serve 2> >(tee -a "$STATE/agent.log" >&2) &
pids+=($!)
wait_http "http://127.0.0.1:$AGENT_PORT/health" "The agent"

# A human user (password kept in .local, mode 0600) and a room with the agent.
PASSFILE=$STATE/alice.password
[ -f "$PASSFILE" ] || (umask 077; python3 -c "import secrets; print(secrets.token_urlsafe(12))" > "$PASSFILE")
PASSWORD=$(cat "$PASSFILE")
"$TOOLS/synapse-venv/bin/register_new_matrix_user" -c "$STATE/synapse/homeserver.yaml" -u alice -p "$PASSWORD" \
  --no-admin "$HS" >/dev/null 2>&1 || true
TOKEN=$(curl -sf -X POST "$HS/_matrix/client/v3/login" -H 'Content-Type: application/json' \
  -d "{\"type\":\"m.login.password\",\"identifier\":{\"type\":\"m.id.user\",\"user\":\"alice\"},\"password\":\"$PASSWORD\"}" | json "['access_token']")
AUTH="Authorization: Bearer $TOKEN"
ALIAS="#conclave:$SERVER_NAME"
AGENT_USER="@agent:$SERVER_NAME"
ENC_ALIAS=$(python3 -c "import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1], safe=''))" "$ALIAS")
if ROOM=$(curl -sf "$HS/_matrix/client/v3/directory/room/$ENC_ALIAS" | json "['room_id']" 2>/dev/null); then :; else
  ROOM=$(curl -sf -X POST "$HS/_matrix/client/v3/createRoom" -H "$AUTH" -H 'Content-Type: application/json' \
    -d "{\"name\":\"Conclave\",\"room_alias_name\":\"conclave\",\"preset\":\"private_chat\",\"invite\":[\"$AGENT_USER\"]}" | json "['room_id']")
fi
ENC_ROOM=$(python3 -c "import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1], safe=''))" "$ROOM")
ENC_AGENT=$(python3 -c "import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1], safe=''))" "$AGENT_USER")
for _ in $(seq 1 100); do
  m=$(curl -sf "$HS/_matrix/client/v3/rooms/$ENC_ROOM/state/m.room.member/$ENC_AGENT" -H "$AUTH" | json "['membership']" 2>/dev/null || true)
  [ "$m" = join ] && break
  [ "$m" = invite ] || curl -sf -X POST "$HS/_matrix/client/v3/rooms/$ENC_ROOM/invite" -H "$AUTH" \
    -H 'Content-Type: application/json' -d "{\"user_id\":\"$AGENT_USER\"}" >/dev/null || true
  sleep 0.2
done
[ "$m" = join ] || { echo "the agent did not join $ALIAS; see $STATE/agent.log" >&2; exit 1; }

cat <<INFO

  Conclave agent is running.
    homeserver  $HS   (in Element: "Edit" the homeserver, enter this URL)
    login       alice / $PASSWORD
    room        $ALIAS  ($ROOM) — the agent is in it; try !ping or !help
    logs        $STATE/agent.log, $STATE/synapse/
  Ctrl-C stops Synapse and the agent.

INFO
wait -n "${pids[@]}"
