//! SPEC §2 roles over the wire: each built-in role, the Nexus and Keeper
//! identities, and plain workloads with and without a policy, on each
//! route, through the `spike` CLI.

use std::os::unix::fs::PermissionsExt as _;

use serde_json::json;

use crate::support::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Ok,
    /// 401 `access_unauthorized`.
    Denied,
    /// 400 `api_bad_request` (restore while unsealed).
    BadRequest,
}
use Want::{BadRequest, Denied, Ok};

/// One identity's expected answers (see the table below).
type Row<'a> = (&'a str, Ident, Want, Want, Vec<&'a str>, Want, Want, Want);

#[track_caller]
fn check(out: Out, want: Want, who: &str) {
    match want {
        Ok => {
            assert_eq!(out.code, 0, "{who}: {out:#?}");
        }
        Denied => {
            assert_eq!(out.code, 1, "{who}: {out:#?}");
            assert!(
                out.stderr.contains("(access_unauthorized)"),
                "{who}: {out:#?}"
            );
        }
        BadRequest => {
            assert_eq!(out.code, 1, "{who}: {out:#?}");
            assert!(out.stderr.contains("(api_bad_request)"), "{who}: {out:#?}");
        }
    }
}

#[test]
fn every_identity_on_every_route() {
    let dev = Dev::start();
    dev.spike_su(&["secret", "put", "app/seed", "k=v"]).ok();
    dev.spike_su(&["secret", "put", "other/seed", "k=v"]).ok();
    dev.spike_su(&[
        "policy",
        "create",
        "--name",
        "granted",
        "--spiffeid-pattern",
        r"spiffe://spike\.ist/workload/granted",
        "--path-pattern",
        "app/.*",
        "--permissions",
        "read,write,list",
    ])
    .ok();

    // A share for the restore route, from the recover role.
    let shares = dev.scratch.join("shares");
    let rec = dev.spike_as(
        &dev.recover(),
        &["operator", "recover", "--out", shares.to_str().unwrap()],
    );
    rec.ok();
    let mut files: Vec<_> = std::fs::read_dir(&shares)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "{files:?}");
    for (i, f) in files.iter().enumerate() {
        let mode = std::fs::metadata(f).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", f.display());
        let text = std::fs::read_to_string(f).unwrap();
        let prefix = format!("spike:{}:", i + 1);
        assert!(text.trim().starts_with(&prefix), "{text}");
        assert_eq!(text.trim().len(), prefix.len() + 64, "{text}");
    }
    let share1 = std::fs::read_to_string(&files[0]).unwrap();

    let keeper = dev.mint("spiffe://spike.ist/spike/keeper");
    let nexus = dev.mint("spiffe://spike.ist/spike/nexus");
    let alice = dev.mint("spiffe://spike.ist/spike/pilot/role/superuser/alice");
    let plain = dev.mint("spiffe://spike.ist/workload/plain");
    let granted = dev.mint("spiffe://spike.ist/workload/granted");

    // who, identity, secret put, secret get, secret list (keys seen),
    // policy create/list, operator recover, operator restore.
    #[rustfmt::skip]
    let table: Vec<Row> = vec![
        ("superuser", dev.superuser(), Ok, Ok, vec!["app/seed", "other/seed"], Ok, Denied, Denied),
        ("superuser/alice", alice, Ok, Ok, vec!["app/seed", "other/seed"], Ok, Denied, Denied),
        ("recover", dev.recover(), Denied, Denied, vec![], Denied, Ok, Denied),
        ("restore", dev.restore(), Denied, Denied, vec![], Denied, Denied, BadRequest),
        ("keeper", keeper, Denied, Denied, vec![], Denied, Denied, Denied),
        ("nexus", nexus, Denied, Denied, vec![], Denied, Denied, Denied),
        ("workload without policy", plain, Denied, Denied, vec![], Denied, Denied, Denied),
        ("workload with policy", granted, Ok, Ok, vec!["app/seed"], Denied, Denied, Denied),
    ];
    for (n, (who, ident, put, get, list, policy, recover, restore)) in table.into_iter().enumerate()
    {
        let me = |args: &[&str]| dev.spike_as(&ident, args);
        check(me(&["secret", "get", "app/seed"]), get, who);
        check(me(&["secret", "put", "app/seed", "k=v"]), put, who);
        check_list(me(&["--format", "json", "secret", "list"]), &list, who);
        let name = format!("p{n}");
        check(
            me(&[
                "policy",
                "create",
                "--name",
                &name,
                "--spiffeid-pattern",
                "spiffe://spike\\.ist/nobody",
                "--path-pattern",
                "nothing",
                "--permissions",
                "read",
            ]),
            policy,
            who,
        );
        check(me(&["policy", "list"]), policy, who);
        let out_dir = dev.scratch.join(format!("recover-{n}"));
        check(
            me(&["operator", "recover", "--out", out_dir.to_str().unwrap()]),
            recover,
            who,
        );
        check(
            spike(dev.nexus, &ident, &["operator", "restore"], Some(&share1)),
            restore,
            who,
        );
    }
    // Nexus is still unsealed and whole after all that.
    let got = dev
        .spike_su(&["--format", "json", "secret", "get", "app/seed"])
        .ok();
    assert_eq!(got.json(), json!({"data": {"k": "v"}}));
}

#[track_caller]
fn check_list(out: Out, keys: &[&str], who: &str) {
    assert_eq!(out.code, 0, "{who}: {out:#?}");
    assert_eq!(out.json(), json!({ "keys": keys }), "{who}");
}
