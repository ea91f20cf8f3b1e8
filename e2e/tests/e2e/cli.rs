//! The `spike` CLI against `spike-server dev`: secrets and policies,
//! outputs (human and `--format json`) and exit codes.

use serde_json::json;

use crate::support::*;

#[test]
fn secret_lifecycle_through_the_cli() {
    let dev = Dev::start();

    let put = dev.spike_su(&["secret", "put", "db/creds", "user=app", "pass=hunter2"]);
    assert!(put.ok().stdout.contains("db/creds"));
    // A value from stdin (`KEY=-`): one trailing newline dropped.
    let out = spike(
        dev.nexus,
        &dev.superuser(),
        &["secret", "put", "db/creds", "pass=-"],
        Some("from-stdin\n"),
    );
    out.ok();

    let human = dev.spike_su(&["secret", "get", "db/creds"]).ok();
    assert_eq!(human.stdout.trim(), "pass: from-stdin");
    let v2 = dev
        .spike_su(&["--format", "json", "secret", "get", "db/creds"])
        .ok();
    assert_eq!(v2.json(), json!({"data": {"pass": "from-stdin"}}));
    let v1 = dev
        .spike_su(&[
            "secret",
            "get",
            "db/creds",
            "--version",
            "1",
            "--format",
            "json",
        ])
        .ok();
    assert_eq!(
        v1.json(),
        json!({"data": {"user": "app", "pass": "hunter2"}})
    );
    let raw = dev
        .spike_su(&[
            "secret",
            "get",
            "db/creds",
            "--version",
            "1",
            "--key",
            "user",
        ])
        .ok();
    assert_eq!(raw.stdout.trim_end(), "app");

    dev.spike_su(&["secret", "put", "db/other", "k=v"]).ok();
    dev.spike_su(&["secret", "put", "web/tls", "k=v"]).ok();
    let list = dev.spike_su(&["--format", "json", "secret", "list"]).ok();
    assert_eq!(
        list.json(),
        json!({"keys": ["db/creds", "db/other", "web/tls"]})
    );
    let human = dev.spike_su(&["secret", "list"]).ok();
    assert_eq!(
        human.stdout.lines().collect::<Vec<_>>(),
        ["db/creds", "db/other", "web/tls"]
    );

    let meta = dev
        .spike_su(&["--format", "json", "secret", "metadata", "get", "db/creds"])
        .ok()
        .json();
    assert_eq!(meta["metadata"]["currentVersion"], 2);
    assert_eq!(meta["metadata"]["oldestVersion"], 1);
    assert_eq!(meta["metadata"]["maxVersions"], 10);
    assert_eq!(meta["versions"]["2"]["version"], 2);
    assert!(meta["versions"]["2"]["deletedTime"].is_null());

    // Soft delete of the current version, then undelete.
    dev.spike_su(&["secret", "delete", "db/creds"]).ok();
    dev.spike_su(&["secret", "get", "db/creds"])
        .err("api_not_found");
    let meta = dev
        .spike_su(&["--format", "json", "secret", "metadata", "get", "db/creds"])
        .ok()
        .json();
    assert!(meta["versions"]["2"]["deletedTime"].is_string(), "{meta}");
    // Older versions stay readable.
    dev.spike_su(&["secret", "get", "db/creds", "--version", "1"])
        .ok();
    dev.spike_su(&["secret", "undelete", "db/creds", "--versions", "2"])
        .ok();
    let back = dev
        .spike_su(&["--format", "json", "secret", "get", "db/creds"])
        .ok();
    assert_eq!(back.json(), json!({"data": {"pass": "from-stdin"}}));

    // Destroy wipes version 1 for good; version 2 stays.
    dev.spike_su(&["secret", "destroy", "db/creds", "--versions", "1"])
        .ok();
    dev.spike_su(&["secret", "get", "db/creds", "--version", "1"])
        .err("api_not_found");
    dev.spike_su(&["secret", "undelete", "db/creds", "--versions", "1"])
        .ok();
    dev.spike_su(&["secret", "get", "db/creds", "--version", "1"])
        .err("api_not_found");
    dev.spike_su(&["secret", "get", "db/creds"]).ok();

    // Missing secrets, bad input, usage errors.
    dev.spike_su(&["secret", "get", "nope"])
        .err("api_not_found");
    dev.spike_su(&["secret", "metadata", "get", "nope"])
        .err("api_not_found");
    dev.spike_su(&["secret", "put", "a/../b", "k=v"])
        .err("api_bad_request");
    let usage = dev.spike_su(&["secret", "put", "only/a/path"]);
    assert_eq!(usage.code, 2, "{usage:#?}");
    let usage = dev.spike_su(&["secret", "frobnicate"]);
    assert_eq!(usage.code, 2, "{usage:#?}");
    dev.spike_su(&["--format", "yaml", "secret", "get", "web/tls"])
        .ok();
}

