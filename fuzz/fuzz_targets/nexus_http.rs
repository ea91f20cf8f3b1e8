//! The Nexus HTTP API end to end, in-process: the real router
//! (`nexus_api::router`: SPIKE v1, Vault KV v2, `/v1/sys`, `/v1/auth`,
//! health and metrics, in its middleware stack) over a fresh, initialised
//! and unsealed Nexus on a `MemoryStore` per input (reproducible, and
//! cheap enough: ~0.6 ms), with a policy granting `workload/app` read,
//! write and list on `app/…` when the input uses that identity.
//!
//! Input: up to 4 requests separated by a `0xFF` byte, each
//! - byte 0: caller `& 3` (0 superuser pilot, 1 `workload/app` with the
//!   policy, 2 an unknown workload, 3 no SVID); token `>> 2 & 3` (0 none,
//!   1 `X-Vault-Token` / 2 `Authorization: Bearer` with the token of the
//!   last successful `auth/cert/login` of this input, 3 a bogus token);
//!   `0x10` sends `Content-Length`, `0x20` announces 3 MiB instead;
//! - byte 1: method `& 7` (GET POST PUT PATCH DELETE LIST HEAD OPTIONS,
//!   `0xC0` set: `BREW`), Content-Type `>> 3 & 7` (see `CONTENT_TYPES`);
//! - path and query up to `\n` (requests whose target `http` refuses to
//!   parse are skipped: hyper would refuse them before the router);
//! - the rest: the body.
//!
//! Asserts: no panic; no 5xx; `Cache-Control: no-store` everywhere; every
//! 4xx is `application/json` and `{"err":"<SPIKE code>"}` (SPIKE routes),
//! or Vault's `{"errors":[…]}`, or (404 only) Vault's envelope, or (404 to
//! a PATCH, or any HEAD) empty; a 2xx body is JSON (`/metrics` aside).
#![no_main]

#[path = "common/http.rs"]
mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use common::{ErrorShape, check, id, runtime, send};
use libfuzzer_sys::fuzz_target;
use spike_core::{Caller, Nexus, Permission, PolicySpec, SpiffeId};
use spike_server::nexus_api::{self, NexusState};
use spike_storage::MemoryStore;

const SUPERUSER: &str = "spiffe://spike.ist/spike/pilot/role/superuser";
const APP: &str = "spiffe://spike.ist/workload/app";
const STRANGER: &str = "spiffe://spike.ist/workload/stranger";

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "LIST", "HEAD", "OPTIONS",
];
const CONTENT_TYPES: [Option<&str>; 8] = [
    Some("application/json"),
    Some("application/merge-patch+json"),
    None,
    Some("text/plain"),
    Some("application/merge-patch+json; charset=utf-8"),
    Some("APPLICATION/MERGE-PATCH+JSON"),
    Some(""),
    Some("application/x-www-form-urlencoded"),
];
const MAX_REQUESTS: usize = 4;

/// A fresh Nexus and its router. The policy is made only when some
/// request is `workload/app`'s: compiling it is most of the set-up's cost.
async fn fresh_app(with_policy: bool) -> spike_server::App {
    let nexus = Nexus::builder(Arc::new(MemoryStore::new()))
        .open()
        .await
        .expect("open");
    nexus.init().await.expect("init");
    if !with_policy {
        return nexus_api::router(NexusState::new(nexus));
    }
    let spec = PolicySpec {
        name: "fuzz-app".to_owned(),
        spiffeid_pattern: r"spiffe://spike\.ist/workload/app".to_owned(),
        // `app/.*` for every valid path, but ASCII: its DFA builds several
        // times faster than Unicode `.`'s, and it is built per input.
        path_pattern: "app/[A-Za-z0-9._/-]*".to_owned(),
        permissions: [Permission::Read, Permission::Write, Permission::List]
            .into_iter()
            .collect(),
    };
    nexus
        .put_policy(&Caller::new(id(SUPERUSER)), spec)
        .await
        .expect("policy");
    nexus_api::router(NexusState::new(nexus))
}

fn is_vault_route(path: &str) -> bool {
    ["/v1/secret/", "/v1/sys/", "/v1/auth/"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// The `auth.client_token` of a login answer.
fn token_of(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(v.get("auth")?.get("client_token")?.as_str()?.to_owned())
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 64 * 1024 {
        return;
    }
    let ids: [Option<SpiffeId>; 4] = [Some(id(SUPERUSER)), Some(id(APP)), Some(id(STRANGER)), None];
    runtime().block_on(async {
        let chunks = || data.split(|&b| b == 0xFF).take(MAX_REQUESTS);
        let app = fresh_app(chunks().any(|c| c.first().is_some_and(|f| f & 3 == 1))).await;
        let mut token: Option<String> = None;
        for chunk in chunks() {
            let [flags, verb, rest @ ..] = chunk else {
                continue;
            };
            let (target, body) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            let method = if verb & 0xC0 == 0xC0 {
                Method::from_bytes(b"BREW").expect("method")
            } else {
                Method::from_bytes(METHODS[usize::from(verb & 7)].as_bytes()).expect("method")
            };
            let mut req = Request::builder().method(method.clone()).uri(target);
            if let Some(ct) = CONTENT_TYPES[usize::from((verb >> 3) & 7)] {
                req = req.header("content-type", ct);
            }
            let live = token.as_deref().unwrap_or("hvs.none");
            req = match (flags >> 2) & 3 {
                1 => req.header("x-vault-token", live),
                2 => req.header("authorization", format!("Bearer {live}")),
                3 => req.header("x-vault-token", "hvs.AAAAAAAAAAAAAAAAAAAAAAAA"),
                _ => req,
            };
            if flags & 0x20 != 0 {
                req = req.header("content-length", "3145728");
            } else if flags & 0x10 != 0 {
                req = req.header("content-length", body.len().to_string());
            }
            let Ok(req) = req.body(Body::from(body.to_vec())) else {
                continue;
            };
            let path = req.uri().path().to_owned();
            let what = format!("{method} {}", req.uri());
            let answer = send(&app, ids[usize::from(flags & 3)].as_ref(), req).await;
            let (status, body) = (answer.status, String::from_utf8_lossy(&answer.body));
            match check(&answer, &what) {
                Some(ErrorShape::Spike) => {}
                // axum answers HEAD without a body, as hyper would send it.
                Some(ErrorShape::Empty) if method == Method::HEAD => {}
                Some(shape) => {
                    assert!(
                        is_vault_route(&path),
                        "{what}: Vault error shape off Vault routes: {status} {body}"
                    );
                    if shape == ErrorShape::VaultEnvelope {
                        assert_eq!(status, 404, "{what}: envelope on a non-404 error: {body}");
                    }
                    if shape == ErrorShape::Empty {
                        assert_eq!(status, 404, "{what}: empty non-404 error");
                        assert_eq!(method, Method::PATCH, "{what}: empty error off PATCH");
                    }
                }
                None if status.is_success() && !answer.body.is_empty() => {
                    if path != "/metrics" {
                        assert!(
                            serde_json::from_slice::<serde_json::Value>(&answer.body).is_ok(),
                            "{what}: 2xx body is not JSON: {status} {body}"
                        );
                    }
                    if path == "/v1/auth/cert/login" {
                        token = token_of(&answer.body).or(token);
                    }
                }
                None => {}
            }
        }
    });
});
