#!/usr/bin/env bash
# nginx from the distribution. Its own service is never started: supervisord runs it with the
# workspace's config. htpasswd files are written with openssl (no apache2-utils).
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
apt_install nginx gettext-base openssl curl
log "nginx: $(nginx -v 2>&1)"
