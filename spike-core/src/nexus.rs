//! The [`Nexus`] facade: the whole secrets store behind one handle.
//!
//! A `Nexus` is built over a backing store and moves through three states:
//! *uninitialised* (no root key yet: [`Nexus::init`]), *sealed* (the store
//! holds data but the root key is not in memory: [`Nexus::unseal`] or
//! [`Nexus::restore`]) and *unsealed* (serving). Every data call names its
//! [`Caller`] and is authorised (built-in roles, then policies, default
//! deny) and audited.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use spike_crypto::{RootKey, Share};
use spike_storage::BackingStore;

use crate::audit::{AuditEvent, AuditOptions, AuditSink, Caller, Decision, TrailIds};
use crate::cipher::StoredCipherKey;
use crate::error::{Error, ErrorCode, InputError};
use crate::identity::{Role, TrustRoots};
use crate::keyring::EpochKeys;
use crate::lifecycle::InitRecord;
use crate::path::SecretPath;
use crate::policy::{Permission, PolicySet};
use crate::secrets::{KvConfig, Secret};
use crate::time::Timestamp;
use crate::writer::{CommitCounters, CommitStats, Writer};

/// Shards of the per-path write locks.
const PATH_LOCKS: usize = 256;

/// Builds a [`Nexus`]. A store is required; everything else has defaults.
pub struct NexusBuilder {
    store: Arc<dyn BackingStore>,
    config: Config,
    audit: Option<Arc<dyn AuditSink>>,
}

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) trust_roots: TrustRoots,
    pub(crate) shares: u8,
    pub(crate) threshold: u8,
    pub(crate) write_deadline: Duration,
    pub(crate) audit: AuditOptions,
}

impl NexusBuilder {
    /// Trust domains whose built-in role IDs are honoured (default
    /// `spike.ist`).
    pub fn trust_roots(mut self, roots: TrustRoots) -> Self {
        self.config.trust_roots = roots;
        self
    }

    /// Shares the root key is split into at `init` (default 3), and how many
    /// rebuild it (default 2).
    pub fn shares(mut self, shares: u8, threshold: u8) -> Self {
        self.config.shares = shares;
        self.config.threshold = threshold;
        self
    }

    /// How long a write keeps retrying an unavailable store before it fails
    /// (default 10 s).
    pub fn write_deadline(mut self, deadline: Duration) -> Self {
        self.config.write_deadline = deadline;
        self
    }

    /// Sends an audit record of every call to `sink`.
    pub fn audit(mut self, sink: Arc<dyn AuditSink>, options: AuditOptions) -> Self {
        self.audit = Some(sink);
        self.config.audit = options;
        self
    }

    /// Opens the store and finds out whether it is initialised. The result
    /// is uninitialised or sealed, never unsealed.
    pub async fn open(self) -> Result<Nexus, Error> {
        let c = &self.config;
        if c.threshold == 0 || c.threshold > c.shares {
            return Err(InputError::Config {
                field: "threshold",
                reason: "must be between 1 and the number of shares",
            }
            .into());
        }
        let init = InitRecord::read(&*self.store).await?;
        let state = match init {
            None => State::Uninitialized,
            Some(init) => State::Sealed(Sealed::new(init)),
        };
        Ok(Nexus {
            inner: Arc::new(Inner {
                store: self.store,
                config: self.config,
                audit: self.audit,
                trail_ids: TrailIds::new(),
                commits: Arc::default(),
                state: RwLock::new(state),
                lifecycle: tokio::sync::Mutex::new(()),
            }),
        })
    }
}

/// The secrets store. Cheap to clone; clones share one store.
///
/// See the crate documentation for an example.
#[derive(Clone)]
pub struct Nexus {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn BackingStore>,
    pub(crate) config: Config,
    pub(crate) audit: Option<Arc<dyn AuditSink>>,
    trail_ids: TrailIds,
    pub(crate) commits: Arc<CommitCounters>,
    pub(crate) state: RwLock<State>,
    /// Serialises init, unseal, restore and rotation.
    pub(crate) lifecycle: tokio::sync::Mutex<()>,
}

pub(crate) enum State {
    Uninitialized,
    Sealed(Sealed),
    Unsealed(Arc<Unsealed>),
}

