//! Secret operations on [`Nexus`]: authorise, compute the next state,
//! commit durably, publish.

use std::sync::Arc;
use std::time::Instant;

use crate::audit::{Caller, Decision};
use crate::error::Error;
use crate::keyring::CONFIG_KEY;
use crate::nexus::{Access, Nexus, StoredConfig, Unsealed};
use crate::path::{SecretPath, normalize, parse_folder};
use crate::policy::{ACL_PATH, Permission, SECRET_LIST_PATH};
use crate::record::{self, Header, Kind};
use crate::secrets::{
    self, KvConfig, Secret, SecretData, SecretSettings, SettingsUpdate, Version, VersionRead,
};
use crate::time::Timestamp;
use crate::writer::Mutation;

/// Options of a secret write.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Check-and-set: write only if the current version is this (0 = only
    /// if the secret does not exist).
    pub cas: Option<u64>,
}

/// Stores `next` (just given a new version) and answers that version and
/// the secret's settings.
fn new_version(next: Secret) -> Result<(Next, (Version, SecretSettings)), Error> {
    let version = next.versions.last().cloned().ok_or(Error::NotFound)?;
    let settings = next.settings.clone();
    Ok((Next::Put(next), (version, settings)))
}

/// What a secret write leaves behind.
enum Next {
    /// Nothing changes (no commit).
    Keep,
    /// This state is stored.
    Put(Secret),
    /// The secret is removed.
    Delete,
}

/// What a versions operation (delete, undelete, destroy) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VersionsOp {
    Delete,
    Undelete,
    Destroy,
}

impl Nexus {
    /// Reads version `version` (0 = current) of the secret at `path`.
    ///
    /// Served from memory. A soft-deleted or destroyed version comes back
    /// as [`VersionRead::Gone`]; a missing secret or version is
    /// [`Error::NotFound`].
    pub fn get_secret(
        &self,
        caller: &Caller,
        path: &str,
        version: u64,
    ) -> Result<VersionRead, Error> {
        let started = Instant::now();
        let mut decision = Decision::Deny;
        let result = self.with_unsealed(|u| {
            let path = normalize(path)?;
            let wanted = Access {
                path,
                permission: Permission::Read,
            };
            decision = self.authorize(u, caller, wanted)?;
            let secrets = u.secrets.read().unwrap_or_else(|p| p.into_inner());
            let secret = secrets.get(path).ok_or(Error::NotFound)?;
            secret
                .read(version, Timestamp::now())
                .ok_or(Error::NotFound)
        });
        self.audit(caller, "secret.get", Some(path), decision, started, result)
    }

    /// As [`Nexus::get_secret`], with the secret's metadata (settings,
    /// versions; no data accessor) from the same snapshot: what a Vault KV
    /// v2 read answers. Audited as one `secret.get`.
    pub fn get_secret_with_metadata(
        &self,
        caller: &Caller,
        path: &str,
        version: u64,
    ) -> Result<(VersionRead, Arc<Secret>), Error> {
        let started = Instant::now();
        let mut decision = Decision::Deny;
        let result = self.with_unsealed(|u| {
            let path = normalize(path)?;
            let wanted = Access {
                path,
                permission: Permission::Read,
            };
            decision = self.authorize(u, caller, wanted)?;
            let secrets = u.secrets.read().unwrap_or_else(|p| p.into_inner());
            let secret = secrets.get(path).ok_or(Error::NotFound)?;
            let read = secret
                .read(version, Timestamp::now())
                .ok_or(Error::NotFound)?;
            Ok((read, Arc::clone(secret)))
        });
        self.audit(caller, "secret.get", Some(path), decision, started, result)
    }

    /// The metadata and every retained version of the secret at `path`.
    ///
    /// Needs `read`. The returned [`Secret`] carries no data accessor: its
    /// versions' data stays behind [`Nexus::get_secret`].
    pub fn secret_metadata(&self, caller: &Caller, path: &str) -> Result<Arc<Secret>, Error> {
        let started = Instant::now();
        let mut decision = Decision::Deny;
        let result = self.with_unsealed(|u| {
            let path = SecretPath::parse(path)?;
            decision = self.authorize(u, caller, access(&path, Permission::Read))?;
            u.secret(&path).ok_or(Error::NotFound)
        });
        self.audit(
            caller,
            "secret.metadata.get",
            Some(path),
            decision,
            started,
            result,
        )
    }

    /// Writes `data` as a new version of the secret at `path` and returns
    /// it. Returns only once the version is durable in the backing store.
    pub async fn put_secret(
        &self,
        caller: &Caller,
        path: &str,
        data: SecretData,
        options: WriteOptions,
    ) -> Result<Version, Error> {
        self.put_secret_with_metadata(caller, path, data, options)
            .await
            .map(|(version, _)| version)
    }

