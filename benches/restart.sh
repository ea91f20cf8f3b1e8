#!/usr/bin/env bash
# SPEC §11: "Nexus restart to unsealed via Keepers: <= 1 s once Keepers
# answer", measured on the release binaries.
#
# Usage: benches/restart.sh [RESTARTS] [SECRETS]   (defaults 10, 1000)
#
# Starts `spike-server dev` (Nexus + three Keepers) in a temporary data
# directory, writes SECRETS secrets over keep-alive mTLS (`loadgen`'s
# pre-fill, 32 connections), waits until every Keeper holds its share,
# removes the dev-only recovery shares (DATA_DIR/recovery) so that only the
# Keepers can unseal, then RESTARTS times: SIGKILL to the Nexus alone (dev
# at first), the Keepers live on; start `spike-server nexus` (the production
# command, with the SVID dev wrote for it: dev would add its own start-up,
# ~50 ms here of minting five SVIDs into fsync'd files); time from the spawn
# to
#   - store:      Nexus's "store opened" log line (which also gives the
#                 log frames the open replayed),
#   - listening:  Nexus's "Nexus listening" log line,
#   - unsealed:   Nexus's "unsealed with shares from Keepers" log line (and
#                 the record load time it logs, "records loaded elapsed_ms"),
#   - first read: the first successful authenticated read of a secret
#                 (curl with the superuser SVID, polled back to back once
#                 the log says unsealed: polling earlier would take CPU
#                 from the load it measures).
# The restarted Nexus must unseal from the Keepers (it fails otherwise).
#
# Env: SPIKE_BIN_DIR skips the cargo build and takes spike-server and
# loadgen from there; KEEP_WORK=1 keeps the work directory;
# KILL_UNDER_LOAD=S kills Nexus S seconds into a write load (loadgen,
# 32 connections over the same secrets) instead of at rest, so that the
# restart also replays the write-ahead log's frames not yet checkpointed
# into redb (up to both log files' worth).
#
# The last line is exactly
# `restart_to_unsealed_ms p50=.. max=.. first_read_ms p50=.. max=.. secrets=N restarts=R`
# (nearest-rank p50; "unsealed" from Nexus's log).
set -euo pipefail

restarts=${1:-10}
secrets=${2:-1000}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/harness.sh
source "$root/scripts/harness.sh"
harness_init spike-restart

data=$work/spike

# On exit: also the Keepers, which outlive a SIGKILLed dev (their pid files;
# only a process whose command line names this data directory).
restart_cleanup() {
    local f pid
    for f in "$data"/run/keeper-*.pid; do
        [[ -f $f ]] || continue
        pid=$(<"$f")
        if grep -qF "$data" "/proc/$pid/cmdline" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    harness_cleanup
}
trap restart_cleanup EXIT INT TERM

spike_bins -p spike-server -p spike-benches --bin spike-server --bin loadgen

read -r nexus_port k1 k2 k3 <<<"$(free_ports 4)"
keepers=(127.0.0.1:"$k1" 127.0.0.1:"$k2" 127.0.0.1:"$k3")
su=$data/pilot/superuser
mtls=(--cacert "$su/bundle.pem" --cert "$su/svid.pem" --key "$su/svid.key")
url=https://127.0.0.1:$nexus_port

now_ns() { date +%s%N; }

# start_dev LOG: starts dev in the background; sets server_pid.
start_dev() {
    "$bin/spike-server" dev --data-dir "$data" \
        --nexus-addr "127.0.0.1:$nexus_port" \
        --keeper-addrs "$(
            IFS=,
            echo "${keepers[*]}"
        )" \
        --keeper-update-interval 1s >"$1" 2>&1 &
    server_pid=$!
    pids=("$server_pid")
}

# start_nexus LOG: starts Nexus alone, as dev configured it, in the
# background; sets server_pid (the process the harness restarts).
start_nexus() {
    local peers
    peers=$(printf 'https://%s,' "${keepers[@]}")
    "$bin/spike-server" nexus --addr "127.0.0.1:$nexus_port" \
        --data-dir "$data/nexus" --keeper-peers "${peers%,}" \
        --keeper-update-interval 1s --audit-log "$data/audit.log" \
        --cert "$data/nexus/svid.pem" --key "$data/nexus/svid.key" \
        --bundle "$data/nexus/bundle.pem" >"$1" 2>&1 &
    server_pid=$!
    pids=("$server_pid")
}

# wait_read LOG DEADLINE_S: polls a read of a secret until it succeeds.
wait_read() {
    local until=$(($(now_ns) + $2 * 1000000000))
    until curl -sf --max-time 5 "${mtls[@]}" -o /dev/null "$url/v1/secret/data/restart/k0" 2>/dev/null; do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "the server exited:" >&2
            tail -30 "$1" >&2
            exit 1
        fi
        if (($(now_ns) > until)); then
            echo "no successful read within $2 s:" >&2
            tail -30 "$1" >&2
            exit 1
        fi
    done
}

# wait_log LOG PATTERN DEADLINE_S: waits (on inotify, through `tail -F`)
# until a line of LOG contains PATTERN; fails after DEADLINE_S seconds or
# if the server exits first.
wait_log() {
    local fd tail_pid line found=1
    exec {fd}< <(exec timeout "$3" tail -n +1 -F --pid="$server_pid" "$1" 2>/dev/null)
    tail_pid=$!
    while IFS= read -r line <&"$fd"; do
        if [[ $line == *"$2"* ]]; then
            found=0
            break
        fi
    done
    kill "$tail_pid" 2>/dev/null || true
    exec {fd}<&-
    return "$found"
}

