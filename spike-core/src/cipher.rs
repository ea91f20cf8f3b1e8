//! Encryption as a service (SPIKE `/v1/cipher/*`), gated by
//! `spike/system/cipher/exec` (`execute`).
//!
//! The data key is a random 32-byte key made at first use, not a subkey of
//! the root key: it is stored as the system record `\x00cipher-key` (kind
//! 6) sealed under the records key like any record, counted in the
//! manifest, and re-sealed when the root key rotates. Ciphertexts handed
//! out therefore survive root-key rotation.
//!
//! ```text
//! ciphertext = version(1) = 1 || nonce(12) || AES-256-GCM-SIV(ct || tag(16))
//! aad        = "spike-rs cipher v1"
//! ```

use std::sync::Arc;
use std::time::Instant;

use spike_crypto::{RecordCipher, SubKey};
use zeroize::Zeroizing;

use crate::audit::{Caller, Decision};
use crate::error::{Error, InputError};
use crate::keyring::CIPHER_KEY;
use crate::nexus::{Access, Keys, Nexus, Unsealed};
use crate::policy::{CIPHER_PATH, Permission};
use crate::record::{self, Kind, RecordError};
use crate::secrets::MAX_DATA_LEN;
use crate::writer::Mutation;

/// The first byte of every ciphertext.
pub const CIPHERTEXT_VERSION: u8 = 1;
/// Associated data of every ciphertext.
const AAD: &[u8] = b"spike-rs cipher v1";
/// Version byte, nonce and tag.
const OVERHEAD: usize = 1 + 12 + 16;
/// The lock name serialising cipher-key writers.
pub(crate) const CIPHER_LOCK: &str = "\u{0}cipher-key";

/// The data key and its record's place.
pub(crate) struct CipherKey {
    raw: SubKey,
    cipher: RecordCipher,
}

impl CipherKey {
    fn new(raw: SubKey) -> Self {
        let cipher = RecordCipher::new(&raw);
        Self { raw, cipher }
    }
}

/// The cipher-key record as loaded (or `key: None` before first use).
#[derive(Clone, Default)]
pub(crate) struct StoredCipherKey {
    pub(crate) key: Option<Arc<CipherKey>>,
    pub(crate) revision: u64,
    pub(crate) epoch: u32,
}

/// Opens the stored cipher-key record; also returns its digest share.
pub(crate) fn open_record(keys: &Keys, bytes: &[u8]) -> Result<(StoredCipherKey, [u8; 16]), Error> {
    let tampered = |e: RecordError| Error::Tampered {
        what: format!("cipher key record: {e}"),
    };
    let (header, pt) = record::open(|e| keys.for_epoch(e).map(|k| &k.cipher), CIPHER_KEY, bytes)
        .map_err(tampered)?;
    if header.kind != Kind::CipherKey {
        return Err(tampered(RecordError::UnknownKind(header.kind as u8)));
    }
    let raw: [u8; 32] = pt
        .as_slice()
        .try_into()
        .map_err(|_| tampered(RecordError::Malformed("cipher key length")))?;
    let share = keys
        .for_epoch(header.epoch)
        .map(|k| k.digest_share(CIPHER_KEY, &header))
        .unwrap_or_default();
    Ok((
        StoredCipherKey {
            key: Some(Arc::new(CipherKey::new(SubKey::from_bytes(raw)))),
            revision: header.revision,
            epoch: header.epoch,
        },
        share,
    ))
}

/// The mutation storing `key` under the current epoch (retiring the record
/// it replaces), published on commit.
pub(crate) fn cipher_key_mutation(
    u: &Arc<Unsealed>,
    key: Arc<CipherKey>,
) -> Result<Mutation, Error> {
    let generation = u.writer.generation();
    let existing = u.cipher_key();
    let mut m = Mutation::new(generation);
    let header = m.replace_singleton(
        &u.keys(),
        CIPHER_KEY,
        Kind::CipherKey,
        existing
            .key
            .is_some()
            .then_some((existing.epoch, existing.revision)),
        key.raw.expose_secret(),
    )?;
    let stored = StoredCipherKey {
        key: Some(key),
        revision: header.revision,
        epoch: header.epoch,
    };
    let target = Arc::clone(u);
    Ok(m.on_commit(move || {
        *target.cipher.write().unwrap_or_else(|p| p.into_inner()) = stored;
    }))
}