    /// As [`Nexus::put_secret`], also returning the secret's settings after
    /// the write (a Vault KV v2 write answers its `custom_metadata`).
    pub async fn put_secret_with_metadata(
        &self,
        caller: &Caller,
        path: &str,
        data: SecretData,
        options: WriteOptions,
    ) -> Result<(Version, SecretSettings), Error> {
        self.change_secret(caller, "secret.put", path, |existing, mount, now| {
            new_version(secrets::write(existing, data, options.cas, mount, now)?)
        })
        .await
    }

    /// Applies a JSON merge patch (RFC 7386) to the current version's data
    /// and writes the result as a new version, atomically (under the path
    /// lock). Needs `write` only, as Vault's `patch` capability. A secret
    /// whose current version is missing, deleted or destroyed is
    /// [`Error::NotFound`].
    pub async fn patch_secret(
        &self,
        caller: &Caller,
        path: &str,
        patch: &serde_json::Map<String, serde_json::Value>,
        options: WriteOptions,
    ) -> Result<(Version, SecretSettings), Error> {
        self.change_secret(caller, "secret.patch", path, |existing, mount, now| {
            let secret = existing.ok_or(Error::NotFound)?;
            let Some(VersionRead::Live { data, .. }) = secret.read(0, now) else {
                return Err(Error::NotFound);
            };
            let merged = secrets::merge_patch(&data, patch)?;
            new_version(secrets::write(existing, merged, options.cas, mount, now)?)
        })
        .await
    }

    /// Soft-deletes versions (empty or `[0]` = the current one). Versions
    /// that do not exist or are already gone are skipped.
    pub async fn delete_secret(
        &self,
        caller: &Caller,
        path: &str,
        versions: &[u64],
    ) -> Result<(), Error> {
        self.versions_op(caller, "secret.delete", path, versions, VersionsOp::Delete)
            .await
    }

    /// Undoes soft deletes (not destroys).
    pub async fn undelete_secret(
        &self,
        caller: &Caller,
        path: &str,
        versions: &[u64],
    ) -> Result<(), Error> {
        self.versions_op(
            caller,
            "secret.undelete",
            path,
            versions,
            VersionsOp::Undelete,
        )
        .await
    }

    /// Destroys versions' data for good: the record is rewritten without it.
    pub async fn destroy_secret(
        &self,
        caller: &Caller,
        path: &str,
        versions: &[u64],
    ) -> Result<(), Error> {
        self.versions_op(
            caller,
            "secret.destroy",
            path,
            versions,
            VersionsOp::Destroy,
        )
        .await
    }

    async fn versions_op(
        &self,
        caller: &Caller,
        action: &'static str,
        path: &str,
        versions: &[u64],
        op: VersionsOp,
    ) -> Result<(), Error> {
        self.change_secret(caller, action, path, |existing, _, now| {
            let existing = existing.ok_or(Error::NotFound)?;
            let next = match op {
                VersionsOp::Delete => secrets::delete(existing, versions, now),
                VersionsOp::Undelete => secrets::undelete(existing, versions, now),
                VersionsOp::Destroy => secrets::destroy(existing, versions, now),
            };
            Ok((next.map_or(Next::Keep, Next::Put), ()))
        })
        .await
    }

    /// Updates a secret's settings (creating a metadata-only secret if
    /// absent). Lowering `max_versions` prunes old versions at once.
    pub async fn update_secret_metadata(
        &self,
        caller: &Caller,
        path: &str,
        update: SettingsUpdate,
    ) -> Result<(), Error> {
        self.change_secret(
            caller,
            "secret.metadata.update",
            path,
            |existing, mount, now| {
                update.validate()?;
                let next = secrets::update_settings(existing, &update, mount, now);
                Ok((Next::Put(next), ()))
            },
        )
        .await
    }

    /// Deletes the secret at `path` with every version and its metadata.
    pub async fn delete_secret_metadata(&self, caller: &Caller, path: &str) -> Result<(), Error> {
        self.change_secret(caller, "secret.metadata.delete", path, |existing, _, _| {
            existing.ok_or(Error::NotFound)?;
            Ok((Next::Delete, ()))
        })
        .await
    }

