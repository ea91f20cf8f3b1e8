#!/usr/bin/env bash
# Fuzz every cargo-fuzz target of spike-rs for DURATION seconds each and
# print a table of executions and findings.
#
#   bash fuzz/run-all.sh [DURATION=20]
#   JOBS=2 bash fuzz/run-all.sh 60   # two targets at a time (default 1)
#
# Works on stable Rust: targets are built with `--sanitizer none`. For
# AddressSanitizer (nightly features on stable):
#   RUSTC_BOOTSTRAP=1 SANITIZER=address bash fuzz/run-all.sh 60
#
# The committed seeds in fuzz/corpus/<target>/ are read, not modified; new
# inputs go to a scratch corpus that is thrown away. A crashing input is
# kept in fuzz/artifacts/<target>/. Exit status: 0 when no target found
# anything, 1 otherwise (2: usage).
set -euo pipefail

DURATION=${1:-20}
[[ "$DURATION" =~ ^[0-9]+$ && "$DURATION" -gt 0 ]] || {
    echo "usage: [JOBS=N] $0 [DURATION seconds per target]" >&2
    exit 2
}
JOBS=${JOBS:-1}
[[ "$JOBS" =~ ^[0-9]+$ && "$JOBS" -gt 0 ]] || {
    echo "usage: [JOBS=N] $0 [DURATION seconds per target]: JOBS must be a positive integer" >&2
    exit 2
}
SANITIZER=${SANITIZER:-none}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# Where .ci/run installs cargo-fuzz (pinned in .ci/tools-requirements.txt).
TOOLS=${SPIKE_CI_TOOLS:-"${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/spike-rs-ci/tools"}
export PATH="$TOOLS/py/bin:$TOOLS/cargo/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found: run .ci/run once, or" >&2
    echo "  python3 -m pip install --target $TOOLS/py --require-hashes -r .ci/tools-requirements.txt" >&2
    exit 1
fi

mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
cargo fuzz build --fuzz-dir fuzz --sanitizer "$SANITIZER"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/spike-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

stat() { sed -n "s/^stat::$1:[[:space:]]*//p" "$2" | tail -n1; }

# Fuzzes target $1; leaves its table row in $scratch/$1.row and, when it
# found something, the tail of its log in $scratch/$1.tail.
fuzz_one() {
    local t=$1 log status=0 started findings artifact kind seeds
    local -a corpus
    corpus=("$scratch/corpus-$t")
    mkdir -p "${corpus[0]}"
    [[ -d "fuzz/corpus/$t" ]] && corpus+=("fuzz/corpus/$t")
    log="$scratch/$t.log"
    started=$SECONDS
    cargo fuzz run --fuzz-dir fuzz --sanitizer "$SANITIZER" "$t" "${corpus[@]}" -- \
        -max_total_time="$DURATION" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        >"$log" 2>&1 || status=$?
    findings="none"
    if ((status != 0)); then
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1)
        kind=$(grep -oE 'ERROR: libFuzzer: [a-z-]+|panicked at [^:]+:[0-9]+' "$log" | head -n1 || true)
        findings="FAIL(${status}) ${kind:-see log} ${artifact:-}"
        grep -vE '^#[0-9]+[[:space:]]+(pulse|NEW|REDUCE|INITED)' "$log" | tail -n 40 >"$scratch/$t.tail"
    fi
    seeds=$(find "fuzz/corpus/$t" -type f 2>/dev/null | wc -l) || true
    printf '%-16s %5s %12s %10s %7s %9s %8s  %s\n' "$t" "$((SECONDS - started))" \
        "$(stat number_of_executed_units "$log")" "$(stat average_exec_per_sec "$log")" \
        "$seeds" "$(find "${corpus[0]}" -type f | wc -l)" "$(stat peak_rss_mb "$log")" \
        "$findings" >"$scratch/$t.row"
}

running=0
for t in "${targets[@]}"; do
    if ((running >= JOBS)); then
        wait -n || true
        running=$((running - 1))
    fi
    echo "== $t (${DURATION}s)"
    fuzz_one "$t" &
    running=$((running + 1))
done
wait

failed=0
for t in "${targets[@]}"; do
    if [[ -f "$scratch/$t.tail" ]]; then
        failed=1
        echo "-- $t" >&2
        cat "$scratch/$t.tail" >&2
    fi
done
printf '\n%-16s %5s %12s %10s %7s %9s %8s  %s\n' target secs execs exec/s seeds "new units" "rss MB" findings
for t in "${targets[@]}"; do
    cat "$scratch/$t.row" 2>/dev/null || printf '%-16s  (no result)\n' "$t"
    [[ -f "$scratch/$t.row" ]] || failed=1
done
exit "$failed"
