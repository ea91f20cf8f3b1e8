//! `sys/` routes clients probe (health, seal status, mounts) and
//! `auth/cert/login` plus the token self-routes.

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use spike_core::Status;

use super::kv::mount_info;
use super::{
    MOUNT, TOKEN_TTL, VaultError, VaultRequest, VaultResult, VaultState, bodiless, envelope,
    envelope_full, no_content, only,
};

/// The cluster name `sys/health` and `sys/seal-status` report.
const CLUSTER_NAME: &str = "spike-nexus";
/// A fixed cluster id (there is one Nexus).
const CLUSTER_ID: &str = "5b1c0e7a-0000-4000-8000-000000000000";

/// Every `/v1/sys/...` request.
pub(super) async fn handle_sys(s: VaultState, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let result = match VaultRequest::new(&parts, "/v1/sys/") {
        Ok(r) => sys(&s, &parts.method, &r),
        Err(e) => Err(e),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn sys(s: &VaultState, method: &Method, r: &VaultRequest) -> VaultResult {
    let rest = r.rest.as_str();
    match rest {
        "health" => {
            only(method, &[Method::GET, Method::HEAD])?;
            Ok(health(s, &HealthCodes::from_query(r)?))
        }
        "seal-status" => {
            only(method, &[Method::GET])?;
            Ok(seal_status(s))
        }
        "mounts" => {
            only(method, &[Method::GET])?;
            r.caller(s)?;
            let mut secret = mount_info();
            if let Some(m) = secret.as_object_mut() {
                m.remove("path");
            }
            let data = json!({ MOUNT: secret });
            // Vault repeats the mounts at the top level (old clients read them there).
            let mut response = envelope(StatusCode::OK, &data);
            let Ok(bytes) = serde_json::to_vec(&merge_top_level(&data)) else {
                return Err(VaultError::internal());
            };
            *response.body_mut() = axum::body::Body::from(bytes);
            Ok(response)
        }
        _ => match rest.strip_prefix("internal/ui/mounts/") {
            Some(path) => {
                only(method, &[Method::GET])?;
                ui_mount(path)
            }
            None => Err(VaultError::not_found()),
        },
    }
}

/// The envelope of `data`, with `data`'s entries also at the top level.
fn merge_top_level(data: &Value) -> Value {
    let mut top = serde_json::Map::new();
    if let Value::Object(m) = data {
        top.extend(m.clone());
    }
    top.insert("request_id".into(), json!(super::request_id()));
    top.insert("lease_id".into(), json!(""));
    top.insert("renewable".into(), json!(false));
    top.insert("lease_duration".into(), json!(0));
    top.insert("data".into(), data.clone());
    top.insert("wrap_info".into(), Value::Null);
    top.insert("warnings".into(), Value::Null);
    top.insert("auth".into(), Value::Null);
    Value::Object(top)
}

fn ui_mount(path: &str) -> VaultResult {
    let path = path.trim_start_matches('/');
    if path == "secret" || path.starts_with(MOUNT) {
        return Ok(envelope(StatusCode::OK, &mount_info()));
    }
    let shown = format!("{}/", path.trim_end_matches('/'));
    Err(VaultError::new(
        StatusCode::FORBIDDEN,
        format!(
            "preflight capability check returned 403, please ensure client's policies grant \
             access to path \"{shown}\""
        ),
    ))
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The status codes `sys/health` answers with, which Vault lets the
/// caller choose (`?activecode=`, `standbycode=`, `sealedcode=`,
/// `uninitcode=`, and `standbyok=true` to answer a standby as active): load
/// balancers and monitors probe with them.
#[derive(Debug)]
struct HealthCodes {
    active: StatusCode,
    standby: StatusCode,
    sealed: StatusCode,
    uninitialized: StatusCode,
    standby_ok: bool,
}

impl HealthCodes {
    /// Vault's defaults, overridden by the query; a parameter that is not a
    /// status code (100–999) or a boolean is 400 `{"errors":[]}`, as in
    /// OpenBao (which drops the connection for an integer out of range).
    fn from_query(r: &VaultRequest) -> Result<Self, VaultError> {
        let bad = || VaultError::no_message(StatusCode::BAD_REQUEST);
        let code = |name: &str, default: StatusCode| match r.param(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(bad),
        };
        let standby_ok = match r.param("standbyok") {
            None => false,
            // Go's `strconv.ParseBool`, which Vault uses.
            Some("1" | "t" | "T" | "TRUE" | "true" | "True") => true,
            Some("0" | "f" | "F" | "FALSE" | "false" | "False") => false,
            Some(_) => return Err(bad()),
        };
        Ok(Self {
            active: code("activecode", StatusCode::OK)?,
            standby: code("standbycode", StatusCode::TOO_MANY_REQUESTS)?,
            sealed: code("sealedcode", StatusCode::SERVICE_UNAVAILABLE)?,
            uninitialized: code("uninitcode", StatusCode::NOT_IMPLEMENTED)?,
            standby_ok,
        })
    }
}

/// `sys/health`: active (200) when unsealed and its store takes writes;
/// *standby* (429) when unsealed but the store refuses writes (a failed
/// commit: reads are still served, writes are not, as on a Vault standby,
/// so a balancer probing with the defaults sends writes elsewhere); 503
/// sealed; 501 not initialised. The cluster's name and id are left out
/// while sealed, as Vault does.
fn health(s: &VaultState, codes: &HealthCodes) -> Response {
    let (code, initialized, sealed, standby) = match s.nexus.status() {
        Status::Unsealed if s.nexus.store_writable().is_ok() => (codes.active, true, false, false),
        Status::Unsealed if codes.standby_ok => (codes.active, true, false, true),
        Status::Unsealed => (codes.standby, true, false, true),
        Status::Sealed { .. } => (codes.sealed, true, true, false),
        _ => (codes.uninitialized, false, true, false),
    };
    let mut body = json!({
        "initialized": initialized,
        "sealed": sealed,
        "standby": standby,
        // HashiCorp Vault's field (OpenBao 2.7 dropped it); vaultrs needs it.
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": now_unix(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    if !sealed && let Some(m) = body.as_object_mut() {
        m.insert("cluster_name".into(), json!(CLUSTER_NAME));
        m.insert("cluster_id".into(), json!(CLUSTER_ID));
    }
    // A chosen code that cannot carry a body (1xx, 204, 304) gets none.
    if code.is_informational() || code == StatusCode::NO_CONTENT || code == StatusCode::NOT_MODIFIED
    {
        return bodiless(code);
    }
    crate::http::json_response(code, &body)
}

/// `sys/seal-status`.
fn seal_status(s: &VaultState) -> Response {
    let status = s.nexus.status();
    let (t, n) = s.nexus.shamir();
    let (initialized, sealed, progress) = match status {
        Status::Unsealed => (true, false, 0),
        Status::Sealed { collected, .. } => (true, true, collected),
        _ => (false, true, 0),
    };
    crate::http::json_response(
        StatusCode::OK,
        &json!({
            "type": "shamir",
            "initialized": initialized,
            "sealed": sealed,
            "t": t,
            "n": n,
            "progress": progress,
            "nonce": "",
            "recovery_seal": false,
            "version": env!("CARGO_PKG_VERSION"),
            "commit_date": "",
            "migration": false,
            "cluster_name": CLUSTER_NAME,
            "cluster_id": CLUSTER_ID,
            "storage_type": "redb",
        }),
    )
}

// ---- auth/ -----------------------------------------------------------------

/// Every `/v1/auth/...` request.
pub(super) async fn handle_auth(s: VaultState, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let result = match VaultRequest::new(&parts, "/v1/auth/") {
        Ok(r) => auth(&s, &parts.method, &r),
        Err(e) => Err(e),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn auth(s: &VaultState, method: &Method, r: &VaultRequest) -> VaultResult {
    match r.rest.as_str() {
        // `bao login -method=cert` posts to `cert/login` (an optional
        // `name` in the body is ignored: the SVID is the role).
        "cert/login" => {
            only(method, &[Method::POST, Method::PUT])?;
            // The SVID itself, never a token: a token cannot mint tokens.
            let id = r.peer.clone().ok_or_else(VaultError::denied)?;
            let token = s.tokens.issue(id.clone())?;
            let auth = json!({
                "client_token": token,
                "accessor": "",
                "policies": ["default"],
                "token_policies": ["default"],
                "metadata": {"spiffe_id": id.as_str()},
                "lease_duration": TOKEN_TTL.as_secs(),
                "renewable": false,
                "entity_id": "",
                "token_type": "service",
                "orphan": true,
                "mfa_requirement": null,
                "num_uses": 0,
            });
            Ok(envelope_full(
                StatusCode::OK,
                &Value::Null,
                None,
                Some(&auth),
            ))
        }
        "token/lookup-self" => {
            only(method, &[Method::GET])?;
            let caller = r.caller(s)?;
            let ttl = r
                .token
                .as_deref()
                .and_then(|t| s.tokens.lookup(t))
                .map_or(0, |(_, exp)| {
                    exp.saturating_duration_since(std::time::Instant::now())
                        .as_secs()
                });
            Ok(envelope(
                StatusCode::OK,
                &json!({
                    "accessor": "",
                    "creation_ttl": TOKEN_TTL.as_secs(),
                    "display_name": caller.id.as_str(),
                    "entity_id": "",
                    "expire_time": null,
                    "explicit_max_ttl": 0,
                    "id": "",
                    "meta": {"spiffe_id": caller.id.as_str()},
                    "num_uses": 0,
                    "orphan": true,
                    "path": "auth/cert/login",
                    "policies": ["default"],
                    "renewable": false,
                    "ttl": ttl,
                    "type": "service",
                }),
            ))
        }
        "token/revoke-self" => {
            only(method, &[Method::POST, Method::PUT])?;
            r.caller(s)?;
            if let Some(t) = &r.token {
                s.tokens.revoke(t);
            }
            Ok(no_content())
        }
        _ => Err(VaultError::not_found()),
    }
}