    /// The shape of every secret write: authorise `write` on `path`,
    /// serialise on its lock, compute the next state from the current one
    /// with `change`, commit it durably, publish it, audit the call.
    async fn change_secret<T>(
        &self,
        caller: &Caller,
        action: &'static str,
        path: &str,
        change: impl FnOnce(Option<&Secret>, &KvConfig, Timestamp) -> Result<(Next, T), Error>,
    ) -> Result<T, Error> {
        let started = Instant::now();
        let mut decision = Decision::Deny;
        let mut trail = None;
        let result = async {
            let u = self.unsealed()?;
            let parsed = SecretPath::parse(path)?;
            decision = self.authorize(&u, caller, access(&parsed, Permission::Write))?;
            let _guard = u.lock(parsed.as_str()).await;
            let generation = u.writer.generation();
            let existing = u.secret(&parsed);
            let mount = u.kv_config().config;
            let (next, out) = change(existing.as_deref(), &mount, Timestamp::now())?;
            let next = match next {
                Next::Keep => return Ok(out),
                Next::Put(secret) => Some(secret),
                Next::Delete => None,
            };
            // The same path as the call's own line below.
            trail = self.audit_intent(caller, action, Some(path), &decision, started)?;
            commit_secret(&u, generation, &parsed, existing.as_deref(), next).await?;
            Ok(out)
        }
        .await;
        self.audit_change(caller, action, Some(path), decision, started, result, trail)
    }

    /// The immediate children of `folder` (`""` = the root), folders with a
    /// trailing `/`, sorted, keeping only entries the caller may `list`
    /// (a caller with `list` on `spike/system/secret` sees all). When
    /// nothing is visible the answer is, as in Vault, [`Error::NotFound`] for
    /// a caller allowed to `list` the folder itself (`a/b/`; `""` for the
    /// root) and [`Error::Denied`] for anyone else.
    pub fn list_secrets(&self, caller: &Caller, folder: &str) -> Result<Vec<String>, Error> {
        let started = Instant::now();
        let mut decision = Decision::Deny;
        let result = self.with_unsealed(|u| {
            let prefix = parse_folder(folder)?;
            let see_all = self.authorize(
                u,
                caller,
                Access {
                    path: SECRET_LIST_PATH,
                    permission: Permission::List,
                },
            );
            let secrets = u.secrets.read().unwrap_or_else(|p| p.into_inner());
            let mut out: Vec<String> = Vec::new();
            let mut cursor = prefix.clone();
            while let Some((path, _)) = secrets
                .range::<str, _>((
                    std::ops::Bound::Included(cursor.as_str()),
                    std::ops::Bound::Unbounded,
                ))
                .next()
            {
                let Some(rest) = path.as_str().strip_prefix(prefix.as_str()) else {
                    break;
                };
                let (child, next_cursor) = match rest.find('/') {
                    // A folder: skip everything under it ('0' sorts right after '/').
                    Some(i) => (&rest[..=i], format!("{prefix}{}0", &rest[..i])),
                    None => (rest, format!("{}\u{0}", path.as_str())),
                };
                // Folders are checked with their trailing '/': a policy on
                // `db/.*` lets its holder see the folder `db/` in the root.
                let child_path = format!("{prefix}{child}");
                if see_all.is_ok()
                    || self.allowed(
                        u,
                        caller,
                        Access {
                            path: &child_path,
                            permission: Permission::List,
                        },
                    )
                {
                    out.push(child.to_owned());
                }
                cursor = next_cursor;
            }
            match (&see_all, out.is_empty()) {
                (_, false) => {
                    decision = see_all.as_ref().ok().cloned().unwrap_or(Decision::Allow {
                        by: "policy:per-path".into(),
                    });
                    Ok(out)
                }
                (Ok(d), true) => {
                    decision = d.clone();
                    Err(Error::NotFound)
                }
                // Nothing visible: as in Vault, whoever may list the folder
                // itself learns it is empty; anyone else is denied.
                (Err(_), true) => {
                    let folder = Access {
                        path: &prefix,
                        permission: Permission::List,
                    };
                    match self.authorize(u, caller, folder) {
                        Ok(d) => {
                            decision = d;
                            Err(Error::NotFound)
                        }
                        Err(e) => Err(e),
                    }
                }
            }
        });
        self.audit(
            caller,
            "secret.list",
            Some(folder),
            decision,
            started,
            result,
        )
    }

    /// Every secret path the caller may `list`, sorted (the SPIKE API's
    /// flat list).
    pub fn list_all_secrets(&self, caller: &Caller) -> Result<Vec<String>, Error> {
        let started = Instant::now();
        let mut decision = Decision::Deny;
        let result = self.with_unsealed(|u| {
            let see_all = self.authorize(
                u,
                caller,
                Access {
                    path: SECRET_LIST_PATH,
                    permission: Permission::List,
                },
            );
            let secrets = u.secrets.read().unwrap_or_else(|p| p.into_inner());
            let out: Vec<String> = match &see_all {
                Ok(d) => {
                    decision = d.clone();
                    secrets.keys().map(|p| p.as_str().to_owned()).collect()
                }
                Err(_) => secrets
                    .keys()
                    .filter(|p| self.allowed(u, caller, access(p, Permission::List)))
                    .map(|p| p.as_str().to_owned())
                    .collect(),
            };
            if see_all.is_err() && !out.is_empty() {
                decision = Decision::Allow {
                    by: "policy:per-path".into(),
                };
            }
            Ok(out)
        });
        self.audit(caller, "secret.list", None, decision, started, result)
    }

