//! Model-based test: random operation sequences applied to a `Nexus` and
//! to a plain model of the KV v2 semantics of SPEC §4, compared after
//! every operation, with restarts (seal + unseal, or a new handle on the
//! same store) in between.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use spike_core::{
    Error, KvConfig, Nexus, SecretData, SettingsUpdate, Share, VersionRead, WriteOptions,
};
use spike_storage::MemoryStore;

use crate::{copies, su};

const PATHS: [&str; 4] = ["a", "a/b", "c/d/e", "z"];

#[derive(Debug, Clone)]
enum Op {
    Put { path: usize, cas: Option<u64> },
    Delete { path: usize, versions: Vec<u64> },
    Undelete { path: usize, versions: Vec<u64> },
    Destroy { path: usize, versions: Vec<u64> },
    MaxVersions { path: usize, max: u32 },
    CasRequired { path: usize, on: bool },
    MetadataDelete { path: usize },
    MountMaxVersions { max: u32 },
    SealUnseal { first: usize },
    Reopen { first: usize },
}

fn op() -> impl Strategy<Value = Op> {
    // Half the operations hit one path, so it grows past max_versions.
    let path = prop_oneof![1 => Just(0usize), 1 => 1..PATHS.len()];
    let versions = prop::collection::vec(prop_oneof![Just(0u64), 1u64..8], 0..3);
    let max = || prop_oneof![2 => Just(0u32), 1 => 1u32..5];
    prop_oneof![
        8 => (path.clone(), prop::option::weighted(0.3, 0u64..6))
            .prop_map(|(path, cas)| Op::Put { path, cas }),
        2 => (path.clone(), versions.clone()).prop_map(|(path, versions)| Op::Delete { path, versions }),
        2 => (path.clone(), versions.clone()).prop_map(|(path, versions)| Op::Undelete { path, versions }),
        2 => (path.clone(), versions).prop_map(|(path, versions)| Op::Destroy { path, versions }),
        1 => (path.clone(), max()).prop_map(|(path, max)| Op::MaxVersions { path, max }),
        1 => (path.clone(), any::<bool>()).prop_map(|(path, on)| Op::CasRequired { path, on }),
        1 => path.prop_map(|path| Op::MetadataDelete { path }),
        1 => max().prop_map(|max| Op::MountMaxVersions { max }),
        1 => (0usize..3).prop_map(|first| Op::SealUnseal { first }),
        1 => (0usize..3).prop_map(|first| Op::Reopen { first }),
    ]
}

/// What a call ended with, compared between store and model.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ok,
    Version(u64),
    CasMismatch { expected: u64, current: u64 },
    CasRequired,
    NotFound,
}