/// A sealed store and the shares restored so far.
pub(crate) struct Sealed {
    pub(crate) init: InitRecord,
    pub(crate) restored: Vec<Share>,
}

impl Sealed {
    pub(crate) fn new(init: InitRecord) -> Self {
        Self {
            init,
            restored: Vec::new(),
        }
    }
}

/// The keys in memory while unsealed.
pub(crate) struct Keys {
    pub(crate) root: RootKey,
    pub(crate) init: InitRecord,
    /// Keys new records are sealed with.
    pub(crate) current: Arc<EpochKeys>,
    /// While a rotation runs: the old root key and its keys.
    pub(crate) previous: Option<(RootKey, Arc<EpochKeys>)>,
}

impl Keys {
    pub(crate) fn for_epoch(&self, epoch: u32) -> Option<&Arc<EpochKeys>> {
        if self.current.epoch == epoch {
            return Some(&self.current);
        }
        self.previous
            .as_ref()
            .map(|(_, k)| k)
            .filter(|k| k.epoch == epoch)
    }
}

/// The KV mount configuration and where its record stands.
#[derive(Clone, Default)]
pub(crate) struct StoredConfig {
    pub(crate) config: KvConfig,
    pub(crate) revision: u64,
    pub(crate) epoch: u32,
    pub(crate) stored: bool,
}

/// Everything an unsealed store holds in memory.
pub(crate) struct Unsealed {
    pub(crate) keys: RwLock<Keys>,
    pub(crate) secrets: RwLock<BTreeMap<SecretPath, Arc<Secret>>>,
    pub(crate) policies: RwLock<Arc<PolicySet>>,
    pub(crate) config: RwLock<StoredConfig>,
    /// The cipher API's data key (none before first use).
    pub(crate) cipher: RwLock<StoredCipherKey>,
    pub(crate) writer: Writer,
    /// Records re-encrypted by a running rotation, and its total.
    pub(crate) rotation_done: AtomicU64,
    pub(crate) rotation_total: AtomicU64,
    locks: Box<[tokio::sync::Mutex<()>]>,
}

