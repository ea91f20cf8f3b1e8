//! Every route × role, as SPEC §2 says.

use axum::http::Method;
use serde_json::json;
use spike_core::Caller;

use crate::support::*;

const SECRETS: &str = "/v1/store/secrets";

#[tokio::test]
async fn superuser_secret_lifecycle() {
    let (app, _, _) = app().await;
    let su = Some(SUPERUSER);
    let r = post(
        &app,
        su,
        SECRETS,
        json!({"path":"db/creds","values":{"user":"app","pass":"hunter2"}}),
    )
    .await;
    assert_eq!(r.assert_ok(), json!({}));
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    post(
        &app,
        su,
        SECRETS,
        json!({"path":"db/creds","values":{"pass":"v2"}}),
    )
    .await
    .assert_ok();

    let got = post(
        &app,
        su,
        "/v1/store/secrets?action=get",
        json!({"path":"db/creds"}),
    )
    .await;
    assert_eq!(got.assert_ok(), json!({"data":{"pass":"v2"}}));
    let v1 = post(
        &app,
        su,
        "/v1/store/secrets?action=get",
        json!({"path":"db/creds","version":1}),
    )
    .await;
    assert_eq!(
        v1.assert_ok(),
        json!({"data":{"user":"app","pass":"hunter2"}})
    );

    let list = post(&app, su, "/v1/store/secrets?action=list", json!({})).await;
    assert_eq!(list.assert_ok(), json!({"keys":["db/creds"]}));

    let meta = post(
        &app,
        su,
        "/v1/store/secrets/metadata?action=get",
        json!({"path":"db/creds"}),
    )
    .await
    .assert_ok();
    assert_eq!(meta["metadata"]["currentVersion"], 2);
    assert_eq!(meta["metadata"]["oldestVersion"], 1);
    assert_eq!(meta["metadata"]["maxVersions"], 10);
    assert_eq!(meta["versions"]["1"]["version"], 1);
    assert!(
        meta["versions"]["2"]["createdTime"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(
        meta["versions"]["2"]["deletedTime"],
        serde_json::Value::Null
    );

    post(
        &app,
        su,
        "/v1/store/secrets?action=delete",
        json!({"path":"db/creds","versions":[]}),
    )
    .await
    .assert_ok();
    post(
        &app,
        su,
        "/v1/store/secrets?action=get",
        json!({"path":"db/creds"}),
    )
    .await
    .assert_err(404, "api_not_found");
    let meta = post(
        &app,
        su,
        "/v1/store/secrets/metadata?action=get",
        json!({"path":"db/creds"}),
    )
    .await
    .assert_ok();
    assert!(meta["versions"]["2"]["deletedTime"].is_string());
    post(
        &app,
        su,
        "/v1/store/secrets?action=undelete",
        json!({"path":"db/creds","versions":[2]}),
    )
    .await
    .assert_ok();
    post(
        &app,
        su,
        "/v1/store/secrets?action=get",
        json!({"path":"db/creds"}),
    )
    .await
    .assert_ok();
    post(
        &app,
        su,
        "/v1/store/secrets?action=destroy",
        json!({"path":"db/creds","versions":[1]}),
    )
    .await
    .assert_ok();
    post(
        &app,
        su,
        "/v1/store/secrets?action=get",
        json!({"path":"db/creds","version":1}),
    )
    .await
    .assert_err(404, "api_not_found");

    post(
        &app,
        su,
        "/v1/store/secrets?action=get",
        json!({"path":"nope"}),
    )
    .await
    .assert_err(404, "api_not_found");
    post(
        &app,
        su,
        "/v1/store/secrets/metadata?action=get",
        json!({"path":"nope"}),
    )
    .await
    .assert_err(404, "api_not_found");
}

#[tokio::test]
async fn non_string_values_come_back_as_json_text() {
    let (app, n, _) = app().await;
    let su = Caller::new(id(SUPERUSER));
    let obj = json!({"n": 42, "b": true, "o": {"x": [1]}, "s": "str"});
    let data = spike_core::SecretData::from_object(obj.as_object().unwrap()).unwrap();
    n.put_secret(&su, "vault/written", data, Default::default())
        .await
        .unwrap();
    let got = post(
        &app,
        Some(SUPERUSER),
        "/v1/store/secrets?action=get",
        json!({"path":"vault/written"}),
    )
    .await;
    assert_eq!(
        got.assert_ok(),
        json!({"data":{"n":"42","b":"true","o":"{\"x\":[1]}","s":"str"}})
    );
}

#[tokio::test]
async fn superuser_policies() {
    let (app, _, _) = app().await;
    let su = Some(SUPERUSER);
    let put = post(
        &app,
        su,
        "/v1/acl/policy",
        json!({
        "name":"readers","spiffeidPattern":"spiffe://spike\\.ist/workload/.*",
        "pathPattern":"app/.*","permissions":["read","list"]}),
    )
    .await;
    assert_eq!(put.assert_ok(), json!({"id":"readers"}));
    let got = post(
        &app,
        su,
        "/v1/acl/policy?action=get",
        json!({"id":"readers"}),
    )
    .await
    .assert_ok();
    assert_eq!(got["id"], "readers");
    assert_eq!(got["name"], "readers");
    assert_eq!(got["spiffeidPattern"], "spiffe://spike\\.ist/workload/.*");
    assert_eq!(got["pathPattern"], "app/.*");
    assert_eq!(got["permissions"], json!(["read", "list"]));
    assert_eq!(got["createdBy"], SUPERUSER);
    assert!(got["createdAt"].as_str().unwrap().ends_with('Z'));

    let list = post(&app, su, "/v1/acl/policy?action=list", json!({})).await;
    assert_eq!(
        list.assert_ok(),
        json!({"policies":[{"id":"readers","name":"readers"}]})
    );
    let filtered = post(
        &app,
        su,
        "/v1/acl/policy?action=list",
        json!({"pathPattern":"other"}),
    )
    .await;
    assert_eq!(filtered.assert_ok(), json!({"policies":[]}));

    post(
        &app,
        su,
        "/v1/acl/policy?action=delete",
        json!({"id":"readers"}),
    )
    .await
    .assert_ok();
    post(
        &app,
        su,
        "/v1/acl/policy?action=get",
        json!({"id":"readers"}),
    )
    .await
    .assert_err(404, "api_not_found");
    post(
        &app,
        su,
        "/v1/acl/policy?action=delete",
        json!({"id":"readers"}),
    )
    .await
    .assert_err(404, "api_not_found");
    // Bad pattern / permission: 400, nothing stored.
    post(
        &app,
        su,
        "/v1/acl/policy",
        json!({"name":"x","spiffeidPattern":"(","pathPattern":"a","permissions":["read"]}),
    )
    .await
    .assert_err(400, "api_bad_request");
    post(
        &app,
        su,
        "/v1/acl/policy",
        json!({"name":"x","spiffeidPattern":"a","pathPattern":"a","permissions":["fly"]}),
    )
    .await
    .assert_err(400, "api_bad_request");
    assert_eq!(
        post(&app, su, "/v1/acl/policy?action=list", json!({}))
            .await
            .assert_ok(),
        json!({"policies":[]})
    );
}

#[tokio::test]
async fn workload_gets_only_what_policies_grant() {
    let (app, _, _) = app().await;
    let su = Some(SUPERUSER);
    let me = Some(APP);
    post(
        &app,
        su,
        SECRETS,
        json!({"path":"app/one","values":{"k":"v"}}),
    )
    .await
    .assert_ok();
    post(
        &app,
        su,
        SECRETS,
        json!({"path":"other/two","values":{"k":"v"}}),
    )
    .await
    .assert_ok();

    // Default deny.
    post(
        &app,
        me,
        "/v1/store/secrets?action=get",
        json!({"path":"app/one"}),
    )
    .await
    .assert_err(401, "access_unauthorized");
    post(
        &app,
        me,
        SECRETS,
        json!({"path":"app/one","values":{"k":"x"}}),
    )
    .await
    .assert_err(401, "access_unauthorized");
    assert_eq!(
        post(&app, me, "/v1/store/secrets?action=list", json!({}))
            .await
            .assert_ok(),
        json!({"keys":[]})
    );
    post(&app, me, "/v1/acl/policy?action=list", json!({}))
        .await
        .assert_err(401, "access_unauthorized");
    post(
        &app,
        me,
        "/v1/acl/policy",
        json!({"name":"mine","spiffeidPattern":".*","pathPattern":".*","permissions":["super"]}),
    )
    .await
    .assert_err(401, "access_unauthorized");
    post(&app, me, "/v1/cipher/encrypt", json!({"plaintext":"aGk="}))
        .await
        .assert_err(401, "access_unauthorized");
    post(&app, me, "/v1/operator/recover", json!({}))
        .await
        .assert_err(401, "access_unauthorized");

    post(&app, su, "/v1/acl/policy", json!({"name":"app","spiffeidPattern":"spiffe://spike\\.ist/workload/app","pathPattern":"app/.*","permissions":["read","list"]})).await.assert_ok();
    let got = post(
        &app,
        me,
        "/v1/store/secrets?action=get",
        json!({"path":"app/one"}),
    )
    .await;
    assert_eq!(got.assert_ok(), json!({"data":{"k":"v"}}));
    post(
        &app,
        me,
        "/v1/store/secrets/metadata?action=get",
        json!({"path":"app/one"}),
    )
    .await
    .assert_ok();
    post(
        &app,
        me,
        "/v1/store/secrets?action=get",
        json!({"path":"other/two"}),
    )
    .await
    .assert_err(401, "access_unauthorized");
    post(
        &app,
        me,
        SECRETS,
        json!({"path":"app/one","values":{"k":"x"}}),
    )
    .await
    .assert_err(401, "access_unauthorized");
    post(
        &app,
        me,
        "/v1/store/secrets?action=delete",
        json!({"path":"app/one"}),
    )
    .await
    .assert_err(401, "access_unauthorized");
    assert_eq!(
        post(&app, me, "/v1/store/secrets?action=list", json!({}))
            .await
            .assert_ok(),
        json!({"keys":["app/one"]})
    );

    post(&app, su, "/v1/acl/policy", json!({"name":"cipher","spiffeidPattern":"spiffe://spike\\.ist/workload/app","pathPattern":"spike/system/cipher/exec","permissions":["execute"]})).await.assert_ok();
    let ct = post(&app, me, "/v1/cipher/encrypt", json!({"plaintext":"aGk="}))
        .await
        .assert_ok();
    let pt = post(
        &app,
        me,
        "/v1/cipher/decrypt",
        json!({"ciphertext": ct["ciphertext"]}),
    )
    .await;
    assert_eq!(pt.assert_ok(), json!({"plaintext":"aGk="}));
}

#[tokio::test]
async fn built_in_roles_stay_in_their_lanes() {
    let (app, _, shares) = app().await;
    post(
        &app,
        Some(SUPERUSER),
        SECRETS,
        json!({"path":"a","values":{"k":"v"}}),
    )
    .await
    .assert_ok();
    // Superuser: no recover/restore.
    post(&app, Some(SUPERUSER), "/v1/operator/recover", json!({}))
        .await
        .assert_err(401, "access_unauthorized");
    post(
        &app,
        Some(SUPERUSER),
        "/v1/operator/restore",
        json!({"id":1,"shard":vec![1u8; 32]}),
    )
    .await
    .assert_err(401, "access_unauthorized");
    // Recover: only recover.
    let rec = post(&app, Some(RECOVER), "/v1/operator/recover", json!({}))
        .await
        .assert_ok();
    let shards = rec["shards"].as_object().unwrap();
    assert_eq!(shards.len(), 3);
    for (i, share) in shares.iter().enumerate() {
        let wire: Vec<u8> = serde_json::from_value(shards[&(i + 1).to_string()].clone()).unwrap();
        assert_eq!(wire.as_slice(), share.value());
    }
    // Restore while unsealed: refused (400), for the restore role only.
    let v = shares[0].value().to_vec();
    post(
        &app,
        Some(RESTORE),
        "/v1/operator/restore",
        json!({"id":1,"shard":v}),
    )
    .await
    .assert_err(400, "api_bad_request");
    for who in [RECOVER, RESTORE, NEXUS, KEEPER] {
        post(
            &app,
            Some(who),
            "/v1/store/secrets?action=get",
            json!({"path":"a"}),
        )
        .await
        .assert_err(401, "access_unauthorized");
        post(
            &app,
            Some(who),
            SECRETS,
            json!({"path":"a","values":{"k":"v"}}),
        )
        .await
        .assert_err(401, "access_unauthorized");
        post(&app, Some(who), "/v1/acl/policy?action=list", json!({}))
            .await
            .assert_err(401, "access_unauthorized");
        post(
            &app,
            Some(who),
            "/v1/cipher/encrypt",
            json!({"plaintext":""}),
        )
        .await
        .assert_err(401, "access_unauthorized");
    }
    for who in [RESTORE, NEXUS, KEEPER, APP] {
        post(&app, Some(who), "/v1/operator/recover", json!({}))
            .await
            .assert_err(401, "access_unauthorized");
    }
    for who in [RECOVER, NEXUS, KEEPER, APP] {
        post(
            &app,
            Some(who),
            "/v1/operator/restore",
            json!({"id":1,"shard":v}),
        )
        .await
        .assert_err(401, "access_unauthorized");
    }
    // Another trust domain's "superuser" is a plain workload.
    post(
        &app,
        Some("spiffe://evil.example/spike/pilot/role/superuser"),
        "/v1/store/secrets?action=get",
        json!({"path":"a"}),
    )
    .await
    .assert_err(401, "access_unauthorized");
    // Role suffixes count.
    post(
        &app,
        Some("spiffe://spike.ist/spike/pilot/role/superuser/alice"),
        "/v1/store/secrets?action=get",
        json!({"path":"a"}),
    )
    .await
    .assert_ok();
}

#[tokio::test]
async fn no_identity_is_unauthorized() {
    let (app, _, _) = app().await;
    for uri in [
        SECRETS,
        "/v1/store/secrets?action=get",
        "/v1/acl/policy",
        "/v1/operator/recover",
        "/v1/operator/restore",
        "/v1/cipher/encrypt",
    ] {
        post(&app, None, uri, json!({}))
            .await
            .assert_err(401, "access_unauthorized");
    }
}

#[tokio::test]
async fn sealed_nexus_answers_state_not_ready_until_restored() {
    let (app, n, shares) = app().await;
    post(
        &app,
        Some(SUPERUSER),
        SECRETS,
        json!({"path":"a","values":{"k":"v"}}),
    )
    .await
    .assert_ok();
    n.seal().await.unwrap();
    let su = Some(SUPERUSER);
    post(&app, su, SECRETS, json!({"path":"a","values":{"k":"v"}}))
        .await
        .assert_err(503, "state_not_ready");
    post(
        &app,
        su,
        "/v1/store/secrets?action=get",
        json!({"path":"a"}),
    )
    .await
    .assert_err(503, "state_not_ready");
    post(&app, su, "/v1/store/secrets?action=list", json!({}))
        .await
        .assert_err(503, "state_not_ready");
    post(
        &app,
        su,
        "/v1/store/secrets/metadata?action=get",
        json!({"path":"a"}),
    )
    .await
    .assert_err(503, "state_not_ready");
    post(&app, su, "/v1/acl/policy?action=list", json!({}))
        .await
        .assert_err(503, "state_not_ready");
    post(&app, su, "/v1/cipher/encrypt", json!({"plaintext":""}))
        .await
        .assert_err(503, "state_not_ready");
    post(&app, Some(RECOVER), "/v1/operator/recover", json!({}))
        .await
        .assert_err(503, "state_not_ready");
    send(&app, None, Method::GET, "/readyz", "")
        .await
        .assert_err(503, "state_not_ready");
    assert_eq!(
        send(&app, None, Method::GET, "/healthz", "")
            .await
            .assert_ok(),
        json!({"status":"ok"})
    );

    let restore = |i: usize| json!({"id": shares[i].id(), "shard": shares[i].value().to_vec()});
    let first = post(&app, Some(RESTORE), "/v1/operator/restore", restore(0)).await;
    assert_eq!(
        first.assert_ok(),
        json!({"collected":1,"remaining":1,"restored":false})
    );
    // Invalid share (zero): 400 for the restore role.
    post(
        &app,
        Some(RESTORE),
        "/v1/operator/restore",
        json!({"id":2,"shard":vec![0u8; 32]}),
    )
    .await
    .assert_err(400, "api_bad_request");
    let second = post(&app, Some(RESTORE), "/v1/operator/restore", restore(2)).await;
    assert_eq!(
        second.assert_ok(),
        json!({"collected":2,"remaining":0,"restored":true})
    );
    send(&app, None, Method::GET, "/readyz", "")
        .await
        .assert_ok();
    post(
        &app,
        su,
        "/v1/store/secrets?action=get",
        json!({"path":"a"}),
    )
    .await
    .assert_ok();
}

#[tokio::test]
async fn metrics_show_the_redb_stores_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    // An 8 KiB log: a few 1 KiB secrets fill it, and so checkpoint it.
    let options = spike_storage::RedbOptions::default().log_capacity(8 * 1024);
    let store = std::sync::Arc::new(
        spike_storage::RedbStore::open_with(dir.path().join("spike.redb"), options).unwrap(),
    );
    let n = spike_core::Nexus::builder(store.clone())
        .open()
        .await
        .unwrap();
    n.init().await.unwrap();
    let app = spike_server::nexus_api::router(
        spike_server::nexus_api::NexusState::new(n.clone()).with_redb(store.clone()),
    );
    for i in 0..20 {
        post(
            &app,
            Some(SUPERUSER),
            "/v1/store/secrets",
            json!({"path": format!("ck/{i}"), "values": {"v": "x".repeat(1024)}}),
        )
        .await
        .assert_ok();
    }
    let stats = store.checkpoint_stats();
    assert!(stats.count >= 1, "{stats:?}");
    let text = String::from_utf8(send(&app, None, Method::GET, "/metrics", "").await.body).unwrap();
    assert!(
        text.contains(&format!("spike_store_checkpoints_total {}", stats.count)),
        "{text}"
    );
    assert!(
        text.contains(&format!("spike_store_checkpoint_keys_total {}", stats.keys)),
        "{text}"
    );
    assert!(
        text.contains("spike_store_checkpoint_wait_seconds_total"),
        "{text}"
    );
    assert!(
        text.contains("spike_store_checkpoint_seconds_total"),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_count_requests_and_show_the_seal_state() {
    let (app, n, _) = app().await;
    post(
        &app,
        Some(SUPERUSER),
        "/v1/store/secrets?action=get",
        json!({"path":"x"}),
    )
    .await;
    post(&app, None, "/v1/store/secrets?action=weird", json!({})).await;
    let m = send(&app, None, Method::GET, "/metrics", "").await;
    assert_eq!(m.status.as_u16(), 200);
    assert!(
        m.content_type
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = String::from_utf8(m.body).unwrap();
    assert!(
        text.contains(
            r#"spike_http_requests_total{route="/v1/store/secrets",action="get",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"action="other",status="401""#), "{text}");
    assert!(
        text.contains("spike_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("spike_nexus_sealed 0"), "{text}");
    n.seal().await.unwrap();
    let text = String::from_utf8(send(&app, None, Method::GET, "/metrics", "").await.body).unwrap();
    assert!(text.contains("spike_nexus_sealed 1"), "{text}");
}

#[tokio::test]
async fn readyz_is_not_ready_while_the_store_refuses_writes() {
    let (app, n, faults) = app_over_faulty_store().await;
    n.init().await.unwrap();
    send(&app, None, Method::GET, "/readyz", "")
        .await
        .assert_ok();
    faults.set_unavailable(true);
    send(&app, None, Method::GET, "/readyz", "")
        .await
        .assert_err(503, "state_not_ready");
    // Still alive: an orchestrator takes it out of rotation, not down.
    send(&app, None, Method::GET, "/healthz", "")
        .await
        .assert_ok();
    faults.set_unavailable(false);
    send(&app, None, Method::GET, "/readyz", "")
        .await
        .assert_ok();
}