    /// The KV mount configuration.
    pub fn kv_config(&self) -> Result<KvConfig, Error> {
        self.with_unsealed(|u| Ok(u.kv_config().config))
    }

    /// Replaces the KV mount configuration. Needs `super` on
    /// `spike/system/acl` (or the superuser role).
    pub async fn set_kv_config(&self, caller: &Caller, config: KvConfig) -> Result<(), Error> {
        let started = Instant::now();
        let mut decision = Decision::Deny;
        let mut trail = None;
        let result = async {
            let u = self.unsealed()?;
            decision = self.authorize(
                &u,
                caller,
                Access {
                    path: ACL_PATH,
                    permission: Permission::Super,
                },
            )?;
            let _guard = u.lock(CONFIG_LOCK).await;
            let m = config_mutation(&u, config)?;
            trail = self.audit_intent(caller, "kv.config.put", None, &decision, started)?;
            u.writer.commit(m).await
        }
        .await;
        self.audit_change(
            caller,
            "kv.config.put",
            None,
            decision,
            started,
            result,
            trail,
        )
    }
}

/// The lock name serialising config writers.
pub(crate) const CONFIG_LOCK: &str = "\u{0}config";

fn access(path: &SecretPath, permission: Permission) -> Access<'_> {
    Access {
        path: path.as_str(),
        permission,
    }
}

/// The mutation replacing the config record with `config`, sealed under
/// the current epoch.
pub(crate) fn config_mutation(u: &Arc<Unsealed>, config: KvConfig) -> Result<Mutation, Error> {
    let generation = u.writer.generation();
    let existing = u.kv_config();
    let mut m = Mutation::new(generation);
    let header = m.replace_singleton(
        &u.keys(),
        CONFIG_KEY,
        Kind::Config,
        existing
            .stored
            .then_some((existing.epoch, existing.revision)),
        &record::encode_config(&config),
    )?;
    let stored = StoredConfig {
        config,
        revision: header.revision,
        epoch: header.epoch,
        stored: true,
    };
    let target = Arc::clone(u);
    Ok(m.on_commit(move || {
        *target.config.write().unwrap_or_else(|p| p.into_inner()) = stored;
    }))
}

/// Commits the change of the secret at `path` from `existing` to `next`
/// (`None` = delete), then publishes it. The caller holds the path lock.
pub(crate) async fn commit_secret(
    u: &Arc<Unsealed>,
    generation: u64,
    path: &SecretPath,
    existing: Option<&Secret>,
    next: Option<Secret>,
) -> Result<(), Error> {
    let m = secret_mutation(u, generation, path, existing, next)?;
    u.writer.commit(m).await
}

/// The mutation from `existing` to `next` (`None` = delete), sealing
/// `next` under the current epoch, publishing it on commit. `generation`
/// was read before `existing` (see [`crate::writer::Writer::generation`]).
pub(crate) fn secret_mutation(
    u: &Arc<Unsealed>,
    generation: u64,
    path: &SecretPath,
    existing: Option<&Secret>,
    next: Option<Secret>,
) -> Result<Mutation, Error> {
    let keys = u.keys();
    let current = Arc::clone(&keys.current);
    let mut m = Mutation::new(generation);
    let new_key = current.secret_key(path.as_str());
    if let Some(old) = existing {
        let old_keys = keys.for_epoch(old.epoch).ok_or(Error::Tampered {
            what: "secret sealed under an unknown epoch".to_owned(),
        })?;
        // Same epoch, same storage key: one keyed hash, not two.
        let old_key = if old.epoch == current.epoch {
            new_key.clone()
        } else {
            old_keys.secret_key(path.as_str())
        };
        let header = Header {
            kind: Kind::Secret,
            epoch: old.epoch,
            revision: old.revision,
        };
        let overwritten = old_key == new_key && next.is_some();
        m.retire(old_keys, &old_key, &header, !overwritten);
    }
    drop(keys);
    let next = match next {
        Some(mut next) => {
            next.epoch = current.epoch;
            let header = Header {
                kind: Kind::Secret,
                epoch: current.epoch,
                revision: next.revision,
            };
            m.put(
                &current,
                new_key,
                header,
                &record::encode_secret(path.as_str(), &next),
            )?;
            Some(Arc::new(next))
        }
        None => None,
    };
    let target = Arc::clone(u);
    let path = path.clone();
    Ok(m.on_commit(move || {
        let mut map = target.secrets.write().unwrap_or_else(|p| p.into_inner());
        match next {
            Some(next) => map.insert(path, next),
            None => map.remove(&path),
        };
    }))
}
