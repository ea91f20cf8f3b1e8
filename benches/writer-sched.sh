#!/usr/bin/env bash
# What the group-commit thread's SCHED_BATCH policy (spike-core/src/sched.rs)
# does to a loaded Nexus: one `spike-server dev`, loaded by `loadgen` with a
# mixed workload, alternately with its `spike-writer` thread switched back
# to the default policy (`chrt --other`) and under SCHED_BATCH (`chrt
# --batch`, what Nexus sets itself), in interleaved pairs.
#
# Usage: benches/writer-sched.sh [DURATION_SECONDS] [PAIRS]   (default 8, 4)
#
# Env: READ_FRACTION (0.9; 0 = writes only), CONNS (32), KEYS (1000),
# VALUE_SIZE (100); SPIKE_BIN_DIR skips the cargo build and takes
# spike-server and loadgen from there; KEEP_WORK=1 keeps the work directory.
#
# Prints one line per run (requests/s, read and write p50 in µs, writes per
# commit), then the medians of each policy. Linux only (chrt, /proc).
set -euo pipefail

duration=${1:-8}
pairs=${2:-4}
read_fraction=${READ_FRACTION:-0.9}
conns=${CONNS:-32}
keys=${KEYS:-1000}
value_size=${VALUE_SIZE:-100}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/harness.sh
source "$root/scripts/harness.sh"
harness_init spike-writer-sched

spike_bins -p spike-server -p spike-benches --bin spike-server --bin loadgen

read -r nexus_port k1 k2 k3 <<<"$(free_ports 4)"
spike_dev "$work/spike" "$nexus_port" "$k1" "$k2" "$k3"

writer=
for task in /proc/"$dev_pid"/task/*; do
    [[ $(cat "$task/comm") == spike-writer ]] && writer=${task##*/}
done
if [[ -z $writer ]]; then
    echo "no spike-writer thread in the Nexus (is it unsealed?)" >&2
    tail -20 "$work/dev.log" >&2
    exit 1
fi

load=(--url "https://127.0.0.1:$nexus_port" --cert "$su/svid.pem" --key "$su/svid.key"
    --bundle "$su/bundle.pem" --connections "$conns" --keys "$keys" --value-size "$value_size")
# Pre-fill every key, then warm up.
if ! "$bin/loadgen" "${load[@]}" --duration 2s --workload write >/dev/null 2>"$work/prefill.log"; then
    echo "pre-fill failed:" >&2
    tail -5 "$work/prefill.log" >&2
    exit 1
fi

# commits: "COMMITS WRITES" from the Nexus's counters.
commits() {
    curl -sf "${mtls[@]}" "https://127.0.0.1:$nexus_port/metrics" |
        awk '/^spike_store_commits_total /{c=$2} /^spike_store_committed_writes_total /{w=$2} END{print c+0, w+0}'
}

# run POLICY: one measured load with the writer thread under POLICY.
run() {
    chrt "--$1" -p 0 "$writer"
    local before after out
    before=$(commits)
    out=$("$bin/loadgen" "${load[@]}" --duration "${duration}s" --workload mixed \
        --read-fraction "$read_fraction" --no-prefill 2>>"$work/loadgen.log")
    after=$(commits)
    awk -v policy="$1" -v before="$before" -v after="$after" '
        $2 == "read" { rp50 = $7 }
        $2 == "write" { wp50 = $7 }
        /^loadgen / { for (i = 1; i <= NF; i++) if ($i ~ /^rps=/) rps = substr($i, 5) }
        END {
            split(before, b, " "); split(after, a, " ")
            wpc = (a[1] > b[1]) ? (a[2] - b[2]) / (a[1] - b[1]) : 0
            printf "%-6s %10d %12s %12s %10.2f\n", policy, rps, (rp50 == "" ? "-" : rp50), (wp50 == "" ? "-" : wp50), wpc
        }' <<<"$out"
}

printf "%-6s %10s %12s %12s %10s\n" policy "requests/s" "read p50 us" "write p50 us" "writes/commit"
results=()
for i in $(seq 1 "$pairs"); do
    if ((i % 2)); then order=(other batch); else order=(batch other); fi
    for policy in "${order[@]}"; do
        line=$(run "$policy")
        echo "$line"
        results+=("$line")
    done
done

echo "medians over $pairs pairs, ${duration} s each, read fraction $read_fraction:"
printf '%s\n' "${results[@]}" | awk '
    { n[$1]++; rps[$1, n[$1]] = $2; r[$1, n[$1]] = $3; w[$1, n[$1]] = $4; c[$1, n[$1]] = $5 }
    function median(arr, p, k,   i, j, t, v) {
        for (i = 1; i <= k; i++) v[i] = arr[p, i]
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
        return (k % 2) ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
    }
    END {
        for (p in n) {
            rm = (r[p, 1] == "-") ? "-" : sprintf("%.1f", median(r, p, n[p]))
            wm = (w[p, 1] == "-") ? "-" : sprintf("%.1f", median(w, p, n[p]))
            printf "%-6s %10.0f %12s %12s %10.2f\n", p, median(rps, p, n[p]), rm, wm, median(c, p, n[p])
        }
    }' | sort
