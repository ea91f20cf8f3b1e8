//! The versioned secret model (Vault KV v2 semantics), as pure functions.
//!
//! Nothing here does I/O or checks access: [`crate::Nexus`] authorises,
//! computes the next state with these functions, commits it durably and only
//! then publishes it in memory.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, InputError};
use crate::time::Timestamp;

/// Largest secret data, as serialised JSON (SPEC §10).
pub const MAX_DATA_LEN: usize = 1024 * 1024;
/// Longest key inside secret data.
pub const MAX_DATA_KEY_LEN: usize = 250;
/// Most custom metadata entries.
pub const MAX_CUSTOM_METADATA_KEYS: usize = 64;
/// Longest custom metadata key.
pub const MAX_CUSTOM_METADATA_KEY_LEN: usize = 128;
/// Longest custom metadata value.
pub const MAX_CUSTOM_METADATA_VALUE_LEN: usize = 512;
/// Versions kept when neither the secret nor the mount says otherwise.
pub const DEFAULT_MAX_VERSIONS: u32 = 10;

/// The data of one secret version: a JSON object, kept as its compact
/// serialisation in one shared allocation (memory stays close to the
/// payload size), zeroised when the last reference drops. `Debug` never
/// shows it.
#[derive(Clone)]
pub struct SecretData(Arc<[u8]>);

impl Drop for SecretData {
    fn drop(&mut self) {
        // Only the last reference gets `&mut`: it wipes the bytes before
        // the allocation is freed.
        if let Some(bytes) = Arc::get_mut(&mut self.0) {
            bytes.zeroize();
        }
    }
}

impl SecretData {
    /// From a JSON object. Keys must be 1–250 bytes; the serialised form
    /// at most 1 MiB.
    pub fn from_object(object: &Map<String, Value>) -> Result<Self, InputError> {
        for key in object.keys() {
            if key.is_empty() || key.len() > MAX_DATA_KEY_LEN {
                return Err(InputError::Data {
                    reason: "every key must be 1-250 bytes",
                });
            }
        }
        let bytes = Zeroizing::new(serde_json::to_vec(object).map_err(|_| InputError::Data {
            reason: "not serialisable",
        })?);
        Self::check_len(bytes.len())?;
        Ok(Self(Arc::from(bytes.as_slice())))
    }

    /// From string pairs, as the SPIKE API writes them.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Result<Self, InputError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let object: Map<String, Value> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), Value::String(v.into())))
            .collect();
        Self::from_object(&object)
    }

    /// From bytes already known to be a compact JSON object (records).
    pub(crate) fn from_trusted_json(bytes: &[u8]) -> Self {
        Self(Arc::from(bytes))
    }

    fn check_len(len: usize) -> Result<(), InputError> {
        if len > MAX_DATA_LEN {
            return Err(InputError::TooLarge {
                what: "secret data",
                len,
                max: MAX_DATA_LEN,
            });
        }
        Ok(())
    }

    /// The JSON object's bytes: always one compact JSON object, which a
    /// server may copy into an answer as it is. Handle with care: this is
    /// the secret.
    pub fn expose_json(&self) -> &[u8] {
        &self.0
    }

    /// The data as a JSON object (a copy: zeroize what you can of it).
    pub fn to_object(&self) -> Map<String, Value> {
        serde_json::from_slice(&self.0).unwrap_or_default()
    }

    /// Size of the serialised data.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the object is `{}`.
    pub fn is_empty(&self) -> bool {
        self.0.len() <= 2
    }
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretData([redacted; {} bytes])", self.0.len())
    }
}

impl PartialEq for SecretData {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == other.0.len() && bool::from(self.0.ct_eq(&other.0))
    }
}

/// Settings of the KV mount: the defaults every secret falls back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvConfig {
    /// Versions kept per secret (0 = the default of 10).
    pub max_versions: u32,
    /// Whether every write must carry `cas`.
    pub cas_required: bool,
    /// Versions are soft-deleted this long after they are written (zero =
    /// never).
    pub delete_version_after: Duration,
}

impl Default for KvConfig {
    fn default() -> Self {
        Self {
            max_versions: 0,
            cas_required: false,
            delete_version_after: Duration::ZERO,
        }
    }
}

