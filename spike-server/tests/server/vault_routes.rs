//! The Vault KV v2 API in-process: status codes, the envelope, headers,
//! policies (SPEC §7.2). `conformance/vault_kv.py` compares the same
//! against a real OpenBao.

use axum::http::Method;
use serde_json::{Value, json};

use crate::support::*;

const ENVELOPE: [&str; 8] = [
    "auth",
    "data",
    "lease_duration",
    "lease_id",
    "renewable",
    "request_id",
    "warnings",
    "wrap_info",
];

#[track_caller]
fn assert_envelope(a: &Answer, status: u16) -> Value {
    assert_eq!(
        a.status.as_u16(),
        status,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.content_type.as_deref(), Some("application/json"));
    let v = a.json();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ENVELOPE);
    assert_eq!(v["lease_id"], "");
    assert_eq!(v["renewable"], false);
    assert_eq!(v["lease_duration"], 0);
    assert_eq!(v["wrap_info"], Value::Null);
    v["data"].clone()
}

#[track_caller]
fn assert_errors(a: &Answer, status: u16, errors: Value) {
    assert_eq!(
        a.status.as_u16(),
        status,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.content_type.as_deref(), Some("application/json"));
    assert_eq!(a.json(), json!({ "errors": errors }));
}

#[track_caller]
fn assert_no_content(a: &Answer) {
    assert_eq!(
        a.status.as_u16(),
        204,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.content_type.as_deref(), Some("application/json"));
    assert!(a.body.is_empty());
}

async fn put(app: &spike_server::App, who: &str, path: &str, body: Value) -> Answer {
    send(
        app,
        Some(who),
        Method::PUT,
        &format!("/v1/secret/data/{path}"),
        body.to_string(),
    )
    .await
}

async fn get(app: &spike_server::App, who: &str, uri: &str) -> Answer {
    send(app, Some(who), Method::GET, uri, "").await
}

#[tokio::test]
async fn versions_cas_and_envelope() {
    let (app, _, _) = app().await;
    let v = assert_envelope(
        &put(
            &app,
            SUPERUSER,
            "db/creds",
            json!({"data": {"u": "a", "n": 1}}),
        )
        .await,
        200,
    );
    assert_eq!(v["version"], 1);
    assert_eq!(v["custom_metadata"], Value::Null);
    assert_eq!(v["deletion_time"], "");
    // POST = PUT.
    let post = send(
        &app,
        Some(SUPERUSER),
        Method::POST,
        "/v1/secret/data/db/creds",
        json!({"data": {"u": "b"}}).to_string(),
    )
    .await;
    assert_eq!(assert_envelope(&post, 200)["version"], 2);
    let d = assert_envelope(
        &get(&app, SUPERUSER, "/v1/secret/data/db/creds?version=1").await,
        200,
    );
    assert_eq!(d["data"], json!({"u": "a", "n": 1}));
    assert_eq!(d["metadata"]["version"], 1);
    let mismatch = put(
        &app,
        SUPERUSER,
        "db/creds",
        json!({"options": {"cas": 1}, "data": {"u": "c"}}),
    )
    .await;
    assert_errors(
        &mismatch,
        400,
        json!(["check-and-set parameter did not match the current version"]),
    );
    let ok = put(
        &app,
        SUPERUSER,
        "db/creds",
        json!({"options": {"cas": 2}, "data": {"u": "c"}}),
    )
    .await;
    assert_eq!(assert_envelope(&ok, 200)["version"], 3);
    assert_errors(
        &put(&app, SUPERUSER, "db/x", json!({"nodata": 1})).await,
        400,
        json!(["no data provided"]),
    );
}

#[tokio::test]
async fn missing_and_deleted() {
    let (app, _, _) = app().await;
    assert_errors(
        &get(&app, SUPERUSER, "/v1/secret/data/nope").await,
        404,
        json!([]),
    );
    assert_errors(
        &get(&app, SUPERUSER, "/v1/secret/metadata/nope").await,
        404,
        json!([]),
    );
    put(&app, SUPERUSER, "a", json!({"data": {"k": "v"}})).await;
    assert_no_content(
        &send(
            &app,
            Some(SUPERUSER),
            Method::DELETE,
            "/v1/secret/data/a",
            "",
        )
        .await,
    );
    // A deleted version: 404 with the full envelope.
    let d = assert_envelope(&get(&app, SUPERUSER, "/v1/secret/data/a").await, 404);
    assert_eq!(d["data"], Value::Null);
    assert_ne!(d["metadata"]["deletion_time"], "");
    let undelete = send(
        &app,
        Some(SUPERUSER),
        Method::POST,
        "/v1/secret/undelete/a",
        json!({"versions": [1]}).to_string(),
    )
    .await;
    assert_no_content(&undelete);
    assert_envelope(&get(&app, SUPERUSER, "/v1/secret/data/a").await, 200);
    let destroy = send(
        &app,
        Some(SUPERUSER),
        Method::PUT,
        "/v1/secret/destroy/a",
        json!({"versions": [1]}).to_string(),
    )
    .await;
    assert_no_content(&destroy);
    let d = assert_envelope(&get(&app, SUPERUSER, "/v1/secret/data/a").await, 404);
    assert_eq!(d["metadata"]["destroyed"], true);
    assert_no_content(
        &send(
            &app,
            Some(SUPERUSER),
            Method::DELETE,
            "/v1/secret/metadata/a",
            "",
        )
        .await,
    );
    assert_errors(
        &get(&app, SUPERUSER, "/v1/secret/metadata/a").await,
        404,
        json!([]),
    );
}

