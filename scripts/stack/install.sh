#!/usr/bin/env bash
# Installs the workspace's services, one script per service under install/, each idempotent and
# gated by its toggle in versions.env. The image build runs `install.sh --all`; scripts/setup.sh
# runs the services the native stack test uses. Where things go: $CONCLAVE_PREFIX (venvs, default
# /opt/conclave), the distribution's packages, /usr/local/bin.
#   install.sh [--all | SERVICE...]    services: base postgres synapse chromadb supervisor nginx
#              chromium element planka ollama neko ttyd coding-agents ssh lint
set -euo pipefail
LOG_TAG=install
. "$(dirname "$0")/lib.sh"
export CONCLAVE_PREFIX="${CONCLAVE_PREFIX:-/opt/conclave}"
mkdir -p "$CONCLAVE_PREFIX"

# The toggle each service is installed under ("" = always).
toggle_of() {
  case $1 in
    base | supervisor | lint) echo "" ;;
    postgres) echo POSTGRES ;; synapse) echo SYNAPSE ;; chromadb) echo CHROMADB ;;
    nginx) echo NGINX ;; chromium) echo BROWSER ;; element) echo ELEMENT ;; planka) echo PLANKA ;;
    ollama) echo OLLAMA ;; neko) echo NEKO ;; ttyd) echo TTYD ;; coding-agents) echo CODING_AGENTS ;;
    ssh) echo SSHD ;;
    *) die "unknown service $1" ;;
  esac
}

services=("$@")
if [ "${1:-}" = --all ]; then
  services=(base postgres synapse chromadb supervisor nginx chromium element planka ollama neko ttyd coding-agents ssh)
fi
[ ${#services[@]} -gt 0 ] || die "name the services to install, or --all"
for s in "${services[@]}"; do
  t=$(toggle_of "$s")
  if [ -n "$t" ] && ! enabled "$t"; then
    log "$s: off (CONCLAVE_ENABLE_$t=0), not installed"
    continue
  fi
  LOG_TAG="install $s" bash "$CONCLAVE_HOME/scripts/stack/install/$s.sh"
done