/// Per-secret settings (KV v2 metadata that a caller writes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretSettings {
    /// Versions kept (0 = the mount's).
    pub max_versions: u32,
    /// Whether writes to this secret must carry `cas`.
    pub cas_required: bool,
    /// Soft-delete versions this long after writing (zero = the mount's).
    pub delete_version_after: Duration,
    /// Caller-defined, non-secret labels.
    pub custom_metadata: BTreeMap<String, String>,
}

/// A partial update of [`SecretSettings`]: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsUpdate {
    /// New `max_versions`.
    pub max_versions: Option<u32>,
    /// New `cas_required`.
    pub cas_required: Option<bool>,
    /// New `delete_version_after`.
    pub delete_version_after: Option<Duration>,
    /// Replaces all custom metadata.
    pub custom_metadata: Option<BTreeMap<String, String>>,
}

impl SettingsUpdate {
    pub(crate) fn validate(&self) -> Result<(), InputError> {
        if let Some(meta) = &self.custom_metadata {
            validate_custom_metadata(meta)?;
        }
        Ok(())
    }
}

fn validate_custom_metadata(meta: &BTreeMap<String, String>) -> Result<(), InputError> {
    let bad = |reason| InputError::CustomMetadata { reason };
    if meta.len() > MAX_CUSTOM_METADATA_KEYS {
        return Err(bad("at most 64 keys"));
    }
    for (k, v) in meta {
        if k.is_empty() || k.len() > MAX_CUSTOM_METADATA_KEY_LEN {
            return Err(bad("keys must be 1-128 bytes"));
        }
        if v.len() > MAX_CUSTOM_METADATA_VALUE_LEN {
            return Err(bad("values must be at most 512 bytes"));
        }
    }
    Ok(())
}

/// One version of a secret.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    /// The version number, from 1.
    pub number: u64,
    /// When it was written.
    pub created: Timestamp,
    /// When it was (or will be) soft-deleted.
    pub deletion_time: Option<Timestamp>,
    /// Whether its data was destroyed for good.
    pub destroyed: bool,
    /// The data; `None` once destroyed.
    pub(crate) data: Option<SecretData>,
}

impl Version {
    /// Whether the version counts as deleted at `now`.
    pub fn is_deleted_at(&self, now: Timestamp) -> bool {
        self.deletion_time.is_some_and(|t| t <= now)
    }
}

/// A secret: its settings and retained versions.
#[derive(Debug, Clone, PartialEq)]
pub struct Secret {
    /// When the secret was first written.
    pub created: Timestamp,
    /// When it last changed.
    pub updated: Timestamp,
    /// The newest version number (0 if metadata only).
    pub current_version: u64,
    /// The oldest retained version number (0 if none).
    pub oldest_version: u64,
    /// Settings.
    pub settings: SecretSettings,
    /// Retained versions, ascending.
    pub versions: Vec<Version>,
    /// Bumped on every change (never repeating for a path, even after its
    /// metadata is deleted); binds the stored record (rollback check).
    pub(crate) revision: u64,
    /// The key epoch its record is sealed under.
    pub(crate) epoch: u32,
}

/// What a read of one version found.
#[derive(Debug, Clone)]
pub enum VersionRead {
    /// The version and its data.
    Live {
        /// Version metadata.
        version: Version,
        /// The data.
        data: SecretData,
    },
    /// The version exists but is soft-deleted or destroyed (Vault answers
    /// 404 with metadata).
    Gone(Version),
}

/// Which versions a delete, undelete or destroy applies to.
pub(crate) fn effective_versions(secret: &Secret, versions: &[u64]) -> Vec<u64> {
    if versions.is_empty() || versions == [0] {
        vec![secret.current_version]
    } else {
        versions
            .iter()
            .map(|&v| if v == 0 { secret.current_version } else { v })
            .collect()
    }
}

impl Secret {
    fn empty(now: Timestamp) -> Self {
        Self {
            created: now,
            updated: now,
            current_version: 0,
            oldest_version: 0,
            settings: SecretSettings::default(),
            versions: Vec::new(),
            revision: 0,
            epoch: 0,
        }
    }