impl Unsealed {
    pub(crate) fn new(
        keys: Keys,
        secrets: BTreeMap<SecretPath, Arc<Secret>>,
        policies: PolicySet,
        config: StoredConfig,
        cipher: StoredCipherKey,
        writer: Writer,
    ) -> Self {
        Self {
            keys: RwLock::new(keys),
            secrets: RwLock::new(secrets),
            policies: RwLock::new(Arc::new(policies)),
            config: RwLock::new(config),
            cipher: RwLock::new(cipher),
            writer,
            rotation_done: AtomicU64::new(0),
            rotation_total: AtomicU64::new(0),
            locks: (0..PATH_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// The write lock shard of `name` (a secret path or policy name).
    pub(crate) fn lock_index(name: &str) -> usize {
        // FNV-1a: cheap, and the shard only spreads contention.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        (h % PATH_LOCKS as u64) as usize
    }

    /// Serialises writers of `name`.
    pub(crate) async fn lock(&self, name: &str) -> tokio::sync::MutexGuard<'_, ()> {
        self.locks[Self::lock_index(name)].lock().await
    }

    /// Every shard lock, in order (rotation: no writer runs meanwhile).
    pub(crate) async fn lock_shard(&self, shard: usize) -> tokio::sync::MutexGuard<'_, ()> {
        self.locks[shard % PATH_LOCKS].lock().await
    }

    pub(crate) fn shard_count() -> usize {
        PATH_LOCKS
    }

    pub(crate) fn keys(&self) -> RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn secret(&self, path: &SecretPath) -> Option<Arc<Secret>> {
        self.secrets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned()
    }

    pub(crate) fn kv_config(&self) -> StoredConfig {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn cipher_key(&self) -> StoredCipherKey {
        self.cipher
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn policy_set(&self) -> Arc<PolicySet> {
        Arc::clone(&self.policies.read().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Who made a call, as the audit record names it.
struct Who<'a> {
    caller: &'a str,
    remote_addr: Option<String>,
    api: &'static str,
}

impl<'a> Who<'a> {
    fn of(caller: &'a Caller) -> Self {
        Who {
            caller: caller.id.as_str(),
            remote_addr: caller.remote_addr.map(crate::audit::addr_text),
            api: caller.api,
        }
    }
}

/// An access the caller asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Access<'a> {
    pub(crate) path: &'a str,
    pub(crate) permission: Permission,
}

impl Nexus {
    /// Starts building a `Nexus` over `store`.
    pub fn builder(store: Arc<dyn BackingStore>) -> NexusBuilder {
        NexusBuilder {
            store,
            config: Config {
                trust_roots: TrustRoots::default(),
                shares: 3,
                threshold: 2,
                write_deadline: Duration::from_secs(10),
                audit: AuditOptions::default(),
            },
            audit: None,
        }
    }

    /// The lifecycle state.
    pub fn status(&self) -> Status {
        match &*self.state() {
            State::Uninitialized => Status::Uninitialized,
            State::Sealed(s) => Status::Sealed {
                threshold: s.init.threshold,
                shares: s.init.shares,
                collected: s.restored.len(),
            },
            State::Unsealed(_) => Status::Unsealed,
        }
    }

    /// The Shamir split `(threshold, shares)`: the one of the initialised
    /// store when sealed, else the configured one (`sys/seal-status`).
    pub fn shamir(&self) -> (u8, u8) {
        match self.status() {
            Status::Sealed {
                threshold, shares, ..
            } => (threshold, shares),
            _ => (self.inner.config.threshold, self.inner.config.shares),
        }
    }

    /// The trust roots whose role IDs are honoured.
    pub fn trust_roots(&self) -> &TrustRoots {
        &self.inner.config.trust_roots
    }

    pub(crate) fn state(&self) -> RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_state(&self, state: State) {
        *self.inner.state.write().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// The unsealed store, or `Sealed` / `NotInitialized`.
    pub(crate) fn unsealed(&self) -> Result<Arc<Unsealed>, Error> {
        match &*self.state() {
            State::Unsealed(u) => Ok(Arc::clone(u)),
            State::Sealed(_) => Err(Error::Sealed),
            State::Uninitialized => Err(Error::NotInitialized),
        }
    }

    /// Runs `f` on the unsealed store without cloning its handle (hot reads).
    pub(crate) fn with_unsealed<T>(
        &self,
        f: impl FnOnce(&Unsealed) -> Result<T, Error>,
    ) -> Result<T, Error> {
        match &*self.state() {
            State::Unsealed(u) => f(u),
            State::Sealed(_) => Err(Error::Sealed),
            State::Uninitialized => Err(Error::NotInitialized),
        }
    }

    /// Decides whether `caller` may have `access`, as SPEC §2–§3 say: the
    /// superuser role may do everything on data; other built-in roles get
    /// nothing here (they have their own calls); everyone else gets what a
    /// policy grants.
    pub(crate) fn authorize(
        &self,
        u: &Unsealed,
        caller: &Caller,
        access: Access<'_>,
    ) -> Result<Decision, Error> {
        match self.inner.config.trust_roots.role_of(&caller.id) {
            Some(Role::Superuser) => {
                return Ok(Decision::Allow {
                    by: role_decision(Role::Superuser).into(),
                });
            }
            Some(_) => return Err(Error::Denied),
            None => {}
        }
        let set = u.policies.read().unwrap_or_else(|p| p.into_inner());
        match set.decide(&caller.id, access.path, access.permission) {
            Some(p) => Ok(Decision::Allow {
                by: ["policy:", &p.policy.spec.name].concat().into(),
            }),
            None => Err(Error::Denied),
        }
    }

    /// Whether `caller` may do `access` (no audit record; for filtering).
    pub(crate) fn allowed(&self, u: &Unsealed, caller: &Caller, access: Access<'_>) -> bool {
        self.authorize(u, caller, access).is_ok()
    }

    /// Requires a built-in role.
    pub(crate) fn require_role(&self, caller: &Caller, role: Role) -> Result<Decision, Error> {
        if self.inner.config.trust_roots.has_role(&caller.id, role) {
            Ok(Decision::Allow {
                by: role_decision(role).into(),
            })
        } else {
            Err(Error::Denied)
        }
    }

    /// Durable commits so far and the writes they carried: writes per
    /// commit shows how well concurrent writes are grouped.
    pub fn commit_stats(&self) -> CommitStats {
        self.inner.commits.snapshot()
    }

    /// Whether the backing store can take writes, as far as it knows
    /// without trying one (see [`BackingStore::writable`]): a readiness
    /// check. An unsealed Nexus whose store refuses every commit still
    /// serves reads, but it is not ready.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`]: why the store refuses commits.
    pub fn store_writable(&self) -> Result<(), Error> {
        self.inner.store.writable().map_err(Error::Storage)
    }

    /// Writes the audit record of a finished call. In fail-closed mode a
    /// sink failure turns the call's result into [`Error::Audit`].
    pub(crate) fn audit<T>(
        &self,
        caller: &Caller,
        action: &'static str,
        path: Option<&str>,
        decision: Decision,
        started: Instant,
        result: Result<T, Error>,
    ) -> Result<T, Error> {
        self.audit_change(caller, action, path, decision, started, result, None)
    }

    /// As [`Nexus::audit`], for a change whose `started` line (see
    /// [`Nexus::audit_intent`]) had the trail id `trail`: its outcome line
    /// has the same, so that the two lines of one call pair up exactly.
    #[allow(
        clippy::too_many_arguments,
        reason = "audit's arguments and the trail id of the call's first line"
    )]
    pub(crate) fn audit_change<T>(
        &self,
        caller: &Caller,
        action: &'static str,
        path: Option<&str>,
        decision: Decision,
        started: Instant,
        result: Result<T, Error>,
        trail: Option<String>,
    ) -> Result<T, Error> {
        if self.inner.audit.is_none() {
            return result;
        }
        let who = Who::of(caller);
        let fail_closed = self.inner.config.audit.fail_closed;
        self.record(
            who,
            action,
            path,
            decision,
            started,
            result,
            fail_closed,
            trail,
        )
    }

    /// Fail-closed mode only: records, before a change is committed, that
    /// `caller` is making it (status `started`; the call's own line, with
    /// its outcome, follows as always, through [`Nexus::audit_change`] with
    /// the trail id returned here). A sink that cannot take this line
    /// refuses the change while nothing is written yet: once the change is
    /// committed, a failing sink could only refuse the answer, not undo the
    /// change, and the change would be in no audit line at all.
    pub(crate) fn audit_intent(
        &self,
        caller: &Caller,
        action: &'static str,
        path: Option<&str>,
        decision: &Decision,
        started: Instant,
    ) -> Result<Option<String>, Error> {
        if self.inner.audit.is_none() || !self.inner.config.audit.fail_closed {
            return Ok(None);
        }
        let who = Who::of(caller);
        let trail = self.inner.trail_ids.next();
        self.write_event(
            who,
            action,
            path,
            decision.clone(),
            started,
            STARTED,
            Some(trail.clone()),
        )
        .map(|()| Some(trail))
        .map_err(|e| {
            tracing::error!(error = %e, "audit sink failed; refusing the change (fail-closed)");
            Error::Audit(e.to_string())
        })
    }

    /// Audits a lifecycle call made by the embedding process itself (init,
    /// unseal, seal): no caller identity applies.
    pub(crate) fn audit_process<T>(
        &self,
        action: &'static str,
        started: Instant,
        result: Result<T, Error>,
    ) -> Result<T, Error> {
        if self.inner.audit.is_none() {
            return result;
        }
        let who = Who {
            caller: "process",
            remote_addr: None,
            api: "embedded",
        };
        // Never fail-closed here: refusing an init after it committed would
        // lose the only copy of its shares, and an unseal that happened
        // cannot be undone by an error. A sink failure is logged instead.
        self.record(
            who,
            action,
            None,
            Decision::NotApplicable,
            started,
            result,
            false,
            None,
        )
    }

    /// Records a request that the embedding server answered without a
    /// store call that audits itself: one refused before it was parsed (bad
    /// JSON, unknown route, wrong method, oversized), a health probe, a
    /// token lookup. With it every request leaves exactly one audit line.
    /// `refused` is the error class, `None` when the request was answered;
    /// `caller` is `None` when the peer was not authenticated. A sink
    /// failure is logged: the answer has been decided already.
    pub fn audit_request(
        &self,
        caller: Option<&Caller>,
        action: &'static str,
        path: Option<&str>,
        refused: Option<ErrorCode>,
        started: Instant,
    ) {
        if self.inner.audit.is_none() {
            return;
        }
        let who = match caller {
            Some(c) => Who::of(c),
            None => Who {
                caller: "unauthenticated",
                remote_addr: None,
                api: "http",
            },
        };
        let decision = match refused {
            Some(ErrorCode::Denied) => Decision::Deny,
            _ => Decision::NotApplicable,
        };
        let status = refused.map_or("ok", code_name);
        if let Err(e) = self.write_event(who, action, path, decision, started, status, None) {
            tracing::error!(error = %e, "audit sink failed");
        }
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one private call site per kind of caller"
    )]
    fn record<T>(
        &self,
        who: Who<'_>,
        action: &'static str,
        path: Option<&str>,
        decision: Decision,
        started: Instant,
        result: Result<T, Error>,
        fail_closed: bool,
        trail: Option<String>,
    ) -> Result<T, Error> {
        let decision = match (&result, decision) {
            (Err(Error::Denied), _) => Decision::Deny,
            (_, d) => d,
        };
        let status = match &result {
            Ok(_) => "ok",
            Err(e) => code_name(e.code()),
        };
        match self.write_event(who, action, path, decision, started, status, trail) {
            Ok(()) => result,
            Err(e) if fail_closed => {
                tracing::error!(error = %e, "audit sink failed; refusing the call (fail-closed)");
                Err(Error::Audit(e.to_string()))
            }
            Err(e) => {
                tracing::error!(error = %e, "audit sink failed");
                result
            }
        }
    }

    /// Writes one audit line, under `trail_id` if the call already has one
    /// (its `started` line's), else under a new one.
    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of one audit line, each from its caller"
    )]
    fn write_event(
        &self,
        who: Who<'_>,
        action: &'static str,
        path: Option<&str>,
        decision: Decision,
        started: Instant,
        status: &'static str,
        trail_id: Option<String>,
    ) -> std::io::Result<()> {
        let Some(sink) = &self.inner.audit else {
            return Ok(());
        };
        let path = path.map(|p| {
            if self.inner.config.audit.hmac_paths {
                self.hmac_for_audit(p)
            } else {
                p.to_owned()
            }
        });
        crate::audit::mark_audited();
        sink.record(&AuditEvent {
            time: Timestamp::now().to_rfc3339(),
            trail_id: trail_id.unwrap_or_else(|| self.inner.trail_ids.next()),
            caller: who.caller.to_owned(),
            remote_addr: who.remote_addr,
            api: who.api,
            action,
            path,
            decision,
            status,
            duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        })
    }

