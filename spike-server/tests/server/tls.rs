//! A real mTLS handshake: spike-tls's DevCa, server and client configs,
//! `serve::serve`, reqwest (rustls, aws-lc-rs) as the client.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use spike_core::{Role, TrustRoots};
use spike_server::keeper_api::{self, KeeperState};
use spike_server::nexus_api::{self, NexusState};
use spike_server::serve;
use spike_server::shards::{self, KeeperClient};
use spike_tls::{DevCa, PeerPolicy, PemSource, client_config, server_config};

use crate::support::*;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn source(ca: &DevCa, who: &str) -> Arc<PemSource> {
    let svid = ca
        .mint(
            &id(who),
            &["localhost"],
            &[LOOPBACK],
            Duration::from_secs(3600),
        )
        .unwrap();
    Arc::new(PemSource::new(svid, vec![ca.bundle()]))
}

fn client(ca: &DevCa, who: &str, server: &str) -> reqwest::Client {
    let tls = client_config(source(ca, who), PeerPolicy::Exact(vec![id(server)])).unwrap();
    shards::http_client((*tls).clone()).unwrap()
}

struct Running {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(ca: &DevCa, who: &str, app: spike_server::App) -> Running {
    let tls = server_config(
        source(ca, who),
        PeerPolicy::TrustDomains(vec!["spike.ist".into()]),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve::serve(listener, tls, app, async move {
        let _ = rx.await;
    }));
    Running { addr, stop, task }
}

async fn call(
    c: &reqwest::Client,
    addr: SocketAddr,
    uri: &str,
    body: Value,
) -> (u16, Value, Option<String>) {
    let res = c
        .post(format!("https://127.0.0.1:{}{uri}", addr.port()))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let cache = res
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    (status, body, cache)
}

#[tokio::test]
async fn nexus_over_mtls_knows_its_callers() {
    let dir = tempfile_dir();
    let ca = DevCa::load_or_create(dir.path(), "spike.ist").unwrap();
    let (n, _, _) = nexus().await;
    let server = start(&ca, NEXUS, nexus_api::router(NexusState::new(n))).await;

    let su = client(&ca, SUPERUSER, NEXUS);
    let (status, body, cache) = call(
        &su,
        server.addr,
        "/v1/store/secrets",
        json!({"path":"a","values":{"k":"v"}}),
    )
    .await;
    assert_eq!(
        (status, body, cache.as_deref()),
        (200, json!({}), Some("no-store"))
    );
    let (status, body, _) = call(
        &su,
        server.addr,
        "/v1/store/secrets?action=get",
        json!({"path":"a"}),
    )
    .await;
    assert_eq!((status, body), (200, json!({"data":{"k":"v"}})));

    let app = client(&ca, APP, NEXUS);
    let (status, body, _) = call(
        &app,
        server.addr,
        "/v1/store/secrets?action=get",
        json!({"path":"a"}),
    )
    .await;
    assert_eq!((status, body), (401, json!({"err":"access_unauthorized"})));

    // A client of another trust domain is refused at the handshake.
    let other_dir = tempfile_dir();
    let evil = DevCa::load_or_create(other_dir.path(), "evil.example").unwrap();
    let svid = evil
        .mint(
            &id("spiffe://evil.example/spike/pilot/role/superuser"),
            &[],
            &[LOOPBACK],
            Duration::from_secs(60),
        )
        .unwrap();
    let evil_source = Arc::new(PemSource::new(svid, vec![evil.bundle(), ca.bundle()]));
    let tls = client_config(evil_source, PeerPolicy::Exact(vec![id(NEXUS)])).unwrap();
    let evil_client = shards::http_client((*tls).clone()).unwrap();
    let refused = evil_client
        .post(format!(
            "https://127.0.0.1:{}/v1/store/secrets?action=get",
            server.addr.port()
        ))
        .body(r#"{"path":"a"}"#)
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");

    // Graceful shutdown: serve returns.
    server.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn keeper_exchange_over_mtls() {
    let dir = tempfile_dir();
    let ca = DevCa::load_or_create(dir.path(), "spike.ist").unwrap();
    let keeper_state = KeeperState::new(TrustRoots::default());
    let keeper = start(&ca, KEEPER, keeper_api::router(keeper_state.clone())).await;

    let keeper_id = Role::Keeper.id_in("spike.ist").unwrap();
    let tls = client_config(source(&ca, NEXUS), PeerPolicy::Exact(vec![keeper_id])).unwrap();
    let url = format!("https://127.0.0.1:{}", keeper.addr.port());
    let clients = vec![KeeperClient::with_tls(url, (*tls).clone()).unwrap()];

    let (n, store, _) = {
        let store = Arc::new(spike_storage::MemoryStore::new());
        let n = spike_core::Nexus::builder(store.clone())
            .shares(1, 1)
            .open()
            .await
            .unwrap();
        let shares = n.init().await.unwrap();
        (n, store, shares)
    };
    assert_eq!(shards::push_all(&n, &clients).await.unwrap(), 1);
    assert!(keeper_state.has_shard());
    n.close().await;
    let n = spike_core::Nexus::builder(store)
        .shares(1, 1)
        .open()
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        shards::pull_and_unseal(&n, &clients, 1),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(n.status(), spike_core::Status::Unsealed);

    // A superuser SVID is not Nexus: the Keeper refuses it.
    let su = client(&ca, SUPERUSER, KEEPER);
    let (status, body, _) = call(&su, keeper.addr, "/v1/store/shard", json!({})).await;
    assert_eq!((status, body), (401, json!({"err":"access_unauthorized"})));
}

fn tempfile_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}
