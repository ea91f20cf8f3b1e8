//! The SPIKE v1 API of Nexus (SPEC §7.1), compatible with upstream SPIKE
//! and spike-sdk-go: every route is `POST` with a JSON body, the operation
//! chosen by path and `?action=`.
//!
//! The caller is the [`PeerIdentity`](crate::PeerIdentity) the TLS layer
//! put into the request; spike-core authorises and audits every call.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use spike_api::{
    CipherDecryptRequest, CipherDecryptResponse, CipherEncryptRequest, CipherEncryptResponse,
    Empty, PolicyGetRequest, PolicyListItem, PolicyListRequest, PolicyListResponse,
    PolicyPutRequest, PolicyPutResponse, PolicyView, RecoverResponse, RestoreRequest,
    RestoreResponse, SecretDeleteRequest, SecretGetRequest, SecretGetResponse, SecretListResponse,
    SecretMetadata, SecretMetadataResponse, SecretPutRequest, SecretVersionInfo, ShardBytes,
    routes,
};
use spike_core::{
    Nexus, Permission, Permissions, Policy, PolicyFilter, PolicySpec, Role, SecretData, Share,
    Status, VersionRead, WriteOptions,
};
use spike_storage::RedbStore;
use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::http::{Action, ApiCaller, App, Body, healthz, ok};
use crate::metrics::{self, Metrics};

/// Every route of the Nexus API (metrics labels).
const ROUTES: &[&str] = &[
    routes::SECRETS,
    routes::SECRETS_METADATA,
    routes::POLICY,
    routes::OPERATOR_RECOVER,
    routes::OPERATOR_RESTORE,
    routes::CIPHER_ENCRYPT,
    routes::CIPHER_DECRYPT,
    routes::HEALTHZ,
    routes::READYZ,
    routes::METRICS,
];

/// What the Nexus routes share: the store and the metrics.
#[derive(Clone)]
pub struct NexusState {
    nexus: Nexus,
    metrics: Arc<Metrics>,
    /// The redb store under `nexus`, if it is one: its checkpoints are
    /// shown at `/metrics`.
    redb: Option<Arc<RedbStore>>,
}

impl NexusState {
    /// State over `nexus`.
    pub fn new(nexus: Nexus) -> Self {
        Self {
            nexus,
            metrics: Arc::new(Metrics::new(
                ROUTES,
                "spike_nexus_sealed",
                "1 while Nexus is sealed or uninitialised, 0 once unsealed",
            )),
            redb: None,
        }
    }

    /// The store.
    pub fn nexus(&self) -> &Nexus {
        &self.nexus
    }

    /// Shows the checkpoints of `store`, the redb store `nexus` was built
    /// on, at `/metrics` (their time, and how long commits waited for them).
    #[must_use]
    pub fn with_redb(mut self, store: Arc<RedbStore>) -> Self {
        self.redb = Some(store);
        self
    }
}

type ApiResult = Result<Response, ApiError>;

/// The Nexus router: SPIKE v1 API, the Vault KV v2 API (`/v1/secret/`,
/// `/v1/sys/`, `/v1/auth/`), `/healthz`, `/readyz`, `/metrics`, in
/// the one middleware stack (2 MiB body limit, 30 s timeout,
/// `Cache-Control: no-store` on every answer).
pub fn router(state: NexusState) -> App {
    let metrics = Arc::clone(&state.metrics);
    let api = Router::new()
        .route(routes::SECRETS, post(secrets))
        .route(routes::SECRETS_METADATA, post(secrets_metadata))
        .route(routes::POLICY, post(policy))
        .route(routes::OPERATOR_RECOVER, post(recover))
        .route(routes::OPERATOR_RESTORE, post(restore))
        .route(routes::CIPHER_ENCRYPT, post(encrypt))
        .route(routes::CIPHER_DECRYPT, post(decrypt))
        .route(routes::HEALTHZ, get(healthz))
        .route(routes::READYZ, get(readyz))
        .route(routes::METRICS, get(metrics_route))
        .with_state(state.clone());
    let vault = crate::vault_api::prefix_routes(state.nexus.clone());
    App::new(api, vault, metrics, Some(state.nexus))
}

/// Ready: unsealed, and the store takes writes (a redb store refuses them
/// all after a failed commit, until Nexus restarts).
async fn readyz(State(s): State<NexusState>) -> ApiResult {
    match s.nexus.status() {
        Status::Unsealed if s.nexus.store_writable().is_ok() => {
            Ok(ok(&serde_json::json!({"status": "ready"})))
        }
        _ => Err(ApiError::not_ready()),
    }
}

