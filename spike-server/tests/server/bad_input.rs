//! Malformed input: a 4xx with a stable code, nothing changed, no panic.

use axum::http::Method;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn malformed_bodies_are_bad_requests() {
    let (app, _, _) = app().await;
    let su = Some(SUPERUSER);
    for (uri, body) in [
        ("/v1/store/secrets", "{"),
        ("/v1/store/secrets", "not json"),
        ("/v1/store/secrets", r#"{"path":1,"values":{}}"#),
        ("/v1/store/secrets", r#"{"path":"a","values":{"k":1}}"#),
        ("/v1/store/secrets", r#"{"path":"a"}"#),
        ("/v1/store/secrets", "[]"),
        (
            "/v1/store/secrets?action=get",
            r#"{"path":"a","version":-1}"#,
        ),
        (
            "/v1/store/secrets?action=get",
            r#"{"path":"a","version":"1"}"#,
        ),
        (
            "/v1/store/secrets?action=delete",
            r#"{"path":"a","versions":"1"}"#,
        ),
        ("/v1/store/secrets?action=list", "[1]"),
        ("/v1/acl/policy", r#"{"name":"n"}"#),
        (
            "/v1/acl/policy",
            r#"{"name":"n","spiffeidPattern":"a","pathPattern":"b","permissions":"read"}"#,
        ),
        ("/v1/acl/policy?action=get", r#"{"id":7}"#),
        ("/v1/operator/restore", r#"{"id":1,"shard":[1,2]}"#),
        ("/v1/operator/restore", r#"{"id":300,"shard":[]}"#),
        ("/v1/cipher/encrypt", r#"{"plaintext":"***"}"#),
        ("/v1/cipher/decrypt", r#"{"ciphertext":"AAAA"}"#),
        ("/v1/cipher/decrypt", r#"{"ciphertext":"!"}"#),
    ] {
        let r = send(&app, su, Method::POST, uri, body).await;
        assert_eq!(
            r.status.as_u16(),
            400,
            "{uri} {body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.body, br#"{"err":"api_bad_request"}"#, "{uri} {body}");
    }
    // Restore with a malformed body as restore role is also 400.
    send(
        &app,
        Some(RESTORE),
        Method::POST,
        "/v1/operator/restore",
        r#"{"id":1,"shard":[1,2]}"#,
    )
    .await
    .assert_err(400, "api_bad_request");
    // Nothing was written.
    let list = post(&app, su, "/v1/store/secrets?action=list", json!({})).await;
    assert_eq!(list.assert_ok(), json!({"keys":[]}));
}

#[tokio::test]
async fn invalid_values_are_bad_requests() {
    let (app, _, _) = app().await;
    let su = Some(SUPERUSER);
    for path in ["", "../x", "a/../b", "a/./b", "sp ace", "a/é"] {
        post(
            &app,
            su,
            "/v1/store/secrets",
            json!({"path":path,"values":{"k":"v"}}),
        )
        .await
        .assert_err(400, "api_bad_request");
    }
    let long = "a".repeat(501);
    post(
        &app,
        su,
        "/v1/store/secrets",
        json!({"path":long,"values":{"k":"v"}}),
    )
    .await
    .assert_err(400, "api_bad_request");
    post(
        &app,
        su,
        "/v1/store/secrets",
        json!({"path":"ok","values":{"":"v"}}),
    )
    .await
    .assert_err(400, "api_bad_request");
}

#[tokio::test]
async fn unknown_actions_paths_and_methods() {
    let (app, _, _) = app().await;
    let su = Some(SUPERUSER);
    for uri in [
        "/v1/store/secrets?action=explode",
        "/v1/store/secrets/metadata",
        "/v1/store/secrets/metadata?action=list",
        "/v1/acl/policy?action=nope",
        "/v1/operator/recover?action=get",
        "/v1/cipher/encrypt?action=get",
    ] {
        post(&app, su, uri, json!({}))
            .await
            .assert_err(400, "api_bad_request");
    }
    for uri in [
        "/",
        "/v1",
        "/v1/store",
        "/v1/nope",
        "/v1/store/secrets/extra",
        "/v1/store/contribute",
        // The Vault mounts claim only paths under their prefix.
        "/v1/secret",
        "/v1/secret/",
        "/v1/sys/",
        "/v1/auth/",
        "/v1/secretx/data/a",
        "/v1/syslog/x",
    ] {
        post(&app, su, uri, json!({}))
            .await
            .assert_err(404, "api_not_found");
        send(&app, su, Method::GET, uri, "")
            .await
            .assert_err(404, "api_not_found");
    }
    for method in [Method::GET, Method::PUT, Method::DELETE, Method::PATCH] {
        let r = send(&app, su, method.clone(), "/v1/store/secrets", "{}").await;
        r.assert_err(405, "api_bad_request");
    }
    send(&app, su, Method::POST, "/healthz", "")
        .await
        .assert_err(405, "api_bad_request");
}

#[tokio::test]
async fn oversized_body_is_a_bad_request() {
    let (app, _, _) = app().await;
    let big = format!(
        r#"{{"path":"a","values":{{"k":"{}"}}}}"#,
        "x".repeat(spike_api::MAX_BODY_BYTES)
    );
    send(
        &app,
        Some(SUPERUSER),
        Method::POST,
        "/v1/store/secrets",
        big,
    )
    .await
    .assert_err(400, "api_bad_request");
    // Just under the body limit but over the 1 MiB data limit: still 400.
    let data = format!(
        r#"{{"path":"a","values":{{"k":"{}"}}}}"#,
        "x".repeat(1024 * 1024 + 1)
    );
    send(
        &app,
        Some(SUPERUSER),
        Method::POST,
        "/v1/store/secrets",
        data,
    )
    .await
    .assert_err(400, "api_bad_request");
    let list = post(
        &app,
        Some(SUPERUSER),
        "/v1/store/secrets?action=list",
        json!({}),
    )
    .await;
    assert_eq!(list.assert_ok(), json!({"keys":[]}));
}

#[tokio::test]
async fn empty_body_reads_as_empty_object() {
    let (app, _, _) = app().await;
    let r = send(
        &app,
        Some(SUPERUSER),
        Method::POST,
        "/v1/store/secrets?action=list",
        "",
    )
    .await;
    assert_eq!(r.assert_ok(), json!({"keys":[]}));
    send(&app, Some(SUPERUSER), Method::POST, "/v1/store/secrets", "")
        .await
        .assert_err(400, "api_bad_request");
}
