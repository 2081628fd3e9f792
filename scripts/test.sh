#!/usr/bin/env bash
# The whole check, as CI runs it: install the real servers, then format, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Integration tests start Synapse and agents; two at a time fit two cores.
cargo test --locked -- --test-threads="${CONCLAVE_TEST_THREADS:-2}"