async fn metrics_route(State(s): State<NexusState>) -> Response {
    let sealed = !matches!(s.nexus.status(), Status::Unsealed);
    s.metrics.set_state(i64::from(sealed));
    s.metrics.set_commits(s.nexus.commit_stats());
    if let Some(store) = &s.redb {
        s.metrics.set_checkpoints(store.checkpoint_stats());
    }
    metrics::response(&s.metrics)
}

// ---- secrets ---------------------------------------------------------------

async fn secrets(
    State(s): State<NexusState>,
    ApiCaller(caller): ApiCaller,
    Action(action): Action,
    body: Body,
) -> ApiResult {
    let n = &s.nexus;
    match action.as_deref() {
        None => {
            let req: SecretPutRequest = body.parse()?;
            let data =
                SecretData::from_pairs(req.values.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .map_err(spike_core::Error::from)?;
            n.put_secret(&caller, &req.path, data, WriteOptions::default())
                .await?;
            Ok(ok(&Empty {}))
        }
        Some(routes::ACTION_GET) => {
            let req: SecretGetRequest = body.parse()?;
            match n.get_secret(&caller, &req.path, req.version.unwrap_or(0))? {
                VersionRead::Live { data, .. } => Ok(ok(&SecretGetResponse {
                    data: to_strings(data),
                })),
                // Soft-deleted or destroyed: as upstream, not found.
                VersionRead::Gone(_) => Err(ApiError::not_found()),
            }
        }
        Some(routes::ACTION_DELETE) => {
            let req: SecretDeleteRequest = body.parse()?;
            n.delete_secret(&caller, &req.path, &req.versions).await?;
            Ok(ok(&Empty {}))
        }
        Some(routes::ACTION_UNDELETE) => {
            let req: SecretDeleteRequest = body.parse()?;
            n.undelete_secret(&caller, &req.path, &req.versions).await?;
            Ok(ok(&Empty {}))
        }
        Some(routes::ACTION_DESTROY) => {
            let req: SecretDeleteRequest = body.parse()?;
            n.destroy_secret(&caller, &req.path, &req.versions).await?;
            Ok(ok(&Empty {}))
        }
        Some(routes::ACTION_LIST) => {
            let _: Empty = body.parse()?;
            let keys = n.list_all_secrets(&caller)?;
            Ok(ok(&SecretListResponse { keys }))
        }
        Some(_) => Err(ApiError::bad_request()),
    }
}

/// Secret values as the SPIKE API shows them: strings as they are, any
/// other JSON value (written through the Vault API) as its JSON text.
fn to_strings(data: SecretData) -> BTreeMap<String, String> {
    data.to_object()
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect()
}

async fn secrets_metadata(
    State(s): State<NexusState>,
    ApiCaller(caller): ApiCaller,
    Action(action): Action,
    body: Body,
) -> ApiResult {
    if action.as_deref() != Some(routes::ACTION_GET) {
        return Err(ApiError::bad_request());
    }
    let req: SecretGetRequest = body.parse()?;
    let secret = s.nexus.secret_metadata(&caller, &req.path)?;
    let mount = s.nexus.kv_config()?;
    let versions = secret
        .versions
        .iter()
        .map(|v| {
            (
                v.number.to_string(),
                SecretVersionInfo {
                    created_time: v.created.to_rfc3339(),
                    version: v.number,
                    deleted_time: v.deletion_time.map(|t| t.to_rfc3339()),
                },
            )
        })
        .collect();
    Ok(ok(&SecretMetadataResponse {
        versions,
        metadata: SecretMetadata {
            current_version: secret.current_version,
            oldest_version: secret.oldest_version,
            created_time: secret.created.to_rfc3339(),
            updated_time: secret.updated.to_rfc3339(),
            max_versions: secret.effective_max_versions(&mount),
        },
    }))
}

// ---- policies --------------------------------------------------------------

async fn policy(
    State(s): State<NexusState>,
    ApiCaller(caller): ApiCaller,
    Action(action): Action,
    body: Body,
) -> ApiResult {
    let n = &s.nexus;
    match action.as_deref() {
        None => {
            let req: PolicyPutRequest = body.parse()?;
            let permissions = req
                .permissions
                .iter()
                .map(|p| Permission::parse(p))
                .collect::<Result<Permissions, _>>()
                .map_err(spike_core::Error::from)?;
            let spec = PolicySpec {
                name: req.name,
                spiffeid_pattern: req.spiffeid_pattern,
                path_pattern: req.path_pattern,
                permissions,
            };
            let policy = n.put_policy(&caller, spec).await?;
            Ok(ok(&PolicyPutResponse {
                id: policy.spec.name,
            }))
        }
        Some(routes::ACTION_GET) => {
            let req: PolicyGetRequest = body.parse()?;
            let policy = n.get_policy(&caller, &req.id)?;
            Ok(ok(&view(policy)))
        }
        Some(routes::ACTION_DELETE) => {
            let req: PolicyGetRequest = body.parse()?;
            n.delete_policy(&caller, &req.id).await?;
            Ok(ok(&Empty {}))
        }
        Some(routes::ACTION_LIST) => {
            let req: PolicyListRequest = body.parse()?;
            let filter = PolicyFilter {
                spiffeid_pattern: req.spiffeid_pattern,
                path_pattern: req.path_pattern,
            };
            let policies = n
                .list_policies(&caller, &filter)?
                .into_iter()
                .map(|p| PolicyListItem {
                    id: p.spec.name.clone(),
                    name: p.spec.name,
                })
                .collect();
            Ok(ok(&PolicyListResponse { policies }))
        }
        Some(_) => Err(ApiError::bad_request()),
    }
}

fn view(p: Policy) -> PolicyView {
    PolicyView {
        id: p.spec.name.clone(),
        permissions: p
            .spec
            .permissions
            .iter()
            .map(|x| x.as_str().to_owned())
            .collect(),
        name: p.spec.name,
        spiffeid_pattern: p.spec.spiffeid_pattern,
        path_pattern: p.spec.path_pattern,
        created_at: p.created.to_rfc3339(),
        updated_at: p.updated.to_rfc3339(),
        created_by: p.created_by,
    }
}

// ---- operator --------------------------------------------------------------

async fn recover(
    State(s): State<NexusState>,
    ApiCaller(caller): ApiCaller,
    Action(action): Action,
    body: Body,
) -> ApiResult {
    if action.is_some() {
        return Err(ApiError::bad_request());
    }
    let _: Empty = body.parse()?;
    let shares = s.nexus.recover(&caller)?;
    let shards = shares
        .iter()
        .map(|sh| (sh.id().to_string(), ShardBytes::new(*sh.value())))
        .collect();
    Ok(ok(&RecoverResponse { shards }))
}

async fn restore(
    State(s): State<NexusState>,
    ApiCaller(caller): ApiCaller,
    Action(action): Action,
    body: Body,
) -> ApiResult {
    if action.is_some() {
        return Err(ApiError::bad_request());
    }
    let req: RestoreRequest = body.parse()?;
    let share = match Share::new(req.id, *req.shard.expose()) {
        Ok(share) => share,
        // Tell a malformed share apart only to the restore role.
        Err(_) if !s.nexus.trust_roots().has_role(&caller.id, Role::Restore) => {
            return Err(ApiError::unauthorized());
        }
        Err(_) => return Err(ApiError::bad_request()),
    };
    let progress = s.nexus.restore(&caller, share).await?;
    Ok(ok(&RestoreResponse {
        collected: progress.collected,
        remaining: progress.remaining,
        restored: progress.restored,
    }))
}

// ---- cipher ----------------------------------------------------------------

async fn encrypt(
    State(s): State<NexusState>,
    ApiCaller(caller): ApiCaller,
    Action(action): Action,
    body: Body,
) -> ApiResult {
    if action.is_some() {
        return Err(ApiError::bad_request());
    }
    let req: CipherEncryptRequest = body.parse()?;
    let plaintext = Zeroizing::new(
        BASE64
            .decode(req.plaintext.as_bytes())
            .map_err(|_| ApiError::bad_request())?,
    );
    let mut req = req;
    zeroize::Zeroize::zeroize(&mut req.plaintext);
    let ciphertext = s.nexus.encrypt(&caller, &plaintext).await?;
    Ok(ok(&CipherEncryptResponse {
        ciphertext: BASE64.encode(ciphertext),
    }))
}

async fn decrypt(
    State(s): State<NexusState>,
    ApiCaller(caller): ApiCaller,
    Action(action): Action,
    body: Body,
) -> ApiResult {
    if action.is_some() {
        return Err(ApiError::bad_request());
    }
    let req: CipherDecryptRequest = body.parse()?;
    let ciphertext = BASE64
        .decode(req.ciphertext.as_bytes())
        .map_err(|_| ApiError::bad_request())?;
    let plaintext = s.nexus.decrypt(&caller, &ciphertext)?;
    let mut resp = CipherDecryptResponse {
        plaintext: BASE64.encode(&*plaintext),
    };
    let out = ok(&resp);
    zeroize::Zeroize::zeroize(&mut resp.plaintext);
    Ok(out)
}
