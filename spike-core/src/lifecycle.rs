//! Root-key lifecycle: init, unseal, restore, recover. Loading every
//! record into memory on unseal is [`load`]'s.

mod load;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use spike_crypto::{KeyCheckValue, RootKey, Share, combine, split};
use spike_storage::{BackingStore, WriteBatch};

use crate::audit::{Caller, Decision};
use crate::cipher::StoredCipherKey;
use crate::error::{Error, InputError};
use crate::identity::Role;
use crate::keyring::{
    CONFIG_KEY, EpochKeys, INIT_KEY, MANIFEST_KEY, PREFIX_POLICY, PREFIX_SECRET, ROTATION_BACK_KEY,
    ROTATION_FORWARD_KEY,
};
use crate::nexus::{Keys, Nexus, Sealed, State, StoredConfig, Unsealed};
use crate::policy::PolicySet;
use crate::record::{self, Header, Kind, Manifest, RecordError, RotationRecord};
use crate::writer::{ManifestCodec, Writer};
use load::{Loaded, load};

/// The init record: written once at init, rewritten when a rotation starts
/// and ends. Not encrypted (the check value is not secret) but MACed under
/// the path-index key, so edits are caught after unseal.
///
/// ```text
/// "SKI" || 1 || epoch(u32) || threshold(u8) || shares(u8) || check(32)
///       || has_next(u8) [ || next_epoch(u32) || next_check(32) ]
///       || mac(32) [ || next_mac(32) ]
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InitRecord {
    pub(crate) epoch: u32,
    pub(crate) threshold: u8,
    pub(crate) shares: u8,
    pub(crate) check: KeyCheckValue,
    /// During a rotation: the new epoch and its key's check value.
    pub(crate) next: Option<(u32, KeyCheckValue)>,
}

const INIT_MAGIC: &[u8; 4] = b"SKI\x01";

