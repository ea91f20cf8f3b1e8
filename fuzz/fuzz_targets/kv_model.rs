//! Model-based: a random sequence of secret operations on 4 paths, applied
//! to a `Nexus` over a `MemoryStore` and to a `BTreeMap` model of Vault KV
//! v2 semantics (10 versions kept, soft delete, undelete, destroy,
//! metadata delete). After every operation the results agree, and so does
//! every path's state: current version, retained versions and their
//! deleted/destroyed flags, and what a read of each returns.
//!
//! Input: one byte per operation `op(3 bits) | path(2 bits) | arg(3 bits)`;
//! a put's value is the next byte.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use spike_core::{Caller, Error, Nexus, SecretData, SpiffeId, VersionRead, WriteOptions};
use spike_storage::MemoryStore;

const PATHS: [&str; 4] = ["a", "a/b", "db/creds", "z/y/x"];
const MAX_VERSIONS: usize = 10;

#[derive(Debug, Clone, PartialEq)]
struct ModelVersion {
    data: Option<Vec<u8>>,
    deleted: bool,
}

#[derive(Debug, Default, Clone)]
struct ModelSecret {
    current: u64,
    versions: BTreeMap<u64, ModelVersion>,
}

/// What an operation returned, comparable across store and model.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ok,
    Put(u64),
    Live(u64, Vec<u8>),
    Gone(u64),
    NotFound,
    Other(String),
}

fn outcome<T>(r: Result<T, Error>, ok: impl FnOnce(T) -> Outcome) -> Outcome {
    match r {
        Ok(v) => ok(v),
        Err(Error::NotFound) => Outcome::NotFound,
        Err(e) => Outcome::Other(format!("{e:?}")),
    }
}

fn read_outcome(r: Result<VersionRead, Error>) -> Outcome {
    outcome(r, |v| match v {
        VersionRead::Live { version, data } => {
            Outcome::Live(version.number, data.expose_json().to_vec())
        }
        VersionRead::Gone(version) => Outcome::Gone(version.number),
    })
}

fn model_read(m: Option<&ModelSecret>, version: u64) -> Outcome {
    let Some(s) = m else {
        return Outcome::NotFound;
    };
    let n = if version == 0 { s.current } else { version };
    match s.versions.get(&n) {
        None => Outcome::NotFound,
        Some(v) => match &v.data {
            Some(d) if !v.deleted => Outcome::Live(n, d.clone()),
            _ => Outcome::Gone(n),
        },
    }
}

/// Versions an operation names: `[]` (the current one) or one number.
fn versions_arg(arg: u8) -> Vec<u64> {
    if arg == 0 {
        Vec::new()
    } else {
        vec![u64::from(arg) + 3]
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 256 {
        return;
    }
    runtime().block_on(async {
        let nexus = Nexus::builder(Arc::new(MemoryStore::new()))
            .open()
            .await
            .expect("open");
        nexus.init().await.expect("init");
        let admin = Caller::new(
            SpiffeId::parse("spiffe://spike.ist/spike/pilot/role/superuser").expect("id"),
        );
        let mut model: BTreeMap<&str, ModelSecret> = BTreeMap::new();
        let mut bytes = data.iter().copied();
        while let Some(b) = bytes.next() {
            let (op, path, arg) = (b >> 5, PATHS[usize::from((b >> 3) & 3)], b & 7);
            let (got, want) = match op {
                0 | 1 => {
                    let value = bytes.next().unwrap_or(0);
                    let d = SecretData::from_pairs([("v", format!("{value}"))]).expect("data");
                    let json = d.expose_json().to_vec();
                    let got = outcome(
                        nexus
                            .put_secret(&admin, path, d, WriteOptions::default())
                            .await,
                        |v| Outcome::Put(v.number),
                    );
                    let s = model.entry(path).or_default();
                    s.current += 1;
                    s.versions.insert(
                        s.current,
                        ModelVersion {
                            data: Some(json),
                            deleted: false,
                        },
                    );
                    while s.versions.len() > MAX_VERSIONS {
                        s.versions.pop_first();
                    }
                    (got, Outcome::Put(s.current))
                }
                2 => {
                    let version = if arg == 0 { 0 } else { u64::from(arg) * 2 };
                    let got = read_outcome(nexus.get_secret(&admin, path, version));
                    (got, model_read(model.get(path), version))
                }
                3..=5 => {
                    let versions = versions_arg(arg);
                    let got = outcome(
                        match op {
                            3 => nexus.delete_secret(&admin, path, &versions).await,
                            4 => nexus.undelete_secret(&admin, path, &versions).await,
                            _ => nexus.destroy_secret(&admin, path, &versions).await,
                        },
                        |()| Outcome::Ok,
                    );
                    let want = match model.get_mut(path) {
                        None => Outcome::NotFound,
                        Some(s) => {
                            let n = versions.first().copied().unwrap_or(s.current);
                            if let Some(v) = s.versions.get_mut(&n) {
                                match op {
                                    3 if v.data.is_some() => v.deleted = true,
                                    4 if v.data.is_some() => v.deleted = false,
                                    5 => v.data = None,
                                    _ => {}
                                }
                            }
                            Outcome::Ok
                        }
                    };
                    (got, want)
                }
                _ => {
                    let got = outcome(nexus.delete_secret_metadata(&admin, path).await, |()| {
                        Outcome::Ok
                    });
                    let want = match model.remove(path) {
                        Some(_) => Outcome::Ok,
                        None => Outcome::NotFound,
                    };
                    (got, want)
                }
            };
            assert_eq!(got, want, "op {op} on {path} (arg {arg})");

            // Every path's state agrees.
            for p in PATHS {
                let m = model.get(p);
                match (nexus.secret_metadata(&admin, p), m) {
                    (Err(Error::NotFound), None) => {}
                    (Ok(s), Some(m)) => {
                        assert_eq!(s.current_version, m.current, "{p}");
                        let retained: Vec<(u64, bool, bool)> = s
                            .versions
                            .iter()
                            .map(|v| (v.number, v.deletion_time.is_some(), v.destroyed))
                            .collect();
                        let expected: Vec<(u64, bool, bool)> = m
                            .versions
                            .iter()
                            .map(|(&n, v)| (n, v.deleted, v.data.is_none()))
                            .collect();
                        assert_eq!(retained, expected, "{p}");
                    }
                    (got, want) => panic!(
                        "{p}: store {:?}, model {want:?}",
                        got.map(|s| s.current_version)
                    ),
                }
                for version in 0..=m.map_or(1, |s| s.current + 1) {
                    assert_eq!(
                        read_outcome(nexus.get_secret(&admin, p, version)),
                        model_read(m, version),
                        "{p} v{version}"
                    );
                }
            }
        }
        nexus.close().await;
    });
});