#[tokio::test]
async fn patch_needs_merge_patch_content_type() {
    let (app, _, _) = app().await;
    put(&app, SUPERUSER, "p", json!({"data": {"a": "1", "b": "2"}})).await;
    let wrong = send(
        &app,
        Some(SUPERUSER),
        Method::PATCH,
        "/v1/secret/data/p",
        json!({"data": {"a": null}}).to_string(),
    )
    .await;
    assert_eq!(wrong.status.as_u16(), 415);
    let req = axum::http::Request::builder()
        .method(Method::PATCH)
        .uri("/v1/secret/data/p")
        .header("content-type", "application/merge-patch+json")
        .extension(spike_server::PeerIdentity(id(SUPERUSER)))
        .body(axum::body::Body::from(
            json!({"data": {"a": null, "c": "3"}}).to_string(),
        ))
        .unwrap();
    let res = tower::ServiceExt::oneshot(app.clone(), req).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let d = assert_envelope(&get(&app, SUPERUSER, "/v1/secret/data/p").await, 200);
    assert_eq!(d["data"], json!({"b": "2", "c": "3"}));
}

#[tokio::test]
async fn list_metadata_subkeys_config() {
    let (app, _, _) = app().await;
    for p in ["app/db", "app/web/x", "top"] {
        put(&app, SUPERUSER, p, json!({"data": {"k": {"deep": 1}}})).await;
    }
    let list = send(
        &app,
        Some(SUPERUSER),
        Method::from_bytes(b"LIST").unwrap(),
        "/v1/secret/metadata/",
        "",
    )
    .await;
    assert_eq!(assert_envelope(&list, 200)["keys"], json!(["app/", "top"]));
    let list = get(&app, SUPERUSER, "/v1/secret/metadata/app?list=true").await;
    assert_eq!(assert_envelope(&list, 200)["keys"], json!(["db", "web/"]));
    let list = send(
        &app,
        Some(SUPERUSER),
        Method::from_bytes(b"LIST").unwrap(),
        "/v1/secret/metadata/nope/",
        "",
    )
    .await;
    assert_errors(&list, 404, json!([]));
    let meta = send(
        &app,
        Some(SUPERUSER),
        Method::POST,
        "/v1/secret/metadata/app/db",
        json!({"max_versions": 3, "custom_metadata": {"o": "p"}, "delete_version_after": "1h"})
            .to_string(),
    )
    .await;
    assert_no_content(&meta);
    let m = assert_envelope(
        &get(&app, SUPERUSER, "/v1/secret/metadata/app/db").await,
        200,
    );
    assert_eq!(m["max_versions"], 3);
    assert_eq!(m["delete_version_after"], "1h0m0s");
    assert_eq!(m["custom_metadata"], json!({"o": "p"}));
    assert_eq!(m["current_version"], 1);
    let s = assert_envelope(
        &get(&app, SUPERUSER, "/v1/secret/subkeys/app/db").await,
        200,
    );
    assert_eq!(s["subkeys"], json!({"k": {"deep": null}}));
    let c = assert_envelope(&get(&app, SUPERUSER, "/v1/secret/config").await, 200);
    assert_eq!(
        c,
        json!({"cas_required": false, "delete_version_after": "0s", "max_versions": 0, "metadata_cas_required": false})
    );
}

#[tokio::test]
async fn methods_dots_and_unknown_paths() {
    let (app, _, _) = app().await;
    let a = send(
        &app,
        Some(SUPERUSER),
        Method::DELETE,
        "/v1/secret/subkeys/a",
        "",
    )
    .await;
    assert_eq!(a.status.as_u16(), 405);
    assert_eq!(a.content_type.as_deref(), Some("application/json"));
    let a = send(
        &app,
        Some(SUPERUSER),
        Method::from_bytes(b"LIST").unwrap(),
        "/v1/secret/data/",
        "",
    )
    .await;
    assert_eq!(a.status.as_u16(), 405);
    for uri in [
        "/v1/secret/data/a/../b",
        "/v1/secret/data/./b",
        "/v1/secret/../sys/health",
    ] {
        let a = get(&app, SUPERUSER, uri).await;
        assert_eq!(a.status.as_u16(), 400, "{uri}");
        assert!(a.json()["errors"].is_array());
    }
    let unknown = assert_envelope(&get(&app, SUPERUSER, "/v1/secret/nothing/x").await, 404);
    assert_eq!(unknown, Value::Null);
    assert_eq!(
        send(&app, None, Method::PUT, "/v1/sys/health", "")
            .await
            .status
            .as_u16(),
        405
    );
}

