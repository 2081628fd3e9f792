#!/usr/bin/env bash
# The whole check, as CI runs it: install the real servers, then format, lints and every test,
# then the workspace: its image's lint, its security checks and the native stack test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# As root, PostgreSQL runs as `postgres` and must reach its data dir: a checkout it cannot enter
# (a `mktemp -d` clone is mode 0700) keeps the tests' server dirs under /tmp instead.
if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$PWD"; then
  export CONCLAVE_TEST_TMPDIR=/tmp/conclave-test-dirs
  mkdir -p "$CONCLAVE_TEST_TMPDIR"
fi
# Integration tests start Synapse and agents; two at a time fit two cores.
cargo test --locked -- --test-threads="${CONCLAVE_TEST_THREADS:-2}"
# Every benchmark once at a tiny size: one that no longer runs is noticed (figures: `cargo bench`).
bash scripts/bench-smoke.sh
# The workspace image cannot be built here (no Docker engine): lint it and its scripts.
LINT="${CONCLAVE_TOOLS:-$HOME/.cache/conclave}/lint-venv/bin"
"$LINT/hadolint" Dockerfile
"$LINT/shellcheck" -x -S warning scripts/*.sh scripts/stack/*.sh scripts/stack/install/*.sh
bash scripts/stack/test-security.sh
bash scripts/stack/test.sh
