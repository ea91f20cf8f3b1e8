//! Pins the on-disk format (`docs/format.md`): a fixture written by an
//! earlier build must keep reading, value for value.
//!
//! `fixtures/format-v1.json` holds the raw key/value entries of a store
//! written through [`Nexus`] by [`generate_format_v1_fixture`], with its
//! root key and all three shares (2 of 3 unseal). It contains:
//!
//! | record | content |
//! |---|---|
//! | secret `app/db` | v1 `{"password":"one"}` **destroyed**; v2 `{"password":"two","user":"admin"}` **soft-deleted**; v3 `{"password":"three"}` live; settings: `max_versions` 5, `cas_required`, `delete_version_after` 1 h, custom metadata `env=prod`, `owner=team-a` |
//! | secret `app/api/token` | v1 `{"token":"t1"}`, v2 `{"token":"t2"}`, both live |
//! | secret `empty/meta-only` | no versions (metadata only), custom metadata `note=only metadata` |
//! | policy `app-readers` | `spiffe://spike\.ist/app/.*` on `app/.*`: read, list |
//! | policy `admin` | `spiffe://spike\.ist/ops/admin` on `.*`: super |
//! | config | `max_versions` 20, `cas_required` false, `delete_version_after` 90 days |
//! | manifest, init | as written by the six commits above and init |
//!
//! Timestamps are the generation run's, pinned below. A change of format
//! must keep reading this file (add a `format-v2.json`, keep this one).
//!
//! Besides reading it through `Nexus`, [`fixture_bytes_match_the_documented_layout`]
//! re-derives every storage key, MAC, digest and AEAD opening from the root
//! key with `spike-crypto` alone, so the documentation is checked too.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use spike_core::record::{self, Header, Kind};
use spike_core::{
    KvConfig, Nexus, Permission, PolicySpec, SecretData, SettingsUpdate, Timestamp, VersionRead,
    WriteOptions,
};
use spike_crypto::{KeyCheckValue, Purpose, RecordCipher, RootKey, keyed_hash, split};
use spike_storage::{BackingStore, MemoryStore, WriteBatch};

use crate::util::{
    CONFIG_KEY, INIT_KEY, MANIFEST_KEY, StorageKeys, block_on, data, hex, recoverer,
    shares_from_text, shares_to_text, superuser, unhex,
};

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/durability/fixtures/format-v1.json")
}

