#!/usr/bin/env bash
# What every part of the image needs: the tools the scripts use, tmux, and the `dev` user.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
apt_install ca-certificates curl openssl gnupg python3 python3-venv gettext-base sudo tmux procps unzip xz-utils git less
bash "$(dirname "$0")/dev-user.sh"
