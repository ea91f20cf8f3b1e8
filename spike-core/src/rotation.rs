//! Root key rotation: a new key, every record re-encrypted online, new
//! shares, the old key zeroised — resumable after a crash at any point.
//!
//! 1. *Begin* (one atomic commit): the init record gains the new epoch's
//!    check value; `rotation-forward` holds the new key sealed under the old
//!    epoch and `rotation-back` the old key sealed under the new one. From
//!    here either key unseals the store (Keepers may hold either set of
//!    shares), and every new write is sealed under the new epoch.
//! 2. *Re-encrypt*: records still under the old epoch are rewritten under
//!    the new one, a batch at a time, under the same path locks writers use.
//! 3. *Deliver*: the caller receives the new shares (Keepers, operators)
//!    and must keep them before the rotation may finish.
//! 4. *Finish* (one atomic commit): the init record names only the new key,
//!    both rotation records go, and the old key is dropped (zeroised).
//!
//! A crash before step 4 leaves a rotation that the next unseal picks up,
//! with the old or the new shares, and the next [`Nexus::rotate`] resumes.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use spike_crypto::{KeyCheckValue, RootKey, Share, split};
use zeroize::Zeroizing;

use crate::acl::{policy_lock, policy_mutation};
use crate::audit::{Caller, Decision};
use crate::error::Error;
use crate::identity::Role;
use crate::keyring::{EpochKeys, INIT_KEY, ROTATION_BACK_KEY, ROTATION_FORWARD_KEY};
use crate::kv::{CONFIG_LOCK, config_mutation, secret_mutation};
use crate::lifecycle::InitRecord;
use crate::nexus::{Keys, Nexus, Unsealed};
use crate::path::SecretPath;
use crate::record::{self, Header, Kind, RotationRecord};
use crate::secrets::next_revision;
use crate::time::Timestamp;
use crate::writer::Mutation;

/// Secrets re-encrypted per commit.
const REENCRYPT_BATCH: usize = 256;

/// What a finished rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationReport {
    /// The new key epoch.
    pub epoch: u32,
    /// Records re-encrypted by this call.
    pub reencrypted: u64,
    /// Whether this call resumed a rotation begun earlier.
    pub resumed: bool,
}

/// Progress of a running rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationProgress {
    /// Records re-encrypted so far by the running call.
    pub done: u64,
    /// Records under the old epoch when the call began.
    pub total: u64,
}

impl Nexus {
    /// Rotates the root key (superuser role). `deliver` receives the new
    /// shares and must make them safe (push to Keepers, hand to operators)
    /// before the rotation finishes; if it fails, the rotation stays
    /// pending and the next call resumes it. Writes and reads keep working
    /// throughout.
    pub async fn rotate<F, Fut, E>(
        &self,
        caller: &Caller,
        deliver: F,
    ) -> Result<RotationReport, Error>
    where
        F: FnOnce(Vec<Share>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let started = Instant::now();
        let mut trail = None;
        let (decision, result) = match self.require_role(caller, Role::Superuser) {
            Ok(d) => {
                let result = async {
                    trail = self.audit_intent(caller, "operator.rotate", None, &d, started)?;
                    self.rotate_inner(deliver).await
                }
                .await;
                (d, result)
            }
            Err(e) => (Decision::Deny, Err(e)),
        };
        self.audit_change(
            caller,
            "operator.rotate",
            None,
            decision,
            started,
            result,
            trail,
        )
    }

    /// Progress of a rotation running now, if any.
    pub fn rotation_progress(&self) -> Option<RotationProgress> {
        let u = self.unsealed().ok()?;
        u.keys().previous.as_ref()?;
        Some(RotationProgress {
            done: u.rotation_done.load(Ordering::Relaxed),
            total: u.rotation_total.load(Ordering::Relaxed),
        })
    }

    /// Whether a rotation has begun and not finished (resume it with
    /// [`Nexus::rotate`]).
    pub fn rotation_pending(&self) -> bool {
        self.unsealed()
            .map(|u| u.keys().previous.is_some())
            .unwrap_or(false)
    }

