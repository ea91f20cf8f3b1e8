//! A workload with a minted SVID gets only what policies grant: default
//! deny, then allowed once the superuser writes a policy, list filtered,
//! patterns anchored, denied again after the policy is deleted.

use serde_json::json;

use crate::support::*;

#[test]
fn policies_grant_and_deny_a_minted_workload() {
    let dev = Dev::start();
    let app = dev.mint("spiffe://spike.ist/app");
    // Matches `spiffe://spike\.ist/app` only as a substring: anchored
    // patterns must not grant it anything.
    let app2 = dev.mint("spiffe://spike.ist/app2");
    for (path, v) in [("app/one", "1"), ("app/two", "2"), ("other/x", "3")] {
        dev.spike_su(&["secret", "put", path, &format!("k={v}")])
            .ok();
    }

    // Default deny.
    let denied = dev.spike_as(&app, &["secret", "get", "app/one"]);
    denied.err("access_unauthorized");
    dev.spike_as(&app, &["secret", "put", "app/one", "k=x"])
        .err("access_unauthorized");
    let list = dev.spike_as(&app, &["--format", "json", "secret", "list"]);
    assert_eq!(list.ok().json(), json!({"keys": []}));
    dev.spike_as(&app, &["policy", "list"])
        .err("access_unauthorized");

    dev.spike_su(&[
        "policy",
        "create",
        "--name",
        "app-read",
        "--spiffeid-pattern",
        r"spiffe://spike\.ist/app",
        "--path-pattern",
        "app/.*",
        "--permissions",
        "read,list",
    ])
    .ok();

    let got = dev.spike_as(&app, &["--format", "json", "secret", "get", "app/one"]);
    assert_eq!(got.ok().json(), json!({"data": {"k": "1"}}));
    dev.spike_as(&app, &["secret", "get", "other/x"])
        .err("access_unauthorized");
    // Read and list, not write.
    dev.spike_as(&app, &["secret", "put", "app/one", "k=x"])
        .err("access_unauthorized");
    let list = dev.spike_as(&app, &["--format", "json", "secret", "list"]);
    assert_eq!(list.ok().json(), json!({"keys": ["app/one", "app/two"]}));
    let meta = dev.spike_as(
        &app,
        &["--format", "json", "secret", "metadata", "get", "app/two"],
    );
    assert_eq!(meta.ok().json()["metadata"]["currentVersion"], 1);
    // No policy administration for a workload with read/list on app/.*.
    dev.spike_as(&app, &["policy", "list"])
        .err("access_unauthorized");

    // Whole-ID match: `.../app2` is not `.../app`.
    dev.spike_as(&app2, &["secret", "get", "app/one"])
        .err("access_unauthorized");
    let list = dev.spike_as(&app2, &["--format", "json", "secret", "list"]);
    assert_eq!(list.ok().json(), json!({"keys": []}));

    // A write grant on a narrower path.
    dev.spike_su(&[
        "policy",
        "create",
        "--name",
        "app-write-two",
        "--spiffeid-pattern",
        r"spiffe://spike\.ist/app",
        "--path-pattern",
        "app/two",
        "--permissions",
        "write",
    ])
    .ok();
    dev.spike_as(&app, &["secret", "put", "app/two", "k=22"])
        .ok();
    dev.spike_as(&app, &["secret", "put", "app/one", "k=11"])
        .err("access_unauthorized");
    let two = dev.spike_su(&["--format", "json", "secret", "get", "app/two"]);
    assert_eq!(two.ok().json(), json!({"data": {"k": "22"}}));

    // Revoked: denied again, at once.
    dev.spike_su(&["policy", "delete", "app-read"]).ok();
    dev.spike_as(&app, &["secret", "get", "app/one"])
        .err("access_unauthorized");
    let list = dev.spike_as(&app, &["--format", "json", "secret", "list"]);
    assert_eq!(list.ok().json(), json!({"keys": []}));
}