    fn hmac_for_audit(&self, value: &str) -> String {
        let mac = match &*self.state() {
            State::Unsealed(u) => u.keys().current.audit_mac(value),
            // No key while sealed: never write the value itself.
            _ => return "hmac-unavailable".to_owned(),
        };
        let mut out = String::with_capacity(5 + 64);
        out.push_str("hmac:");
        crate::audit::push_hex(&mut out, &mac);
        out
    }
}

/// The status of the line a fail-closed store writes before committing a
/// change (see [`crate::AuditOptions::fail_closed`]).
pub(crate) const STARTED: &str = "started";

/// How an audit record names a built-in role that allowed a call.
fn role_decision(role: Role) -> &'static str {
    match role {
        Role::Superuser => "role:superuser",
        Role::Recover => "role:recover",
        Role::Restore => "role:restore",
        Role::Nexus => "role:nexus",
        Role::Keeper => "role:keeper",
    }
}

/// Stable names of error classes, as audit records show them.
pub fn code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::NotReady => "state_not_ready",
        ErrorCode::BadRequest => "bad_request",
        ErrorCode::Denied => "denied",
        ErrorCode::NotFound => "not_found",
        ErrorCode::CasMismatch => "cas_mismatch",
        ErrorCode::Conflict => "conflict",
        ErrorCode::WrongKey => "wrong_key",
        ErrorCode::Unavailable => "unavailable",
        ErrorCode::Internal => "internal",
    }
}

/// Where a [`Nexus`] is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// No root key yet: call [`Nexus::init`].
    Uninitialized,
    /// Holds data; needs `threshold` of `shares` shares.
    Sealed {
        /// Shares needed.
        threshold: u8,
        /// Shares made at init.
        shares: u8,
        /// Shares restored so far.
        collected: usize,
    },
    /// Serving.
    Unsealed,
}
