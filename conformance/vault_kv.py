#!/usr/bin/env python3
"""Vault KV v2 conformance: one scenario, driven by the real clients
(hvac and the `bao` CLI), against a real OpenBao dev server (the reference)
and against spike-rs Nexus, compared step by step.

Each step compares the HTTP status, the Content-Type, and the JSON body's
shape: the same keys, the same JSON types, the same values except those that
legitimately differ (request ids, times, tokens, build and cluster details,
listed in IGNORED). Error strings are compared exactly after removing Go's
multierror wrapper ("1 error occurred:\\n\\t* X\\n\\n" -> "X").

Usage (conformance/run.sh sets everything up):
  vault_kv.py --bao URL --nexus URL --cert PEM --key PEM --ca PEM
              --nopolicy-cert PEM --nopolicy-key PEM [--bao-bin PATH]
              [--spike-bin PATH]
Exit status: 0 when every step matches, 1 otherwise.
"""

import argparse
import http.client
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
from urllib.parse import urlparse

import hvac
import hvac.adapters

# Keys whose values differ between two servers by nature: compared by JSON
# type (and, for times, by being empty or not) only.
IGNORED = {
    "request_id", "created_time", "updated_time", "deletion_time",
    "server_time_utc", "version_string", "cluster_name", "cluster_id",
    "accessor", "uuid", "running_plugin_version", "client_token",
    "commit_date", "storage_type", "t", "n",
    # OpenBao counts metadata writes (metadata_cas); spike-rs does not keep
    # metadata versions and answers 0.
    "current_metadata_version",
}
# `version` is a secret version number in KV answers (compared exactly) but
# the build version in sys answers (ignored).
SYS_IGNORED = IGNORED | {"version"}

# Values compared by JSON type only (not even empty vs non-empty).
TYPE_ONLY = {"commit_date"}

# Steps whose DIFF is a documented, deliberate difference: the reason, and
# the exact differences allowed. A step whose differences are all allowed is
# reported as DEVIATION, not counted as a failure; any other difference in
# it still fails.
KNOWN_DEVIATIONS: dict[str, tuple[str, set[str]]] = {
    "sys/health": (
        "Nexus also sends HashiCorp Vault's `performance_standby` (false), "
        "which vaultrs requires and OpenBao 2.7 dropped",
        {"$.performance_standby extra"},
    ),
}

MULTIERROR = re.compile(r"^\d+ errors? occurred:\n\t\* (.*)\n\n$", re.S)


def norm_error(e):
    m = MULTIERROR.match(e) if isinstance(e, str) else None
    return m.group(1) if m else e


def jtype(v):
    return type(v).__name__ if v is not None else "null"


def diff(a, b, ignored, where="$"):
    """Differences between reference `a` and candidate `b`, as strings."""
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in b:
                out.append(f"{where}.{k} missing")
            elif k not in a:
                out.append(f"{where}.{k} extra")
            elif k in ignored and not isinstance(a[k], (dict, list)):
                if jtype(a[k]) != jtype(b[k]):
                    out.append(f"{where}.{k} type {jtype(a[k])} != {jtype(b[k])}")
                elif k not in TYPE_ONLY and isinstance(a[k], str) and (a[k] == "") != (b[k] == ""):
                    out.append(f"{where}.{k} empty {a[k]!r} vs {b[k]!r}")
            elif k == "errors" and isinstance(a[k], list) and isinstance(b[k], list):
                na = [norm_error(e) for e in a[k]]
                nb = [norm_error(e) for e in b[k]]
                if na != nb:
                    out.append(f"{where}.errors {na!r} != {nb!r}")
            else:
                out += diff(a[k], b[k], ignored, f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where} length {len(a)} != {len(b)}")
        else:
            for i, (x, y) in enumerate(zip(a, b)):
                out += diff(x, y, ignored, f"{where}[{i}]")
    elif a != b or jtype(a) != jtype(b):
        out.append(f"{where} {a!r} != {b!r}")
    return out


class Result:
    """What one client call got: status, content type, body (JSON or text)."""

    def __init__(self, status, ctype, body):
        self.status, self.ctype, self.body = status, ctype, body

    @classmethod
    def of(cls, resp):
        text = resp.text
        try:
            body = json.loads(text) if text.strip() else None
        except ValueError:
            body = text
        return cls(resp.status_code, resp.headers.get("Content-Type"), body)

    def __repr__(self):
        return f"{self.status} {json.dumps(self.body)[:300]}"


