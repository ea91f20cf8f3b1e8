//! Secrets with Vault KV v2 semantics (SPEC §4).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};
use spike_core::{
    Error, ErrorCode, InputError, KvConfig, MAX_PATH_LEN, Nexus, SecretData, SettingsUpdate,
    VersionRead, WriteOptions,
};

use crate::{RedbFile, assert_err, data, live, memory_nexus, put, reopen, restart, su, value};

async fn put_cas(nexus: &Nexus, path: &str, v: &str, c: Option<u64>) -> Result<u64, Error> {
    nexus
        .put_secret(&su(), path, data(&[("k", v)]), WriteOptions { cas: c })
        .await
        .map(|v| v.number)
}

fn gone(nexus: &Nexus, path: &str, version: u64) -> spike_core::Version {
    match nexus.get_secret(&su(), path, version).unwrap() {
        VersionRead::Gone(v) => v,
        VersionRead::Live { version, .. } => panic!("{path}@{} is live", version.number),
    }
}

async fn max_versions(nexus: &Nexus, path: &str, n: u32) {
    nexus
        .update_secret_metadata(
            &su(),
            path,
            SettingsUpdate {
                max_versions: Some(n),
                ..SettingsUpdate::default()
            },
        )
        .await
        .unwrap();
}

fn retained(nexus: &Nexus, path: &str) -> Vec<u64> {
    let s = nexus.secret_metadata(&su(), path).unwrap();
    s.versions.iter().map(|v| v.number).collect()
}