/// Writes the fixture. Run once, by hand, when a format version is born
/// (never again for v1: the pinned timestamps below would no longer match):
/// `SPIKE_WRITE_FIXTURE=1 cargo test -p spike-core --test durability -- --ignored --exact format::generate_format_v1_fixture --nocapture`,
/// then paste the printed timestamps into the constants below.
#[test]
#[ignore = "writes the checked-in fixture; run by hand for a new format version"]
fn generate_format_v1_fixture() {
    if std::env::var_os("SPIKE_WRITE_FIXTURE").is_none() {
        eprintln!(
            "set SPIKE_WRITE_FIXTURE=1 to overwrite {}",
            fixture_path().display()
        );
        return;
    }
    let store = Arc::new(MemoryStore::new());
    let (root, shares) = block_on(async {
        let nexus = Nexus::builder(store.clone()).open().await.unwrap();
        nexus.init().await.unwrap();
        let su = superuser();
        let put = |path: &'static str, d: SecretData| {
            let nexus = nexus.clone();
            let su = su.clone();
            async move {
                nexus
                    .put_secret(&su, path, d, WriteOptions::default())
                    .await
                    .unwrap()
            }
        };
        put("app/db", data([("password", "one")])).await;
        put("app/db", data([("password", "two"), ("user", "admin")])).await;
        put("app/db", data([("password", "three")])).await;
        nexus.delete_secret(&su, "app/db", &[2]).await.unwrap();
        nexus.destroy_secret(&su, "app/db", &[1]).await.unwrap();
        let settings = SettingsUpdate {
            max_versions: Some(5),
            cas_required: Some(true),
            delete_version_after: Some(Duration::from_secs(3600)),
            custom_metadata: Some(
                [("owner", "team-a"), ("env", "prod")]
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .into(),
            ),
        };
        nexus
            .update_secret_metadata(&su, "app/db", settings)
            .await
            .unwrap();
        put("app/api/token", data([("token", "t1")])).await;
        put("app/api/token", data([("token", "t2")])).await;
        let meta_only = SettingsUpdate {
            custom_metadata: Some([("note".to_owned(), "only metadata".to_owned())].into()),
            ..SettingsUpdate::default()
        };
        nexus
            .update_secret_metadata(&su, "empty/meta-only", meta_only)
            .await
            .unwrap();
        for spec in policies() {
            nexus.put_policy(&su, spec).await.unwrap();
        }
        nexus.set_kv_config(&su, config()).await.unwrap();
        let shares = nexus.recover(&recoverer()).unwrap();
        let root = spike_crypto::combine(&shares[..2]).unwrap();

        // The timestamps to pin, as Rust.
        println!("// pinned timestamps {{");
        for path in ["app/db", "app/api/token", "empty/meta-only"] {
            let m = nexus.secret_metadata(&su, path).unwrap();
            let versions: Vec<String> = m
                .versions
                .iter()
                .map(|v| format!("{}", v.created.as_nanos()))
                .collect();
            println!(
                "    // {path}: created, updated, versions' created\n    {}: ({}, {}, &[{}]),",
                path.replace(['/', '-'], "_"),
                m.created.as_nanos(),
                m.updated.as_nanos(),
                versions.join(", ")
            );
            for v in &m.versions {
                if let Some(t) = v.deletion_time {
                    println!(
                        "    // {path} v{} deletion_time: {}",
                        v.number,
                        t.as_nanos()
                    );
                }
            }
        }
        for p in nexus.list_policies(&su, &Default::default()).unwrap() {
            println!(
                "    // policy {}: created {}, updated {}",
                p.spec.name,
                p.created.as_nanos(),
                p.updated.as_nanos()
            );
        }
        println!("// }}");
        (root, shares_to_text(&shares))
    });
    let entries: Vec<Value> = block_on(store.scan(b"", None, usize::MAX))
        .unwrap()
        .into_iter()
        .map(|e| json!({ "key": hex(&e.key), "value": hex(&e.value) }))
        .collect();
    let fixture = json!({
        "about": "spike-rs on-disk format v1 fixture: see spike-core/tests/durability/format.rs and docs/format.md",
        "format_version": record::FORMAT_VERSION,
        "root_key": hex(root.expose_secret()),
        "shares": shares,
        "entries": entries,
    });
    let text = serde_json::to_string_pretty(&fixture).unwrap();
    std::fs::write(fixture_path(), text + "\n").unwrap();
}

fn policies() -> Vec<PolicySpec> {
    vec![
        PolicySpec {
            name: "app-readers".to_owned(),
            spiffeid_pattern: r"spiffe://spike\.ist/app/.*".to_owned(),
            path_pattern: "app/.*".to_owned(),
            permissions: [Permission::Read, Permission::List].into_iter().collect(),
        },
        PolicySpec {
            name: "admin".to_owned(),
            spiffeid_pattern: r"spiffe://spike\.ist/ops/admin".to_owned(),
            path_pattern: ".*".to_owned(),
            permissions: [Permission::Super].into_iter().collect(),
        },
    ]
}

fn config() -> KvConfig {
    KvConfig {
        max_versions: 20,
        cas_required: false,
        delete_version_after: Duration::from_secs(90 * 24 * 3600),
    }
}

// ---- the pinned contents ---------------------------------------------------------

/// `app/db`: created, updated, each version's created; v2's deletion time.
const APP_DB: (u64, u64, [u64; 3]) = (
    1_795_433_700_962_717_539,
    1_795_433_700_963_928_211,
    [
        1_795_433_700_962_717_539,
        1_795_433_700_963_004_316,
        1_795_433_700_963_226_907,
    ],
);
const APP_DB_V2_DELETED: u64 = 1_795_433_700_963_498_421;
/// `app/api/token`: created, updated, each version's created.
const APP_API_TOKEN: (u64, u64, [u64; 2]) = (
    1_795_433_700_964_156_070,
    1_795_433_700_964_327_745,
    [1_795_433_700_964_156_070, 1_795_433_700_964_327_745],
);
/// `empty/meta-only`: created = updated.
const EMPTY_META_ONLY: u64 = 1_795_433_700_964_534_193;
/// Policies: created = updated.
const POLICY_APP_READERS: u64 = 1_795_433_700_966_361_503;
const POLICY_ADMIN: u64 = 1_795_433_700_968_720_544;
/// Commits the writer made (the manifest's sequence number).
const COMMITS: u64 = 12;
const SUPERUSER: &str = "spiffe://spike.ist/spike/pilot/role/superuser";

