#!/usr/bin/env bash
# Longer runs of the crash tests in tests/e2e/crash.rs (issue 11): concurrent builds in one
# workspace, and `kill -9` of builds while their actions start, in both sandbox modes.
# Each test prints its own tally; this script runs them with more rounds and collects it.
#
#   bash benches/crash.sh                      # 10 concurrent rounds (40 builds), 30 + 30 kills
#   CONCURRENT_ROUNDS=25 KILLS=100 bash benches/crash.sh
#   MLBUILD_STRESS_SEED=123 bash benches/crash.sh   # replay the kill moments of a run
set -euo pipefail
cd "$(dirname "$0")/.."

CONCURRENT_ROUNDS=${CONCURRENT_ROUNDS:-10}
KILLS=${KILLS:-30}
PLAIN_KILLS=${PLAIN_KILLS:-$KILLS}

cargo test -p mlbuild --test e2e --no-run 2>&1 | tail -n 1 >&2

run() {
    local rounds=$1 test=$2
    local start end status=0 out
    start=$(date +%s%N)
    out=$(MLBUILD_STRESS_ROUNDS=$rounds cargo test -q -p mlbuild --test e2e -- \
        --exact "$test" --nocapture --test-threads 1 2>&1) || status=$?
    end=$(date +%s%N)
    echo "## $test (MLBUILD_STRESS_ROUNDS=$rounds): $([ $status = 0 ] && echo passed || echo FAILED) in $(( (end - start) / 1000000 )) ms"
    grep -E 'MLBUILD_STRESS_SEED=|concurrent builds failed|kills left processes|exec dirs;' <<<"$out" || true
    if [ $status != 0 ]; then
        grep -E 'panicked|^kill |^round ' <<<"$out" | cut -c1-300 || true
    fi
    echo
    return 0
}

run "$CONCURRENT_ROUNDS" crash::concurrent_builds_in_one_workspace_all_succeed
run "$KILLS" crash::killed_builds_leave_no_process_and_no_scratch
run "$PLAIN_KILLS" crash::killed_plain_builds_leave_no_process_and_no_scratch