    async fn rotate_inner<F, Fut, E>(&self, deliver: F) -> Result<RotationReport, Error>
    where
        F: FnOnce(Vec<Share>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let _lifecycle = self.inner.lifecycle.lock().await;
        let u = self.unsealed()?;
        let resumed = u.keys().previous.is_some();
        if !resumed {
            begin(&u).await?;
        }
        // Writers that prepared under the old keys hold a shard lock until
        // their commit is published: wait them out.
        for shard in 0..Unsealed::shard_count() {
            drop(u.lock_shard(shard).await);
        }
        let reencrypted = reencrypt_all(&u).await?;
        let (shares, epoch) = {
            let keys = u.keys();
            (
                split(&keys.root, keys.init.threshold, keys.init.shares)?,
                keys.current.epoch,
            )
        };
        deliver(shares).await.map_err(|e| {
            Error::Storage(spike_storage::StorageError::Unavailable {
                store: "share delivery".to_owned(),
                reason: format!(
                    "the new shares were not delivered ({e}); the rotation stays pending"
                ),
            })
        })?;
        finish(&u).await?;
        tracing::info!(epoch, reencrypted, resumed, "root key rotated");
        Ok(RotationReport {
            epoch,
            reencrypted,
            resumed,
        })
    }
}

fn sealed_rotation_record(
    keys: &EpochKeys,
    storage_key: &[u8],
    other_epoch: u32,
    other: &RootKey,
) -> Result<Vec<u8>, Error> {
    let rec = RotationRecord {
        new_epoch: other_epoch,
        new_key: Zeroizing::new(*other.expose_secret()),
        new_check: KeyCheckValue::compute(other).to_bytes(),
    };
    let header = Header {
        kind: Kind::Rotation,
        epoch: keys.epoch,
        revision: 1,
    };
    Ok(record::seal(
        &keys.cipher,
        header,
        storage_key,
        &rec.encode(),
    )?)
}

/// Step 1: the new key, committed with both rotation records.
async fn begin(u: &Arc<Unsealed>) -> Result<(), Error> {
    let new_root = RootKey::try_generate()?;
    let mut m = Mutation::new(u.writer.generation());
    let (old_epoch, init) = {
        let keys = u.keys();
        let old = &keys.current;
        let new_epoch = old.epoch.checked_add(1).ok_or(Error::Tampered {
            what: "key epoch overflow".to_owned(),
        })?;
        let new_keys = EpochKeys::derive(&new_root, new_epoch);
        let init = InitRecord {
            next: Some((new_epoch, KeyCheckValue::compute(&new_root))),
            ..keys.init.clone()
        };
        m.put_system(INIT_KEY, init.encode(old, Some(&new_keys)));
        m.put_system(
            ROTATION_FORWARD_KEY,
            sealed_rotation_record(old, ROTATION_FORWARD_KEY, new_epoch, &new_root)?,
        );
        m.put_system(
            ROTATION_BACK_KEY,
            sealed_rotation_record(&new_keys, ROTATION_BACK_KEY, old.epoch, &keys.root)?,
        );
        (old.epoch, init)
    };
    let target = Arc::clone(u);
    let m = m.on_commit(move || {
        let mut keys = target.keys.write().unwrap_or_else(|p| p.into_inner());
        let new_epoch = old_epoch + 1;
        let old_root = std::mem::replace(&mut keys.root, new_root);
        let new_keys = Arc::new(EpochKeys::derive(&keys.root, new_epoch));
        let old_keys = std::mem::replace(&mut keys.current, new_keys);
        keys.previous = Some((old_root, old_keys));
        keys.init = init;
    });
    u.writer.commit(m).await?;
    tracing::info!(
        from = old_epoch,
        to = old_epoch + 1,
        "root key rotation begun"
    );
    Ok(())
}

