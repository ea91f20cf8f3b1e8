//! Behavioural tests of spike-core: one binary, themed modules (STYLE §13).
//!
//! Every test builds its own store: a real redb file in a temporary
//! directory where a user would have one, a `MemoryStore` for pure logic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit;
mod lifecycle;
mod model;
mod policy;
mod rotation;
mod secrets;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};
use spike_core::{
    Caller, Nexus, Permission, PolicySpec, SecretData, Share, SpiffeId, VersionRead, WriteOptions,
};
use spike_storage::{MemoryStore, RedbStore};

pub(crate) const SUPERUSER: &str = "spiffe://spike.ist/spike/pilot/role/superuser";
pub(crate) const RECOVER: &str = "spiffe://spike.ist/spike/pilot/role/recover";
pub(crate) const RESTORE: &str = "spiffe://spike.ist/spike/pilot/role/restore";

/// A caller with this SPIFFE ID.
pub(crate) fn caller(id: &str) -> Caller {
    Caller::new(SpiffeId::parse(id).unwrap())
}

/// The superuser.
pub(crate) fn su() -> Caller {
    caller(SUPERUSER)
}

/// Secret data from string pairs.
pub(crate) fn data(pairs: &[(&str, &str)]) -> SecretData {
    SecretData::from_pairs(pairs.iter().copied()).unwrap()
}

/// Writes `k = v` at `path` as the superuser; returns the new version number.
pub(crate) async fn put(nexus: &Nexus, path: &str, v: &str) -> u64 {
    nexus
        .put_secret(&su(), path, data(&[("k", v)]), WriteOptions::default())
        .await
        .unwrap()
        .number
}

/// The live data of `path` at `version` (0 = current), or a panic.
pub(crate) fn live(nexus: &Nexus, path: &str, version: u64) -> Map<String, Value> {
    match nexus.get_secret(&su(), path, version) {
        Ok(VersionRead::Live { data, .. }) => data.to_object(),
        Ok(VersionRead::Gone(v)) => panic!("{path}@{version} is gone: {v:?}"),
        Err(e) => panic!("{path}@{version}: {e}"),
    }
}

/// The value of key `k` of `path`'s current version.
pub(crate) fn value(nexus: &Nexus, path: &str) -> String {
    live(nexus, path, 0)["k"].as_str().unwrap().to_owned()
}

/// Explicit copies of shares (they are not `Clone`).
pub(crate) fn copies(shares: &[Share]) -> Vec<Share> {
    shares.iter().map(Share::try_clone).collect()
}

/// Whether two share lists are the same shares, in order.
pub(crate) fn same_shares(a: &[Share], b: &[Share]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.id() == y.id() && x.value() == y.value())
}

/// A policy spec.
pub(crate) fn spec(name: &str, id: &str, path: &str, perms: &[Permission]) -> PolicySpec {
    PolicySpec {
        name: name.to_owned(),
        spiffeid_pattern: id.to_owned(),
        path_pattern: path.to_owned(),
        permissions: perms.iter().copied().collect(),
    }
}

/// An initialised, unsealed store in memory and its shares.
pub(crate) async fn memory_nexus() -> (Nexus, Vec<Share>) {
    let nexus = Nexus::builder(Arc::new(MemoryStore::new()))
        .open()
        .await
        .unwrap();
    let shares = nexus.init().await.unwrap();
    (nexus, shares)
}

/// A redb file in a temporary directory that lives as long as this value.
pub(crate) struct RedbFile {
    _dir: tempfile::TempDir,
    pub(crate) path: PathBuf,
}

impl RedbFile {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spike.redb");
        Self { _dir: dir, path }
    }

    pub(crate) fn store(&self) -> Arc<RedbStore> {
        Arc::new(RedbStore::open(&self.path).unwrap())
    }

    /// Opens a `Nexus` on the file (sealed or uninitialised).
    pub(crate) async fn open(&self) -> Nexus {
        Nexus::builder(self.store()).open().await.unwrap()
    }

    /// A new, initialised and unsealed store on the file, and its shares.
    pub(crate) async fn init(&self) -> (Nexus, Vec<Share>) {
        let nexus = self.open().await;
        let shares = nexus.init().await.unwrap();
        (nexus, shares)
    }
}

/// Closes `nexus` (releasing its redb file) and opens the file again: the
/// result is sealed, as after a process restart.
pub(crate) async fn reopen(nexus: Nexus, path: &Path) -> Nexus {
    nexus.close().await;
    Nexus::builder(Arc::new(RedbStore::open(path).unwrap()))
        .open()
        .await
        .unwrap()
}

/// Like [`reopen`], then unseals with `shares`.
pub(crate) async fn restart(nexus: Nexus, path: &Path, shares: &[Share]) -> Nexus {
    let nexus = reopen(nexus, path).await;
    nexus.unseal(shares).await.unwrap();
    nexus
}

/// Asserts `result` failed with `pattern`.
#[macro_export]
macro_rules! assert_err {
    ($result:expr, $pattern:pat) => {
        match $result {
            Err($pattern) => {}
            Err(other) => panic!("expected {}, got error {other:?}", stringify!($pattern)),
            Ok(_) => panic!("expected {}, got Ok", stringify!($pattern)),
        }
    };
}
