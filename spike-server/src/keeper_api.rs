//! The Keeper API (SPEC §7.1): a Keeper holds one root-key share in
//! memory, for Nexus only.
//!
//! - `POST /v1/store/contribute {shard:[32 ints]}` → `{}`
//! - `POST /v1/store/shard {}` → `{shard:[32 ints]}` (404 until it holds one)
//!
//! Both answer 401 unless the caller holds the Nexus role
//! (`spiffe://TD/spike/nexus`) in a configured trust root.

use std::fmt;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use spike_api::{ContributeRequest, Empty, ShardBytes, ShardResponse, routes};
use spike_core::{Caller, Role, Share, TrustRoots};
use zeroize::Zeroize;

use crate::error::ApiError;
use crate::http::{Action, ApiCaller, App, Body, PrefixRoutes, healthz, ok};
use crate::metrics::{self, Metrics};

const ROUTES: &[&str] = &[
    routes::KEEPER_CONTRIBUTE,
    routes::KEEPER_SHARD,
    routes::HEALTHZ,
    routes::READYZ,
    routes::METRICS,
];

/// A share value held in memory only: on the heap, `mlock`ed (kept out of
/// swap) where the OS permits, zeroized on drop before it is unlocked.
pub struct LockedShard {
    /// Zeroized in `Drop` (zeroize has no `Zeroize` for `Box<[u8; N]>`).
    bytes: Box<[u8; 32]>,
    guard: Option<region::LockGuard>,
}

impl LockedShard {
    /// Copies `value` into locked memory. If locking is not permitted (for
    /// example `RLIMIT_MEMLOCK` is 0) the share is still held, unlocked,
    /// and a warning is logged.
    pub fn new(value: &[u8; 32]) -> Self {
        let mut bytes = Box::new([0u8; 32]);
        // Lock first, then copy the secret in.
        let guard = match region::lock(bytes.as_ptr(), bytes.len()) {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "could not mlock the share's memory; it may be swapped to disk \
                     (raise RLIMIT_MEMLOCK to fix)"
                );
                None
            }
        };
        bytes.copy_from_slice(value);
        Self { bytes, guard }
    }

    /// Whether the memory is locked.
    pub fn is_locked(&self) -> bool {
        self.guard.is_some()
    }

    /// The share value. Keep the borrow short.
    pub fn expose(&self) -> &[u8; 32] {
        &self.bytes
    }
}

impl Drop for LockedShard {
    fn drop(&mut self) {
        // Zeroize while still locked, then unlock; the box is freed last.
        self.bytes.zeroize();
        drop(self.guard.take());
    }
}

impl fmt::Debug for LockedShard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockedShard")
            .field("bytes", &"[redacted]")
            .field("locked", &self.is_locked())
            .finish()
    }
}

struct KeeperInner {
    trust_roots: TrustRoots,
    shard: Mutex<Option<LockedShard>>,
    metrics: Arc<Metrics>,
}

/// A Keeper's state: its trust roots and the share it holds (none at
/// start: Keepers never persist anything).
#[derive(Clone)]
pub struct KeeperState {
    inner: Arc<KeeperInner>,
}

impl KeeperState {
    /// A Keeper honouring the Nexus role in `trust_roots`.
    pub fn new(trust_roots: TrustRoots) -> Self {
        Self {
            inner: Arc::new(KeeperInner {
                trust_roots,
                shard: Mutex::new(None),
                metrics: Arc::new(Metrics::new(
                    ROUTES,
                    "spike_keeper_has_shard",
                    "1 while this Keeper holds a share, else 0",
                )),
            }),
        }
    }

    /// Whether a share is held.
    pub fn has_shard(&self) -> bool {
        self.lock().is_some()
    }

    /// Whether the held share's memory is locked (`None`: no share).
    pub fn shard_locked(&self) -> Option<bool> {
        self.lock().as_ref().map(LockedShard::is_locked)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<LockedShard>> {
        self.inner.shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn require_nexus(&self, caller: &Caller) -> Result<(), ApiError> {
        if self.inner.trust_roots.has_role(&caller.id, Role::Nexus) {
            Ok(())
        } else {
            tracing::info!(caller = %caller.id, "keeper request refused: not Nexus");
            Err(ApiError::unauthorized())
        }
    }
}

/// The Keeper router: contribute, shard, `/healthz`, `/readyz`,
/// `/metrics`, in the same middleware stack as Nexus.
pub fn router(state: KeeperState) -> App {
    let api = Router::new()
        .route(routes::KEEPER_CONTRIBUTE, post(contribute))
        .route(routes::KEEPER_SHARD, post(shard))
        .route(routes::HEALTHZ, get(healthz))
        .route(routes::READYZ, get(readyz))
        .route(routes::METRICS, get(metrics_route))
        .with_state(state.clone());
    let metrics = Arc::clone(&state.inner.metrics);
    App::new(api, PrefixRoutes::default(), metrics, None)
}

async fn contribute(
    State(s): State<KeeperState>,
    ApiCaller(caller): ApiCaller,
    Action(action): Action,
    body: Body,
) -> Result<Response, ApiError> {
    s.require_nexus(&caller)?;
    if action.is_some() {
        return Err(ApiError::bad_request());
    }
    let req: ContributeRequest = body.parse()?;
    // Refuse what cannot be a share (zero, not a P-256 scalar); the id is
    // not known here, any valid one will do for the check.
    if Share::new(1, *req.shard.expose()).is_err() {
        return Err(ApiError::bad_request());
    }
    let locked = LockedShard::new(req.shard.expose());
    let first = {
        let mut held = s.lock();
        let first = held.is_none();
        *held = Some(locked);
        first
    };
    if first {
        tracing::info!("share received from Nexus");
    }
    Ok(ok(&Empty {}))
}

async fn shard(
    State(s): State<KeeperState>,
    ApiCaller(caller): ApiCaller,
    Action(action): Action,
    body: Body,
) -> Result<Response, ApiError> {
    s.require_nexus(&caller)?;
    if action.is_some() {
        return Err(ApiError::bad_request());
    }
    let _: Empty = body.parse()?;
    let shard = {
        let held = s.lock();
        let locked = held.as_ref().ok_or_else(ApiError::not_found)?;
        ShardBytes::new(*locked.expose())
    };
    Ok(ok(&ShardResponse { shard }))
}

/// Always 200 while serving: a Keeper gets its share from Nexus, so an
/// orchestrator waiting for Keepers must not wait for the share.
async fn readyz(State(s): State<KeeperState>) -> Response {
    ok(&serde_json::json!({"status": "ready", "hasShard": s.has_shard()}))
}

async fn metrics_route(State(s): State<KeeperState>) -> Response {
    s.inner.metrics.set_state(i64::from(s.has_shard()));
    metrics::response(&s.inner.metrics)
}
