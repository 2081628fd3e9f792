#!/usr/bin/env bash
# The workspace's entrypoint (PID 1): prepares $CONCLAVE_ROOT, then execs supervisord.
# Idempotent: every boot renders the configs and keeps what the earlier ones made (secrets,
# databases, Synapse's keys); the first boot also creates them and ends with .initialized.
# Fail closed: a step that fails stops the boot with its reason, before any service starts.
#   CONCLAVE_ROOT (/workspace)   all state: config/, data/, logs/
#   CONCLAVE_SETUP_ONLY=1        stop before supervisord (tests, checks)
# Secrets are generated when not given, written 0600 and never printed: their names are.
set -euo pipefail
umask 022
LOG_TAG=startup
. "$(dirname "$0")/lib.sh"
BOOT_START=$(date +%s)

# ---- Settings (the seed's names and defaults; ports from the environment) ----
export CONCLAVE_HOME CONCLAVE_ROOT="${CONCLAVE_ROOT:-/workspace}"
export CONCLAVE_RUN="${CONCLAVE_RUN:-/var/run/conclave}"
export CONCLAVE_PREFIX="${CONCLAVE_PREFIX:-/opt/conclave}"
export MATRIX_SERVER_NAME="${MATRIX_SERVER_NAME:-conclave.local}"
export EXTERNAL_HOSTNAME="${EXTERNAL_HOSTNAME:-localhost}"
export NGINX_USER="${NGINX_USER:-admin}"
export CONCLAVE_AGENT_USER="${CONCLAVE_AGENT_USER:-agent}"
export DEFAULT_OLLAMA_MODEL="${DEFAULT_OLLAMA_MODEL:-llama3.1:8b}"
export NGINX_PORT="${NGINX_PORT:-8888}" SYNAPSE_PORT="${SYNAPSE_PORT:-8008}" PLANKA_PORT="${PLANKA_PORT:-1337}"
export POSTGRES_PORT="${POSTGRES_PORT:-5432}" CHROMA_PORT="${CHROMA_PORT:-8000}" CHROMA_ADMIN_PORT="${CHROMA_ADMIN_PORT:-3100}"
export OLLAMA_PORT="${OLLAMA_PORT:-11434}" NEKO_PORT="${NEKO_PORT:-8080}" TTYD_PORT="${TTYD_PORT:-7681}"
export CDP_PORT="${CDP_PORT:-9222}" AGENT_PORT="${AGENT_PORT:-9009}" EMBEDDER_PORT="${EMBEDDER_PORT:-11435}" SSH_PORT="${SSH_PORT:-22}"
# Synapse's direct port is a fallback entry (the seed's 8008); the native test keeps it on loopback.
export SYNAPSE_BIND="${SYNAPSE_BIND:-0.0.0.0}"
export NGINX_WORKER_USER="${NGINX_WORKER_USER:-www-data}"
export ELEMENT_DIR="${ELEMENT_DIR:-/opt/element-web}"
export CONCLAVE_AGENT_BIN="${CONCLAVE_AGENT_BIN:-$(command -v conclave-agent || echo /usr/local/bin/conclave-agent)}"
export LLM_BASE_URL="${LLM_BASE_URL:-http://127.0.0.1:$OLLAMA_PORT/v1}"
if enabled EMBEDDER; then
  export EMBEDDING_BASE_URL="${EMBEDDING_BASE_URL:-http://127.0.0.1:$EMBEDDER_PORT/v1}"
  export EMBEDDING_MODEL="${EMBEDDING_MODEL:-multilingual-e5-small-q4}"
else
  export EMBEDDING_BASE_URL="${EMBEDDING_BASE_URL:-}" EMBEDDING_MODEL="${EMBEDDING_MODEL:-nomic-embed-text}"
fi
if enabled BROWSER; then export BROWSER_CDP_URL="http://127.0.0.1:$CDP_PORT"; else export BROWSER_CDP_URL=""; fi
for t in POSTGRES NGINX SYNAPSE ELEMENT CHROMADB OLLAMA PLANKA BROWSER NEKO TTYD CODING_AGENTS SSHD AGENT EMBEDDER; do
  export "CONCLAVE_ENABLE_$t"
done
# ttyd runs as dev; supervisord checks the user even of a program that is off.
if id dev >/dev/null 2>&1; then
  export CONCLAVE_DEV_USER=dev
elif enabled TTYD || enabled CODING_AGENTS; then
  die "no dev user on this machine: the terminal and the coding agents run as dev (the image makes it)"
else
  export CONCLAVE_DEV_USER=root