impl InitRecord {
    fn fields(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(80);
        out.extend_from_slice(INIT_MAGIC);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.push(self.threshold);
        out.push(self.shares);
        out.extend_from_slice(&self.check.to_bytes());
        match &self.next {
            Some((epoch, check)) => {
                out.push(1);
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&check.to_bytes());
            }
            None => out.push(0),
        }
        out
    }

    /// Encodes with MACs under `keys` (current epoch) and `next_keys`.
    pub(crate) fn encode(&self, keys: &EpochKeys, next_keys: Option<&EpochKeys>) -> Vec<u8> {
        let fields = self.fields();
        let mut out = fields.clone();
        out.extend_from_slice(&keys.init_mac(&fields));
        if let Some(next) = next_keys {
            out.extend_from_slice(&next.init_mac(&fields));
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<(Self, usize), RecordError> {
        let bad = RecordError::Malformed("init record");
        let take = |at: usize, n: usize| bytes.get(at..at + n).ok_or(bad.clone());
        if take(0, 4)? != INIT_MAGIC {
            return Err(RecordError::BadMagic);
        }
        let u32_at = |at| -> Result<u32, RecordError> {
            let b = take(at, 4)?;
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let check_at = |at| -> Result<KeyCheckValue, RecordError> {
            let mut c = [0u8; 32];
            c.copy_from_slice(take(at, 32)?);
            Ok(KeyCheckValue::from_bytes(c))
        };
        let epoch = u32_at(4)?;
        let threshold = take(8, 1)?[0];
        let shares = take(9, 1)?[0];
        let check = check_at(10)?;
        let (next, fields_len) = match take(42, 1)?[0] {
            0 => (None, 43),
            1 => (Some((u32_at(43)?, check_at(47)?)), 79),
            _ => return Err(bad),
        };
        if threshold == 0 || threshold > shares {
            return Err(bad);
        }
        // Exactly one MAC per epoch it names: nothing may trail them.
        let macs = if next.is_some() { 2 } else { 1 };
        if bytes.len() != fields_len + 32 * macs {
            return Err(bad);
        }
        Ok((
            Self {
                epoch,
                threshold,
                shares,
                check,
                next,
            },
            fields_len,
        ))
    }

    /// Reads the init record, if the store has been initialised.
    ///
    /// A store without one but with records (the init record was deleted)
    /// is [`Error::Tampered`], not uninitialised: an `init` would orphan
    /// every record in it.
    pub(crate) async fn read(store: &dyn BackingStore) -> Result<Option<Self>, Error> {
        let Some(bytes) = store.get(INIT_KEY).await? else {
            let holds_records = store.get(MANIFEST_KEY).await?.is_some()
                || store.get(CONFIG_KEY).await?.is_some()
                || !store.scan(&[PREFIX_SECRET], None, 1).await?.is_empty()
                || !store.scan(&[PREFIX_POLICY], None, 1).await?.is_empty();
            if holds_records {
                return Err(Error::Tampered {
                    what: "the init record is missing but the store holds records; \
                           restore the init record (or the whole store) from a backup"
                        .to_owned(),
                });
            }
            return Ok(None);
        };
        let (init, _) = Self::decode(&bytes).map_err(|e| tampered("init record", e))?;
        Ok(Some(init))
    }

    /// Checks the MAC made with `keys` (of `epoch` or of `next`).
    fn verify(bytes: &[u8], keys: &EpochKeys, which: usize) -> Result<(), Error> {
        let (_, fields_len) = Self::decode(bytes).map_err(|e| tampered("init record", e))?;
        let mac_at = fields_len + 32 * which;
        let expected = keys.init_mac(&bytes[..fields_len]);
        match bytes.get(mac_at..mac_at + 32) {
            Some(mac) if bool::from(subtle::ConstantTimeEq::ct_eq(mac, &expected[..])) => Ok(()),
            _ => Err(Error::Tampered {
                what: "init record MAC does not verify".to_owned(),
            }),
        }
    }
}

pub(crate) fn tampered(what: &str, e: RecordError) -> Error {
    Error::Tampered {
        what: format!("{what}: {e}"),
    }
}

fn hex8(key: &[u8]) -> String {
    let mut out = String::with_capacity(18);
    crate::audit::push_hex(&mut out, &key[..key.len().min(9)]);
    out
}

/// Seals and opens the manifest with the keys of the unsealed store.
pub(crate) struct Manifests(pub(crate) std::sync::Weak<Unsealed>);

impl ManifestCodec for Manifests {
    fn seal(&self, manifest: &Manifest) -> Result<Vec<u8>, Error> {
        let u = self.0.upgrade().ok_or(Error::ShuttingDown)?;
        let keys = u.keys();
        let header = Header {
            kind: Kind::Manifest,
            epoch: keys.current.epoch,
            revision: manifest.seq,
        };
        Ok(record::seal(
            &keys.current.cipher,
            header,
            MANIFEST_KEY,
            &manifest.encode(),
        )?)
    }

    fn open(&self, bytes: &[u8]) -> Result<Manifest, Error> {
        let u = self.0.upgrade().ok_or(Error::ShuttingDown)?;
        let keys = u.keys();
        open_manifest(&keys, bytes)
    }
}

fn open_manifest(keys: &Keys, bytes: &[u8]) -> Result<Manifest, Error> {
    let (header, pt) = record::open(
        |e| keys.for_epoch(e).map(|k| &k.cipher),
        MANIFEST_KEY,
        bytes,
    )
    .map_err(|e| tampered("manifest", e))?;
    let manifest = Manifest::decode(&pt).map_err(|e| tampered("manifest", e))?;
    if header.kind != Kind::Manifest || header.revision != manifest.seq {
        return Err(Error::Tampered {
            what: "manifest header does not match its content".to_owned(),
        });
    }
    Ok(manifest)
}

/// Progress of restoring shares one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreProgress {
    /// Shares held so far.
    pub collected: usize,
    /// Shares still needed.
    pub remaining: usize,
    /// Whether this share completed the restore (the store is unsealed).
    pub restored: bool,
}

impl Nexus {
    /// Initialises a new store: makes a root key from the OS CSPRNG, splits
    /// it into shares, and unseals. Returns the shares: hand each to its
    /// Keeper (or operator); the key itself is never written anywhere.
    ///
    /// Refused with [`Error::AlreadyInitialized`] if the store holds a root
    /// key already.
    pub async fn init(&self) -> Result<Vec<Share>, Error> {
        let started = Instant::now();
        let result = self.init_inner().await;
        self.audit_process("lifecycle.init", started, result)
    }

    async fn init_inner(&self) -> Result<Vec<Share>, Error> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        if !matches!(&*self.state(), State::Uninitialized)
            || InitRecord::read(&*self.inner.store).await?.is_some()
        {
            return Err(Error::AlreadyInitialized);
        }
        let c = &self.inner.config;
        let root = RootKey::generate();
        let shares = split(&root, c.threshold, c.shares)?;
        let init = InitRecord {
            epoch: 1,
            threshold: c.threshold,
            shares: c.shares,
            check: KeyCheckValue::compute(&root),
            next: None,
        };
        let keys = EpochKeys::derive(&root, init.epoch);
        let mut batch = WriteBatch::new();
        batch.put(INIT_KEY, init.encode(&keys, None));
        self.inner.store.commit(batch).await?;
        let keys = Keys {
            root,
            init,
            current: Arc::new(keys),
            previous: None,
        };
        let loaded = Loaded {
            keys,
            secrets: BTreeMap::new(),
            policies: PolicySet::default(),
            config: StoredConfig::default(),
            cipher: StoredCipherKey::default(),
            manifest: Manifest::default(),
        };
        self.start(loaded);
        tracing::info!(
            shares = c.shares,
            threshold = c.threshold,
            "store initialised"
        );
        Ok(shares)
    }

    /// Unseals with at least `threshold` shares (e.g. pulled from Keepers).
    /// Wrong, stale or too few shares give [`Error::WrongKey`].
    pub async fn unseal(&self, shares: &[Share]) -> Result<(), Error> {
        let started = Instant::now();
        let result = async {
            let _lifecycle = self.inner.lifecycle.lock().await;
            match &*self.state() {
                State::Unsealed(_) => return Err(Error::AlreadyUnsealed),
                State::Uninitialized => return Err(Error::NotInitialized),
                State::Sealed(_) => {}
            }
            let root = combine(shares).map_err(|_| Error::WrongKey)?;
            self.unseal_with_key(root).await
        }
        .await;
        self.audit_process("lifecycle.unseal", started, result)
    }

    /// Restores one share (operator restore role). When `threshold` distinct
    /// shares are in, the store unseals; a wrong set is reported with
    /// [`Error::WrongKey`] and forgotten, so the operator can start over.
    pub async fn restore(&self, caller: &Caller, share: Share) -> Result<RestoreProgress, Error> {
        let started = Instant::now();
        let (decision, result) = match self.require_role(caller, Role::Restore) {
            Ok(d) => (d, self.restore_share(share).await),
            Err(e) => (Decision::Deny, Err(e)),
        };
        self.audit(caller, "operator.restore", None, decision, started, result)
    }

    async fn restore_share(&self, share: Share) -> Result<RestoreProgress, Error> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        let (collected, threshold) = {
            let mut state = self.inner.state.write().unwrap_or_else(|p| p.into_inner());
            let sealed: &mut Sealed = match &mut *state {
                State::Sealed(s) => s,
                State::Unsealed(_) => return Err(Error::AlreadyUnsealed),
                State::Uninitialized => return Err(Error::NotInitialized),
            };
            if share.id() == 0 || share.id() > sealed.init.shares {
                return Err(InputError::Share {
                    reason: "share id is outside 1..=shares",
                }
                .into());
            }
            if sealed.restored.iter().any(|s| s.id() == share.id()) {
                return Err(InputError::Share {
                    reason: "a share with this id was already restored",
                }
                .into());
            }
            sealed.restored.push(share);
            (sealed.restored.len(), usize::from(sealed.init.threshold))
        };
        if collected < threshold {
            return Ok(RestoreProgress {
                collected,
                remaining: threshold - collected,
                restored: false,
            });
        }
        let shares = {
            let mut state = self.inner.state.write().unwrap_or_else(|p| p.into_inner());
            match &mut *state {
                State::Sealed(s) => std::mem::take(&mut s.restored),
                _ => return Err(Error::AlreadyUnsealed),
            }
        };
        let root = combine(&shares).map_err(|_| Error::WrongKey)?;
        self.unseal_with_key(root).await?;
        Ok(RestoreProgress {
            collected,
            remaining: 0,
            restored: true,
        })
    }

    /// Every share of the current root key (operator recover role), to keep
    /// offline for disaster recovery.
    pub fn recover(&self, caller: &Caller) -> Result<Vec<Share>, Error> {
        let started = Instant::now();
        let (decision, result) = match self.require_role(caller, Role::Recover) {
            Ok(d) => (d, self.current_shares()),
            Err(e) => (Decision::Deny, Err(e)),
        };
        self.audit(caller, "operator.recover", None, decision, started, result)
    }

    /// The shares to push to Keepers: share `i` goes to Keeper `i`. Shares
    /// are a deterministic function of the root key, so every call gives the
    /// same shares (a restarted Keeper gets its old share back).
    ///
    /// For the process that embeds the store (it pushes to Keepers); not a
    /// caller-facing operation, so it takes no [`Caller`].
    pub fn keeper_shares(&self) -> Result<Vec<Share>, Error> {
        self.current_shares()
    }

    fn current_shares(&self) -> Result<Vec<Share>, Error> {
        self.with_unsealed(|u| {
            let keys = u.keys();
            Ok(split(&keys.root, keys.init.threshold, keys.init.shares)?)
        })
    }

    /// Verifies `root` against the init record, loads every record and
    /// starts serving. The caller holds the lifecycle lock.
    pub(crate) async fn unseal_with_key(&self, root: RootKey) -> Result<(), Error> {
        let store = &*self.inner.store;
        let init_bytes = store.get(INIT_KEY).await?.ok_or(Error::NotInitialized)?;
        let (init, _) = InitRecord::decode(&init_bytes).map_err(|e| tampered("init record", e))?;
        let keys = if init.check.matches(&root) {
            let current = EpochKeys::derive(&root, init.epoch);
            InitRecord::verify(&init_bytes, &current, 0)?;
            match init.next {
                // A rotation was under way: its new key is sealed under ours.
                Some((next_epoch, next_check)) => {
                    let other = read_rotation_key(store, ROTATION_FORWARD_KEY, &current).await?;
                    if !next_check.matches(&other) {
                        return Err(Error::Tampered {
                            what: "rotation record holds a key that fails its check value"
                                .to_owned(),
                        });
                    }
                    let next = EpochKeys::derive(&other, next_epoch);
                    InitRecord::verify(&init_bytes, &next, 1)?;
                    Keys {
                        root: other,
                        init,
                        current: Arc::new(next),
                        previous: Some((root, Arc::new(current))),
                    }
                }
                None => Keys {
                    root,
                    init,
                    current: Arc::new(current),
                    previous: None,
                },
            }
        } else {
            match init.next {
                // Keepers already hold the new key's shares.
                Some((next_epoch, next_check)) if next_check.matches(&root) => {
                    let next = EpochKeys::derive(&root, next_epoch);
                    InitRecord::verify(&init_bytes, &next, 1)?;
                    let old = read_rotation_key(store, ROTATION_BACK_KEY, &next).await?;
                    if !init.check.matches(&old) {
                        return Err(Error::Tampered {
                            what: "rotation record holds a key that fails its check value"
                                .to_owned(),
                        });
                    }
                    let current = EpochKeys::derive(&old, init.epoch);
                    Keys {
                        root,
                        init,
                        current: Arc::new(next),
                        previous: Some((old, Arc::new(current))),
                    }
                }
                _ => return Err(Error::WrongKey),
            }
        };
        let loaded = load(store, keys).await?;
        self.start(loaded);
        tracing::info!("store unsealed");
        Ok(())
    }

    /// Publishes a loaded store and starts its writer.
    fn start(&self, loaded: Loaded) {
        // Serving starts now; the loaded policies' patterns compile in the
        // background (a request that needs one first compiles it itself).
        let policies: Vec<_> = loaded.policies.iter().cloned().collect();
        if !policies.is_empty() {
            tokio::task::spawn_blocking(move || {
                for p in policies {
                    p.compile_now();
                }
            });
        }
        let state = Arc::new_cyclic(|weak| {
            let codec = Arc::new(Manifests(weak.clone()));
            let writer = Writer::spawn(
                Arc::clone(&self.inner.store),
                codec,
                loaded.manifest,
                self.inner.config.write_deadline,
                Arc::clone(&self.inner.commits),
            );
            Unsealed::new(
                loaded.keys,
                loaded.secrets,
                loaded.policies,
                loaded.config,
                loaded.cipher,
                writer,
            )
        });
        self.set_state(State::Unsealed(state));
    }

    /// Drops every key and all plaintext from memory (zeroised) after
    /// pending writes have committed. The store must be unsealed again to
    /// serve.
    pub async fn seal(&self) -> Result<(), Error> {
        let started = Instant::now();
        let result = async {
            let _lifecycle = self.inner.lifecycle.lock().await;
            // Keys leave memory even when the init record cannot be read.
            let init = InitRecord::read(&*self.inner.store).await;
            self.stop(match &init {
                Ok(Some(init)) => State::Sealed(Sealed::new(init.clone())),
                _ => State::Uninitialized,
            })
            .await;
            init.map(|_| ())
        }
        .await;
        self.audit_process("lifecycle.seal", started, result)
    }

    /// Seals, waits for pending writes, and lets go of this handle. Once
    /// every clone is closed or dropped the backing store is released (a
    /// redb file can then be opened again).
    pub async fn close(self) {
        let _lifecycle = self.inner.lifecycle.lock().await;
        self.stop(State::Uninitialized).await;
        if let Some(Err(e)) = self.inner.audit.as_ref().map(|sink| sink.flush()) {
            tracing::error!(error = %e, "audit sink failed to flush");
        }
    }

    /// Replaces the state and waits for the old writer task to finish.
    async fn stop(&self, next: State) {
        let old = std::mem::replace(
            &mut *self.inner.state.write().unwrap_or_else(|p| p.into_inner()),
            next,
        );
        if let State::Unsealed(u) = old {
            let finished = u.writer.take_finished();
            drop(u);
            if let Some(finished) = finished {
                // Ends once in-flight writers (holding handles) finish.
                let _ = finished.await;
            }
        }
    }
}

