//! Kill tests: Nexus restarts and unseals from its Keepers (even with one
//! Keeper lost), and a store whose Keepers are all gone comes back through
//! `spike operator recover` / `restore`.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

const UNSEALED_FROM_KEEPERS: &str = "unsealed from the Keepers";
const UNSEALED_FROM_DISK: &str = "unsealed from the dev-only recovery shares";

#[track_caller]
fn assert_secret(dev: &Dev, path: &str, want: serde_json::Value) {
    let got = dev
        .spike_su(&["--format", "json", "secret", "get", path])
        .ok();
    assert_eq!(got.json(), json!({ "data": want }));
}

#[test]
fn sigkilled_nexus_unseals_from_its_keepers_even_with_one_keeper_lost() {
    let mut dev = Dev::start();
    dev.spike_su(&["secret", "put", "db/creds", "pass=one"])
        .ok();
    dev.spike_su(&["secret", "put", "db/creds", "pass=two"])
        .ok();
    // Without the dev-only recovery shares, only the Keepers can unseal.
    std::fs::remove_dir_all(dev.data.join("recovery")).unwrap();

    // (a) SIGKILL to dev alone: the Keepers live on, holding their shares.
    wait_keepers_hold_shares(&dev);
    let keepers = dev.keeper_pids();
    assert_eq!(keepers.len(), 3);
    dev.kill_dev();
    std::thread::sleep(Duration::from_millis(200));
    for &pid in &keepers {
        assert!(alive(pid), "Keeper {pid} died with dev");
    }
    dev.spawn();
    dev.wait_ready();
    let log = dev.log();
    assert!(log.contains(UNSEALED_FROM_KEEPERS), "{log}");
    assert!(!log.contains(UNSEALED_FROM_DISK), "{log}");
    assert!(!dev.data.join("recovery").exists());
    assert_secret(&dev, "db/creds", json!({"pass": "two"}));
    let v1 = dev
        .spike_su(&[
            "--format",
            "json",
            "secret",
            "get",
            "db/creds",
            "--version",
            "1",
        ])
        .ok();
    assert_eq!(v1.json(), json!({"data": {"pass": "one"}}));
    // The same Keeper processes were adopted, not replaced.
    assert_eq!(dev.keeper_pids(), keepers);
    dev.spike_su(&["secret", "put", "db/more", "k=v"]).ok();

    // (b) SIGKILL to Keeper 1 and dev: two of three Keepers still meet
    // the threshold.
    dev.kill_keeper(keepers[0]);
    dev.kill_dev();
    dev.spawn();
    dev.wait_ready();
    let log = dev.log();
    assert!(log.contains(UNSEALED_FROM_KEEPERS), "{log}");
    assert_secret(&dev, "db/creds", json!({"pass": "two"}));
    assert_secret(&dev, "db/more", json!({"k": "v"}));
    let now = dev.keeper_pids();
    assert_ne!(now[0], keepers[0], "Keeper 1 was not restarted");
    assert_eq!(now[1..], keepers[1..]);

    // The new Keeper 1 gets its share back (periodic push, 1 s here): then
    // Keepers 1 and 3 suffice without Keeper 2.
    wait_keepers_hold_shares(&dev);
    dev.kill_keeper(keepers[1]);
    dev.kill_dev();
    dev.spawn();
    dev.wait_ready();
    assert!(dev.log().contains(UNSEALED_FROM_KEEPERS), "{}", dev.log());
    assert_secret(&dev, "db/more", json!({"k": "v"}));
}

/// Share file text with one hex digit of the value changed.
fn corrupt(share: &str) -> String {
    let share = share.trim();
    let (head, last) = share.split_at(share.len() - 1);
    let flipped = if last == "0" { "1" } else { "0" };
    format!("{head}{flipped}\n")
}

#[test]
fn recover_then_restore_after_every_process_and_the_disk_shares_are_gone() {
    let mut dev = Dev::start();
    dev.spike_su(&["secret", "put", "db/creds", "pass=kept"])
        .ok();

    // Recover: the recover role fetches every share.
    let shares_dir = dev.scratch.join("shares");
    let out = dev.spike_as(
        &dev.recover(),
        &["operator", "recover", "--out", shares_dir.to_str().unwrap()],
    );
    out.ok();
    let share = |i: u8| {
        std::fs::read_to_string(shares_dir.join(format!("spike.recovery.{i}.txt"))).unwrap()
    };

    // Everything gone: dev, all Keepers, the dev-only recovery shares.
    dev.kill_all();
    std::fs::remove_dir_all(dev.data.join("recovery")).unwrap();
    dev.spawn();

    // Fresh Keepers hold nothing.
    for &addr in &dev.keepers {
        let held = wait_for("a fresh Keeper to answer", READY_DEADLINE, || {
            keeper_has_shard(addr, &dev.superuser())
        });
        assert!(!held, "a fresh Keeper holds a share");
    }

    // Sealed: data routes answer state_not_ready (503), exit 1.
    let sealed = wait_for("Nexus to answer, sealed", READY_DEADLINE, || {
        dev.assert_running();
        let out = dev.spike_su(&["secret", "get", "db/creds"]);
        (out.code == 1 && out.stderr.contains("(state_not_ready)")).then_some(out)
    });
    assert!(sealed.stdout.is_empty());
    dev.spike_su(&["secret", "list"]).err("state_not_ready");

    let restore = |text: &str| {
        spike(
            dev.nexus,
            &dev.restore(),
            &["--format", "json", "operator", "restore"],
            Some(text),
        )
    };
    // The superuser may not restore.
    spike(
        dev.nexus,
        &dev.superuser(),
        &["operator", "restore"],
        Some(&share(1)),
    )
    .err("access_unauthorized");

    // Share 1: progress 1 of 2.
    let first = restore(&share(1)).ok();
    assert_eq!(
        first.json(),
        json!({"collected": 1, "remaining": 1, "restored": false})
    );
    // The same share again is refused.
    restore(&share(1)).err("api_bad_request");
    // A corrupted share 2 does not rebuild the key: reported, not used,
    // and the collection starts over.
    let wrong = restore(&corrupt(&share(2))).err("api_bad_request");
    assert!(wrong.stdout.is_empty(), "{wrong:#?}");
    dev.spike_su(&["secret", "get", "db/creds"])
        .err("state_not_ready");

    // Shares 1 and 2: restored, data back.
    let first = restore(&share(1)).ok();
    assert_eq!(
        first.json(),
        json!({"collected": 1, "remaining": 1, "restored": false})
    );
    let done = restore(&share(2)).ok();
    assert_eq!(
        done.json(),
        json!({"collected": 2, "remaining": 0, "restored": true})
    );
    assert_secret(&dev, "db/creds", json!({"pass": "kept"}));
    // Restoring an unsealed Nexus is refused.
    restore(&share(3)).err("api_bad_request");

    // The restored Nexus re-seeds its (new) Keepers: a SIGKILL to dev
    // afterwards unseals from them again.
    wait_keepers_hold_shares(&dev);
    dev.kill_dev();
    dev.spawn();
    dev.wait_ready();
    assert!(dev.log().contains(UNSEALED_FROM_KEEPERS), "{}", dev.log());
    assert_secret(&dev, "db/creds", json!({"pass": "kept"}));
}