fi
PG_BINDIR=$(pg_bindir) || die "no PostgreSQL server binaries (pg_config --bindir): run scripts/stack/install.sh postgres"
export PG_BINDIR
C=$CONCLAVE_ROOT/config
SECRETS=$C/generated-secrets.env
FIRST_BOOT=1
[ -f "$CONCLAVE_ROOT/.initialized" ] && FIRST_BOOT=0

# A failing command anywhere in a step stops the boot, saying where (errtrace: inside functions too).
set -E
CURRENT_STEP=settings
trap 'die "the boot stopped at: $CURRENT_STEP (see the lines above; nothing was started)"' ERR
step() { # step NAME FUNCTION
  CURRENT_STEP=$1
  log "$1"
  "$2"
}

# ---- 1. Directories ----
make_dirs() {
  mkdir -p "$CONCLAVE_ROOT" "$C"/{nginx,synapse,element-web,planka,chromadb,neko,conclave-agent,dashboard} \
    "$CONCLAVE_ROOT"/data/{synapse,planka,chromadb,ollama/models,neko,coding/projects} \
    "$CONCLAVE_ROOT"/logs/{nginx,synapse,postgres,planka,chromadb,ollama,neko,ttyd,conclave-agent,embedder} \
    "$CONCLAVE_RUN"/{postgresql,nginx}
  chmod 755 "$CONCLAVE_ROOT" "$C" "$CONCLAVE_ROOT/data"
  chmod 750 "$CONCLAVE_ROOT/logs"
  chmod 711 "$CONCLAVE_RUN" # postgres and nginx's workers pass through to their own dirs
  mkdir -p "$CONCLAVE_ROOT/data/postgres"
  chown postgres:postgres "$CONCLAVE_ROOT/data/postgres" "$CONCLAVE_RUN/postgresql"
  chmod 700 "$CONCLAVE_ROOT/data/postgres"
  if id dev >/dev/null 2>&1; then chown dev:dev "$CONCLAVE_ROOT/data/coding" "$CONCLAVE_ROOT/data/coding/projects"; fi
}

# ---- 2. Secrets ----
SECRET_NAMES=(NGINX_PASSWORD ADMIN_MATRIX_PASSWORD SYNAPSE_DB_PASSWORD AGENT_DB_PASSWORD PLANKA_DB_PASSWORD
  PLANKA_SECRET_KEY PLANKA_ADMIN_PASSWORD AGENT_PLANKA_PASSWORD NEKO_PASSWORD NEKO_ADMIN_PASSWORD
  AGENT_AS_TOKEN AGENT_HS_TOKEN DEV_PASSWORD)
# Written into config files as they are: only characters no file format needs to escape.
SAFE_SECRET='^[A-Za-z0-9._~-]+$'
load_secrets() {
  local name value kept=0 made=0 given=0
  declare -gA STORED=()
  if [ -f "$SECRETS" ]; then
    while IFS='=' read -r name value; do
      [[ $name =~ ^[A-Z_][A-Z0-9_]*$ ]] && STORED[$name]=$value
    done <"$SECRETS"
  fi
  # CONCLAVE_DEV_PASSWORD is the seed's name for the dev user's password.
  [ -n "${CONCLAVE_DEV_PASSWORD:-}" ] && DEV_PASSWORD=$CONCLAVE_DEV_PASSWORD
  for name in "${SECRET_NAMES[@]}"; do
    if [ -n "${!name:-}" ]; then
      given=$((given + 1))
    elif [ -n "${STORED[$name]:-}" ]; then
      printf -v "$name" '%s' "${STORED[$name]}"
      kept=$((kept + 1))
    else
      printf -v "$name" '%s' "$(random_secret)"
      made=$((made + 1))
    fi
    if [ "$name" != NGINX_PASSWORD ] && [ "$name" != ADMIN_MATRIX_PASSWORD ] && ! [[ ${!name} =~ $SAFE_SECRET ]]; then
      log "$name: use only A-Z a-z 0-9 . _ ~ - (it goes into config files as it is)"
      return 1
    fi
    export "${name?}"
  done
  # Filled by create-users.sh once Planka made it; kept, never generated.
  export AGENT_PLANKA_API_KEY="${AGENT_PLANKA_API_KEY:-${STORED[AGENT_PLANKA_API_KEY]:-}}"
  {
    echo "# The workspace's secrets (generated on the first boot unless given). Mode 0600; keep it private."
    for name in "${SECRET_NAMES[@]}" AGENT_PLANKA_API_KEY; do printf '%s=%s\n' "$name" "${!name}"; done
  } | write_private "$SECRETS"
  log "secrets: $kept kept, $made generated, $given from the environment (values in $SECRETS, mode 0600)"
}

