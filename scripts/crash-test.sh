#!/usr/bin/env bash
# Crash consistency, the long run (issue 6): the e2e test
# `crash::sigkilled_nexus_keeps_every_acknowledged_write` with KILLS SIGKILLs
# of Nexus under concurrent mTLS writes (`cargo test` runs it with 5).
#
# Usage: scripts/crash-test.sh [KILLS]   (default 100)
#
# Env: SPIKE_CRASH_SEED repeats a run's kill delays (the seed is printed);
# PROFILE=release tests the release build (default: debug, as CI).
# Prints the test's output; its summary line is
# `crash: kills=K acknowledged=A verified=V unacknowledged_landed=U restart_ms p50=.. max=..`.
set -euo pipefail

kills=${1:-100}
profile=${PROFILE:-debug}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

cargo_profile=()
if [[ $profile == release ]]; then
    cargo_profile=(--release)
fi

# The e2e tests run the workspace's binaries: build them first.
cargo build --quiet "${cargo_profile[@]}" -p spike-server -p spike-cli
start=$(date +%s)
SPIKE_CRASH_KILLS=$kills cargo test --quiet "${cargo_profile[@]}" -p spike-e2e --test e2e -- \
    --exact crash::sigkilled_nexus_keeps_every_acknowledged_write --nocapture
echo "crash-test: kills=$kills profile=$profile wall_s=$(($(date +%s) - start))"
