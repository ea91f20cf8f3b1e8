#!/usr/bin/env bash
# Scale sweep (issue 5): for 1k, 10k, 100k and 1M secrets (1,000 policies
# each), cold start to serving, resident memory, the median authorised
# in-process read and durable write throughput, and the time those writes
# waited for the store's checkpoints (of their 2 s), as one table, so that
# cost growth is visible. Each size runs in a fresh process (`cold_start
# --sweep`); stores are populated once and cached under
# target/spike-bench-cache/ (1M takes a minute or two the first time).
#
# Usage: benches/sweep.sh [SIZES...]   (default: 1000 10000 100000 1000000)
#
# Env: SPIKE_BIN_DIR skips the cargo build and takes cold_start from there.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/harness.sh
source "$root/scripts/harness.sh"
sizes=("$@")
if ((${#sizes[@]} == 0)); then
    sizes=(1000 10000 100000 1000000)
fi

spike_bins -p spike-benches --bin cold_start

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

rows=()
for n in "${sizes[@]}"; do
    echo "== $n secrets" >&2
    # Shown on stderr once done (not `tee /dev/stderr`, which would
    # truncate a log file that stdout and stderr share).
    out=$("$bin/cold_start" --secrets "$n" --runs 3 --sweep)
    printf '%s\n' "$out" >&2
    line=$(tail -n 1 <<<"$out")
    rows+=("$(printf '%10s %12s %10s %12s %14s %9s %9s' "$n" "$(field start_ms "$line")" \
        "$(field rss_mb "$line")" "$(field read_ns "$line")" "$(field writes_per_s "$line")" \
        "$(field checkpoint_ms "$line")" "$(field checkpoint_wait_ms "$line")")")
done

echo
echo "scale sweep, $(nproc) cores, 1,000 policies, 150 B values"
printf '%10s %12s %10s %12s %14s %9s %9s\n' secrets "start ms" "RSS MB" "read ns p50" "writes/s" "ckpt ms" "wait ms"
printf '%s\n' "${rows[@]}"
