//! The cost of one Vault KV v2 read inside Nexus's HTTP stack, without the
//! network: requests go through the real router and middleware in-process
//! (as `serve.rs` hands them over after TLS), answered by a Nexus over a
//! memory store with a batched JSON-lines audit log, as a workload that a
//! policy allows.
//!
//! ```text
//! cargo run --release -p spike-benches --bin route_cost -- [REQUESTS]
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
use spike_storage::MemoryStore;
use tower::ServiceExt;

/// The allocator of the `spike-server` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const APP: &str = "spiffe://spike.ist/ns/prod/sa/app";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let requests: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    rt.block_on(async {
        let sink = JsonLinesSink::file(dir.path().join("audit.log"), Delivery::Batched)?;
        let nexus = Nexus::builder(Arc::new(MemoryStore::new()))
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
                    spiffeid_pattern: regex_escape(APP),
                    path_pattern: "app/.*".into(),
                    permissions: [Permission::Read].into_iter().collect(),
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
        for i in 0..requests {
            let mut req = Request::get(format!("/v1/secret/data/app/k{}", i % 1000))
                .body(Body::empty())?;
            req.extensions_mut().insert(peer.clone());
            req.extensions_mut()
                .insert(PeerAddr(([127, 0, 0, 1], 40000).into()));
            let res = app.clone().oneshot(req).await?;
            if !res.status().is_success() {
                return Err(format!("read {i}: {}", res.status()).into());
            }
            let _ = res.into_body().collect().await?;
        }
        let elapsed = started.elapsed();
        println!(
            "{requests} reads in {elapsed:.2?}: {:.2} µs per read (router + Nexus + audit, no network)",
            elapsed.as_secs_f64() * 1e6 / requests.max(1) as f64
        );
        nexus.close().await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}

/// `s` with regex metacharacters escaped.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
