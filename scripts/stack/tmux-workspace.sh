#!/usr/bin/env bash
# ttyd's program (as dev): the coding workspace in one tmux session, windows dev, pi and claude.
# agent-env.sh (made by create-users.sh) holds each coding agent's token; each window gets its own
# as $CONCLAVE_AGENT_TOKEN, so `conclave-agent post` there speaks as @agent-pi or @agent-claude.
set -euo pipefail
ROOT="${CONCLAVE_ROOT:-/workspace}"
ENV_FILE="$ROOT/config/agent-env.sh"
# shellcheck disable=SC1090
[ -r "$ENV_FILE" ] && . "$ENV_FILE"
SESSION=conclave
cd "$ROOT/data/coding/projects"
if ! tmux has-session -t "$SESSION" 2>/dev/null; then
  tmux new-session -d -s "$SESSION" -n dev
  tmux new-window -t "$SESSION" -n pi -e "CONCLAVE_AGENT_TOKEN=${CONCLAVE_AGENT_TOKEN_PI:-}" "pi; exec bash"
  tmux new-window -t "$SESSION" -n claude -e "CONCLAVE_AGENT_TOKEN=${CONCLAVE_AGENT_TOKEN_CLAUDE:-}" "claude; exec bash"
  tmux select-window -t "$SESSION:dev"
fi
exec tmux attach-session -t "$SESSION"