    /// The version `n` (0 = current), if retained.
    pub fn version(&self, n: u64) -> Option<&Version> {
        let n = if n == 0 { self.current_version } else { n };
        self.versions
            .binary_search_by_key(&n, |v| v.number)
            .ok()
            .and_then(|i| self.versions.get(i))
    }

    /// Reads version `n` (0 = current) as of `now`. Crate-private: data
    /// leaves only through [`crate::Nexus::get_secret`], which honours
    /// deletion.
    pub(crate) fn read(&self, n: u64, now: Timestamp) -> Option<VersionRead> {
        let v = self.version(n)?;
        match &v.data {
            Some(data) if !v.destroyed && !v.is_deleted_at(now) => Some(VersionRead::Live {
                version: v.clone(),
                data: data.clone(),
            }),
            _ => Some(VersionRead::Gone(v.clone())),
        }
    }

    /// Versions kept: the larger of the secret's and the mount's setting,
    /// 10 when both are 0.
    pub fn effective_max_versions(&self, mount: &KvConfig) -> u32 {
        match self.settings.max_versions.max(mount.max_versions) {
            0 => DEFAULT_MAX_VERSIONS,
            n => n,
        }
    }

    fn prune(&mut self, mount: &KvConfig) {
        let keep = self.effective_max_versions(mount) as usize;
        if self.versions.len() > keep {
            let drop = self.versions.len() - keep;
            self.versions.drain(..drop);
        }
        self.oldest_version = self.versions.first().map_or(0, |v| v.number);
    }

    fn touched(mut self, now: Timestamp) -> Self {
        self.updated = now;
        self.revision = next_revision(self.revision, now);
        self
    }
}

/// A record revision after `previous`: the wall clock in nanoseconds, or
/// one more than `previous` if the clock is behind. Clock-based so that a
/// path deleted and written again never reuses an old record's revision.
pub(crate) fn next_revision(previous: u64, now: Timestamp) -> u64 {
    now.as_nanos().max(previous.saturating_add(1))
}

/// The state after writing `data` as a new version.
pub(crate) fn write(
    existing: Option<&Secret>,
    data: SecretData,
    cas: Option<u64>,
    mount: &KvConfig,
    now: Timestamp,
) -> Result<Secret, Error> {
    let current = existing.map_or(0, |s| s.current_version);
    let cas_required = mount.cas_required || existing.is_some_and(|s| s.settings.cas_required);
    match cas {
        Some(expected) if expected != current => {
            return Err(Error::CasMismatch { expected, current });
        }
        None if cas_required => return Err(Error::CasRequired),
        _ => {}
    }
    let mut secret = existing.cloned().unwrap_or_else(|| Secret::empty(now));
    let number = current + 1;
    let after = match secret.settings.delete_version_after {
        d if d.is_zero() => mount.delete_version_after,
        d => d,
    };
    secret.versions.push(Version {
        number,
        created: now,
        deletion_time: (!after.is_zero()).then(|| now.saturating_add(after)),
        destroyed: false,
        data: Some(data),
    });
    secret.current_version = number;
    secret.prune(mount);
    Ok(secret.touched(now))
}

/// The state after `change` ran on each of `versions` that is retained;
/// `None` when it changed none of them.
fn change_versions(
    secret: &Secret,
    versions: &[u64],
    now: Timestamp,
    change: impl Fn(&mut Version) -> bool,
) -> Option<Secret> {
    let mut next = secret.clone();
    let mut changed = false;
    for n in effective_versions(secret, versions) {
        if let Ok(i) = next.versions.binary_search_by_key(&n, |v| v.number) {
            changed |= change(&mut next.versions[i]);
        }
    }
    changed.then(|| next.touched(now))
}

/// The state after soft-deleting `versions` (empty = current). `None` when
/// nothing changes.
pub(crate) fn delete(secret: &Secret, versions: &[u64], now: Timestamp) -> Option<Secret> {
    change_versions(secret, versions, now, |v| {
        let live = !v.destroyed && !v.is_deleted_at(now);
        if live {
            v.deletion_time = Some(now);
        }
        live
    })
}

/// The state after undeleting `versions`. `None` when nothing changes.
pub(crate) fn undelete(secret: &Secret, versions: &[u64], now: Timestamp) -> Option<Secret> {
    change_versions(secret, versions, now, |v| {
        let deleted = !v.destroyed && v.deletion_time.is_some();
        if deleted {
            v.deletion_time = None;
        }
        deleted
    })
}

