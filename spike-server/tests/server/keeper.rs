//! The Keeper API: Nexus only; the share in memory.

use axum::http::Method;
use serde_json::json;
use spike_core::TrustRoots;
use spike_server::LockedShard;
use spike_server::keeper_api::{self, KeeperState};

use crate::support::*;

fn keeper() -> (spike_server::App, KeeperState) {
    let state = KeeperState::new(TrustRoots::default());
    (keeper_api::router(state.clone()), state)
}

fn share_json() -> (Vec<u8>, serde_json::Value) {
    let mut v = vec![0u8; 32];
    v[31] = 7;
    v[0] = 1;
    (v.clone(), json!({"shard": v}))
}

#[tokio::test]
async fn nexus_contributes_and_fetches() {
    let (app, state) = keeper();
    post(&app, Some(NEXUS), "/v1/store/shard", json!({}))
        .await
        .assert_err(404, "api_not_found");
    let (bytes, body) = share_json();
    assert_eq!(
        post(&app, Some(NEXUS), "/v1/store/contribute", body)
            .await
            .assert_ok(),
        json!({})
    );
    assert!(state.has_shard());
    eprintln!("share memory locked: {:?}", state.shard_locked());
    let got = post(&app, Some(NEXUS), "/v1/store/shard", json!({}))
        .await
        .assert_ok();
    assert_eq!(got, json!({"shard": bytes}));
    // A Nexus ID with a suffix holds the role too.
    post(
        &app,
        Some("spiffe://spike.ist/spike/nexus/2"),
        "/v1/store/shard",
        json!({}),
    )
    .await
    .assert_ok();
}

#[tokio::test]
async fn everyone_else_is_unauthorized() {
    let (app, state) = keeper();
    let (_, body) = share_json();
    for who in [
        Some(SUPERUSER),
        Some(RECOVER),
        Some(RESTORE),
        Some(KEEPER),
        Some(APP),
        Some("spiffe://other.td/spike/nexus"),
        None,
    ] {
        post(&app, who, "/v1/store/contribute", body.clone())
            .await
            .assert_err(401, "access_unauthorized");
        post(&app, who, "/v1/store/shard", json!({}))
            .await
            .assert_err(401, "access_unauthorized");
    }
    assert!(!state.has_shard());
}

#[tokio::test]
async fn bad_shards_and_routes() {
    let (app, state) = keeper();
    for body in [r#"{"shard":[1,2]}"#, r#"{"shard":"x"}"#, "{", r#"{}"#] {
        send(
            &app,
            Some(NEXUS),
            Method::POST,
            "/v1/store/contribute",
            body,
        )
        .await
        .assert_err(400, "api_bad_request");
    }
    // Zero and out-of-field values are not shares.
    post(
        &app,
        Some(NEXUS),
        "/v1/store/contribute",
        json!({"shard":vec![0u8; 32]}),
    )
    .await
    .assert_err(400, "api_bad_request");
    post(
        &app,
        Some(NEXUS),
        "/v1/store/contribute",
        json!({"shard":vec![255u8; 32]}),
    )
    .await
    .assert_err(400, "api_bad_request");
    assert!(!state.has_shard());
    post(&app, Some(NEXUS), "/v1/store/secrets", json!({}))
        .await
        .assert_err(404, "api_not_found");
    send(&app, Some(NEXUS), Method::GET, "/v1/store/shard", "")
        .await
        .assert_err(405, "api_bad_request");
    assert_eq!(
        send(&app, None, Method::GET, "/healthz", "")
            .await
            .assert_ok(),
        json!({"status":"ok"})
    );
    assert_eq!(
        send(&app, None, Method::GET, "/readyz", "")
            .await
            .assert_ok(),
        json!({"status":"ready","hasShard":false})
    );
    let m = send(&app, None, Method::GET, "/metrics", "").await;
    assert!(
        String::from_utf8(m.body)
            .unwrap()
            .contains("spike_keeper_has_shard 0")
    );
}

#[test]
fn locked_shard_holds_and_redacts() {
    let s = LockedShard::new(&[9; 32]);
    assert_eq!(s.expose(), &[9; 32]);
    let debug = format!("{s:?}");
    assert!(!debug.contains('9'), "{debug}");
    eprintln!("mlock permitted here: {}", s.is_locked());
}