def compare(ref, got, ignored=IGNORED):
    problems = []
    if ref.status != got.status:
        problems.append(f"status {ref.status} != {got.status}")
    if ref.ctype != got.ctype:
        problems.append(f"Content-Type {ref.ctype!r} != {got.ctype!r}")
    problems += diff(ref.body, got.body, ignored)
    return problems


def raw_get(base, path, ca=None, cert=None, key=None, token=None):
    """A GET with the path sent as is (no dot-segment removal)."""
    u = urlparse(base)
    if u.scheme == "https":
        ctx = ssl.create_default_context(cafile=ca)
        ctx.load_cert_chain(cert, key)
        conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=10)
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    headers = {"X-Vault-Token": token} if token else {}
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    text = r.read().decode()
    try:
        body = json.loads(text) if text.strip() else None
    except ValueError:
        body = "<html>" if text.lstrip().startswith("<") else text
    return Result(r.status, r.getheader("Content-Type"), body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bao", required=True)
    ap.add_argument("--nexus", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--nopolicy-cert", required=True)
    ap.add_argument("--nopolicy-key", required=True)
    ap.add_argument("--bao-bin", default="bao")
    ap.add_argument("--spike-bin", default="spike")
    a = ap.parse_args()

    def client(url, **kw):
        return hvac.Client(url=url, adapter=hvac.adapters.RawAdapter,
                           ignore_exceptions=True, **kw)

    ref = client(a.bao, token="root")
    # token="": no token at all (hvac would otherwise read VAULT_TOKEN or
    # ~/.vault-token): the client SVID is the credential.
    nex = client(a.nexus, cert=(a.cert, a.key), verify=a.ca, token="")
    # A workload without any policy: a default-policy token / an SVID no
    # policy matches.
    tok = ref.auth.token.create(policies=["default"]).json()["auth"]["client_token"]
    ref_np = client(a.bao, token=tok)
    nex_np = client(a.nexus, cert=(a.nopolicy_cert, a.nopolicy_key), verify=a.ca, token="")

    rows = []

    def step(name, call, ignored=IGNORED, clients=None):
        r, n = clients or (ref, nex)
        got_ref = Result.of(call(r))
        got_nex = Result.of(call(n))
        problems = compare(got_ref, got_nex, ignored)
        rows.append((name, got_ref.status, got_nex.status, problems))
        return got_ref, got_nex

    def kv(c):
        return c.secrets.kv.v2

    def patch(path, body, ctype="application/merge-patch+json"):
        return lambda c: c.adapter.request(
            "PATCH", f"/v1/secret/data/{path}", json=body, headers={"Content-Type": ctype})

    step("sys/health", lambda c: c.sys.read_health_status(method="GET"), SYS_IGNORED)
    step("sys/seal-status", lambda c: c.sys.read_seal_status(), SYS_IGNORED)
    step("ui mounts secret/app/db",
         lambda c: c.adapter.get("/v1/sys/internal/ui/mounts/secret/app/db"))
    step("kv config read", lambda c: c.adapter.get("/v1/secret/config"))
    step("write v1", lambda c: kv(c).create_or_update_secret(
        "app/db", secret={"user": "alice", "pass": "s1", "port": 5432}))
    step("write v2", lambda c: kv(c).create_or_update_secret(
        "app/db", secret={"user": "alice", "pass": "s2", "opts": {"tls": True}}))
    step("read latest", lambda c: kv(c).read_secret_version("app/db", raise_on_deleted_version=True))
    step("read ?version=1", lambda c: kv(c).read_secret_version(
        "app/db", version=1, raise_on_deleted_version=True))
    step("cas mismatch (cas=0)", lambda c: kv(c).create_or_update_secret(
        "app/db", secret={"pass": "x"}, cas=0))
    step("cas mismatch (cas=7)", lambda c: kv(c).create_or_update_secret(
        "app/db", secret={"pass": "x"}, cas=7))
    step("cas success (cas=2)", lambda c: kv(c).create_or_update_secret(
        "app/db", secret={"user": "alice", "pass": "s3"}, cas=2))
    step("cas=0 on a new key", lambda c: kv(c).create_or_update_secret(
        "app/cache", secret={"url": "redis://x"}, cas=0))
    step("patch (merge-patch)", patch("app/db", {"data": {"pass": "s4", "extra": "e"}}))
    step("patch removes a key (null)", patch("app/db", {"data": {"extra": None}}))
    step("patch wrong Content-Type -> 415", patch("app/db", {"data": {"a": "b"}}, "application/json"))
    step("patch cas mismatch", patch("app/db", {"options": {"cas": 1}, "data": {"a": "b"}}))
    step("patch missing key -> 404", patch("app/none", {"data": {"a": "b"}}))
    step("read after patch", lambda c: kv(c).read_secret_version("app/db", raise_on_deleted_version=True))
    step("write without data -> 400", lambda c: c.adapter.post("/v1/secret/data/app/x", json={"nodata": 1}))
    step("metadata update", lambda c: kv(c).update_metadata(
        "app/db", max_versions=5, custom_metadata={"owner": "ops", "tier": "1"}))
    step("metadata read", lambda c: kv(c).read_secret_metadata("app/db"))
    step("metadata patch", lambda c: c.adapter.request(
        "PATCH", "/v1/secret/metadata/app/db",
        json={"custom_metadata": {"tier": None, "team": "db"}},
        headers={"Content-Type": "application/merge-patch+json"}))
    step("metadata read after patch", lambda c: kv(c).read_secret_metadata("app/db"))
    step("read shows custom_metadata", lambda c: kv(c).read_secret_version("app/db", raise_on_deleted_version=True))
    step("subkeys", lambda c: c.adapter.get("/v1/secret/subkeys/app/db"))
    step("cas_required on key", lambda c: kv(c).update_metadata("app/cache", cas_required=True))
    step("write without cas -> 400", lambda c: kv(c).create_or_update_secret(
        "app/cache", secret={"url": "y"}))
    step("cas_required off", lambda c: kv(c).update_metadata("app/cache", cas_required=False))
    step("delete latest", lambda c: kv(c).delete_latest_version_of_secret("app/db"))
    step("read deleted latest -> 404 envelope", lambda c: kv(c).read_secret_version(
        "app/db", raise_on_deleted_version=False))
    step("undelete v5", lambda c: kv(c).undelete_secret_versions("app/db", versions=[5]))
    step("read after undelete", lambda c: kv(c).read_secret_version("app/db", raise_on_deleted_version=True))
    step("delete v2", lambda c: kv(c).delete_secret_versions("app/db", versions=[2]))
    step("read deleted v2 -> 404 envelope", lambda c: kv(c).read_secret_version(
        "app/db", version=2, raise_on_deleted_version=False))
    step("destroy v1", lambda c: kv(c).destroy_secret_versions("app/db", versions=[1]))
    step("read destroyed v1 -> 404 envelope", lambda c: kv(c).read_secret_version(
        "app/db", version=1, raise_on_deleted_version=False))
    step("undelete without versions -> 400", lambda c: c.adapter.post(
        "/v1/secret/undelete/app/db", json={}))
    step("metadata after delete/destroy", lambda c: kv(c).read_secret_metadata("app/db"))
    step("write other/x", lambda c: kv(c).create_or_update_secret("other/x", secret={"k": "v"}))
    step("write app/deep/y", lambda c: kv(c).create_or_update_secret("app/deep/y", secret={"k": "v"}))
    step("list root (LIST)", lambda c: kv(c).list_secrets(""))
    step("list folder app/", lambda c: kv(c).list_secrets("app"))
    step("list GET ?list=true", lambda c: c.adapter.get(
        "/v1/secret/metadata/app/", params={"list": "true"}))
    step("list missing folder -> 404", lambda c: kv(c).list_secrets("nope"))
    step("LIST on data/ -> 405", lambda c: c.adapter.list("/v1/secret/data/app/"))
    step("DELETE on subkeys/ -> 405", lambda c: c.adapter.delete("/v1/secret/subkeys/app/db"))
    step("read missing key -> 404", lambda c: kv(c).read_secret_version("nope/x", raise_on_deleted_version=True))
    step("read missing version -> 404", lambda c: kv(c).read_secret_version(
        "app/db", version=99, raise_on_deleted_version=True))
    step("metadata missing -> 404", lambda c: kv(c).read_secret_metadata("nope/x"))
    step("delete missing -> 204", lambda c: kv(c).delete_latest_version_of_secret("nope/x"))
    step("unknown KV path -> 404 + warning", lambda c: c.adapter.get("/v1/secret/nothing/x"))
    step("metadata delete", lambda c: kv(c).delete_metadata_and_all_versions("app/cache"))
    step("read after metadata delete -> 404", lambda c: kv(c).read_secret_version(
        "app/cache", raise_on_deleted_version=True))
    step("'..' path via hvac (client normalises)", lambda c: kv(c).read_secret_version(
        "app/deep/../db", raise_on_deleted_version=True))
    step("no policy: read -> 403", lambda c: kv(c).read_secret_version(
        "app/db", raise_on_deleted_version=True), clients=(ref_np, nex_np))
    step("no policy: write -> 403", lambda c: kv(c).create_or_update_secret(
        "app/db", secret={"a": "b"}), clients=(ref_np, nex_np))
    step("no policy: list -> 403", lambda c: kv(c).list_secrets(""), clients=(ref_np, nex_np))

    # ---- the bao CLI against both (Nexus: no token, the client SVID) ------
    home = tempfile.mkdtemp(prefix="bao-home-")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    base_env["HOME"] = home
    ref_env = dict(base_env, VAULT_ADDR=a.bao, VAULT_TOKEN="root")
    nex_env = dict(base_env, VAULT_ADDR=a.nexus, VAULT_CACERT=a.ca,
                   VAULT_CLIENT_CERT=a.cert, VAULT_CLIENT_KEY=a.key)

    def bao(env, *args):
        p = subprocess.run([a.bao_bin, *args], env=env, capture_output=True, text=True, timeout=60)
        out = p.stdout.strip()
        try:
            body = json.loads(out) if out else None
        except ValueError:
            body = out
        return p.returncode, body, p.stderr.strip()

    def cli(name, *args, ignored=IGNORED):
        rc_r, out_r, err_r = bao(ref_env, *args)
        rc_n, out_n, err_n = bao(nex_env, *args)
        problems = [] if rc_r == rc_n else [f"exit {rc_r} != {rc_n}: {err_n[:200]}"]
        problems += diff(out_r, out_n, ignored)
        rows.append(("bao " + name, f"rc={rc_r}", f"rc={rc_n}", problems))

    cli("kv put", "kv", "put", "-format=json", "secret/cli/s", "a=1", "b=2")
    cli("kv put (v2)", "kv", "put", "-format=json", "secret/cli/s", "a=3")
    cli("kv get", "kv", "get", "-format=json", "secret/cli/s")
    cli("kv get -version=1", "kv", "get", "-format=json", "-version=1", "secret/cli/s")
    cli("kv patch", "kv", "patch", "-format=json", "secret/cli/s", "c=4")
    cli("kv list", "kv", "list", "-format=json", "secret/")
    cli("kv list cli/", "kv", "list", "-format=json", "secret/cli")
    cli("kv metadata put", "kv", "metadata", "put", "-custom-metadata=o=p", "secret/cli/s")
    cli("kv metadata get", "kv", "metadata", "get", "-format=json", "secret/cli/s")
    cli("kv delete", "kv", "delete", "secret/cli/s")
    cli("kv get (deleted)", "kv", "get", "-format=json", "secret/cli/s")
    cli("kv undelete", "kv", "undelete", "-versions=3", "secret/cli/s")
    cli("kv destroy", "kv", "destroy", "-versions=1", "secret/cli/s")
    cli("kv get -version=1 (destroyed)", "kv", "get", "-format=json", "-version=1", "secret/cli/s")
    cli("kv metadata delete", "kv", "metadata", "delete", "secret/cli/s")
    cli("kv get (missing)", "kv", "get", "-format=json", "secret/cli/s")

    # ---- Nexus only: what OpenBao dev has no counterpart for ---------------
    def check(name, ok, detail=""):
        rows.append((name, "-", "ok" if ok else "FAIL", [] if ok else [detail or "failed"]))

    # A path with a '..' segment sent as is: OpenBao (Go's ServeMux)
    # redirects 307 to the cleaned path; SPEC §7.2 refuses it with 400.
    dot = raw_get(a.nexus, "/v1/secret/data/app/deep/../db", a.ca, a.cert, a.key)
    check("raw '..' segment -> 400 (SPEC §7.2)", dot.status == 400 and
          dot.ctype == "application/json" and isinstance(dot.body, dict) and "errors" in dot.body, repr(dot))
    dot = raw_get(a.nexus, "/v1/secret/data/app/./db", a.ca, a.cert, a.key)
    check("raw '.' segment -> 400 (SPEC §7.2)", dot.status == 400, repr(dot))

    login = nex.adapter.post("/v1/auth/cert/login", json={})
    token = login.json().get("auth", {}).get("client_token", "") if login.status_code == 200 else ""
    check("auth/cert/login issues a token", login.status_code == 200 and token.startswith("hvs."), login.text[:200])
    # The token is the credential: honoured on a connection whose SVID has no policy.
    by_token = client(a.nexus, cert=(a.nopolicy_cert, a.nopolicy_key), verify=a.ca, token=token)
    r = kv(by_token).read_secret_version("app/db", raise_on_deleted_version=True)
    check("token honoured as its SPIFFE ID", r.status_code == 200, r.text[:200])
    # An unknown or expired token (a stale ~/.vault-token) falls back to
    # the verified SVID of the connection.
    bad = client(a.nexus, cert=(a.nopolicy_cert, a.nopolicy_key), verify=a.ca, token="hvs.bogus")
    r = kv(bad).read_secret_version("app/db", raise_on_deleted_version=True)
    check("unknown token -> the SVID (no policy: 403)", r.status_code == 403 and
          r.json() == {"errors": ["permission denied"]}, r.text[:200])
    bad = client(a.nexus, cert=(a.cert, a.key), verify=a.ca, token="hvs.bogus")
    r = kv(bad).read_secret_version("app/db", raise_on_deleted_version=True)
    check("unknown token -> the SVID (superuser: 200)", r.status_code == 200, r.text[:200])
    r = nex.adapter.get("/v1/sys/mounts")
    check("sys/mounts lists secret/ as kv v2", r.status_code == 200 and
          r.json()["data"]["secret/"]["options"] == {"version": "2"}, r.text[:200])

    # Same store as the SPIKE v1 API, both ways (string values).
    spike_env = dict(os.environ, SPIKE_PILOT_CERT=a.cert, SPIKE_PILOT_KEY=a.key,
                     SPIKE_PILOT_CA=a.ca, SPIKE_NEXUS_API_URL=a.nexus)
    p = subprocess.run([a.spike_bin, "--format", "json", "secret", "get", "other/x"],
                       env=spike_env, capture_output=True, text=True, timeout=60)
    check("written via Vault API, read via SPIKE v1", p.returncode == 0 and '"v"' in p.stdout,
          p.stdout + p.stderr)
    p = subprocess.run([a.spike_bin, "secret", "put", "spike/made", "k=from-spike"],
                       env=spike_env, capture_output=True, text=True, timeout=60)
    r = kv(nex).read_secret_version("spike/made", raise_on_deleted_version=True)
    check("written via SPIKE v1, read via Vault API", p.returncode == 0 and r.status_code == 200
          and r.json()["data"]["data"] == {"k": "from-spike"}, p.stderr + r.text[:200])

    # ---- the table ---------------------------------------------------------
    width = max(len(r[0]) for r in rows)
    print(f"{'step':<{width}}  {'openbao':>7}  {'nexus':>7}  result")
    failed = deviations = 0
    for name, s_ref, s_nex, problems in rows:
        verdict = "MATCH" if not problems else "DIFF"
        if s_ref == "-":
            verdict = "OK" if not problems else "FAIL"
        reason, allowed = KNOWN_DEVIATIONS.get(name, ("", set()))
        if problems and set(problems) <= allowed:
            verdict = "DEVIATION"
            problems = [f"known: {reason}"] + problems
            deviations += 1
        else:
            failed += bool(problems)
        print(f"{name:<{width}}  {s_ref!s:>7}  {s_nex!s:>7}  {verdict}")
        for p in problems:
            print(f"{'':<{width}}      - {p}")
    print(f"\n{len(rows) - failed - deviations}/{len(rows)} steps match, "
          f"{deviations} known deviation(s), {failed} DIFF/FAIL")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
