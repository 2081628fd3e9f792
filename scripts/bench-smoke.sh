#!/usr/bin/env bash
# Every benchmark once, at a few seconds' size and in the test profile (no release build): a bench
# that no longer runs is noticed in CI. No figure is asserted; the real runs are `cargo bench`
# (README, "Benchmarks").
set -euo pipefail
cd "$(dirname "$0")/.."
run() {
    local bench=$1
    shift
    echo "== bench smoke: $bench ($*)"
    env "$@" cargo test --locked --bench "$bench"
}
run ingest BENCH_TXNS=40 BENCH_ROOMS=4 BENCH_CONCURRENCY=1,4
run chat BENCH_QUESTIONS=10 BENCH_STREAM_SECS=3
run jobs BENCH_PINGS=10 BENCH_QUESTIONS=20 BENCH_LEVELS=0,2
run agents BENCH_N=5
run browse BENCH_BROWSES=3
run backfill BENCH_HISTORY=100
run index BENCH_MESSAGES=64 BENCH_ROUNDS=1 BENCH_SEARCH_RECORDS=100 BENCH_SEARCHES=5
run memory BENCH_MB=2 BENCH_SETTLE_SECS=2
