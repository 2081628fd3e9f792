#!/usr/bin/env bash
# OpenSSH (keys only) and fail2ban with the seed's two jails. Config files come from configs/ssh
# and configs/fail2ban; `$CONCLAVE_ETC` (default /etc) lets test-security.sh check them in a
# scratch directory without touching the machine.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
ETC="${CONCLAVE_ETC:-/etc}"
[ "$ETC" != /etc ] || apt_install openssh-server fail2ban
install -d -m 0755 "$ETC/ssh/sshd_config.d" "$ETC/fail2ban/jail.d"
install -m 0644 "$CONCLAVE_HOME/configs/ssh/sshd_config.d/conclave.conf" "$ETC/ssh/sshd_config.d/conclave.conf"
install -m 0644 "$CONCLAVE_HOME/configs/fail2ban/jail.d/conclave.local" "$ETC/fail2ban/jail.d/conclave.local"
# sshd needs its privilege-separation directory; host keys are made once per image.
if [ "$ETC" = /etc ]; then mkdir -p /run/sshd && ssh-keygen -A >/dev/null; fi
log "sshd and fail2ban configured in $ETC"
