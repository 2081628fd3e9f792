# shellcheck shell=bash
# Shared shell functions of the workspace's scripts (sourced, never run). Bash only.
# Every wait here is bounded and logged; nothing here ever prints a secret.

CONCLAVE_HOME="${CONCLAVE_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
# shellcheck source=scripts/stack/versions.env
. "$CONCLAVE_HOME/scripts/stack/versions.env"

log() { printf '%s %s: %s\n' "$(date -u +%H:%M:%S)" "${LOG_TAG:-conclave}" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# enabled NAME: is CONCLAVE_ENABLE_<NAME> on?
enabled() { local v="CONCLAVE_ENABLE_$1"; [ "${!v:-0}" = 1 ]; }

# wait_until WHAT SECONDS CMD...: runs CMD every second until it succeeds; logs the wait and
# fails with WHAT after SECONDS.
wait_until() {
  local what=$1 limit=$2 start=$SECONDS
  shift 2
  log "waiting for $what (at most ${limit}s)"
  until "$@" >/dev/null 2>&1; do
    if [ $((SECONDS - start)) -ge "$limit" ]; then
      log "$what: not ready after ${limit}s"
      return 1
    fi
    sleep 1
  done
  log "$what: ready after $((SECONDS - start))s"
}

# http_ok URL: the URL answers 2xx within 5 s.
http_ok() { curl -fsS -o /dev/null --max-time 5 "$1"; }

os_id() { . /etc/os-release && echo "$ID"; }

# apt_install PKG...: installs the packages that are missing (one apt-get update per run).
apt_install() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt: installing ${missing[*]}"
  if [ -z "${_APT_UPDATED:-}" ]; then apt-get update -qq; _APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# venv_install VENV MODULE 'dist==ver'...: a venv holding exactly these versions; a no-op when
# it already does (checked through importlib.metadata, and MODULE imports unless it is `-`, so a
# half-made venv is redone).
venv_install() {
  local venv=$1 module=$2
  shift 2
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" - "$module" "$@" <<'PY' 2>/dev/null; then
import importlib, importlib.metadata as m, re, sys
if sys.argv[1] != "-":
    importlib.import_module(sys.argv[1])
for spec in sys.argv[2:]:
    name, ver = re.sub(r"\[.*\]", "", spec).split("==")
    assert m.version(name) == ver, (name, m.version(name), ver)
PY
    log "$(basename "$venv"): $* already in $venv"
    return 0
  fi
  log "$(basename "$venv"): installing $* into $venv"
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
}

# random_secret: 32 url-safe characters from the kernel's CSPRNG.
random_secret() { openssl rand -base64 48 | tr -d '/+=\n' | cut -c1-32; }

# write_private PATH: stdin to PATH, created 0600 (never wider, not even for a moment).
write_private() {
  local path=$1 tmp
  tmp=$(umask 077 && mktemp "$path.XXXXXX")
  cat >"$tmp"
  chmod 600 "$tmp"
  mv -f "$tmp" "$path"
}

# render TEMPLATE OUT VAR...: substitutes only the named ${VAR}s (nginx's own $vars stay).
render() {
  local template=$1 out=$2 vars="" v
  shift 2
  for v in "$@"; do vars+="\${$v} "; done
  envsubst "$vars" <"$template" >"$out"
}

# pg_bindir: the PostgreSQL server binaries of this machine's package.
pg_bindir() {
  local d
  d=$(pg_config --bindir 2>/dev/null) && [ -x "$d/initdb" ] && { echo "$d"; return; }
  # Debian's pg_config (libpq-dev / postgresql-common) may point at /usr/bin; the server is here:
  # shellcheck disable=SC2012 # version-sorted directory names
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && { echo "$d"; return; }
  return 1
}