fn outcome<T>(r: Result<T, Error>, ok: impl FnOnce(T) -> Outcome) -> Outcome {
    match r {
        Ok(v) => ok(v),
        Err(Error::CasMismatch { expected, current }) => Outcome::CasMismatch { expected, current },
        Err(Error::CasRequired) => Outcome::CasRequired,
        Err(Error::NotFound) => Outcome::NotFound,
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MVersion {
    data: Option<String>,
    deleted: bool,
    destroyed: bool,
}

#[derive(Debug, Clone, Default)]
struct MSecret {
    current: u64,
    max_versions: u32,
    cas_required: bool,
    versions: BTreeMap<u64, MVersion>,
}

impl MSecret {
    fn prune(&mut self, mount_max: u32) {
        let keep = match self.max_versions.max(mount_max) {
            0 => 10,
            n => n,
        } as usize;
        while self.versions.len() > keep {
            self.versions.pop_first();
        }
    }

    fn oldest(&self) -> u64 {
        self.versions.keys().next().copied().unwrap_or(0)
    }

    /// The versions an operation applies to (empty or 0 = current).
    fn targets(&self, versions: &[u64]) -> Vec<u64> {
        if versions.is_empty() {
            vec![self.current]
        } else {
            versions
                .iter()
                .map(|&v| if v == 0 { self.current } else { v })
                .collect()
        }
    }
}

/// The SPEC §4 semantics, written plainly.
#[derive(Debug, Default)]
struct Model {
    secrets: BTreeMap<&'static str, MSecret>,
    mount_max: u32,
    writes: u64,
}

impl Model {
    fn apply(&mut self, op: &Op) -> Outcome {
        match *op {
            Op::Put { path, cas } => {
                let mount_max = self.mount_max;
                let existing = self.secrets.get(PATHS[path]);
                let current = existing.map_or(0, |s| s.current);
                match cas {
                    Some(expected) if expected != current => {
                        return Outcome::CasMismatch { expected, current };
                    }
                    None if existing.is_some_and(|s| s.cas_required) => {
                        return Outcome::CasRequired;
                    }
                    _ => {}
                }
                self.writes += 1;
                let value = format!("w{}", self.writes);
                let s = self.secrets.entry(PATHS[path]).or_default();
                s.current += 1;
                s.versions.insert(
                    s.current,
                    MVersion {
                        data: Some(value),
                        deleted: false,
                        destroyed: false,
                    },
                );
                s.prune(mount_max);
                Outcome::Version(s.current)
            }
            Op::Delete { path, ref versions }
            | Op::Undelete { path, ref versions }
            | Op::Destroy { path, ref versions } => {
                let Some(s) = self.secrets.get_mut(PATHS[path]) else {
                    return Outcome::NotFound;
                };
                for n in s.targets(versions) {
                    let Some(v) = s.versions.get_mut(&n) else {
                        continue;
                    };
                    match op {
                        Op::Delete { .. } if !v.destroyed => v.deleted = true,
                        Op::Undelete { .. } if !v.destroyed => v.deleted = false,
                        Op::Destroy { .. } => {
                            v.destroyed = true;
                            v.data = None;
                        }
                        _ => {}
                    }
                }
                Outcome::Ok
            }
            Op::MaxVersions { path, max } => {
                let mount_max = self.mount_max;
                let s = self.secrets.entry(PATHS[path]).or_default();
                s.max_versions = max;
                s.prune(mount_max);
                Outcome::Ok
            }
            Op::CasRequired { path, on } => {
                let mount_max = self.mount_max;
                let s = self.secrets.entry(PATHS[path]).or_default();
                s.cas_required = on;
                s.prune(mount_max);
                Outcome::Ok
            }
            Op::MetadataDelete { path } => match self.secrets.remove(PATHS[path]) {
                Some(_) => Outcome::Ok,
                None => Outcome::NotFound,
            },
            Op::MountMaxVersions { max } => {
                self.mount_max = max;
                Outcome::Ok
            }
            Op::SealUnseal { .. } | Op::Reopen { .. } => Outcome::Ok,
        }
    }
}

/// Two of the three shares, starting at `first`.
fn two(shares: &[Share], first: usize) -> Vec<Share> {
    vec![
        shares[first % 3].try_clone(),
        shares[(first + 1) % 3].try_clone(),
    ]
}

async fn apply(
    nexus: &mut Nexus,
    store: &Arc<MemoryStore>,
    shares: &[Share],
    model: &Model,
    op: &Op,
) -> Outcome {
    let who = su();
    match *op {
        Op::Put { path, cas } => {
            // The model numbered this write already if it succeeds.
            let value = format!("w{}", model.writes + 1);
            let data = SecretData::from_pairs([("k", value)]).unwrap();
            outcome(
                nexus
                    .put_secret(&who, PATHS[path], data, WriteOptions { cas })
                    .await,
                |v| Outcome::Version(v.number),
            )
        }
        Op::Delete { path, ref versions } => outcome(
            nexus.delete_secret(&who, PATHS[path], versions).await,
            |()| Outcome::Ok,
        ),
        Op::Undelete { path, ref versions } => outcome(
            nexus.undelete_secret(&who, PATHS[path], versions).await,
            |()| Outcome::Ok,
        ),
        Op::Destroy { path, ref versions } => outcome(
            nexus.destroy_secret(&who, PATHS[path], versions).await,
            |()| Outcome::Ok,
        ),
        Op::MaxVersions { path, max } => outcome(
            nexus
                .update_secret_metadata(
                    &who,
                    PATHS[path],
                    SettingsUpdate {
                        max_versions: Some(max),
                        ..SettingsUpdate::default()
                    },
                )
                .await,
            |()| Outcome::Ok,
        ),
        Op::CasRequired { path, on } => outcome(
            nexus
                .update_secret_metadata(
                    &who,
                    PATHS[path],
                    SettingsUpdate {
                        cas_required: Some(on),
                        ..SettingsUpdate::default()
                    },
                )
                .await,
            |()| Outcome::Ok,
        ),
        Op::MetadataDelete { path } => outcome(
            nexus.delete_secret_metadata(&who, PATHS[path]).await,
            |()| Outcome::Ok,
        ),
        Op::MountMaxVersions { max } => outcome(
            nexus
                .set_kv_config(
                    &who,
                    KvConfig {
                        max_versions: max,
                        ..KvConfig::default()
                    },
                )
                .await,
            |()| Outcome::Ok,
        ),
        Op::SealUnseal { first } => {
            nexus.seal().await.unwrap();
            nexus.unseal(&two(shares, first)).await.unwrap();
            Outcome::Ok
        }
        Op::Reopen { first } => {
            let old = std::mem::replace(nexus, Nexus::builder(store.clone()).open().await.unwrap());
            // Opening reads only the init record; every secret is loaded at
            // unseal, after the old handle has finished its writes.
            old.close().await;
            nexus.unseal(&two(shares, first)).await.unwrap();
            Outcome::Ok
        }
    }
}

/// Compares every secret in the store with the model.
fn compare(nexus: &Nexus, model: &Model, step: usize, op: &Op) -> Result<(), TestCaseError> {
    let who = su();
    let ctx = || format!("after step {step}: {op:?}");
    let mut listed: Vec<String> = nexus.list_all_secrets(&who).unwrap();
    listed.sort();
    let expected: Vec<String> = model.secrets.keys().map(|p| (*p).to_owned()).collect();
    prop_assert_eq!(&listed, &expected, "{}", ctx());
    prop_assert_eq!(nexus.kv_config().unwrap().max_versions, model.mount_max);
    for path in PATHS {
        let Some(m) = model.secrets.get(path) else {
            prop_assert!(
                matches!(nexus.secret_metadata(&who, path), Err(Error::NotFound)),
                "{path} exists; {}",
                ctx()
            );
            continue;
        };
        let s = nexus.secret_metadata(&who, path).unwrap();
        prop_assert_eq!(s.current_version, m.current, "{} current; {}", path, ctx());
        prop_assert_eq!(s.oldest_version, m.oldest(), "{} oldest; {}", path, ctx());
        prop_assert_eq!(s.settings.max_versions, m.max_versions);
        prop_assert_eq!(s.settings.cas_required, m.cas_required);
        let numbers: Vec<u64> = s.versions.iter().map(|v| v.number).collect();
        let model_numbers: Vec<u64> = m.versions.keys().copied().collect();
        prop_assert_eq!(&numbers, &model_numbers, "{} versions; {}", path, ctx());
        for v in &s.versions {
            let mv = &m.versions[&v.number];
            prop_assert_eq!(
                v.destroyed,
                mv.destroyed,
                "{}@{}; {}",
                path,
                v.number,
                ctx()
            );
            prop_assert_eq!(
                v.deletion_time.is_some(),
                mv.deleted,
                "{}@{} deleted; {}",
                path,
                v.number,
                ctx()
            );
            match nexus.get_secret(&who, path, v.number).unwrap() {
                VersionRead::Live { data, .. } => {
                    prop_assert!(!mv.deleted && !mv.destroyed, "{}; {}", path, ctx());
                    let got = data.to_object()["k"].as_str().unwrap().to_owned();
                    prop_assert_eq!(Some(got), mv.data.clone(), "{}@{}", path, v.number);
                }
                VersionRead::Gone(_) => {
                    prop_assert!(
                        mv.deleted || mv.destroyed,
                        "{}@{} gone; {}",
                        path,
                        v.number,
                        ctx()
                    );
                }
            }
        }
        // A version outside the retained range is not found.
        if m.current > 0 {
            prop_assert!(matches!(
                nexus.get_secret(&who, path, m.current + 1),
                Err(Error::NotFound)
            ));
        }
        if m.oldest() > 1 {
            prop_assert!(matches!(
                nexus.get_secret(&who, path, m.oldest() - 1),
                Err(Error::NotFound)
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn nexus_matches_the_kv_model(ops in prop::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = Arc::new(MemoryStore::new());
            let mut nexus = Nexus::builder(store.clone()).open().await.unwrap();
            let shares = nexus.init().await.unwrap();
            let shares = copies(&shares);
            let mut model = Model::default();
            for (step, op) in ops.iter().enumerate() {
                let got = apply(&mut nexus, &store, &shares, &model, op).await;
                let want = model.apply(op);
                prop_assert_eq!(&got, &want, "step {}: {:?}", step, op);
                compare(&nexus, &model, step, op)?;
            }
            Ok(())
        })?;
    }
}
