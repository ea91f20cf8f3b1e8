//! Root key rotation (SPEC §5): online, resumable, new shares delivered.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use spike_core::{
    Error, KvConfig, Nexus, Permission, PolicyFilter, SettingsUpdate, Share, WriteOptions,
};

use crate::{
    RECOVER, RESTORE, RedbFile, assert_err, caller, copies, data, live, put, reopen, restart,
    same_shares, spec, su, value,
};

const APP: &str = "spiffe://spike.ist/app";

/// Fills a store with secrets, a policy and a mount config.
async fn populate(nexus: &Nexus) {
    for i in 0..40 {
        put(nexus, &format!("bulk/{i:02}"), &format!("v{i}")).await;
    }
    for i in 1..=3 {
        put(nexus, "multi", &format!("m{i}")).await;
    }
    nexus.delete_secret(&su(), "multi", &[1]).await.unwrap();
    nexus.destroy_secret(&su(), "multi", &[2]).await.unwrap();
    nexus
        .update_secret_metadata(
            &su(),
            "multi",
            SettingsUpdate {
                custom_metadata: Some([("team".to_owned(), "a".to_owned())].into()),
                ..SettingsUpdate::default()
            },
        )
        .await
        .unwrap();
    nexus
        .put_policy(
            &su(),
            spec("bulk-read", APP, "bulk/.*", &[Permission::Read]),
        )
        .await
        .unwrap();
    nexus
        .set_kv_config(
            &su(),
            KvConfig {
                max_versions: 5,
                cas_required: false,
                delete_version_after: Duration::ZERO,
            },
        )
        .await
        .unwrap();
}

/// Checks what [`populate`] wrote.
fn check(nexus: &Nexus) {
    for i in 0..40 {
        assert_eq!(value(nexus, &format!("bulk/{i:02}")), format!("v{i}"));
    }
    assert_eq!(value(nexus, "multi"), "m3");
    let meta = nexus.secret_metadata(&su(), "multi").unwrap();
    assert!(meta.versions[0].deletion_time.is_some());
    assert!(meta.versions[1].destroyed);
    assert_eq!(meta.settings.custom_metadata["team"], "a");
    assert!(nexus.get_secret(&caller(APP), "bulk/07", 0).is_ok());
    assert_err!(nexus.get_secret(&caller(APP), "multi", 0), Error::Denied);
    assert_eq!(
        nexus
            .list_policies(&su(), &PolicyFilter::default())
            .unwrap()
            .len(),
        1
    );
    assert_eq!(nexus.kv_config().unwrap().max_versions, 5);
}

/// A deliver callback that keeps the shares it is given in `slot` and
/// fails if `fail`.
fn keep(
    slot: &Arc<Mutex<Vec<Share>>>,
    fail: bool,
) -> impl FnOnce(Vec<Share>) -> std::future::Ready<Result<(), String>> {
    let slot = Arc::clone(slot);
    move |shares| {
        *slot.lock().unwrap() = shares;
        std::future::ready(if fail {
            Err("keepers unreachable".to_owned())
        } else {
            Ok(())
        })
    }
}

fn taken(slot: &Arc<Mutex<Vec<Share>>>) -> Vec<Share> {
    copies(&slot.lock().unwrap())
}

#[tokio::test]
async fn rotation_replaces_the_shares_and_keeps_the_data() {
    let file = RedbFile::new();
    let (nexus, old) = file.init().await;
    populate(&nexus).await;
    let slot = Arc::new(Mutex::new(Vec::new()));
    let report = nexus.rotate(&su(), keep(&slot, false)).await.unwrap();
    assert_eq!(report.epoch, 2);
    assert!(!report.resumed);
    assert!(report.reencrypted >= 43, "{report:?}");
    assert!(!nexus.rotation_pending());
    assert!(nexus.rotation_progress().is_none());
    let new = taken(&slot);
    assert_eq!(new.len(), 3);
    assert!(!same_shares(&new, &old));
    assert!(same_shares(&nexus.keeper_shares().unwrap(), &new));
    assert!(same_shares(&nexus.recover(&caller(RECOVER)).unwrap(), &new));
    check(&nexus);
    put(&nexus, "after", "rotation").await;

    let nexus = reopen(nexus, &file.path).await;
    assert_err!(nexus.unseal(&old[..2]).await, Error::WrongKey);
    assert_err!(
        nexus
            .unseal(&[old[0].try_clone(), new[1].try_clone()])
            .await,
        Error::WrongKey
    );
    nexus.unseal(&new[1..]).await.unwrap();
    check(&nexus);
    assert_eq!(value(&nexus, "after"), "rotation");

    // And again: epochs count on.
    let slot2 = Arc::new(Mutex::new(Vec::new()));
    let report = nexus.rotate(&su(), keep(&slot2, false)).await.unwrap();
    assert_eq!(report.epoch, 3);
    let newer = taken(&slot2);
    let nexus = restart(nexus, &file.path, &newer[..2]).await;
    check(&nexus);
}