/// The state after destroying `versions`' data. `None` when nothing changes.
pub(crate) fn destroy(secret: &Secret, versions: &[u64], now: Timestamp) -> Option<Secret> {
    change_versions(secret, versions, now, |v| {
        let had_data = !v.destroyed;
        v.destroyed = true;
        v.data = None;
        had_data
    })
}

/// `data` with the JSON merge patch `patch` (RFC 7386) applied: `null`
/// removes a key, an object merges recursively, anything else replaces.
pub(crate) fn merge_patch(
    data: &SecretData,
    patch: &Map<String, Value>,
) -> Result<SecretData, InputError> {
    fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
        for (k, v) in patch {
            match v {
                Value::Null => {
                    target.remove(k);
                }
                Value::Object(p) => {
                    let slot = target
                        .entry(k.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if !slot.is_object() {
                        *slot = Value::Object(Map::new());
                    }
                    if let Value::Object(t) = slot {
                        merge(t, p);
                    }
                }
                other => {
                    target.insert(k.clone(), other.clone());
                }
            }
        }
    }
    let mut object = data.to_object();
    merge(&mut object, patch);
    let out = SecretData::from_object(&object);
    zeroize_object(object);
    out
}

/// Best-effort wipe of a decoded copy of secret data.
fn zeroize_object(object: Map<String, Value>) {
    for (_, v) in object {
        if let Value::String(mut s) = v {
            s.zeroize();
        }
    }
}