#[test]
fn policies_through_the_cli() {
    let dev = Dev::start();

    let created = dev.spike_su(&[
        "policy",
        "create",
        "--name",
        "readers",
        "--spiffeid-pattern",
        r"spiffe://spike\.ist/workload/.*",
        "--path-pattern",
        "app/.*",
        "--permissions",
        "read,list",
    ]);
    assert!(created.ok().stdout.contains("readers"));

    let yaml = dev.scratch.join("writers.yaml");
    std::fs::write(
        &yaml,
        "name: writers\n\
         spiffeidPattern: 'spiffe://spike\\.ist/ci'\n\
         pathPattern: 'ci/.*'\n\
         permissions: [read, write]\n",
    )
    .unwrap();
    dev.spike_su(&["policy", "apply", "-f", yaml.to_str().unwrap()])
        .ok();

    let list = dev.spike_su(&["--format", "json", "policy", "list"]).ok();
    let mut names: Vec<String> = list.json()["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["readers", "writers"]);
    let filtered = dev
        .spike_su(&[
            "--format",
            "json",
            "policy",
            "list",
            "--path-pattern",
            "ci/.*",
        ])
        .ok();
    assert_eq!(
        filtered.json(),
        json!({"policies": [{"id": "writers", "name": "writers"}]})
    );
    let human = dev.spike_su(&["policy", "list"]).ok();
    assert!(human.stdout.contains("readers") && human.stdout.contains("writers"));

    let got = dev
        .spike_su(&["--format", "json", "policy", "get", "writers"])
        .ok()
        .json();
    assert_eq!(got["name"], "writers");
    assert_eq!(got["spiffeidPattern"], r"spiffe://spike\.ist/ci");
    assert_eq!(got["pathPattern"], "ci/.*");
    assert_eq!(got["permissions"], json!(["read", "write"]));
    assert_eq!(
        got["createdBy"],
        "spiffe://spike.ist/spike/pilot/role/superuser"
    );

    // Apply again = replace.
    std::fs::write(
        &yaml,
        "name: writers\nspiffeidPattern: 'spiffe://spike\\.ist/ci'\npathPattern: 'ci/.*'\npermissions: [write]\n",
    )
    .unwrap();
    dev.spike_su(&["policy", "apply", "-f", yaml.to_str().unwrap()])
        .ok();
    let got = dev
        .spike_su(&["--format", "json", "policy", "get", "writers"])
        .ok()
        .json();
    assert_eq!(got["permissions"], json!(["write"]));

    // Bad input: an invalid regex or permission changes nothing.
    dev.spike_su(&[
        "policy",
        "create",
        "--name",
        "bad",
        "--spiffeid-pattern",
        "(",
        "--path-pattern",
        "x",
        "--permissions",
        "read",
    ])
    .err("api_bad_request");
    let usage = dev.spike_su(&[
        "policy",
        "create",
        "--name",
        "bad",
        "--spiffeid-pattern",
        "x",
        "--path-pattern",
        "x",
        "--permissions",
        "fly",
    ]);
    assert_eq!(usage.code, 2, "{usage:#?}");
    dev.spike_su(&["policy", "get", "bad"]).err("api_not_found");

    dev.spike_su(&["policy", "delete", "readers"]).ok();
    dev.spike_su(&["policy", "get", "readers"])
        .err("api_not_found");
    dev.spike_su(&["policy", "delete", "readers"])
        .err("api_not_found");
    let list = dev.spike_su(&["--format", "json", "policy", "list"]).ok();
    assert_eq!(
        list.json(),
        json!({"policies": [{"id": "writers", "name": "writers"}]})
    );
}
