//! Helpers shared by the durability modules.

use std::future::Future;

use serde_json::{Map, Value};
use spike_core::{Caller, Error, Nexus, SecretData, SpiffeId, VersionRead};
use spike_crypto::{Purpose, RootKey, Share, SubKey, combine, keyed_hash};

/// The built-in superuser.
pub fn superuser() -> Caller {
    Caller::new(SpiffeId::parse("spiffe://spike.ist/spike/pilot/role/superuser").unwrap())
}

/// The recover role (to read every share back).
pub fn recoverer() -> Caller {
    Caller::new(SpiffeId::parse("spiffe://spike.ist/spike/pilot/role/recover").unwrap())
}

/// Runs `f` on a fresh single-threaded runtime that is dropped afterwards,
/// so every task it spawned (the writer holds the store) is gone and a redb
/// file can be opened again.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

pub fn data<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> SecretData {
    SecretData::from_pairs(pairs).unwrap()
}

/// The live data of `path` at `version` (0 = current); `None` when the
/// version is gone (deleted or destroyed).
pub fn live(nexus: &Nexus, path: &str, version: u64) -> Result<Option<Map<String, Value>>, Error> {
    match nexus.get_secret(&superuser(), path, version)? {
        VersionRead::Live { data, .. } => Ok(Some(data.to_object())),
        VersionRead::Gone(_) => Ok(None),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub fn shares_to_text(shares: &[Share]) -> Vec<String> {
    shares.iter().map(|s| s.to_text().to_string()).collect()
}

pub fn shares_from_text(text: &[String]) -> Vec<Share> {
    text.iter().map(|t| Share::from_text(t).unwrap()).collect()
}

/// Storage keys computed from the shares, independently of spike-core's
/// code, as `docs/format.md` describes them.
pub struct StorageKeys {
    index: SubKey,
}

impl StorageKeys {
    pub fn new(shares: &[Share]) -> Self {
        Self::from_root(&combine(shares).unwrap())
    }

    pub fn from_root(root: &RootKey) -> Self {
        Self {
            index: root.derive(Purpose::PathIndex),
        }
    }

    /// `0x01 || HMAC(path-index key, lp("secret") || lp(path))`.
    pub fn secret(&self, path: &str) -> Vec<u8> {
        let mut key = vec![0x01];
        key.extend_from_slice(&keyed_hash(&self.index, &[b"secret", path.as_bytes()]));
        key
    }

    /// `0x02 || HMAC(path-index key, lp("policy") || lp(name))`.
    pub fn policy(&self, name: &str) -> Vec<u8> {
        let mut key = vec![0x02];
        key.extend_from_slice(&keyed_hash(&self.index, &[b"policy", name.as_bytes()]));
        key
    }

    /// The record's manifest digest share: the first 16 bytes of
    /// `HMAC(path-index key, lp("digest") || lp(storage key) || lp(header))`.
    pub fn digest_share(&self, storage_key: &[u8], record: &[u8]) -> [u8; 16] {
        let full = keyed_hash(&self.index, &[b"digest", storage_key, &record[..16]]);
        full[..16].try_into().unwrap()
    }
}

pub const INIT_KEY: &[u8] = b"\x00init";
pub const MANIFEST_KEY: &[u8] = b"\x00manifest";
pub const CONFIG_KEY: &[u8] = b"\x00config";