# ---- 3. Configs from templates (every boot) ----
render_configs() {
  local T=$CONCLAVE_HOME/configs
  render "$T/nginx/nginx.conf.template" "$C/nginx/nginx.conf" CONCLAVE_ROOT CONCLAVE_HOME CONCLAVE_RUN \
    NGINX_WORKER_USER NGINX_PORT AGENT_PORT SYNAPSE_PORT ELEMENT_DIR PLANKA_PORT CHROMA_PORT \
    CHROMA_ADMIN_PORT OLLAMA_PORT NEKO_PORT TTYD_PORT
  mkdir -p "$CONCLAVE_RUN"/nginx/{body,proxy,fastcgi,uwsgi,scgi}
  # One basic-auth user; nginx's workers read the file, so it is the workers' group's (a hash, not the password).
  printf '%s:%s\n' "$NGINX_USER" "$(printf '%s' "$NGINX_PASSWORD" | openssl passwd -apr1 -stdin)" |
    write_private "$C/nginx/htpasswd"
  chgrp "$(id -gn "$NGINX_WORKER_USER")" "$C/nginx/htpasswd" && chmod 640 "$C/nginx/htpasswd"
  render "$T/element-web/config.json.template" "$C/element-web/config.json" EXTERNAL_HOSTNAME MATRIX_SERVER_NAME
  cp "$T/synapse/log.yaml" "$C/synapse/log.yaml"
  render "$T/synapse/homeserver.override.yaml" /dev/stdout EXTERNAL_HOSTNAME SYNAPSE_PORT SYNAPSE_BIND \
    CONCLAVE_RUN POSTGRES_PORT SYNAPSE_DB_PASSWORD CONCLAVE_ROOT | write_private "$C/synapse/conclave.yaml"
  render "$T/conclave-agent/conclave.toml.template" /dev/stdout SYNAPSE_PORT MATRIX_SERVER_NAME AGENT_PORT \
    AGENT_AS_TOKEN AGENT_HS_TOKEN CONCLAVE_AGENT_USER AGENT_DB_PASSWORD POSTGRES_PORT LLM_BASE_URL \
    DEFAULT_OLLAMA_MODEL EMBEDDING_BASE_URL EMBEDDING_MODEL PLANKA_PORT EXTERNAL_HOSTNAME AGENT_PLANKA_API_KEY \
    CHROMA_PORT BROWSER_CDP_URL CONCLAVE_ROOT | write_private "$C/conclave-agent/conclave.toml"
  "$CONCLAVE_AGENT_BIN" --config "$C/conclave-agent/conclave.toml" registration \
    --out "$C/conclave-agent/registration.yaml" >/dev/null || return 1
  # The operator's copy: made once, then theirs to edit.
  [ -f "$C/rooms.toml" ] || cp "$T/rooms.toml" "$C/rooms.toml"
  # The page beside its service list, under the root nginx reads: the checkout (CONCLAVE_HOME)
  # may be a directory nginx's user cannot enter (a home, a mktemp -d clone).
  install -m 0644 "$CONCLAVE_HOME/dashboard/index.html" "$C/dashboard/index.html"
  write_services_json
  enabled PLANKA && write_planka_env
  enabled NEKO && write_neko_config
  enabled CODING_AGENTS && write_coding_configs
  # Non-secret settings for the scripts that do not inherit this environment (healthcheck.sh).
  env | grep -E '^(CONCLAVE_(ROOT|RUN|HOME|PREFIX|ENABLE_[A-Z_]+)|[A-Z]+_PORT|MATRIX_SERVER_NAME|PG_BINDIR)=' |
    sort >"$CONCLAVE_RUN/stack.env"
  return 0
}

write_services_json() { # what the dashboard shows: each service, whether it is on, its port
  local s first=1
  {
    printf '{"server_name": "%s", "services": [' "$MATRIX_SERVER_NAME"
    for s in "synapse SYNAPSE $SYNAPSE_PORT" "element ELEMENT -" "planka PLANKA $PLANKA_PORT" \
      "postgres POSTGRES $POSTGRES_PORT" "chromadb CHROMADB $CHROMA_PORT" "ollama OLLAMA $OLLAMA_PORT" \
      "embedder EMBEDDER $EMBEDDER_PORT" "neko NEKO $NEKO_PORT" "browser BROWSER $CDP_PORT" \
      "terminal TTYD $TTYD_PORT" "agent AGENT $AGENT_PORT" "sshd SSHD $SSH_PORT"; do
      # shellcheck disable=SC2086 # three words on purpose
      set -- $s
      [ $first = 1 ] || printf ','
      first=0
      printf '{"name": "%s", "enabled": %s, "port": "%s"}' "$1" "$(enabled "$2" && echo true || echo false)" "$3"
    done
    printf '], "nginx_port": "%s"}\n' "$NGINX_PORT"
  } >"$C/dashboard/services.json"
}

