#!/usr/bin/env bash
# Fuzz every cargo-fuzz target of spike-rs for DURATION seconds each and
# print a table of executions and findings.
#
#   bash fuzz/run-all.sh [DURATION=20]
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
    echo "usage: $0 [DURATION seconds per target]" >&2
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

rows=()
failed=0
stat() { sed -n "s/^stat::$1:[[:space:]]*//p" "$2" | tail -n1; }
for t in "${targets[@]}"; do
    corpus=("$scratch/corpus-$t")
    mkdir -p "${corpus[0]}"
    [[ -d "fuzz/corpus/$t" ]] && corpus+=("fuzz/corpus/$t")
    log="$scratch/$t.log"
    echo "== $t (${DURATION}s)"
    status=0
    cargo fuzz run --fuzz-dir fuzz --sanitizer "$SANITIZER" "$t" "${corpus[@]}" -- \
        -max_total_time="$DURATION" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        >"$log" 2>&1 || status=$?
    findings="none"
    if ((status != 0)); then
        failed=1
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1)
        kind=$(grep -oE 'ERROR: libFuzzer: [a-z-]+|panicked at [^:]+:[0-9]+' "$log" | head -n1 || true)
        findings="FAIL(${status}) ${kind:-see log} ${artifact:-}"
        grep -vE '^#[0-9]+[[:space:]]+(pulse|NEW|REDUCE|INITED)' "$log" | tail -n 40 >&2
    fi
    seeds=$(find "fuzz/corpus/$t" -type f 2>/dev/null | wc -l)
    rows+=("$(printf '%-16s %12s %10s %7s %9s %8s  %s' "$t" \
        "$(stat number_of_executed_units "$log")" "$(stat average_exec_per_sec "$log")" \
        "$seeds" "$(find "${corpus[0]}" -type f | wc -l)" "$(stat peak_rss_mb "$log")" "$findings")")
done

printf '\n%-16s %12s %10s %7s %9s %8s  %s\n' target execs exec/s seeds "new units" "rss MB" findings
printf '%s\n' "${rows[@]}"
exit "$failed"