async fn read_rotation_key(
    store: &dyn BackingStore,
    storage_key: &[u8],
    keys: &EpochKeys,
) -> Result<RootKey, Error> {
    let bytes = store
        .get(storage_key)
        .await?
        .ok_or_else(|| Error::Tampered {
            what: "rotation in progress but its record is missing".to_owned(),
        })?;
    let (header, pt) = record::open(
        |e| (e == keys.epoch).then_some(&keys.cipher),
        storage_key,
        &bytes,
    )
    .map_err(|e| tampered("rotation record", e))?;
    if header.kind != Kind::Rotation {
        return Err(tampered(
            "rotation record",
            RecordError::UnknownKind(header.kind as u8),
        ));
    }
    let rotation = RotationRecord::decode(&pt).map_err(|e| tampered("rotation record", e))?;
    Ok(RootKey::from_bytes(*rotation.new_key)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_record_roundtrip_and_mac() {
        let root = RootKey::generate();
        let keys = EpochKeys::derive(&root, 3);
        let init = InitRecord {
            epoch: 3,
            threshold: 2,
            shares: 3,
            check: KeyCheckValue::compute(&root),
            next: None,
        };
        let bytes = init.encode(&keys, None);
        assert_eq!(InitRecord::decode(&bytes).unwrap().0, init);
        InitRecord::verify(&bytes, &keys, 0).unwrap();
        let mut edited = bytes.clone();
        edited[8] = 3; // threshold 2 → 3
        assert!(InitRecord::verify(&edited, &keys, 0).is_err());
        let other = EpochKeys::derive(&RootKey::generate(), 3);
        assert!(InitRecord::verify(&bytes, &other, 0).is_err());

        let root2 = RootKey::generate();
        let keys2 = EpochKeys::derive(&root2, 4);
        let rotating = InitRecord {
            next: Some((4, KeyCheckValue::compute(&root2))),
            ..init
        };
        let bytes = rotating.encode(&keys, Some(&keys2));
        assert_eq!(InitRecord::decode(&bytes).unwrap().0, rotating);
        InitRecord::verify(&bytes, &keys, 0).unwrap();
        InitRecord::verify(&bytes, &keys2, 1).unwrap();
        assert!(InitRecord::verify(&bytes, &keys2, 0).is_err());
    }
}