#[tokio::test]
async fn versions_count_from_one_and_old_versions_stay_readable() {
    let (nexus, _) = memory_nexus().await;
    for i in 1..=4 {
        assert_eq!(put(&nexus, "app/db", &format!("v{i}")).await, i);
    }
    assert_eq!(value(&nexus, "app/db"), "v4");
    for i in 1..=4 {
        assert_eq!(live(&nexus, "app/db", i)["k"], format!("v{i}"));
    }
    assert_err!(nexus.get_secret(&su(), "app/db", 5), Error::NotFound);
    assert_err!(nexus.get_secret(&su(), "app/nope", 0), Error::NotFound);
    let meta = nexus.secret_metadata(&su(), "app/db").unwrap();
    assert_eq!((meta.current_version, meta.oldest_version), (4, 1));
    // Slashes are normalised: the same secret.
    assert_eq!(value(&nexus, "/app/db/"), "v4");
    // Any JSON object is data, not just strings.
    let mut obj = Map::new();
    obj.insert("n".into(), Value::from(42));
    obj.insert("nested".into(), serde_json::json!({"a": [1, 2]}));
    nexus
        .put_secret(
            &su(),
            "app/json",
            SecretData::from_object(&obj).unwrap(),
            WriteOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(live(&nexus, "app/json", 0), obj);
}

#[tokio::test]
async fn check_and_set_is_exact() {
    let (nexus, _) = memory_nexus().await;
    assert_eq!(put_cas(&nexus, "c", "1", Some(0)).await.unwrap(), 1);
    let e = put_cas(&nexus, "c", "x", Some(0)).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::CasMismatch {
                expected: 0,
                current: 1
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.code(), ErrorCode::CasMismatch);
    assert_err!(
        put_cas(&nexus, "c", "x", Some(2)).await,
        Error::CasMismatch {
            expected: 2,
            current: 1
        }
    );
    assert_eq!(put_cas(&nexus, "c", "2", Some(1)).await.unwrap(), 2);
    assert_err!(
        put_cas(&nexus, "c", "x", Some(1)).await,
        Error::CasMismatch { .. }
    );
    assert_eq!(value(&nexus, "c"), "2", "mismatches change nothing");
    assert_eq!(retained(&nexus, "c"), [1, 2]);
    // cas on an absent secret other than 0 fails.
    assert_err!(
        put_cas(&nexus, "absent", "x", Some(1)).await,
        Error::CasMismatch {
            expected: 1,
            current: 0
        }
    );
    assert_err!(nexus.secret_metadata(&su(), "absent"), Error::NotFound);
}

#[tokio::test]
async fn cas_required_per_key_and_per_mount() {
    let (nexus, _) = memory_nexus().await;
    put(&nexus, "strict", "1").await;
    put(&nexus, "loose", "1").await;
    nexus
        .update_secret_metadata(
            &su(),
            "strict",
            SettingsUpdate {
                cas_required: Some(true),
                ..SettingsUpdate::default()
            },
        )
        .await
        .unwrap();
    let e = put_cas(&nexus, "strict", "2", None).await.unwrap_err();
    assert!(matches!(e, Error::CasRequired), "{e:?}");
    assert_eq!(e.code(), ErrorCode::BadRequest);
    assert_eq!(put_cas(&nexus, "strict", "2", Some(1)).await.unwrap(), 2);
    assert_eq!(put_cas(&nexus, "loose", "2", None).await.unwrap(), 2);

    nexus
        .set_kv_config(
            &su(),
            KvConfig {
                cas_required: true,
                ..KvConfig::default()
            },
        )
        .await
        .unwrap();
    assert!(nexus.kv_config().unwrap().cas_required);
    assert_err!(
        put_cas(&nexus, "loose", "3", None).await,
        Error::CasRequired
    );
    assert_err!(put_cas(&nexus, "new", "1", None).await, Error::CasRequired);
    assert_eq!(put_cas(&nexus, "new", "1", Some(0)).await.unwrap(), 1);
    assert_eq!(put_cas(&nexus, "loose", "3", Some(2)).await.unwrap(), 3);

    nexus
        .set_kv_config(&su(), KvConfig::default())
        .await
        .unwrap();
    assert_eq!(put_cas(&nexus, "loose", "4", None).await.unwrap(), 4);
    assert_err!(
        put_cas(&nexus, "strict", "3", None).await,
        Error::CasRequired
    );
}

#[tokio::test]
async fn max_versions_prunes_the_oldest() {
    let (nexus, _) = memory_nexus().await;
    // Default: 10.
    for _ in 0..12 {
        put(&nexus, "d", "x").await;
    }
    let meta = nexus.secret_metadata(&su(), "d").unwrap();
    assert_eq!((meta.current_version, meta.oldest_version), (12, 3));
    assert_eq!(retained(&nexus, "d"), (3..=12).collect::<Vec<_>>());
    assert_err!(nexus.get_secret(&su(), "d", 2), Error::NotFound);

    // Mount 3.
    nexus
        .set_kv_config(
            &su(),
            KvConfig {
                max_versions: 3,
                ..KvConfig::default()
            },
        )
        .await
        .unwrap();
    for i in 1..=5 {
        put(&nexus, "m", &i.to_string()).await;
    }
    assert_eq!(retained(&nexus, "m"), [3, 4, 5]);
    assert_eq!(nexus.secret_metadata(&su(), "m").unwrap().oldest_version, 3);
    assert_eq!(live(&nexus, "m", 3)["k"], "3");

    // Key 5 > mount 3: 5 kept.
    max_versions(&nexus, "k5", 5).await;
    for i in 1..=7 {
        put(&nexus, "k5", &i.to_string()).await;
    }
    assert_eq!(retained(&nexus, "k5"), [3, 4, 5, 6, 7]);

    // Key 1 < mount 3: the mount's 3 wins.
    max_versions(&nexus, "k1", 1).await;
    for i in 1..=5 {
        put(&nexus, "k1", &i.to_string()).await;
    }
    assert_eq!(retained(&nexus, "k1"), [3, 4, 5]);

    // Lowering a key's max_versions below its count prunes at once (down to
    // the effective max).
    nexus
        .set_kv_config(&su(), KvConfig::default())
        .await
        .unwrap();
    max_versions(&nexus, "d", 4).await;
    assert_eq!(retained(&nexus, "d"), [9, 10, 11, 12]);
    let meta = nexus.secret_metadata(&su(), "d").unwrap();
    assert_eq!((meta.current_version, meta.oldest_version), (12, 9));
    assert_eq!(put(&nexus, "d", "x").await, 13, "numbering continues");
    assert_eq!(retained(&nexus, "d"), [10, 11, 12, 13]);
}

#[tokio::test]
async fn delete_undelete_destroy_versions() {
    let file = RedbFile::new();
    let (nexus, shares) = file.init().await;
    for i in 1..=4 {
        put(&nexus, "s", &format!("v{i}")).await;
    }
    // Delete the current version: reads of it are Gone, older stay live.
    nexus.delete_secret(&su(), "s", &[]).await.unwrap();
    let v4 = gone(&nexus, "s", 0);
    assert_eq!(v4.number, 4);
    assert!(v4.deletion_time.is_some() && !v4.destroyed);
    assert_eq!(live(&nexus, "s", 3)["k"], "v3");
    // Specific versions; unknown versions are skipped.
    nexus.delete_secret(&su(), "s", &[1, 2, 99]).await.unwrap();
    assert_eq!(gone(&nexus, "s", 1).number, 1);
    assert_eq!(gone(&nexus, "s", 2).number, 2);
    assert_eq!(live(&nexus, "s", 3)["k"], "v3");
    // Undelete brings back data.
    nexus.undelete_secret(&su(), "s", &[4, 1]).await.unwrap();
    assert_eq!(value(&nexus, "s"), "v4");
    assert_eq!(live(&nexus, "s", 1)["k"], "v1");
    assert!(nexus.get_secret(&su(), "s", 4).is_ok());
    // Destroy is for good: undelete cannot bring it back.
    nexus.destroy_secret(&su(), "s", &[2, 3]).await.unwrap();
    let v3 = gone(&nexus, "s", 3);
    assert!(v3.destroyed);
    nexus.undelete_secret(&su(), "s", &[2, 3]).await.unwrap();
    assert!(gone(&nexus, "s", 2).destroyed);
    assert!(gone(&nexus, "s", 3).destroyed);
    // Writing on top still counts on.
    assert_eq!(put(&nexus, "s", "v5").await, 5);
    // On a missing secret: NotFound.
    assert_err!(
        nexus.delete_secret(&su(), "nope", &[]).await,
        Error::NotFound
    );
    assert_err!(
        nexus.undelete_secret(&su(), "nope", &[]).await,
        Error::NotFound
    );
    assert_err!(
        nexus.destroy_secret(&su(), "nope", &[1]).await,
        Error::NotFound
    );

    // After a restart: destroyed data stays gone, the rest is as it was.
    let nexus = restart(nexus, &file.path, &shares[..2]).await;
    assert!(gone(&nexus, "s", 2).destroyed);
    assert!(gone(&nexus, "s", 3).destroyed);
    assert_eq!(live(&nexus, "s", 1)["k"], "v1");
    assert_eq!(live(&nexus, "s", 4)["k"], "v4");
    assert_eq!(value(&nexus, "s"), "v5");
}

#[tokio::test]
async fn metadata_delete_removes_everything_and_numbering_restarts() {
    let file = RedbFile::new();
    let (nexus, shares) = file.init().await;
    for i in 1..=3 {
        put(&nexus, "gone/soon", &i.to_string()).await;
    }
    put(&nexus, "gone/stays", "x").await;
    nexus
        .delete_secret_metadata(&su(), "gone/soon")
        .await
        .unwrap();
    assert_err!(nexus.get_secret(&su(), "gone/soon", 0), Error::NotFound);
    assert_err!(nexus.get_secret(&su(), "gone/soon", 2), Error::NotFound);
    assert_err!(nexus.secret_metadata(&su(), "gone/soon"), Error::NotFound);
    assert_eq!(nexus.list_secrets(&su(), "gone").unwrap(), ["stays"]);
    assert_err!(
        nexus.delete_secret_metadata(&su(), "gone/soon").await,
        Error::NotFound
    );
    // Written again: version 1, as in Vault.
    assert_eq!(put(&nexus, "gone/soon", "again").await, 1);
    let meta = nexus.secret_metadata(&su(), "gone/soon").unwrap();
    assert_eq!((meta.current_version, meta.oldest_version), (1, 1));
    let nexus = restart(nexus, &file.path, &shares[1..]).await;
    assert_eq!(value(&nexus, "gone/soon"), "again");
    assert_eq!(retained(&nexus, "gone/soon"), [1]);
    // Delete then restart: stays deleted.
    nexus
        .delete_secret_metadata(&su(), "gone/soon")
        .await
        .unwrap();
    let nexus = restart(nexus, &file.path, &shares[1..]).await;
    assert_err!(nexus.secret_metadata(&su(), "gone/soon"), Error::NotFound);
    assert_eq!(value(&nexus, "gone/stays"), "x");
}

#[tokio::test]
async fn delete_version_after_expires_reads() {
    let (nexus, _) = memory_nexus().await;
    nexus
        .update_secret_metadata(
            &su(),
            "ttl",
            SettingsUpdate {
                delete_version_after: Some(Duration::from_millis(50)),
                ..SettingsUpdate::default()
            },
        )
        .await
        .unwrap();
    // Metadata only: no version to read yet.
    let meta = nexus.secret_metadata(&su(), "ttl").unwrap();
    assert_eq!(meta.current_version, 0);
    assert_err!(nexus.get_secret(&su(), "ttl", 0), Error::NotFound);

    put(&nexus, "ttl", "short").await;
    put(&nexus, "forever", "long").await;
    assert_eq!(value(&nexus, "ttl"), "short");
    let v = nexus.secret_metadata(&su(), "ttl").unwrap().versions[0].clone();
    assert!(v.deletion_time.is_some(), "deletion time is set on write");
    tokio::time::sleep(Duration::from_millis(80)).await;
    let v = gone(&nexus, "ttl", 0);
    assert!(!v.destroyed);
    assert_eq!(value(&nexus, "forever"), "long");
    // Undelete clears the deletion time: live again.
    nexus.undelete_secret(&su(), "ttl", &[]).await.unwrap();
    assert_eq!(value(&nexus, "ttl"), "short");

    // The mount setting applies to secrets without their own.
    nexus
        .set_kv_config(
            &su(),
            KvConfig {
                delete_version_after: Duration::from_millis(50),
                ..KvConfig::default()
            },
        )
        .await
        .unwrap();
    put(&nexus, "forever", "now mortal").await;
    assert_eq!(value(&nexus, "forever"), "now mortal");
    tokio::time::sleep(Duration::from_millis(80)).await;
    gone(&nexus, "forever", 0);
    assert_eq!(live(&nexus, "forever", 1)["k"], "long");
}

#[tokio::test]
async fn custom_metadata_limits() {
    let (nexus, _) = memory_nexus().await;
    put(&nexus, "m", "x").await;
    let set = |meta: BTreeMap<String, String>| {
        let nexus = nexus.clone();
        async move {
            nexus
                .update_secret_metadata(
                    &su(),
                    "m",
                    SettingsUpdate {
                        custom_metadata: Some(meta),
                        ..SettingsUpdate::default()
                    },
                )
                .await
        }
    };
    let ok: BTreeMap<String, String> = (0..64)
        .map(|i| (format!("{i:0128}"), "v".repeat(512)))
        .collect();
    set(ok.clone()).await.unwrap();
    assert_eq!(
        nexus
            .secret_metadata(&su(), "m")
            .unwrap()
            .settings
            .custom_metadata,
        ok
    );
    let too_many: BTreeMap<_, _> = (0..65).map(|i| (i.to_string(), String::new())).collect();
    let long_key: BTreeMap<_, _> = [("k".repeat(129), String::new())].into();
    let long_value: BTreeMap<_, _> = [("k".to_owned(), "v".repeat(513))].into();
    let empty_key: BTreeMap<_, _> = [(String::new(), "v".to_owned())].into();
    for bad in [too_many, long_key, long_value, empty_key] {
        let e = set(bad).await.unwrap_err();
        assert!(
            matches!(e, Error::Input(InputError::CustomMetadata { .. })),
            "{e:?}"
        );
    }
    assert_eq!(
        nexus
            .secret_metadata(&su(), "m")
            .unwrap()
            .settings
            .custom_metadata,
        ok,
        "refused updates change nothing"
    );
}

#[tokio::test]
async fn bad_paths_and_oversized_data_are_refused() {
    let (nexus, _) = memory_nexus().await;
    put(&nexus, "ok", "x").await;
    let long = "a".repeat(MAX_PATH_LEN + 1);
    for bad in [
        "",
        "/",
        "a/../b",
        "..",
        "a/./b",
        "a//b",
        "a b",
        "é",
        long.as_str(),
    ] {
        let e = nexus
            .put_secret(&su(), bad, data(&[("k", "v")]), WriteOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Input(InputError::Path { .. })),
            "{bad:?}: {e:?}"
        );
        assert_eq!(e.code(), ErrorCode::BadRequest);
        assert_err!(nexus.get_secret(&su(), bad, 0), Error::Input(_));
        assert_err!(nexus.delete_secret(&su(), bad, &[]).await, Error::Input(_));
    }
    let longest = "a".repeat(MAX_PATH_LEN);
    put(&nexus, &longest, "x").await;
    assert_eq!(value(&nexus, &longest), "x");

    // Just over 1 MiB of data cannot even be built; 1 MiB minus framing can.
    let big = "v".repeat(1024 * 1024);
    let e = SecretData::from_pairs([("k", big.as_str())]).unwrap_err();
    assert!(matches!(e, InputError::TooLarge { .. }), "{e:?}");
    let fits = "v".repeat(1024 * 1024 - 16);
    nexus
        .put_secret(
            &su(),
            "big",
            SecretData::from_pairs([("k", fits.as_str())]).unwrap(),
            WriteOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        live(&nexus, "big", 0)["k"].as_str().unwrap().len(),
        fits.len()
    );
    assert_eq!(
        nexus.list_all_secrets(&su()).unwrap(),
        ["a".repeat(MAX_PATH_LEN), "big".into(), "ok".into()],
        "refused writes left nothing behind"
    );
    assert_eq!(retained(&nexus, "ok"), [1]);
}

