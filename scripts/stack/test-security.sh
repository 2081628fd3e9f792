#!/usr/bin/env bash
# The seed's security checks, run where they can run here (a scratch root, nothing on the machine
# changed): the SSH settings and fail2ban jails as install/ssh.sh writes them (and sshd's own
# reading of them when sshd is installed), the dev user as install/dev-user.sh makes it, and the
# ownership and modes startup.sh gives $CONCLAVE_ROOT (in CONCLAVE_SETUP_ONLY=1 mode).
set -euo pipefail
cd "$(dirname "$0")/../.."
LOG_TAG=security
. scripts/stack/lib.sh
[ "$(id -u)" = 0 ] || die "run as root"
SCRATCH=$(mktemp -d /tmp/conclave-security.XXXXXX)
chmod 755 "$SCRATCH" # postgres passes through to its data directory
FAILURES=0
pass() { log "PASS $*"; }
fail() { log "FAIL $*"; FAILURES=$((FAILURES + 1)); }
is() { if [ "$2" = "$3" ]; then pass "$1 = $3"; else fail "$1 is '$2', want '$3'"; fi; }

# ---- SSH ----
CONCLAVE_ETC=$SCRATCH/etc bash scripts/stack/install/ssh.sh
conf=$SCRATCH/etc/ssh/sshd_config.d/conclave.conf
setting() { awk -v k="$1" 'tolower($1) == tolower(k) {print $2; exit}' "$conf"; }
declare -A WANT=([PermitRootLogin]=no [PasswordAuthentication]=no [PubkeyAuthentication]=yes [X11Forwarding]=no
  [AllowAgentForwarding]=no [MaxAuthTries]=3 [LoginGraceTime]=30)
for k in "${!WANT[@]}"; do is "sshd $k" "$(setting "$k")" "${WANT[$k]}"; done
if command -v sshd >/dev/null; then
  ssh-keygen -q -t ed25519 -N '' -f "$SCRATCH/hostkey"
  printf 'Include %s\nHostKey %s\n' "$conf" "$SCRATCH/hostkey" >"$SCRATCH/sshd_config"
  mkdir -p /run/sshd
  effective=$(sshd -T -f "$SCRATCH/sshd_config")
  for k in "${!WANT[@]}"; do
    v=$(awk -v k="${k,,}" '$1 == k {print $2}' <<<"$effective")
    [ "$k" = LoginGraceTime ] || is "sshd -T $k" "$v" "${WANT[$k]}"
  done
else
  log "sshd is not installed here: its settings were checked in the file only"
fi

# ---- fail2ban ----
python3 - "$SCRATCH/etc/fail2ban/jail.d/conclave.local" <<'PY' && pass "fail2ban jails sshd and nginx-http-auth (5 tries, 1 h)" || fail "fail2ban jails"
import configparser, sys
c = configparser.ConfigParser()
c.read(sys.argv[1])
for jail, port in [("sshd", "ssh"), ("nginx-http-auth", "http,https")]:
    j = c[jail]
    assert j.getboolean("enabled") and j["port"] == port and j["maxretry"] == "5" and j["bantime"] == "3600", jail
assert c["nginx-http-auth"]["logpath"] == "/workspace/logs/nginx/error.log"
PY
log "fail2ban: configured as the seed says; supervisord does not run it (it needs NET_ADMIN, which a pod does not have)"

# ---- The dev user, made by the real step in a scratch system root ----
mkdir -p "$SCRATCH/sysroot/etc"
for f in passwd group shadow gshadow login.defs; do [ -f "/etc/$f" ] && cp -p "/etc/$f" "$SCRATCH/sysroot/etc/"; done
grep -q '^dev:' "$SCRATCH/sysroot/etc/passwd" && sed -i '/^dev:/d' "$SCRATCH/sysroot/etc/"{passwd,group,shadow,gshadow} 2>/dev/null
grep -q '^sudo:' "$SCRATCH/sysroot/etc/group" || echo 'sudo:x:27:' >>"$SCRATCH/sysroot/etc/group"
CONCLAVE_SYSROOT=$SCRATCH/sysroot bash scripts/stack/install/dev-user.sh
IFS=: read -r _ _ uid _ _ home shell < <(grep '^dev:' "$SCRATCH/sysroot/etc/passwd")
is "dev's home" "$home" /workspace/data/coding
is "dev's shell" "$shell" /bin/bash
[ "$uid" -ge 1000 ] && pass "dev is unprivileged (uid $uid)" || fail "dev's uid is $uid"
grep -q '^sudo:.*[:,]dev\(,\|$\)' "$SCRATCH/sysroot/etc/group" && pass "dev is in group sudo" || fail "dev is not in group sudo"
[[ $(grep '^dev:' "$SCRATCH/sysroot/etc/shadow" | cut -d: -f2) == '!'* ]] && pass "dev's password is locked until boot sets it" ||
  fail "dev has a password in the image"

# ---- /workspace: startup.sh in setup-only mode ----
export CONCLAVE_ROOT=$SCRATCH/workspace CONCLAVE_RUN=$SCRATCH/run CONCLAVE_PREFIX="${CONCLAVE_TOOLS:-$HOME/.cache/conclave}"
export CONCLAVE_SETUP_ONLY=1 CONCLAVE_MANAGE_DEV_PASSWORD=0 CONCLAVE_AGENT_BIN="${CONCLAVE_AGENT_BIN:-$PWD/target/debug/conclave-agent}"
export CONCLAVE_ENABLE_TTYD=0 CONCLAVE_ENABLE_CODING_AGENTS=0 CONCLAVE_ENABLE_PLANKA=0 CONCLAVE_ENABLE_NEKO=0
mkdir -p "$CONCLAVE_ROOT"
bash scripts/stack/startup.sh 2>"$SCRATCH/startup.log" || { cat "$SCRATCH/startup.log" >&2; die "startup.sh (setup only) failed"; }
mode() { stat -c '%a %U:%G' "$1"; }
is "$CONCLAVE_ROOT" "$(mode "$CONCLAVE_ROOT")" "755 root:root"
is "config/" "$(mode "$CONCLAVE_ROOT/config")" "755 root:root"
is "logs/" "$(mode "$CONCLAVE_ROOT/logs")" "750 root:root"
is "data/postgres" "$(mode "$CONCLAVE_ROOT/data/postgres")" "700 postgres:postgres"
for f in generated-secrets.env conclave-agent/conclave.toml conclave-agent/registration.yaml synapse/homeserver.yaml synapse/conclave.yaml; do
  is "config/$f" "$(mode "$CONCLAVE_ROOT/config/$f")" "600 root:root"
done
is "config/nginx/htpasswd" "$(mode "$CONCLAVE_ROOT/config/nginx/htpasswd")" "640 root:$(id -gn "${NGINX_WORKER_USER:-www-data}")"
is "the run directory" "$(mode "$CONCLAVE_RUN")" "711 root:root"
grep -qF "$(sed -n 's/^NGINX_PASSWORD=//p' "$CONCLAVE_ROOT/config/generated-secrets.env")" "$SCRATCH/startup.log" &&
  fail "startup.sh printed a secret" || pass "startup.sh printed no secret"
[ -f "$CONCLAVE_ROOT/.initialized" ] && pass ".initialized written" || fail "no .initialized"

log "scratch left in $SCRATCH"
[ "$FAILURES" = 0 ] || die "$FAILURES security check(s) failed"
log "security checks: all passed"
