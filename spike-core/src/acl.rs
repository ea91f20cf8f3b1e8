//! Policy administration on [`Nexus`], gated by `spike/system/acl`.

use std::sync::Arc;
use std::time::Instant;

use crate::audit::{Caller, Decision};
use crate::error::Error;
use crate::nexus::{Access, Nexus, Unsealed};
use crate::policy::{ACL_PATH, CompiledPolicy, Permission, Policy, PolicySpec};
use crate::record::{self, Header, Kind};
use crate::secrets::next_revision;
use crate::time::Timestamp;
use crate::writer::Mutation;

/// Filters of [`Nexus::list_policies`]: exact pattern strings.
#[derive(Debug, Clone, Default)]
pub struct PolicyFilter {
    /// Keep policies whose `spiffeid_pattern` is exactly this.
    pub spiffeid_pattern: Option<String>,
    /// Keep policies whose `path_pattern` is exactly this.
    pub path_pattern: Option<String>,
}

fn acl(permission: Permission) -> Access<'static> {
    Access {
        path: ACL_PATH,
        permission,
    }
}

impl Nexus {
    /// Creates or replaces the policy named `spec.name`. Needs `write` on
    /// `spike/system/acl`. Patterns are validated and compiled first: a bad
    /// pattern changes nothing.
    pub async fn put_policy(&self, caller: &Caller, spec: PolicySpec) -> Result<Policy, Error> {
        let started = Instant::now();
        let mut decision = Decision::Deny;
        let name = spec.name.clone();
        let mut trail = None;
        let result = async {
            let u = self.unsealed()?;
            decision = self.authorize(&u, caller, acl(Permission::Write))?;
            spec.compile()?;
            let _guard = u.lock(&policy_lock(&spec.name)).await;
            let generation = u.writer.generation();
            let set = u.policy_set();
            let existing = set.get(&spec.name).map(|p| p.policy.clone());
            let now = Timestamp::now();
            let policy = Policy {
                created: existing.as_ref().map_or(now, |p| p.created),
                updated: now,
                created_by: existing
                    .as_ref()
                    .map_or_else(|| caller.id.to_string(), |p| p.created_by.clone()),
                revision: next_revision(existing.as_ref().map_or(0, |p| p.revision), now),
                epoch: 0,
                spec,
            };
            let name = policy.spec.name.clone();
            trail = self.audit_intent(caller, "policy.put", Some(&name), &decision, started)?;
            commit_policy(&u, generation, &name, existing.as_ref(), Some(policy)).await?;
            // What was stored, with its epoch and revision.
            u.policy_set()
                .get(&name)
                .map(|p| p.policy.clone())
                .ok_or(Error::NotFound)
        }
        .await;
        self.audit_change(
            caller,
            "policy.put",
            Some(&name),
            decision,
            started,
            result,
            trail,
        )
    }

    /// The policy named `name`. Needs `read` on `spike/system/acl`.
    pub fn get_policy(&self, caller: &Caller, name: &str) -> Result<Policy, Error> {
        let started = Instant::now();
        let mut decision = Decision::Deny;
        let result = self.with_unsealed(|u| {
            decision = self.authorize(u, caller, acl(Permission::Read))?;
            u.policy_set()
                .get(name)
                .map(|p| p.policy.clone())
                .ok_or(Error::NotFound)
        });
        self.audit(caller, "policy.get", Some(name), decision, started, result)
    }

    /// Every policy, by name, optionally filtered. Needs `list` on
    /// `spike/system/acl`.
    pub fn list_policies(
        &self,
        caller: &Caller,
        filter: &PolicyFilter,
    ) -> Result<Vec<Policy>, Error> {
        let started = Instant::now();
        let mut decision = Decision::Deny;
        let result = self.with_unsealed(|u| {
            decision = self.authorize(u, caller, acl(Permission::List))?;
            let set = u.policy_set();
            Ok(set
                .iter()
                .map(|p| &p.policy)
                .filter(|p| {
                    filter
                        .spiffeid_pattern
                        .as_ref()
                        .is_none_or(|f| *f == p.spec.spiffeid_pattern)
                        && filter
                            .path_pattern
                            .as_ref()
                            .is_none_or(|f| *f == p.spec.path_pattern)
                })
                .cloned()
                .collect())
        });
        self.audit(caller, "policy.list", None, decision, started, result)
    }