write_planka_env() {
  write_private "$C/planka/.env" <<EOF
BASE_URL=https://$EXTERNAL_HOSTNAME/planka
DATABASE_URL=postgresql://planka:$PLANKA_DB_PASSWORD@127.0.0.1:$POSTGRES_PORT/planka
SECRET_KEY=$PLANKA_SECRET_KEY
DEFAULT_ADMIN_EMAIL=${PLANKA_ADMIN_EMAIL:-admin@local}
DEFAULT_ADMIN_PASSWORD=$PLANKA_ADMIN_PASSWORD
DEFAULT_ADMIN_NAME=Admin
DEFAULT_ADMIN_USERNAME=admin
TRUST_PROXY=true
EOF
  ln -sfn "$C/planka/.env" /opt/planka/.env
  for d in favicons user-avatars background-images attachments; do mkdir -p "$CONCLAVE_ROOT/data/planka/$d"; done
}

write_neko_config() {
  write_private "$C/neko/neko.yaml" <<EOF
server:
  bind: "127.0.0.1:$NEKO_PORT"
desktop:
  screen: "1920x1080@30"
webrtc:
  icelite: true
  epr: "52000-52100"
member:
  provider: "multiuser"
  multiuser:
    user_password: "$NEKO_PASSWORD"
    admin_password: "$NEKO_ADMIN_PASSWORD"
EOF
}

write_coding_configs() { # dev's home on the volume: made once, then the user's to change
  local H=$CONCLAVE_ROOT/data/coding T=$CONCLAVE_HOME/configs/coding
  mkdir -p "$H/.pi/agent/skills" "$H/.claude/skills" "$H/.ssh"
  [ -f "$H/.tmux.conf" ] || cp "$T/tmux.conf" "$H/.tmux.conf"
  # pi's models.json and Claude Code's settings come with the coding-agents issue (configs/coding/).
  [ -f "$H/.pi/agent/models.json" ] || [ ! -f "$T/pi-models.json" ] || cp "$T/pi-models.json" "$H/.pi/agent/models.json"
  [ -f "$H/.claude/settings.json" ] || [ ! -f "$T/claude-settings.json" ] || cp "$T/claude-settings.json" "$H/.claude/settings.json"
  if [ -d "$CONCLAVE_HOME/skills/pi" ]; then cp -rn "$CONCLAVE_HOME/skills/pi/." "$H/.pi/agent/skills/"; fi
  if [ -d "$CONCLAVE_HOME/skills/claude-code" ]; then cp -rn "$CONCLAVE_HOME/skills/claude-code/." "$H/.claude/skills/"; fi
  if id dev >/dev/null 2>&1; then chown -R dev:dev "$H/.pi" "$H/.claude" "$H/.ssh" "$H/.tmux.conf"; fi
}

# ---- 4. PostgreSQL: cluster, roles, databases ----
pg() { runuser -u postgres -- "$PG_BINDIR/$1" "${@:2}"; }
pg_ready() { pg pg_isready -q -h "$CONCLAVE_RUN/postgresql" -p "$POSTGRES_PORT"; }
init_postgres() {
  local data=$CONCLAVE_ROOT/data/postgres
  if [ ! -f "$data/PG_VERSION" ]; then
    log "postgres: new cluster in $data"
    pg initdb -D "$data" -U postgres -E UTF8 --no-locale --auth-local=peer --auth-host=scram-sha-256 >/dev/null || return 1
    # The services log in with passwords over the socket and loopback; only `postgres` by peer.
    cat >"$data/pg_hba.conf" <<'EOF'
local all postgres              peer
local all all                   scram-sha-256
host  all all 127.0.0.1/32      scram-sha-256
EOF
  fi
  [ "$FIRST_BOOT" = 1 ] || return 0
  # Roles and databases, on a server only this script can reach (no TCP), stopped again after.
  pg pg_ctl -D "$data" -w -t 60 -l "$CONCLAVE_RUN/postgresql/init.log" \
    -o "-c listen_addresses='' -k $CONCLAVE_RUN/postgresql -p $POSTGRES_PORT" start >/dev/null || return 1
  wait_until "postgres (pg_isready)" 60 pg_ready || return 1
  local role pw ok=0
  # Passwords travel on stdin, never on a command line.
  for role in synapse conclave planka; do
    case $role in synapse) pw=$SYNAPSE_DB_PASSWORD ;; conclave) pw=$AGENT_DB_PASSWORD ;; planka) pw=$PLANKA_DB_PASSWORD ;; esac
    pg psql -q -v ON_ERROR_STOP=1 -h "$CONCLAVE_RUN/postgresql" -p "$POSTGRES_PORT" -d postgres <<EOF || ok=1
