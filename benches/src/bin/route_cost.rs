//! The cost of one Vault KV v2 read (or write) inside Nexus's HTTP stack,
//! without the network: requests go through the real router and middleware
//! in-process (as `serve.rs` hands them over after TLS), answered by a
//! Nexus with a batched JSON-lines audit log, as a workload that a policy
//! allows. Reads use a memory store; writes a redb file (fsync'd commits)
//! from 32 concurrent writers, so group commit works as in the server.
//!
//! ```text
//! cargo run --release -p spike-benches --bin route_cost -- [REQUESTS] [read|write]
//! valgrind --tool=callgrind target/release/route_cost 20000   # instructions
//! ```
//!
//! Prints the wall time per request. Under callgrind, run it with two
//! request counts: the difference of the totals divided by the difference
//! of the counts is the instructions of one request, set-up excluded.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use spike_core::{
    AuditOptions, Delivery, JsonLinesSink, Nexus, Permission, PolicySpec, SecretData, SpiffeId,
    WriteOptions,
};
use spike_server::nexus_api::{self, NexusState};
use spike_server::{PeerAddr, PeerIdentity};
use spike_storage::{BackingStore, MemoryStore, RedbStore};
use tower::ServiceExt;

/// The allocator of the `spike-server` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const APP: &str = "spiffe://spike.ist/ns/prod/sa/app";
/// `APP` as a policy's SPIFFE ID pattern (the dots escaped).
const APP_PATTERN: &str = r"spiffe://spike\.ist/ns/prod/sa/app";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let requests: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(100_000);
    let write = match std::env::args().nth(2).as_deref() {
        None | Some("read") => false,
        Some("write") => true,
        Some(other) => return Err(format!("read or write, not {other}").into()),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    rt.block_on(async {
        let sink = JsonLinesSink::file(dir.path().join("audit.log"), Delivery::Batched)?;
        let store: Arc<dyn BackingStore> = if write {
            Arc::new(RedbStore::open(dir.path().join("store.redb"))?)
        } else {
            Arc::new(MemoryStore::new())
        };
        let nexus = Nexus::builder(store)
            .audit(Arc::new(sink), AuditOptions::default())
            .open()
            .await?;
        nexus.init().await?;
        let su = spike_benches::superuser();
        nexus
            .put_policy(
                &su,
                PolicySpec {
                    name: "app".into(),
                    spiffeid_pattern: APP_PATTERN.into(),
                    path_pattern: "app/.*".into(),
                    permissions: [Permission::Read, Permission::Write].into_iter().collect(),
                },
            )
            .await?;
        let value = "v".repeat(100);
        for k in 0..1000 {
            nexus
                .put_secret(
                    &su,
                    &format!("app/k{k}"),
                    SecretData::from_pairs([("value", value.as_str())])?,
                    WriteOptions::default(),
                )
                .await?;
        }
        let app = nexus_api::router(NexusState::new(nexus.clone()));
        let peer = PeerIdentity(SpiffeId::parse(APP)?);
        let started = Instant::now();
        if write {
            const WRITERS: usize = 32;
            let mut tasks = tokio::task::JoinSet::new();
            for w in 0..WRITERS {
                let (app, peer, body) = (app.clone(), peer.clone(), format!("{{\"data\":{{\"value\":\"{value}\"}}}}"));
                tasks.spawn(async move {
                    for i in (w..requests).step_by(WRITERS) {
                        let req = Request::post(format!("/v1/secret/data/app/k{}", i % 1000))
                            .header("content-type", "application/json")
                            .body(Body::from(body.clone()))?;
                        send(&app, &peer, req).await?;
                    }
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                });
            }
            while let Some(done) = tasks.join_next().await {
                done?.map_err(|e| e.to_string())?;
            }
        } else {
            for i in 0..requests {
                let req = Request::get(format!("/v1/secret/data/app/k{}", i % 1000))
                    .body(Body::empty())?;
                send(&app, &peer, req).await.map_err(|e| e.to_string())?;
            }
        }
        let elapsed = started.elapsed();
        let stats = nexus.commit_stats();
        println!(
            "{requests} {} in {elapsed:.2?}: {:.2} µs each (router + Nexus + audit, no network); {} commits",
            if write { "writes" } else { "reads" },
            elapsed.as_secs_f64() * 1e6 / requests.max(1) as f64,
            stats.commits,
        );
        nexus.close().await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}

/// Sends `req` as `peer`, as `serve.rs` would, and reads the answer.
async fn send(
    app: &spike_server::App,
    peer: &PeerIdentity,
    mut req: Request<Body>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    req.extensions_mut().insert(peer.clone());
    req.extensions_mut()
        .insert(PeerAddr(([127, 0, 0, 1], 40000).into()));
    let res = app.clone().oneshot(req).await?;
    let status = res.status();
    let _ = res.into_body().collect().await?;
    if !status.is_success() {
        return Err(format!("answer {status}").into());
    }
    Ok(())
}
