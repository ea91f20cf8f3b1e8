//! Shared helpers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use spike_core::{Nexus, Share, SpiffeId};
use spike_server::App;
use spike_server::nexus_api::{self, NexusState};
use spike_server::{PeerAddr, PeerIdentity};
use spike_storage::MemoryStore;
use tower::ServiceExt;

pub const SUPERUSER: &str = "spiffe://spike.ist/spike/pilot/role/superuser";
pub const RECOVER: &str = "spiffe://spike.ist/spike/pilot/role/recover";
pub const RESTORE: &str = "spiffe://spike.ist/spike/pilot/role/restore";
pub const NEXUS: &str = "spiffe://spike.ist/spike/nexus";
pub const KEEPER: &str = "spiffe://spike.ist/spike/keeper";
pub const APP: &str = "spiffe://spike.ist/workload/app";

pub fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

/// An initialised, unsealed Nexus over memory, its store and shares.
pub async fn nexus() -> (Nexus, Arc<MemoryStore>, Vec<Share>) {
    let store = Arc::new(MemoryStore::new());
    let n = Nexus::builder(store.clone()).open().await.unwrap();
    let shares = n.init().await.unwrap();
    (n, store, shares)
}

pub async fn app() -> (App, Nexus, Vec<Share>) {
    let (n, _, shares) = nexus().await;
    (nexus_api::router(NexusState::new(n.clone())), n, shares)
}

/// The router over a Nexus that is not initialised yet, on a memory store
/// whose faults the returned controller injects.
pub async fn app_over_faulty_store() -> (App, Nexus, spike_storage::FaultController) {
    let store = Arc::new(spike_storage::FaultyStore::new(MemoryStore::new()));
    let faults = store.controller();
    let n = Nexus::builder(store).open().await.unwrap();
    (nexus_api::router(NexusState::new(n.clone())), n, faults)
}

/// The answer to one request.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
    pub content_type: Option<String>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts an error answer: `status` and exactly `{"err":"<code>"}`.
    #[track_caller]
    pub fn assert_err(&self, status: u16, code: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            String::from_utf8_lossy(&self.body),
            format!(r#"{{"err":"{code}"}}"#)
        );
    }

    #[track_caller]
    pub fn assert_ok(&self) -> Value {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()
    }
}

/// Sends `method uri` with `body` as `who` (no identity when `None`) and
/// checks `Cache-Control: no-store`, which every answer must carry.
pub async fn send(
    app: &App,
    who: Option<&str>,
    method: Method,
    uri: &str,
    body: impl Into<Body>,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    if let Some(who) = who {
        req.extensions_mut().insert(PeerIdentity(id(who)));
    }
    req.extensions_mut()
        .insert(PeerAddr("127.0.0.1:40000".parse().unwrap()));
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(
        res.headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("no-store"),
        "Cache-Control on {uri}"
    );
    let status = res.status();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    Answer {
        status,
        body,
        content_type,
    }
}

/// POST with a JSON body.
pub async fn post(app: &App, who: Option<&str>, uri: &str, body: Value) -> Answer {
    send(app, who, Method::POST, uri, body.to_string()).await
}

/// Serves `app` over plain HTTP on loopback, every request as `as_id`
/// (what the TLS layer would insert). Unit tests only: the real servers are
/// mTLS.
pub async fn serve_plain(app: App, as_id: &str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = PeerIdentity(id(as_id));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, remote)) = listener.accept().await else {
                return;
            };
            let peer = peer.clone();
            let svc = app
                .clone()
                .map_request(move |mut req: Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(peer.clone());
                    req.extensions_mut().insert(PeerAddr(remote));
                    req
                });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(svc))
                    .await;
            });
        }
    });
    addr
}

/// A loopback address where nothing listens.
pub async fn dead_addr() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}