#[tokio::test]
async fn listing_is_hierarchical() {
    let (nexus, _) = memory_nexus().await;
    assert_err!(nexus.list_secrets(&su(), ""), Error::NotFound);
    assert!(nexus.list_all_secrets(&su()).unwrap().is_empty());
    for p in [
        "apps/web/db",
        "apps/web/api",
        "apps/web-2/db",
        "apps/worker",
        "apps.old",
        "apps-x/y",
        "top",
        "apps/web/deep/er/key",
    ] {
        put(&nexus, p, "x").await;
    }
    assert_eq!(
        nexus.list_secrets(&su(), "").unwrap(),
        ["apps-x/", "apps.old", "apps/", "top"]
    );
    assert_eq!(
        nexus.list_secrets(&su(), "apps").unwrap(),
        ["web-2/", "web/", "worker"]
    );
    assert_eq!(
        nexus.list_secrets(&su(), "/apps/web/").unwrap(),
        ["api", "db", "deep/"]
    );
    assert_eq!(
        nexus.list_secrets(&su(), "apps/web/deep/er").unwrap(),
        ["key"]
    );
    assert_err!(nexus.list_secrets(&su(), "apps/nothing"), Error::NotFound);
    assert_err!(nexus.list_secrets(&su(), "top"), Error::NotFound);
    assert_err!(nexus.list_secrets(&su(), "apps/../x"), Error::Input(_));
    assert_eq!(
        nexus.list_all_secrets(&su()).unwrap(),
        [
            "apps-x/y",
            "apps.old",
            "apps/web-2/db",
            "apps/web/api",
            "apps/web/db",
            "apps/web/deep/er/key",
            "apps/worker",
            "top"
        ]
    );
    // A folder whose last secret is gone disappears.
    nexus
        .delete_secret_metadata(&su(), "apps-x/y")
        .await
        .unwrap();
    assert_eq!(
        nexus.list_secrets(&su(), "").unwrap(),
        ["apps.old", "apps/", "top"]
    );
    assert_err!(nexus.list_secrets(&su(), "apps-x"), Error::NotFound);
}

