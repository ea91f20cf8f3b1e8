//! The Keeper HTTP API in-process: the real router (`keeper_api::router`,
//! contribute, shard, health, metrics, in the shared middleware stack) over
//! a fresh `KeeperState` per input, trusting `spike.ist`.
//!
//! Input: up to 4 requests separated by a `0xFF` byte, each
//! - byte 0: caller `% 6` (0 and 1 Nexus, so that it is picked often;
//!   2 Keeper, 3 superuser pilot, 4 Nexus of another trust domain, 5 no
//!   SVID); `0x10` sends `Content-Length`, `0x20` announces 3 MiB;
//! - byte 1: method `& 7` (GET POST PUT PATCH DELETE HEAD OPTIONS TRACE);
//! - path and query up to `\n` (targets `http` refuses are skipped);
//! - the rest: the body.
//!
//! Asserts: no panic; no 5xx; `Cache-Control: no-store`; every 4xx is
//! `application/json` `{"err":"<code>"}` (empty to a HEAD); only the Nexus
//! identity ever gets a 200 from contribute or shard; a share Keeper accepted (200 to a
//! contribute) is read back equal by Nexus, and every 200 from shard is
//! the last share accepted.
#![no_main]

#[path = "common/http.rs"]
mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{ErrorShape, check, id, runtime, send};
use libfuzzer_sys::fuzz_target;
use spike_api::{ContributeRequest, ShardResponse, routes};
use spike_core::{SpiffeId, TrustRoots};
use spike_server::keeper_api::{self, KeeperState};

const NEXUS: &str = "spiffe://spike.ist/spike/nexus";
const CALLERS: [Option<&str>; 6] = [
    Some(NEXUS),
    Some(NEXUS),
    Some("spiffe://spike.ist/spike/keeper"),
    Some("spiffe://spike.ist/spike/pilot/role/superuser"),
    Some("spiffe://other.td/spike/nexus"),
    None,
];
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE",
];
const MAX_REQUESTS: usize = 4;

fn request(method: &str, target: &[u8], body: Vec<u8>) -> Option<Request<Body>> {
    Request::builder()
        .method(method)
        .uri(target)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .ok()
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 64 * 1024 {
        return;
    }
    let callers: Vec<Option<SpiffeId>> = CALLERS.iter().map(|c| c.map(id)).collect();
    let nexus = id(NEXUS);
    runtime().block_on(async {
        let roots = TrustRoots::new(["spike.ist"]).expect("trust roots");
        let app = keeper_api::router(KeeperState::new(roots));
        // The share last accepted, as Keeper must hand it back.
        let mut held: Option<[u8; 32]> = None;
        for chunk in data.split(|&b| b == 0xFF).take(MAX_REQUESTS) {
            let [flags, verb, rest @ ..] = chunk else {
                continue;
            };
            let (target, body) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            let method = METHODS[usize::from(verb & 7)];
            let Some(mut req) = request(method, target, body.to_vec()) else {
                continue;
            };
            if flags & 0x20 != 0 {
                req.headers_mut()
                    .insert("content-length", "3145728".parse().expect("header"));
            } else if flags & 0x10 != 0 {
                req.headers_mut()
                    .insert("content-length", body.len().into());
            }
            let path = req.uri().path().to_owned();
            let what = format!("{method} {}", req.uri());
            let caller = callers[usize::from(flags % 6)].as_ref();
            let answer = send(&app, caller, req).await;
            if let Some(shape) = check(&answer, &what) {
                // axum answers HEAD without a body, as hyper would send it.
                let head = method == "HEAD" && shape == ErrorShape::Empty;
                assert!(
                    shape == ErrorShape::Spike || head,
                    "{what}: not a SPIKE error"
                );
            }
            let exchange = path == routes::KEEPER_CONTRIBUTE || path == routes::KEEPER_SHARD;
            if answer.status != StatusCode::OK || !exchange {
                continue;
            }
            assert_eq!(
                caller,
                Some(&nexus),
                "{what}: 200 to a caller that is not Nexus"
            );
            if path == routes::KEEPER_CONTRIBUTE {
                let accepted: ContributeRequest =
                    serde_json::from_slice(body).expect("an accepted body parses");
                held = Some(*accepted.shard.expose());
                // Read it back at once, as Nexus does.
                let req = request("POST", routes::KEEPER_SHARD.as_bytes(), b"{}".to_vec())
                    .expect("request");
                let back = send(&app, Some(&nexus), req).await;
                assert_eq!(back.status, StatusCode::OK, "shard after contribute");
                let back: ShardResponse = serde_json::from_slice(&back.body).expect("shard body");
                assert_eq!(Some(*back.shard.expose()), held, "share read back differs");
            } else {
                let got: ShardResponse = serde_json::from_slice(&answer.body).expect("shard body");
                assert_eq!(
                    Some(*got.shard.expose()),
                    held,
                    "{what}: not the share accepted"
                );
            }
        }
    });
});
