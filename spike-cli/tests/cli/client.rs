use std::sync::Arc;

use spike_api::{
    CipherDecryptRequest, CipherEncryptRequest, ErrorCode, PolicyListRequest, PolicyPutRequest,
    SecretPutRequest,
};
use spike_cli::{Client, ClientError, Error, Identity, Op};
use spike_core::SpiffeId;

use crate::nexus::{NEXUS_ID, PILOT_ID, TestNexus};

const METADATA: &str = r#"{"versions":{"1":{"createdTime":"t1","version":1,"deletedTime":null}},
 "metadata":{"currentVersion":1,"oldestVersion":1,"createdTime":"t1","updatedTime":"t1","maxVersions":10}}"#;
const POLICY: &str = r#"{"id":"web","name":"web","spiffeidPattern":"s","pathPattern":"p",
 "permissions":["read"],"createdAt":"t","updatedAt":"t","createdBy":"spiffe://spike.ist/x"}"#;

fn happy() -> TestNexus {
    let shard = format!("[{}]", ["9"; 32].join(","));
    TestNexus::start(&[
        ("/v1/store/secrets", 200, "{}"),
        (
            "/v1/store/secrets?action=get",
            200,
            r#"{"data":{"user":"app","pass":"hunter2"}}"#,
        ),
        (
            "/v1/store/secrets?action=list",
            200,
            r#"{"keys":["a","db/creds"]}"#,
        ),
        ("/v1/store/secrets?action=delete", 200, "{}"),
        ("/v1/store/secrets?action=undelete", 200, "{}"),
        ("/v1/store/secrets?action=destroy", 200, "{}"),
        ("/v1/store/secrets/metadata?action=get", 200, METADATA),
        ("/v1/acl/policy", 200, r#"{"id":"web"}"#),
        ("/v1/acl/policy?action=get", 200, POLICY),
        ("/v1/acl/policy?action=delete", 200, "{}"),
        (
            "/v1/acl/policy?action=list",
            200,
            r#"{"policies":[{"id":"web","name":"web"}]}"#,
        ),
        (
            "/v1/operator/recover",
            200,
            &format!(r#"{{"shards":{{"1":{shard},"2":{shard}}}}}"#),
        ),
        (
            "/v1/operator/restore",
            200,
            r#"{"collected":1,"remaining":1,"restored":false}"#,
        ),
        ("/v1/cipher/encrypt", 200, r#"{"ciphertext":"AQID"}"#),
        ("/v1/cipher/decrypt", 200, r#"{"plaintext":"aGk="}"#),
    ])
}

#[tokio::test]
async fn every_route_over_mtls() {
    let nexus = happy();
    let (client, me) = nexus.client().await;
    assert_eq!(me.as_str(), PILOT_ID);

    let put = SecretPutRequest {
        path: "db/creds".into(),
        values: [("user".to_owned(), "app".to_owned())].into(),
    };
    client.put_secret(&put).await.unwrap();
    let seen = nexus.last();
    assert_eq!(seen.target, "/v1/store/secrets");
    assert_eq!(
        seen.body,
        serde_json::json!({"path": "db/creds", "values": {"user": "app"}})
    );
    // Nexus saw our SVID.
    assert_eq!(seen.peer.unwrap().as_str(), PILOT_ID);

    let got = client.get_secret("db/creds", Some(2)).await.unwrap();
    assert_eq!(got.data["pass"], "hunter2");
    assert_eq!(
        nexus.last().body,
        serde_json::json!({"path": "db/creds", "version": 2})
    );
    client.get_secret("db/creds", None).await.unwrap();
    assert_eq!(nexus.last().body, serde_json::json!({"path": "db/creds"}));

    assert_eq!(client.list_secrets().await.unwrap().keys, ["a", "db/creds"]);
    assert_eq!(nexus.last().body, serde_json::json!({}));

    client.delete_secret("a", &[1, 2]).await.unwrap();
    assert_eq!(nexus.last().target, "/v1/store/secrets?action=delete");
    assert_eq!(
        nexus.last().body,
        serde_json::json!({"path": "a", "versions": [1, 2]})
    );
    client.undelete_secret("a", &[]).await.unwrap();
    assert_eq!(
        nexus.last().body,
        serde_json::json!({"path": "a", "versions": []})
    );
    client.destroy_secret("a", &[3]).await.unwrap();
    assert_eq!(nexus.last().target, "/v1/store/secrets?action=destroy");

    let meta = client.secret_metadata("a", None).await.unwrap();
    assert_eq!(meta.metadata.max_versions, 10);
    assert_eq!(nexus.last().target, "/v1/store/secrets/metadata?action=get");

    let policy = PolicyPutRequest {
        name: "web".into(),
        spiffeid_pattern: "s".into(),
        path_pattern: "p".into(),
        permissions: vec!["read".into()],
    };
    assert_eq!(client.put_policy(&policy).await.unwrap().id, "web");
    assert_eq!(
        nexus.last().body,
        serde_json::json!({"name": "web", "spiffeidPattern": "s", "pathPattern": "p", "permissions": ["read"]})
    );
    assert_eq!(
        client.get_policy("web").await.unwrap().spiffeid_pattern,
        "s"
    );
    assert_eq!(nexus.last().body, serde_json::json!({"id": "web"}));
    client.delete_policy("web").await.unwrap();
    assert_eq!(nexus.last().target, "/v1/acl/policy?action=delete");
    let filter = PolicyListRequest {
        spiffeid_pattern: None,
        path_pattern: Some("p".into()),
    };
    assert_eq!(
        client.list_policies(&filter).await.unwrap().policies.len(),
        1
    );
    assert_eq!(nexus.last().body, serde_json::json!({"pathPattern": "p"}));

    let shards = client.recover().await.unwrap();
    assert_eq!(shards.shards.len(), 2);
    assert_eq!(shards.shards["1"].expose(), &[9; 32]);
    let mut value = [0u8; 32];
    value[31] = 5;
    let share = spike_crypto::Share::new(3, value).unwrap();
    let progress = client
        .restore(&spike_cli::restore_request(&share))
        .await
        .unwrap();
    assert_eq!(
        (progress.collected, progress.remaining, progress.restored),
        (1, 1, false)
    );
    let body = nexus.last().body;
    assert_eq!(body["id"], 3);
    assert_eq!(body["shard"].as_array().unwrap().len(), 32);

    let enc = client
        .encrypt(&CipherEncryptRequest {
            plaintext: "aGk=".into(),
        })
        .await
        .unwrap();
    assert_eq!(enc.ciphertext, "AQID");
    assert_eq!(nexus.last().body, serde_json::json!({"plaintext": "aGk="}));
    let dec = client
        .decrypt(&CipherDecryptRequest {
            ciphertext: "AQID".into(),
        })
        .await
        .unwrap();
    assert_eq!(dec.plaintext, "aGk=");
}

fn explained(op: Op, err: ClientError) -> Error {
    let me = SpiffeId::parse("spiffe://spike.ist/app/web").unwrap();
    Error::nexus(&op, Some(&me), err)
}

#[tokio::test]
async fn error_answers_become_advice() {
    let nexus = TestNexus::start(&[
        (
            "/v1/store/secrets?action=get",
            401,
            r#"{"err":"access_unauthorized"}"#,
        ),
        (
            "/v1/store/secrets?action=list",
            503,
            r#"{"err":"state_not_ready"}"#,
        ),
        (
            "/v1/acl/policy?action=get",
            404,
            r#"{"err":"api_not_found"}"#,
        ),
        ("/v1/store/secrets", 400, r#"{"err":"api_bad_request"}"#),
        (
            "/v1/store/secrets?action=delete",
            500,
            r#"{"err":"api_internal_error"}"#,
        ),
        ("/v1/operator/recover", 502, "<html>bad gateway</html>"),
        ("/v1/cipher/encrypt", 200, r#"{"nope":"hunter2"}"#),
    ]);
    let (client, _) = nexus.client().await;

    let err = client.get_secret("db/creds", None).await.unwrap_err();
    assert!(matches!(
        err,
        ClientError::Api {
            status: 401,
            code: ErrorCode::Unauthorized
        }
    ));
    let msg = explained(Op::GetSecret("db/creds".into()), err).to_string();
    assert!(
        msg.contains(
            "your SPIFFE ID spiffe://spike.ist/app/web is not allowed to read secret `db/creds`"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("access_unauthorized") && msg.contains("ask an admin for a policy"),
        "{msg}"
    );

    let err = client.list_secrets().await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotReady));
    let msg = explained(Op::ListSecrets, err).to_string();
    assert!(
        msg.contains("Nexus is sealed (state_not_ready)") && msg.contains("spike operator restore"),
        "{msg}"
    );

    let err = client.get_policy("web").await.unwrap_err();
    let msg = explained(Op::GetPolicy("web".into()), err).to_string();
    assert_eq!(msg, "policy `web` not found (api_not_found)");

    let put = SecretPutRequest {
        path: "../x".into(),
        values: [("k".to_owned(), "hunter2".to_owned())].into(),
    };
    let err = client.put_secret(&put).await.unwrap_err();
    let error = explained(Op::PutSecret("../x".into()), err);
    assert_eq!(error.exit_code(), 1);
    let msg = error.to_string();
    assert!(
        msg.contains("api_bad_request") && msg.contains("check the path"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"));

    let err = client.delete_secret("a", &[]).await.unwrap_err();
    assert!(
        explained(Op::DeleteSecret("a".into()), err)
            .to_string()
            .contains("see its logs")
    );

    let err = client.recover().await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Status {
                status: 502,
                code: None
            }
        ),
        "{err:?}"
    );

    let err = client
        .encrypt(&CipherEncryptRequest {
            plaintext: "aGk=".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Decode(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");

    // An unknown route answers 404 api_not_found.
    let err = client.undelete_secret("a", &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
}

#[tokio::test]
async fn tls_and_connection_failures_hint_at_flags() {
    let nexus = happy();

    // Nexus must present the expected SPIFFE ID.
    let mut config = nexus.config();
    config.nexus_ids = vec![SpiffeId::parse("spiffe://spike.ist/somebody/else").unwrap()];
    let (client, me) = config.connect().await.unwrap();
    let err = client.list_secrets().await.unwrap_err();
    assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
    let msg = Error::nexus(&Op::ListSecrets, Some(&me), err).to_string();
    assert!(
        msg.contains("TLS handshake") && msg.contains("--nexus-id"),
        "{msg}"
    );

    // A pilot from another CA is refused by Nexus, and does not trust it.
    let other = TestNexus::start(&[]);
    let mut config = nexus.config();
    config.identity = other.config().identity;
    let (client, _) = config.connect().await.unwrap();
    let err = client.list_secrets().await.unwrap_err();
    assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");

    // Nothing listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut config = nexus.config();
    config.nexus = format!("https://127.0.0.1:{port}").parse().unwrap();
    let (client, me) = config.connect().await.unwrap();
    let err = client.list_secrets().await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    let msg = Error::nexus(&Op::ListSecrets, Some(&me), err).to_string();
    assert!(
        msg.contains("--nexus") && msg.contains("is Nexus running"),
        "{msg}"
    );

    // Missing identity files.
    let mut config = nexus.config();
    config.identity = Identity::Pem {
        cert: "/nonexistent/c".into(),
        key: "/nonexistent/k".into(),
        ca: "/nonexistent/a".into(),
    };
    let err = config.connect().await.unwrap_err();
    assert!(matches!(err, Error::Identity(_)), "{err:?}");
    assert!(err.to_string().contains("--cert /nonexistent/c"), "{err}");

    // Plain http is refused up front.
    let tls = spike_tls::client_config(
        Arc::new(
            spike_tls::PemSource::load(
                &nexus.pilot_files().0,
                &nexus.pilot_files().1,
                &nexus.pilot_files().2,
            )
            .unwrap(),
        ),
        spike_tls::PeerPolicy::Exact(vec![SpiffeId::parse(NEXUS_ID).unwrap()]),
    )
    .unwrap();
    assert!(matches!(
        Client::new("http://127.0.0.1:1".parse().unwrap(), tls),
        Err(ClientError::Setup(_))
    ));
}