    /// Deletes the policy named `name`. Needs `write` on `spike/system/acl`.
    pub async fn delete_policy(&self, caller: &Caller, name: &str) -> Result<(), Error> {
        let started = Instant::now();
        let mut decision = Decision::Deny;
        let mut trail = None;
        let result = async {
            let u = self.unsealed()?;
            decision = self.authorize(&u, caller, acl(Permission::Write))?;
            let _guard = u.lock(&policy_lock(name)).await;
            let generation = u.writer.generation();
            let existing = u
                .policy_set()
                .get(name)
                .map(|p| p.policy.clone())
                .ok_or(Error::NotFound)?;
            trail = self.audit_intent(caller, "policy.delete", Some(name), &decision, started)?;
            commit_policy(&u, generation, name, Some(&existing), None).await
        }
        .await;
        self.audit_change(
            caller,
            "policy.delete",
            Some(name),
            decision,
            started,
            result,
            trail,
        )
    }

    /// How many policies are loaded.
    pub fn policy_count(&self) -> Result<usize, Error> {
        self.with_unsealed(|u| Ok(u.policy_set().len()))
    }
}

/// Policies and secrets share the lock shards; prefix keeps names apart.
pub(crate) fn policy_lock(name: &str) -> String {
    format!("\u{0}policy/{name}")
}

/// Commits the change of policy `name` from `existing` to `next` (`None`
/// = delete) and publishes a new policy set.
pub(crate) async fn commit_policy(
    u: &Arc<Unsealed>,
    generation: u64,
    name: &str,
    existing: Option<&Policy>,
    next: Option<Policy>,
) -> Result<(), Error> {
    let m = policy_mutation(u, generation, name, existing, next)?;
    u.writer.commit(m).await
}

/// The mutation from `existing` to `next` (`None` = delete), sealing
/// `next` under the current epoch, publishing a new policy set on commit.
pub(crate) fn policy_mutation(
    u: &Arc<Unsealed>,
    generation: u64,
    name: &str,
    existing: Option<&Policy>,
    next: Option<Policy>,
) -> Result<Mutation, Error> {
    let keys = u.keys();
    let current = Arc::clone(&keys.current);
    let mut m = Mutation::new(generation);
    let new_key = current.policy_key(name);
    if let Some(old) = existing {
        let old_keys = keys.for_epoch(old.epoch).ok_or(Error::Tampered {
            what: "policy sealed under an unknown epoch".to_owned(),
        })?;
        let old_key = old_keys.policy_key(name);
        let header = Header {
            kind: Kind::Policy,
            epoch: old.epoch,
            revision: old.revision,
        };
        let overwritten = old_key == new_key && next.is_some();
        m.retire(old_keys, &old_key, &header, !overwritten);
    }
    drop(keys);
    let compiled = match next {
        Some(mut policy) => {
            policy.epoch = current.epoch;
            let header = Header {
                kind: Kind::Policy,
                epoch: current.epoch,
                revision: policy.revision,
            };
            m.put(&current, new_key, header, &record::encode_policy(&policy))?;
            Some(Arc::new(CompiledPolicy::new(policy)?))
        }
        None => None,
    };
    let target = Arc::clone(u);
    let name = name.to_owned();
    Ok(m.on_commit(move || {
        let mut slot = target.policies.write().unwrap_or_else(|p| p.into_inner());
        let next = match compiled {
            Some(p) => slot.with(p),
            None => slot.without(&name),
        };
        *slot = Arc::new(next);
    }))
}