#[tokio::test]
async fn policies_apply_and_tokens_bind_ids() {
    let (app, _, _) = app().await;
    put(&app, SUPERUSER, "db/creds", json!({"data": {"k": "v"}})).await;
    assert_errors(
        &get(&app, APP, "/v1/secret/data/db/creds").await,
        403,
        json!(["permission denied"]),
    );
    assert_errors(
        &put(&app, APP, "db/creds", json!({"data": {"k": "w"}})).await,
        403,
        json!(["permission denied"]),
    );
    // No SVID and no token.
    assert_errors(
        &send(&app, None, Method::GET, "/v1/secret/data/db/creds", "").await,
        403,
        json!(["permission denied"]),
    );
    // A token from auth/cert/login is honoured as the ID it was issued to.
    let login = send(
        &app,
        Some(SUPERUSER),
        Method::POST,
        "/v1/auth/cert/login",
        "{}",
    )
    .await;
    let v = login.assert_ok();
    let token = v["auth"]["client_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("hvs."));
    assert_eq!(v["auth"]["metadata"]["spiffe_id"], SUPERUSER);
    let req = axum::http::Request::builder()
        .uri("/v1/secret/data/db/creds")
        .header("x-vault-token", &token)
        .extension(spike_server::PeerIdentity(id(APP)))
        .body(axum::body::Body::empty())
        .unwrap();
    let res = tower::ServiceExt::oneshot(app.clone(), req).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    // Health needs no caller; seal status reports the split.
    let h = send(&app, None, Method::GET, "/v1/sys/health", "")
        .await
        .assert_ok();
    assert_eq!(
        (h["initialized"].clone(), h["sealed"].clone()),
        (json!(true), json!(false))
    );
    let m = get(
        &app,
        SUPERUSER,
        "/v1/sys/internal/ui/mounts/secret/db/creds",
    )
    .await;
    assert_eq!(assert_envelope(&m, 200)["options"], json!({"version": "2"}));
    // SPIKE v1 reads what the Vault API wrote.
    let r = post(
        &app,
        Some(SUPERUSER),
        "/v1/store/secrets?action=get",
        json!({"path": "db/creds"}),
    )
    .await;
    assert_eq!(r.assert_ok()["data"], json!({"k": "v"}));
}

#[tokio::test]
async fn sys_health_answers_vaults_codes_and_a_read_only_store_as_standby() {
    let (app, n, faults) = app_over_faulty_store().await;
    let health = |query: &'static str| {
        let app = app.clone();
        async move {
            let a = send(
                &app,
                None,
                Method::GET,
                &format!("/v1/sys/health{query}"),
                "",
            )
            .await;
            let body = if a.body.is_empty() {
                Value::Null
            } else {
                a.json()
            };
            (a.status.as_u16(), body)
        }
    };
    let state = |v: &Value| {
        (
            v["initialized"].clone(),
            v["sealed"].clone(),
            v["standby"].clone(),
        )
    };

    let (code, v) = health("").await;
    assert_eq!(
        (code, state(&v)),
        (501, (json!(false), json!(true), json!(false)))
    );
    assert_eq!(health("?uninitcode=200").await.0, 200);

    let shares = n.init().await.unwrap();
    let (code, v) = health("").await;
    assert_eq!(
        (code, state(&v)),
        (200, (json!(true), json!(false), json!(false)))
    );
    assert_eq!(v["cluster_name"], "spike-nexus");
    // HashiCorp Vault's field, which vaultrs requires.
    assert_eq!(v["performance_standby"], false);
    assert_eq!(health("?activecode=299").await.0, 299);
    // A 204 carries no body, as Vault's.
    assert_eq!(health("?activecode=204").await, (204, Value::Null));

    // The store refuses writes: reads go on, so a standby, not down.
    faults.set_unavailable(true);
    let (code, v) = health("").await;
    assert_eq!(
        (code, state(&v)),
        (429, (json!(true), json!(false), json!(true)))
    );
    assert_eq!(health("?standbycode=472").await.0, 472);
    assert_eq!(health("?standbyok=true").await.0, 200);
    assert_eq!(health("?standbyok=1&activecode=201").await.0, 201);
    faults.set_unavailable(false);
    assert_eq!(health("").await.0, 200);

    n.seal().await.unwrap();
    let (code, v) = health("").await;
    assert_eq!(
        (code, state(&v)),
        (503, (json!(true), json!(true), json!(false)))
    );
    assert!(v.get("cluster_name").is_none(), "{v}");
    assert_eq!(health("?sealedcode=200").await.0, 200);
    drop(shares);

    // What OpenBao refuses: 400 `{"errors":[]}`.
    for bad in [
        "?activecode=abc",
        "?sealedcode=",
        "?standbycode=99",
        "?uninitcode=1000",
        "?standbyok=maybe",
        "?standbyok",
    ] {
        let (code, v) = health(bad).await;
        assert_eq!((code, v), (400, json!({"errors": []})), "{bad}");
    }
}