SELECT 'CREATE ROLE $role LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') \gexec
ALTER ROLE $role PASSWORD '$pw';
SELECT 'CREATE DATABASE $role OWNER $role ENCODING ''UTF8'' LC_COLLATE ''C'' LC_CTYPE ''C'' TEMPLATE template0'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$role') \gexec
EOF
  done
  pg pg_ctl -D "$data" -w -t 60 stop -m fast >/dev/null || ok=1
  cat "$CONCLAVE_RUN/postgresql/init.log" >>"$CONCLAVE_ROOT/logs/postgres/init.log" 2>/dev/null || true
  [ $ok = 0 ] && log "postgres: roles and databases synapse, conclave, planka"
  return $ok
}

# ---- 5. Synapse: keys and generated secrets on the first boot ----
init_synapse() {
  if [ ! -f "$C/synapse/homeserver.yaml" ]; then
    # From its data dir: the generated log config writes there (ours replaces it anyway).
    (cd "$CONCLAVE_ROOT/data/synapse" && "$CONCLAVE_PREFIX/synapse-venv/bin/python" -m synapse.app.homeserver \
      --server-name "$MATRIX_SERVER_NAME" --config-path "$C/synapse/homeserver.yaml" \
      --data-directory "$CONCLAVE_ROOT/data/synapse" --generate-config --report-stats=no >/dev/null) || return 1
    log "synapse: generated homeserver.yaml and the signing key for $MATRIX_SERVER_NAME"
  fi
  chmod 600 "$C/synapse/homeserver.yaml" "$C"/synapse/*.signing.key
  local name
  name=$(sed -n 's/^server_name: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$C/synapse/homeserver.yaml")
  if [ "$name" != "$MATRIX_SERVER_NAME" ]; then
    log "MATRIX_SERVER_NAME is $MATRIX_SERVER_NAME but this workspace was made for $name (a Matrix server cannot be renamed)"
    return 1
  fi
}

# ---- 6. SSH keys and the dev user ----
setup_dev() {
  if ! id dev >/dev/null 2>&1; then
    log "dev user: none on this machine (the image makes it); skipped"
    return 0
  fi
  local H=$CONCLAVE_ROOT/data/coding
  if [ -n "${SSH_AUTHORIZED_KEYS:-}" ]; then
    mkdir -p "$H/.ssh"
    printf '%s\n' "$SSH_AUTHORIZED_KEYS" >"$H/.ssh/authorized_keys"
    chown -R dev:dev "$H/.ssh" && chmod 700 "$H/.ssh" && chmod 600 "$H/.ssh/authorized_keys"
    log "ssh: $(grep -c . "$H/.ssh/authorized_keys") authorized key(s) for dev"
  fi
  if [ "${CONCLAVE_MANAGE_DEV_PASSWORD:-1}" = 1 ]; then
    printf 'dev:%s\n' "$DEV_PASSWORD" | chpasswd || return 1
  fi
}

step "directories under $CONCLAVE_ROOT ($([ $FIRST_BOOT = 1 ] && echo first boot || echo later boot))" make_dirs
step "secrets" load_secrets
step "configs" render_configs
step "postgres" init_postgres
step "synapse" init_synapse
step "dev user" setup_dev
echo "$BOOT_START" >"$CONCLAVE_RUN/boot-started"
if [ "$FIRST_BOOT" = 1 ]; then
  date -u +%FT%TZ >"$CONCLAVE_ROOT/.initialized"
  log "first boot prepared; .initialized written"
fi
for t in POSTGRES NGINX SYNAPSE ELEMENT CHROMADB OLLAMA PLANKA BROWSER NEKO TTYD CODING_AGENTS SSHD AGENT EMBEDDER; do
  enabled "$t" || log "off: CONCLAVE_ENABLE_$t=0"
done
if [ "${CONCLAVE_SETUP_ONLY:-}" = 1 ]; then
  log "CONCLAVE_SETUP_ONLY=1: set up in $(($(date +%s) - BOOT_START))s; supervisord not started"
  exit 0
fi
log "starting supervisord ($(($(date +%s) - BOOT_START))s of setup)"
exec "$CONCLAVE_PREFIX/supervisor-venv/bin/supervisord" -n -c "$CONCLAVE_HOME/configs/supervisord.conf"