#[tokio::test]
async fn failed_delivery_leaves_a_pending_rotation_that_resumes() {
    let file = RedbFile::new();
    let (nexus, old) = file.init().await;
    populate(&nexus).await;
    let slot = Arc::new(Mutex::new(Vec::new()));
    let e = nexus.rotate(&su(), keep(&slot, true)).await.unwrap_err();
    assert!(!e.to_string().is_empty());
    let new = taken(&slot);
    assert_eq!(new.len(), 3);
    assert!(nexus.rotation_pending());
    // Reads and writes keep working while pending.
    check(&nexus);
    assert_eq!(put(&nexus, "during", "1").await, 1);
    nexus
        .put_policy(
            &su(),
            spec(
                "later",
                "spiffe://spike.ist/later",
                "x",
                &[Permission::Read],
            ),
        )
        .await
        .unwrap();
    nexus.delete_policy(&su(), "later").await.unwrap();

    // Sealed while pending: the old shares unseal...
    nexus.seal().await.unwrap();
    nexus.unseal(&old[..2]).await.unwrap();
    assert!(nexus.rotation_pending());
    check(&nexus);
    assert_eq!(value(&nexus, "during"), "1");
    assert_eq!(put(&nexus, "during", "2").await, 2);
    // ...and so do the new ones, also after a restart.
    let nexus = reopen(nexus, &file.path).await;
    nexus.unseal(&new[1..]).await.unwrap();
    assert!(nexus.rotation_pending());
    check(&nexus);
    assert_eq!(value(&nexus, "during"), "2");
    let nexus = reopen(nexus, &file.path).await;
    nexus
        .unseal(&[old[2].try_clone(), old[0].try_clone()])
        .await
        .unwrap();
    assert!(nexus.rotation_pending());
    assert_eq!(value(&nexus, "during"), "2");

    // A second rotate resumes the first and delivers the same new shares.
    let slot2 = Arc::new(Mutex::new(Vec::new()));
    let report = nexus.rotate(&su(), keep(&slot2, false)).await.unwrap();
    assert!(report.resumed);
    assert_eq!(report.epoch, 2);
    assert!(!nexus.rotation_pending());
    let delivered = taken(&slot2);
    assert!(same_shares(&delivered, &new), "the pending key's shares");
    check(&nexus);

    let nexus = reopen(nexus, &file.path).await;
    assert_err!(nexus.unseal(&old[..2]).await, Error::WrongKey);
    nexus.unseal(&delivered[..2]).await.unwrap();
    assert!(!nexus.rotation_pending());
    check(&nexus);
    assert_eq!(value(&nexus, "during"), "2");
    assert_eq!(live(&nexus, "during", 1)["k"], "1");
}

#[tokio::test]
async fn pending_rotation_resumes_after_unseal_with_new_shares() {
    let file = RedbFile::new();
    let (nexus, old) = file.init().await;
    populate(&nexus).await;
    let slot = Arc::new(Mutex::new(Vec::new()));
    nexus.rotate(&su(), keep(&slot, true)).await.unwrap_err();
    let new = taken(&slot);
    let nexus = restart(nexus, &file.path, &new[..2]).await;
    let slot2 = Arc::new(Mutex::new(Vec::new()));
    let report = nexus.rotate(&su(), keep(&slot2, false)).await.unwrap();
    assert!(report.resumed);
    assert!(same_shares(&taken(&slot2), &new));
    let nexus = reopen(nexus, &file.path).await;
    assert_err!(nexus.unseal(&old[1..]).await, Error::WrongKey);
    nexus.unseal(&new[1..]).await.unwrap();
    check(&nexus);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_rotation_all_survive() {
    let file = RedbFile::new();
    let (nexus, _old) = file.init().await;
    populate(&nexus).await;
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let nexus = nexus.clone();
            tokio::spawn(async move {
                for i in 0..15 {
                    let path = if i % 2 == 0 {
                        format!("live/{w}")
                    } else {
                        format!("live/{w}-{i}")
                    };
                    nexus
                        .put_secret(
                            &su(),
                            &path,
                            data(&[("k", &format!("{w}-{i}"))]),
                            WriteOptions::default(),
                        )
                        .await
                        .unwrap();
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let slot = Arc::new(Mutex::new(Vec::new()));
    let rotated = nexus.rotate(&su(), keep(&slot, false)).await.unwrap();
    assert!(!rotated.resumed);
    for w in writers {
        w.await.unwrap();
    }
    let new = taken(&slot);
    let nexus = restart(nexus, &file.path, &new[..2]).await;
    check(&nexus);
    for w in 0..6 {
        let meta = nexus.secret_metadata(&su(), &format!("live/{w}")).unwrap();
        assert_eq!(meta.current_version, 8, "eight writes, none lost");
        assert_eq!(meta.oldest_version, 4, "the mount's max_versions 5");
        assert_eq!(value(&nexus, &format!("live/{w}")), format!("{w}-14"));
        for i in (1..15).step_by(2) {
            assert_eq!(value(&nexus, &format!("live/{w}-{i}")), format!("{w}-{i}"));
        }
    }
    // Every record is now under the new key: the old key is gone for good.
    assert!(!nexus.rotation_pending());
}

#[tokio::test]
async fn only_the_superuser_rotates() {
    let file = RedbFile::new();
    let (nexus, _) = file.init().await;
    nexus
        .put_policy(&su(), spec("all", ".*", ".*", &[Permission::Super]))
        .await
        .unwrap();
    for id in [
        RECOVER,
        RESTORE,
        APP,
        "spiffe://spike.ist/spike/nexus",
        "spiffe://other.td/spike/pilot/role/superuser",
    ] {
        let called = Arc::new(Mutex::new(false));
        let c = Arc::clone(&called);
        let e = nexus
            .rotate(&caller(id), move |_| {
                *c.lock().unwrap() = true;
                std::future::ready(Ok::<_, String>(()))
            })
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Denied), "{id}: {e:?}");
        assert!(!*called.lock().unwrap(), "{id} got shares");
        assert!(!nexus.rotation_pending());
    }
}