# log_ms LOG PATTERN T0_NS: ms from T0 to the timestamp of the first line of
# LOG matching PATTERN ("-" if none).
log_ms() {
    local ts
    ts=$(grep -m1 -F "$2" "$1" | sed 's/\x1b\[[0-9;]*m//g' | awk '{print $1}') || true
    if [[ -z $ts ]]; then
        echo -
        return
    fi
    awk -v a="$(date -d "$ts" +%s%N)" -v b="$3" 'BEGIN { printf "%.1f", (a - b) / 1e6 }'
}

# log_field LOG PATTERN FIELD: the number FIELD=N on the first line of LOG
# that contains PATTERN (empty if none).
log_field() {
    sed 's/\x1b\[[0-9;]*m//g' "$1" |
        sed -n "s/.*$2.*$3=\([0-9]*\).*/\1/p" | head -n 1
}

# p50/max (nearest rank) of the numbers on stdin.
stats() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "p50=- max=-"; exit }
        r = int((NR + 1) / 2); printf "p50=%s max=%s", v[r], v[NR] }'
}

# First start: initialise, then fill.
start_dev "$work/dev-0.log"
wait_read_first() {
    local i
    for i in $(seq 1 300); do
        if [[ -f $su/svid.key ]] && curl -sf --max-time 5 "${mtls[@]}" -o /dev/null \
            "$url/v1/sys/health" 2>/dev/null; then
            return
        fi
        sleep 0.1
    done
    echo "dev did not come up" >&2
    tail -30 "$work/dev-0.log" >&2
    exit 1
}
wait_read_first
"$bin/loadgen" --url "$url" --cert "$su/svid.pem" --key "$su/svid.key" \
    --bundle "$su/bundle.pem" --keys "$secrets" --prefix restart --value-size 100 \
    --connections 32 --workload read --duration 200ms --label fill | tail -n 1
wait_read "$work/dev-0.log" 10

# Every Keeper holds its share (their /readyz, as the superuser).
for k in "${keepers[@]}"; do
    for i in $(seq 1 300); do
        if curl -sf --max-time 5 "${mtls[@]}" "https://$k/readyz" 2>/dev/null |
            grep -qF '"hasShard":true'; then
            break
        fi
        if ((i == 300)); then
            echo "Keeper $k holds no share" >&2
            exit 1
        fi
        sleep 0.1
    done
done
rm -rf "$data/recovery"

echo "restarts=$restarts secrets=$secrets ($(nproc) cores shared)"
printf '%-4s %9s %8s %13s %9s %12s %14s\n' run store_ms replayed listening_ms load_ms unsealed_ms first_read_ms
unsealed=()
reads=()
for r in $(seq 1 "$restarts"); do
    load_pid=
    if [[ -n ${KILL_UNDER_LOAD:-} ]]; then
        # Its connections fail at the kill: its exit status means nothing.
        "$bin/loadgen" --url "$url" --cert "$su/svid.pem" --key "$su/svid.key" \
            --bundle "$su/bundle.pem" --keys "$secrets" --prefix restart --value-size 100 \
            --connections 32 --workload write --no-prefill \
            --duration "$((KILL_UNDER_LOAD + 5))s" --label load >"$work/load-$r.log" 2>&1 &
        load_pid=$!
        sleep "$KILL_UNDER_LOAD"
    fi
    kill -KILL "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    if [[ -n $load_pid ]]; then
        kill "$load_pid" 2>/dev/null || true
        wait "$load_pid" 2>/dev/null || true
    fi
    log=$work/nexus-$r.log
    t0=$(now_ns)
    start_nexus "$log"
    # Waiting on the log costs nothing; polling reads meanwhile would not:
    # each attempt is a curl process and a TLS handshake, a large share of
    # the two cores that the record load needs.
    if ! wait_log "$log" 'unsealed with shares from Keepers' 60; then
        echo "run $r: not unsealed from the Keepers:" >&2
        tail -30 "$log" >&2
        exit 1
    fi
    wait_read "$log" 10
    t1=$(now_ns)
    read_ms=$(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.1f", (a - b) / 1e6 }')
    store_ms=$(log_ms "$log" 'store opened' "$t0")
    replayed=$(log_field "$log" 'store opened' replayed_frames)
    listen_ms=$(log_ms "$log" 'Nexus listening' "$t0")
    unseal_ms=$(log_ms "$log" 'unsealed with shares from Keepers' "$t0")
    load_ms=$(log_field "$log" 'records loaded' elapsed_ms)
    printf '%-4s %9s %8s %13s %9s %12s %14s\n' "$r" "$store_ms" "${replayed:--}" "$listen_ms" \
        "${load_ms:--}" "$unseal_ms" "$read_ms"
    unsealed+=("$unseal_ms")
    reads+=("$read_ms")
done

echo "restart_to_unsealed_ms $(printf '%s\n' "${unsealed[@]}" | grep -v '^-$' | stats)" \
    "first_read_ms $(printf '%s\n' "${reads[@]}" | stats) secrets=$secrets restarts=$restarts"
