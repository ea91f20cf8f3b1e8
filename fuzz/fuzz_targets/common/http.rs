//! Shared by `nexus_http` and `keeper_http`: the runtime, one request sent
//! through a router in-process (as `serve.rs` would, with the peer's
//! identity and address in the extensions), and the checks every answer
//! must pass (SPEC §7, §10).

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use spike_core::SpiffeId;
use spike_server::{App, PeerAddr, PeerIdentity};
use tower::ServiceExt;

/// A current-thread runtime with timers (the middleware's timeouts need
/// them), made once per process.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    })
}

pub fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).expect("SPIFFE ID")
}

/// One answer, read to the end.
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<Vec<u8>>,
    pub body: Vec<u8>,
}

/// Sends `req` through `app` as `peer` (no [`PeerIdentity`] when `None`:
/// what `serve.rs` does for a peer without an SVID) from a fixed address,
/// and checks what every answer carries: `Cache-Control: no-store`.
pub async fn send(app: &App, peer: Option<&SpiffeId>, mut req: Request<Body>) -> Answer {
    if let Some(peer) = peer {
        req.extensions_mut().insert(PeerIdentity(peer.clone()));
    }
    req.extensions_mut()
        .insert(PeerAddr(([127, 0, 0, 1], 40000).into()));
    let res = app
        .clone()
        .oneshot(req)
        .await
        .expect("routers are infallible");
    assert_eq!(
        res.headers().get("cache-control").map(|v| v.as_bytes()),
        Some(&b"no-store"[..]),
        "Cache-Control: no-store missing"
    );
    let status = res.status();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.as_bytes().to_vec());
    let body = res
        .into_body()
        .collect()
        .await
        .expect("in-memory body")
        .to_bytes()
        .to_vec();
    Answer {
        status,
        content_type,
        body,
    }
}

/// The SPIKE error codes (`{"err":"<code>"}`, SPEC §7.1) of a 4xx.
const SPIKE_4XX_CODES: [&str; 3] = ["api_bad_request", "access_unauthorized", "api_not_found"];

/// What shape a 4xx body had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"err":"<code>"}`, exactly.
    Spike,
    /// Vault's `{"errors":["…", …]}`.
    VaultErrors,
    /// Vault's full envelope (404 of a deleted version, invalid KV path).
    VaultEnvelope,
    /// No body (Vault's 404 of a PATCH of a missing secret, as OpenBao).
    Empty,
}

/// Asserts the invariants of an answer: never a 5xx (Nexus is unsealed and
/// its store is in memory, so nothing may fail on the server's side), and
/// a 4xx is `application/json` with a stable code. Returns the shape of a
/// 4xx body.
pub fn check(answer: &Answer, what: &str) -> Option<ErrorShape> {
    let body = String::from_utf8_lossy(&answer.body);
    assert!(
        !answer.status.is_server_error(),
        "{what}: server error {}: {body}",
        answer.status
    );
    if !answer.status.is_client_error() {
        return None;
    }
    assert_eq!(
        answer.content_type.as_deref(),
        Some(&b"application/json"[..]),
        "{what}: 4xx {} without Content-Type: application/json: {body}",
        answer.status
    );
    if answer.body.is_empty() {
        return Some(ErrorShape::Empty);
    }
    let v: Value = serde_json::from_slice(&answer.body).unwrap_or_else(|e| {
        panic!(
            "{what}: 4xx {} body is not JSON ({e}): {body}",
            answer.status
        )
    });
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: 4xx body is not an object: {body}"));
    if let Some(code) = obj.get("err") {
        assert_eq!(
            obj.len(),
            1,
            "{what}: SPIKE error with extra fields: {body}"
        );
        let code = code.as_str().unwrap_or_default();
        assert!(
            SPIKE_4XX_CODES.contains(&code),
            "{what}: unknown SPIKE error code for {}: {body}",
            answer.status
        );
        return Some(ErrorShape::Spike);
    }
    if let Some(errors) = obj.get("errors") {
        assert_eq!(
            obj.len(),
            1,
            "{what}: Vault error with extra fields: {body}"
        );
        let ok = errors
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string));
        assert!(ok, "{what}: Vault errors not a list of strings: {body}");
        return Some(ErrorShape::VaultErrors);
    }
    let envelope = [
        "request_id",
        "lease_id",
        "data",
        "wrap_info",
        "warnings",
        "auth",
    ]
    .iter()
    .all(|k| obj.contains_key(*k));
    assert!(envelope, "{what}: 4xx body of no known shape: {body}");
    Some(ErrorShape::VaultEnvelope)
}
