#!/usr/bin/env bash
# The coding agents from npm, pinned: pi and Claude Code. Their configs (pi's models.json, Claude
# Code's settings, the skills) are copied into dev's home on the volume by startup.sh.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
bash "$(dirname "$0")/node.sh"
apt_install tmux git
npm install -g --no-audit --no-fund "@mariozechner/pi-coding-agent@$PI_VERSION" "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION"
log "pi $(pi --version 2>/dev/null || echo "$PI_VERSION"), claude $(claude --version 2>/dev/null || echo "$CLAUDE_CODE_VERSION")"