/// The state after updating settings (creating metadata-only if absent).
pub(crate) fn update_settings(
    existing: Option<&Secret>,
    update: &SettingsUpdate,
    mount: &KvConfig,
    now: Timestamp,
) -> Secret {
    let mut secret = existing.cloned().unwrap_or_else(|| Secret::empty(now));
    let s = &mut secret.settings;
    if let Some(v) = update.max_versions {
        s.max_versions = v;
    }
    if let Some(v) = update.cas_required {
        s.cas_required = v;
    }
    if let Some(v) = update.delete_version_after {
        s.delete_version_after = v;
    }
    if let Some(v) = &update.custom_metadata {
        s.custom_metadata = v.clone();
    }
    secret.prune(mount);
    secret.touched(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(v: &str) -> SecretData {
        SecretData::from_pairs([("k", v)]).unwrap()
    }

    fn t(n: u64) -> Timestamp {
        Timestamp::from_nanos(n * 1_000_000_000)
    }

    #[test]
    fn versions_count_up_and_prune() {
        let mount = KvConfig {
            max_versions: 3,
            ..KvConfig::default()
        };
        let mut s = write(None, data("1"), None, &mount, t(1)).unwrap();
        for i in 2..=5 {
            s = write(Some(&s), data(&i.to_string()), None, &mount, t(i)).unwrap();
        }
        assert_eq!(s.current_version, 5);
        assert_eq!(s.oldest_version, 3);
        assert_eq!(s.versions.len(), 3);
        assert!(s.version(2).is_none());
        assert!(
            matches!(s.read(0, t(9)), Some(VersionRead::Live { version, .. }) if version.number == 5)
        );
        assert!(s.revision >= 5);
    }

    #[test]
    fn cas_semantics() {
        let mount = KvConfig::default();
        assert!(write(None, data("a"), Some(0), &mount, t(1)).is_ok());
        assert!(matches!(
            write(None, data("a"), Some(1), &mount, t(1)),
            Err(Error::CasMismatch {
                expected: 1,
                current: 0
            })
        ));
        let s = write(None, data("a"), None, &mount, t(1)).unwrap();
        assert!(matches!(
            write(Some(&s), data("b"), Some(0), &mount, t(2)),
            Err(Error::CasMismatch {
                expected: 0,
                current: 1
            })
        ));
        assert!(write(Some(&s), data("b"), Some(1), &mount, t(2)).is_ok());
        let strict = KvConfig {
            cas_required: true,
            ..KvConfig::default()
        };
        assert!(matches!(
            write(Some(&s), data("b"), None, &strict, t(2)),
            Err(Error::CasRequired)
        ));
        let mut per_key = s.clone();
        per_key.settings.cas_required = true;
        assert!(matches!(
            write(Some(&per_key), data("b"), None, &mount, t(2)),
            Err(Error::CasRequired)
        ));
    }

    #[test]
    fn delete_undelete_destroy() {
        let mount = KvConfig::default();
        let s = write(None, data("a"), None, &mount, t(1)).unwrap();
        let s = write(Some(&s), data("b"), None, &mount, t(2)).unwrap();
        let d = delete(&s, &[], t(3)).unwrap();
        assert!(matches!(d.read(2, t(3)), Some(VersionRead::Gone(_))));
        assert!(matches!(d.read(1, t(3)), Some(VersionRead::Live { .. })));
        assert!(
            delete(&d, &[2], t(4)).is_none(),
            "deleting twice changes nothing"
        );
        let u = undelete(&d, &[2], t(4)).unwrap();
        assert!(matches!(u.read(2, t(4)), Some(VersionRead::Live { .. })));
        let x = destroy(&u, &[1], t(5)).unwrap();
        let Some(VersionRead::Gone(v)) = x.read(1, t(5)) else {
            panic!()
        };
        assert!(v.destroyed && v.data.is_none());
        assert!(
            undelete(&x, &[1], t(6)).is_none(),
            "destroyed stays destroyed"
        );
        assert!(delete(&x, &[99], t(6)).is_none());
    }

    #[test]
    fn delete_version_after_expires_reads() {
        let mount = KvConfig {
            delete_version_after: Duration::from_secs(10),
            ..KvConfig::default()
        };
        let s = write(None, data("a"), None, &mount, t(100)).unwrap();
        assert!(matches!(s.read(1, t(105)), Some(VersionRead::Live { .. })));
        assert!(matches!(s.read(1, t(110)), Some(VersionRead::Gone(_))));
    }

    #[test]
    fn settings_update_prunes_and_validates() {
        let mount = KvConfig::default();
        let mut s = write(None, data("1"), None, &mount, t(1)).unwrap();
        for i in 2..=6 {
            s = write(Some(&s), data("x"), None, &mount, t(i)).unwrap();
        }
        // max(key, mount): mount 0 → key 2 wins.
        let update = SettingsUpdate {
            max_versions: Some(2),
            ..SettingsUpdate::default()
        };
        let s = update_settings(Some(&s), &update, &mount, t(7));
        assert_eq!(s.versions.len(), 2);
        assert_eq!(s.oldest_version, 5);
        let too_many: BTreeMap<_, _> = (0..65).map(|i| (i.to_string(), String::new())).collect();
        let bad = SettingsUpdate {
            custom_metadata: Some(too_many),
            ..SettingsUpdate::default()
        };
        assert!(bad.validate().is_err());
        let long_value = SettingsUpdate {
            custom_metadata: Some([("k".to_owned(), "v".repeat(513))].into()),
            ..SettingsUpdate::default()
        };
        assert!(long_value.validate().is_err());
    }

    #[test]
    fn merge_patch_follows_rfc7386() {
        let obj = |v: Value| v.as_object().cloned().unwrap();
        let d = SecretData::from_object(&obj(
            serde_json::json!({"a": "1", "b": "2", "o": {"x": 1, "y": 2}}),
        ))
        .unwrap();
        let patch = obj(serde_json::json!({"a": null, "c": "3", "o": {"x": null, "z": 3}}));
        let out = merge_patch(&d, &patch).unwrap().to_object();
        assert_eq!(
            Value::Object(out),
            serde_json::json!({"b": "2", "c": "3", "o": {"y": 2, "z": 3}})
        );
    }

    #[test]
    fn data_limits_and_redaction() {
        assert!(SecretData::from_pairs([("", "v")]).is_err());
        assert!(SecretData::from_pairs([("k".repeat(251), "v".to_owned())]).is_err());
        let huge = SecretData::from_pairs([("k", "v".repeat(MAX_DATA_LEN))]);
        assert!(matches!(huge, Err(InputError::TooLarge { .. })));
        let d = SecretData::from_pairs([("password", "hunter2")]).unwrap();
        assert!(!format!("{d:?}").contains("hunter2"));
        assert_eq!(d.to_object()["password"], "hunter2");
    }
}