/// Re-seals the cipher key under the current epoch if it is under an older
/// one (root-key rotation). Returns whether it rewrote the record.
pub(crate) async fn reseal(u: &Arc<Unsealed>) -> Result<bool, Error> {
    let _guard = u.lock(CIPHER_LOCK).await;
    let stored = u.cipher_key();
    let epoch = u.keys().current.epoch;
    match stored.key {
        Some(key) if stored.epoch != epoch => {
            u.writer.commit(cipher_key_mutation(u, key)?).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// The data key, made and durably stored at first use.
async fn key_or_create(u: &Arc<Unsealed>) -> Result<Arc<CipherKey>, Error> {
    if let Some(key) = u.cipher_key().key {
        return Ok(key);
    }
    let _guard = u.lock(CIPHER_LOCK).await;
    if let Some(key) = u.cipher_key().key {
        return Ok(key);
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(spike_crypto::CryptoError::from)?;
    let key = Arc::new(CipherKey::new(SubKey::from_bytes(raw)));
    u.writer
        .commit(cipher_key_mutation(u, Arc::clone(&key))?)
        .await?;
    tracing::info!("cipher API key created");
    Ok(key)
}

fn cipher_access() -> Access<'static> {
    Access {
        path: CIPHER_PATH,
        permission: Permission::Execute,
    }
}

impl Nexus {
    /// Encrypts `plaintext` (at most 1 MiB) with the cipher API key. Needs
    /// `execute` on `spike/system/cipher/exec` (or the superuser role).
    ///
    /// The ciphertext is `1 || nonce || ct || tag` (AES-256-GCM-SIV) and
    /// stays valid across root-key rotations.
    pub async fn encrypt(&self, caller: &Caller, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let started = Instant::now();
        let mut decision = Decision::Deny;
        let result = async {
            let u = self.unsealed()?;
            decision = self.authorize(&u, caller, cipher_access())?;
            if plaintext.len() > MAX_DATA_LEN {
                return Err(InputError::TooLarge {
                    what: "plaintext",
                    len: plaintext.len(),
                    max: MAX_DATA_LEN,
                }
                .into());
            }
            let key = key_or_create(&u).await?;
            let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
            out.push(CIPHERTEXT_VERSION);
            key.cipher.seal_into(AAD, plaintext, &mut out)?;
            Ok(out)
        }
        .await;
        self.audit(caller, "cipher.encrypt", None, decision, started, result)
    }

    /// Decrypts a ciphertext made by [`Nexus::encrypt`]. Needs `execute`
    /// on `spike/system/cipher/exec`. A malformed, altered or foreign
    /// ciphertext is [`InputError::Ciphertext`].
    pub fn decrypt(&self, caller: &Caller, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        let started = Instant::now();
        let mut decision = Decision::Deny;
        let result = self.with_unsealed(|u| {
            decision = self.authorize(u, caller, cipher_access())?;
            let bad = |reason| Error::from(InputError::Ciphertext { reason });
            let (&version, sealed) = ciphertext
                .split_first()
                .ok_or_else(|| bad("empty ciphertext"))?;
            if version != CIPHERTEXT_VERSION {
                return Err(bad("unknown ciphertext version"));
            }
            if ciphertext.len() < OVERHEAD {
                return Err(bad("ciphertext shorter than its nonce and tag"));
            }
            let key = u
                .cipher_key()
                .key
                .ok_or_else(|| bad("ciphertext does not authenticate"))?;
            key.cipher
                .open(AAD, sealed)
                .map_err(|_| bad("ciphertext does not authenticate"))
        });
        self.audit(caller, "cipher.decrypt", None, decision, started, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SpiffeId;
    use crate::policy::{Permissions, PolicySpec};
    use spike_storage::MemoryStore;

    fn caller(id: &str) -> Caller {
        Caller::new(SpiffeId::parse(id).unwrap())
    }

    async fn nexus() -> (Nexus, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::new());
        let n = Nexus::builder(store.clone()).open().await.unwrap();
        n.init().await.unwrap();
        (n, store)
    }

    const SU: &str = "spiffe://spike.ist/spike/pilot/role/superuser";

    #[tokio::test]
    async fn roundtrip_and_tamper() {
        let (n, _) = nexus().await;
        let su = caller(SU);
        let ct = n.encrypt(&su, b"hello").await.unwrap();
        assert_eq!(ct[0], CIPHERTEXT_VERSION);
        assert_eq!(ct.len(), OVERHEAD + 5);
        assert_eq!(&n.decrypt(&su, &ct).unwrap()[..], b"hello");
        // Fresh nonce each time.
        assert_ne!(n.encrypt(&su, b"hello").await.unwrap(), ct);
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 1;
            assert!(matches!(
                n.decrypt(&su, &bad),
                Err(Error::Input(InputError::Ciphertext { .. }))
            ));
        }
        assert!(n.decrypt(&su, &[]).is_err());
        assert!(n.decrypt(&su, &ct[..10]).is_err());
        assert_eq!(
            &n.decrypt(&su, &n.encrypt(&su, b"").await.unwrap()).unwrap()[..],
            b""
        );
    }

    #[tokio::test]
    async fn needs_execute_on_cipher_path() {
        let (n, _) = nexus().await;
        let su = caller(SU);
        let app = caller("spiffe://spike.ist/app");
        assert!(matches!(n.encrypt(&app, b"x").await, Err(Error::Denied)));
        let ct = n.encrypt(&su, b"x").await.unwrap();
        assert!(matches!(n.decrypt(&app, &ct), Err(Error::Denied)));
        let recover = caller("spiffe://spike.ist/spike/pilot/role/recover");
        assert!(matches!(
            n.encrypt(&recover, b"x").await,
            Err(Error::Denied)
        ));
        let mut perms = Permissions::NONE;
        perms.insert(Permission::Execute);
        n.put_policy(
            &su,
            PolicySpec {
                name: "cipher".into(),
                spiffeid_pattern: "spiffe://spike\\.ist/app".into(),
                path_pattern: "spike/system/cipher/exec".into(),
                permissions: perms,
            },
        )
        .await
        .unwrap();
        let ct2 = n.encrypt(&app, b"y").await.unwrap();
        assert_eq!(&n.decrypt(&app, &ct).unwrap()[..], b"x");
        assert_eq!(&n.decrypt(&app, &ct2).unwrap()[..], b"y");
    }

    #[tokio::test]
    async fn ciphertexts_survive_restart_and_rotation() {
        let (n, store) = nexus().await;
        let su = caller(SU);
        let ct = n.encrypt(&su, b"keep me").await.unwrap();
        let shares = n.rotate(&su, |_s| async { Ok::<(), String>(()) }).await;
        let report = shares.unwrap();
        assert_eq!(report.epoch, 2);
        assert_eq!(&n.decrypt(&su, &ct).unwrap()[..], b"keep me");
        let new_shares = n.keeper_shares().unwrap();
        n.close().await;
        // Reopen: the key is loaded from its record (and the manifest
        // accounts for it).
        let n = Nexus::builder(store).open().await.unwrap();
        n.unseal(&new_shares[..2]).await.unwrap();
        assert_eq!(&n.decrypt(&su, &ct).unwrap()[..], b"keep me");
    }

    #[tokio::test]
    async fn sealed_is_not_ready() {
        let (n, _) = nexus().await;
        n.seal().await.unwrap();
        let su = caller(SU);
        assert!(matches!(n.encrypt(&su, b"x").await, Err(Error::Sealed)));
        assert!(matches!(n.decrypt(&su, b"x"), Err(Error::Sealed)));
    }
}