#[tokio::test]
async fn everything_survives_seal_unseal_and_reopen() {
    let file = RedbFile::new();
    let (nexus, shares) = file.init().await;
    nexus
        .set_kv_config(
            &su(),
            KvConfig {
                max_versions: 4,
                cas_required: false,
                delete_version_after: Duration::from_secs(3600),
            },
        )
        .await
        .unwrap();
    for i in 1..=6 {
        put(&nexus, "a/one", &i.to_string()).await;
    }
    put(&nexus, "a/two", "2").await;
    put(&nexus, "b", "b").await;
    nexus
        .update_secret_metadata(
            &su(),
            "a/two",
            SettingsUpdate {
                max_versions: Some(7),
                cas_required: Some(true),
                delete_version_after: Some(Duration::from_secs(60)),
                custom_metadata: Some([("owner".to_owned(), "team-a".to_owned())].into()),
            },
        )
        .await
        .unwrap();
    nexus.delete_secret(&su(), "a/one", &[5]).await.unwrap();
    nexus.destroy_secret(&su(), "a/one", &[4]).await.unwrap();
    nexus.delete_secret(&su(), "b", &[]).await.unwrap();

    let snapshot = |n: &Nexus| {
        let metas: Vec<_> = ["a/one", "a/two", "b"]
            .iter()
            .map(|p| {
                let s = n.secret_metadata(&su(), p).unwrap();
                (
                    s.current_version,
                    s.oldest_version,
                    s.settings.clone(),
                    s.versions.clone(),
                    s.created,
                    s.updated,
                )
            })
            .collect();
        (
            metas,
            n.kv_config().unwrap(),
            n.list_all_secrets(&su()).unwrap(),
            live(n, "a/one", 6),
            live(n, "a/one", 3),
            live(n, "a/two", 0),
        )
    };
    let before = snapshot(&nexus);
    assert_eq!(before.0[0].3.len(), 4);

    nexus.seal().await.unwrap();
    nexus.unseal(&shares[..2]).await.unwrap();
    assert_eq!(snapshot(&nexus), before, "after seal + unseal");

    let nexus = reopen(nexus, &file.path).await;
    nexus.unseal(&shares[1..]).await.unwrap();
    assert_eq!(snapshot(&nexus), before, "after reopen");
    assert_err!(
        put_cas(&nexus, "a/two", "x", None).await,
        Error::CasRequired
    );
    put(&nexus, "a/one", "7").await;
    assert_eq!(
        retained(&nexus, "a/one"),
        [4, 5, 6, 7],
        "mount max 4 persisted"
    );
}