struct Fixture {
    root: RootKey,
    shares: Vec<String>,
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

fn fixture() -> Fixture {
    let text = std::fs::read_to_string(fixture_path()).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["format_version"], 1);
    let root: [u8; 32] = unhex(json["root_key"].as_str().unwrap())
        .try_into()
        .unwrap();
    Fixture {
        root: RootKey::from_bytes(root).unwrap(),
        shares: json["shares"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect(),
        entries: json["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    unhex(e["key"].as_str().unwrap()),
                    unhex(e["value"].as_str().unwrap()),
                )
            })
            .collect(),
    }
}

fn ts(nanos: u64) -> Timestamp {
    Timestamp::from_nanos(nanos)
}

fn object(json: &str) -> serde_json::Map<String, Value> {
    serde_json::from_str(json).unwrap()
}

fn strings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn format_v1_fixture_still_reads() {
    let fixture = fixture();
    let store = Arc::new(MemoryStore::new());
    block_on(async {
        let mut batch = WriteBatch::new();
        for (k, v) in &fixture.entries {
            batch.put(k.clone(), v.clone());
        }
        store.commit(batch).await.unwrap();

        let nexus = Nexus::builder(store.clone()).open().await.unwrap();
        assert_eq!(
            nexus.status(),
            spike_core::Status::Sealed {
                threshold: 2,
                shares: 3,
                collected: 0
            }
        );
        let shares = shares_from_text(&fixture.shares);
        nexus
            .unseal(&[shares[0].try_clone(), shares[2].try_clone()])
            .await
            .unwrap();
        let su = superuser();
        assert_eq!(
            nexus.list_all_secrets(&su).unwrap(),
            ["app/api/token", "app/db", "empty/meta-only"]
        );
        assert_eq!(nexus.kv_config().unwrap(), config());

        // app/db: a destroyed, a soft-deleted and a live version.
        let db = nexus.secret_metadata(&su, "app/db").unwrap();
        assert_eq!(
            (
                db.created,
                db.updated,
                db.current_version,
                db.oldest_version
            ),
            (ts(APP_DB.0), ts(APP_DB.1), 3, 1)
        );
        assert_eq!(db.settings.max_versions, 5);
        assert!(db.settings.cas_required);
        assert_eq!(db.settings.delete_version_after, Duration::from_secs(3600));
        assert_eq!(
            db.settings.custom_metadata,
            strings(&[("env", "prod"), ("owner", "team-a")])
        );
        let shape: Vec<_> = db
            .versions
            .iter()
            .map(|v| (v.number, v.created, v.deletion_time, v.destroyed))
            .collect();
        assert_eq!(
            shape,
            [
                (1, ts(APP_DB.2[0]), None, true),
                (2, ts(APP_DB.2[1]), Some(ts(APP_DB_V2_DELETED)), false),
                (3, ts(APP_DB.2[2]), None, false),
            ]
        );
        let read = |path: &str, v: u64| nexus.get_secret(&su, path, v).unwrap();
        for v in [0, 3] {
            let VersionRead::Live { version, data } = read("app/db", v) else {
                panic!("app/db v{v} is not live")
            };
            assert_eq!(version.number, 3);
            assert_eq!(data.to_object(), object(r#"{"password":"three"}"#));
        }
        for v in [1, 2] {
            assert!(matches!(read("app/db", v), VersionRead::Gone(g) if g.number == v));
        }
        assert!(nexus.get_secret(&su, "app/db", 4).is_err());

        // app/api/token: two live versions.
        let token = nexus.secret_metadata(&su, "app/api/token").unwrap();
        assert_eq!(
            (
                token.created,
                token.updated,
                token.current_version,
                token.oldest_version
            ),
            (ts(APP_API_TOKEN.0), ts(APP_API_TOKEN.1), 2, 1)
        );
        assert_eq!(token.settings, Default::default());
        for (i, t) in ["t1", "t2"].into_iter().enumerate() {
            let n = i as u64 + 1;
            let VersionRead::Live { version, data } = read("app/api/token", n) else {
                panic!("app/api/token v{n} is not live")
            };
            assert_eq!(
                (version.created, version.deletion_time, version.destroyed),
                (ts(APP_API_TOKEN.2[i]), None, false)
            );
            assert_eq!(data.to_object(), object(&format!(r#"{{"token":"{t}"}}"#)));
        }

        // empty/meta-only: metadata, no versions.
        let empty = nexus.secret_metadata(&su, "empty/meta-only").unwrap();
        assert_eq!(
            (
                empty.created,
                empty.updated,
                empty.current_version,
                empty.oldest_version
            ),
            (ts(EMPTY_META_ONLY), ts(EMPTY_META_ONLY), 0, 0)
        );
        assert!(empty.versions.is_empty());
        assert_eq!(
            empty.settings.custom_metadata,
            strings(&[("note", "only metadata")])
        );

        // Policies.
        let listed: Vec<String> = nexus
            .list_policies(&su, &Default::default())
            .unwrap()
            .into_iter()
            .map(|p| p.spec.name)
            .collect();
        assert_eq!(listed, ["admin", "app-readers"]);
        for (spec, at) in policies()
            .into_iter()
            .zip([POLICY_APP_READERS, POLICY_ADMIN])
        {
            let p = nexus.get_policy(&su, &spec.name).unwrap();
            assert_eq!(p.spec, spec);
            assert_eq!((p.created, p.updated), (ts(at), ts(at)));
            assert_eq!(p.created_by, SUPERUSER);
        }
        // The policies are live: a reader of app/ reads, nobody else.
        let app = spike_core::Caller::new(
            spike_core::SpiffeId::parse("spiffe://spike.ist/app/web").unwrap(),
        );
        assert!(nexus.get_secret(&app, "app/api/token", 0).is_ok());
        assert!(nexus.get_secret(&app, "empty/meta-only", 0).is_err());

        // The old records keep working: undelete v2 (read its data), write
        // v4 with the cas the secret requires, and reopen.
        nexus.undelete_secret(&su, "app/db", &[2]).await.unwrap();
        let VersionRead::Live { data, .. } = read("app/db", 2) else {
            panic!("app/db v2 is not live after undelete")
        };
        assert_eq!(
            data.to_object(),
            object(r#"{"password":"two","user":"admin"}"#)
        );
        assert!(
            nexus
                .put_secret(
                    &su,
                    "app/db",
                    crate::util::data([("password", "four")]),
                    WriteOptions::default()
                )
                .await
                .is_err(),
            "cas_required is pinned"
        );
        let v4 = nexus
            .put_secret(
                &su,
                "app/db",
                crate::util::data([("password", "four")]),
                WriteOptions { cas: Some(3) },
            )
            .await
            .unwrap();
        assert_eq!(v4.number, 4);
        nexus.seal().await.unwrap();
        nexus.unseal(&shares[1..]).await.unwrap();
        assert_eq!(
            nexus
                .secret_metadata(&su, "app/db")
                .unwrap()
                .current_version,
            4
        );
    });
}

/// Re-derives the fixture's bytes from its root key with `spike-crypto`
/// alone, as `docs/format.md` describes them.
#[test]
fn fixture_bytes_match_the_documented_layout() {
    let fixture = fixture();
    let root = &fixture.root;
    let keys = StorageKeys::from_root(root);

    // Shamir: shares are a deterministic function of the key.
    let shares = split(root, 2, 3).unwrap();
    assert_eq!(shares_to_text(&shares), fixture.shares);

    // Exactly these storage keys.
    let secret_paths = ["app/db", "app/api/token", "empty/meta-only"];
    let policy_names = ["app-readers", "admin"];
    let mut expected: Vec<Vec<u8>> = vec![
        INIT_KEY.to_vec(),
        MANIFEST_KEY.to_vec(),
        CONFIG_KEY.to_vec(),
    ];
    expected.extend(secret_paths.iter().map(|p| keys.secret(p)));
    expected.extend(policy_names.iter().map(|n| keys.policy(n)));
    expected.sort();
    let stored: Vec<Vec<u8>> = fixture.entries.keys().cloned().collect();
    assert_eq!(stored, expected);

    // The init record: cleartext fields and a MAC under the path-index key.
    let init = &fixture.entries[INIT_KEY];
    assert_eq!(init.len(), 43 + 32);
    assert_eq!(&init[..4], b"SKI\x01");
    assert_eq!(&init[4..8], &1u32.to_be_bytes(), "epoch");
    assert_eq!((init[8], init[9]), (2, 3), "threshold, shares");
    assert_eq!(init[10..42], KeyCheckValue::compute(root).to_bytes());
    assert_eq!(init[42], 0, "no rotation under way");
    let index = root.derive(Purpose::PathIndex);
    assert_eq!(init[43..], keyed_hash(&index, &[b"init", &init[..43]]));

    // Sealed records: header, AEAD over header || storage key.
    let cipher = RecordCipher::new(&root.derive(Purpose::Records));
    let open = |key: &[u8], kind: u8| -> (u64, Vec<u8>) {
        let value = &fixture.entries[key];
        assert_eq!(&value[..3], b"SK\x01", "magic and format version");
        assert_eq!(value[3], kind, "kind");
        assert_eq!(&value[4..8], &1u32.to_be_bytes(), "epoch");
        let revision = u64::from_be_bytes(value[8..16].try_into().unwrap());
        let mut aad = value[..16].to_vec();
        aad.extend_from_slice(key);
        let plaintext = cipher.open(&aad, &value[16..]).unwrap();
        assert_eq!(value.len(), 16 + 12 + plaintext.len() + 16);
        // Through spike-core's own reader too.
        let (header, pt) = record::open(|_| Some(&cipher), key, value).unwrap();
        assert_eq!(header.encode()[..], value[..16]);
        assert_eq!(pt.as_slice(), plaintext.as_slice());
        (revision, plaintext.to_vec())
    };
    let mut digest = [0u8; 16];
    let mut share = |key: &[u8]| {
        for (d, s) in digest
            .iter_mut()
            .zip(keys.digest_share(key, &fixture.entries[key]))
        {
            *d ^= s;
        }
    };

    for path in secret_paths {
        let key = keys.secret(path);
        let (_, pt) = open(&key, Kind::Secret as u8);
        assert_eq!(&pt[..2], &(path.len() as u16).to_be_bytes());
        assert_eq!(&pt[2..2 + path.len()], path.as_bytes());
        share(&key);
    }
    for name in policy_names {
        let key = keys.policy(name);
        let (_, pt) = open(&key, Kind::Policy as u8);
        assert_eq!(&pt[..2], &(name.len() as u16).to_be_bytes());
        assert_eq!(&pt[2..2 + name.len()], name.as_bytes());
        share(&key);
    }

    // app/api/token, field by field.
    let (revision, pt) = open(&keys.secret("app/api/token"), Kind::Secret as u8);
    assert_eq!(revision, APP_API_TOKEN.1, "a revision is the write's clock");
    let mut want = Vec::new();
    want.extend_from_slice(&13u16.to_be_bytes());
    want.extend_from_slice(b"app/api/token");
    for n in [APP_API_TOKEN.0, APP_API_TOKEN.1, 2, 1] {
        want.extend_from_slice(&n.to_be_bytes()); // created, updated, current, oldest
    }
    want.extend_from_slice(&0u32.to_be_bytes()); // max_versions
    want.push(0); // cas_required
    want.extend_from_slice(&0u64.to_be_bytes()); // delete_version_after
    want.extend_from_slice(&0u16.to_be_bytes()); // custom metadata entries
    want.extend_from_slice(&2u32.to_be_bytes()); // versions
    for (n, token) in [(1u64, "t1"), (2, "t2")] {
        want.extend_from_slice(&n.to_be_bytes());
        want.extend_from_slice(&APP_API_TOKEN.2[n as usize - 1].to_be_bytes());
        want.push(0); // flags: not destroyed, no deletion time
        let json = format!(r#"{{"token":"{token}"}}"#);
        want.extend_from_slice(&(json.len() as u32).to_be_bytes());
        want.extend_from_slice(json.as_bytes());
    }
    assert_eq!(pt, want);

    // The config record.
    let (_, pt) = open(CONFIG_KEY, Kind::Config as u8);
    let mut want = 20u32.to_be_bytes().to_vec();
    want.push(0);
    want.extend_from_slice(&(90u64 * 24 * 3600 * 1_000_000_000).to_be_bytes());
    assert_eq!(pt, want);
    share(CONFIG_KEY);

    // The manifest: seq (= its revision), XOR of the six data records'
    // digest shares, their count.
    let (revision, pt) = open(MANIFEST_KEY, Kind::Manifest as u8);
    assert_eq!(revision, COMMITS);
    let mut want = COMMITS.to_be_bytes().to_vec();
    want.extend_from_slice(&digest);
    want.extend_from_slice(&6u64.to_be_bytes());
    assert_eq!(pt, want);
    assert_eq!(
        Header::decode(&fixture.entries[MANIFEST_KEY]).unwrap(),
        Header {
            kind: Kind::Manifest,
            epoch: 1,
            revision: COMMITS
        }
    );
}