/// Step 2: rewrites every record still under an old epoch.
async fn reencrypt_all(u: &Arc<Unsealed>) -> Result<u64, Error> {
    let epoch = u.keys().current.epoch;
    let stale_secrets = |limit: usize| -> Vec<SecretPath> {
        u.secrets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, s)| s.epoch != epoch)
            .take(limit)
            .map(|(p, _)| p.clone())
            .collect()
    };
    let stale = u
        .secrets
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter(|s| s.epoch != epoch)
        .count();
    let total = stale as u64 + u.policy_set().len() as u64 + 1;
    u.rotation_total.store(total, Ordering::Relaxed);
    u.rotation_done.store(0, Ordering::Relaxed);
    let mut done = 0u64;
    loop {
        let batch = stale_secrets(REENCRYPT_BATCH);
        if batch.is_empty() {
            break;
        }
        // Lock the shards involved in ascending order (no deadlock with
        // writers, who hold one shard at a time).
        let mut shards: Vec<usize> = batch
            .iter()
            .map(|p| Unsealed::lock_index(p.as_str()))
            .collect();
        shards.sort_unstable();
        shards.dedup();
        let mut guards = Vec::with_capacity(shards.len());
        for shard in shards {
            guards.push(u.lock_shard(shard).await);
        }
        let generation = u.writer.generation();
        let mut m = Mutation::new(generation);
        let mut count = 0;
        for path in &batch {
            let Some(existing) = u.secret(path) else {
                continue;
            };
            if existing.epoch == epoch {
                continue;
            }
            let mut next = (*existing).clone();
            next.revision = next_revision(existing.revision, Timestamp::now());
            m.absorb(secret_mutation(
                u,
                generation,
                path,
                Some(&existing),
                Some(next),
            )?);
            count += 1;
        }
        u.writer.commit(m).await?;
        drop(guards);
        done += count;
        u.rotation_done.store(done, Ordering::Relaxed);
        tracing::debug!(done, total, "re-encrypting records");
    }
    let policies: Vec<_> = u
        .policy_set()
        .iter()
        .filter(|p| p.policy.epoch != epoch)
        .map(|p| p.policy.spec.name.clone())
        .collect();
    for name in policies {
        let _guard = u.lock(&policy_lock(&name)).await;
        let generation = u.writer.generation();
        let Some(existing) = u.policy_set().get(&name).map(|p| p.policy.clone()) else {
            continue;
        };
        if existing.epoch == epoch {
            continue;
        }
        let mut next = existing.clone();
        next.revision = next_revision(existing.revision, Timestamp::now());
        u.writer
            .commit(policy_mutation(
                u,
                generation,
                &name,
                Some(&existing),
                Some(next),
            )?)
            .await?;
        done += 1;
        u.rotation_done.store(done, Ordering::Relaxed);
    }
    {
        let _guard = u.lock(CONFIG_LOCK).await;
        let config = u.kv_config();
        if config.stored && config.epoch != epoch {
            u.writer.commit(config_mutation(u, config.config)?).await?;
            done += 1;
        }
    }
    if crate::cipher::reseal(u).await? {
        done += 1;
    }
    u.rotation_done.store(done, Ordering::Relaxed);
    Ok(done)
}

/// Step 4: the new key alone; the old one is dropped (zeroised).
async fn finish(u: &Arc<Unsealed>) -> Result<(), Error> {
    let mut m = Mutation::new(u.writer.generation());
    let init = {
        let keys = u.keys();
        let (epoch, check) = keys.init.next.ok_or(Error::Tampered {
            what: "rotation state lost".to_owned(),
        })?;
        let init = InitRecord {
            epoch,
            check,
            next: None,
            ..keys.init.clone()
        };
        m.put_system(INIT_KEY, init.encode(&keys.current, None));
        init
    };
    m.delete_system(ROTATION_FORWARD_KEY);
    m.delete_system(ROTATION_BACK_KEY);
    let target = Arc::clone(u);
    let m = m.on_commit(move || {
        let mut keys: std::sync::RwLockWriteGuard<'_, Keys> =
            target.keys.write().unwrap_or_else(|p| p.into_inner());
        keys.previous = None;
        keys.init = init;
    });
    u.writer.commit(m).await
}
