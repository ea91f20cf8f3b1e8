use spike_api::{
    CipherEncryptResponse, PolicyListItem, PolicyListResponse, PolicyPutResponse, PolicyView,
    RestoreResponse, SecretGetResponse, SecretListResponse, SecretMetadata, SecretMetadataResponse,
    SecretVersionInfo,
};
use spike_cli::{Done, Format, Recovered, Render, render};

fn all<T: Render>(value: &T) -> (String, serde_json::Value, String) {
    let human = render(Format::Human, value).unwrap();
    let json = render(Format::Json, value).unwrap();
    let yaml = render(Format::Yaml, value).unwrap();
    assert!(human.ends_with('\n') && json.ends_with('\n') && yaml.ends_with('\n'));
    (human, serde_json::from_str(&json).unwrap(), yaml)
}

#[test]
fn secret_get() {
    let r = SecretGetResponse {
        data: [
            ("user".to_owned(), "app".to_owned()),
            ("pass".to_owned(), "hunter2".to_owned()),
        ]
        .into(),
    };
    let (human, json, yaml) = all(&r);
    assert_eq!(human, "pass: hunter2\nuser: app\n");
    assert_eq!(
        json,
        serde_json::json!({"data": {"user": "app", "pass": "hunter2"}})
    );
    assert!(
        yaml.contains("data:") && yaml.contains("user: app"),
        "{yaml}"
    );
}

#[test]
fn secret_list() {
    let r = SecretListResponse {
        keys: vec!["a/b".into(), "c".into()],
    };
    let (human, json, yaml) = all(&r);
    assert_eq!(human, "a/b\nc\n");
    assert_eq!(json, serde_json::json!({"keys": ["a/b", "c"]}));
    assert!(yaml.contains("keys:") && yaml.contains("- a/b"), "{yaml}");
    assert_eq!(
        render(Format::Human, &SecretListResponse::default()).unwrap(),
        "No secrets.\n"
    );
}

#[test]
fn secret_metadata() {
    let version = |n: u64, deleted: Option<&str>| SecretVersionInfo {
        created_time: format!("2026-01-0{n}T00:00:00Z"),
        version: n,
        deleted_time: deleted.map(str::to_owned),
    };
    let r = SecretMetadataResponse {
        versions: [
            ("1".to_owned(), version(1, Some("2026-02-01T00:00:00Z"))),
            ("2".to_owned(), version(2, None)),
        ]
        .into(),
        metadata: SecretMetadata {
            current_version: 2,
            oldest_version: 1,
            created_time: "2026-01-01T00:00:00Z".into(),
            updated_time: "2026-01-02T00:00:00Z".into(),
            max_versions: 10,
        },
    };
    let (human, json, yaml) = all(&r);
    assert!(human.contains("Current version: 2\n"), "{human}");
    assert!(human.contains("Max versions:    10\n"), "{human}");
    assert!(
        human.contains("1        2026-01-01T00:00:00Z  2026-02-01T00:00:00Z\n"),
        "{human}"
    );
    assert!(
        human.contains("2        2026-01-02T00:00:00Z  -\n"),
        "{human}"
    );
    assert_eq!(json["metadata"]["currentVersion"], 2);
    assert_eq!(json["versions"]["1"]["deletedTime"], "2026-02-01T00:00:00Z");
    assert!(yaml.contains("currentVersion: 2"), "{yaml}");
}

#[test]
fn policies() {
    let (human, json, yaml) = all(&PolicyPutResponse { id: "web".into() });
    assert_eq!(human, "Policy `web` saved.\n");
    assert_eq!(json, serde_json::json!({"id": "web"}));
    assert!(yaml.contains("id: web"));

    let view = PolicyView {
        id: "web".into(),
        name: "web".into(),
        spiffeid_pattern: "spiffe://spike.ist/web/.*".into(),
        path_pattern: "web/.*".into(),
        permissions: vec!["read".into(), "list".into()],
        created_at: "2026-01-01T00:00:00Z".into(),
        updated_at: "2026-01-02T00:00:00Z".into(),
        created_by: "spiffe://spike.ist/spike/pilot/role/superuser".into(),
    };
    let (human, json, yaml) = all(&view);
    assert!(human.contains("Name:            web\n"));
    assert!(human.contains("Permissions:     read, list\n"));
    assert!(human.contains("Path regex:      web/.*\n"));
    assert_eq!(json["spiffeidPattern"], "spiffe://spike.ist/web/.*");
    assert_eq!(
        json["createdBy"],
        "spiffe://spike.ist/spike/pilot/role/superuser"
    );
    assert!(yaml.contains("pathPattern: web/.*"), "{yaml}");

    let list = PolicyListResponse {
        policies: vec![
            PolicyListItem {
                id: "a".into(),
                name: "a".into(),
            },
            PolicyListItem {
                id: "x1".into(),
                name: "b".into(),
            },
        ],
    };
    let (human, json, _) = all(&list);
    assert_eq!(human, "a\nb (id x1)\n");
    assert_eq!(json["policies"][1]["id"], "x1");
    assert_eq!(
        render(Format::Human, &PolicyListResponse::default()).unwrap(),
        "No policies.\n"
    );
}

#[test]
fn done_prints_an_empty_object() {
    let (human, json, yaml) = all(&Done("Secret `a` written.".into()));
    assert_eq!(human, "Secret `a` written.\n");
    assert_eq!(json, serde_json::json!({}));
    assert_eq!(yaml.trim(), "{}");
}

#[test]
fn restore_progress_in_words() {
    let r = RestoreResponse {
        collected: 1,
        remaining: 1,
        restored: false,
    };
    let (human, json, yaml) = all(&r);
    assert!(human.contains("1 collected, 1 more needed"), "{human}");
    assert_eq!(
        json,
        serde_json::json!({"collected": 1, "remaining": 1, "restored": false})
    );
    assert!(yaml.contains("restored: false"));
    let done = RestoreResponse {
        collected: 2,
        remaining: 0,
        restored: true,
    };
    assert!(
        render(Format::Human, &done)
            .unwrap()
            .contains("restored and unsealed (2 shares used)")
    );
}

#[test]
fn recovered_lists_files_not_shares() {
    let r = Recovered {
        files: vec![
            "/s/spike.recovery.1.txt".into(),
            "/s/spike.recovery.2.txt".into(),
        ],
    };
    let (human, json, _) = all(&r);
    assert!(human.starts_with("Wrote 2 share files (mode 0600):\n  /s/spike.recovery.1.txt\n"));
    assert_eq!(
        json,
        serde_json::json!({"files": ["/s/spike.recovery.1.txt", "/s/spike.recovery.2.txt"]})
    );
}

#[test]
fn cipher_response() {
    let (human, json, _) = all(&CipherEncryptResponse {
        ciphertext: "AAEC".into(),
    });
    assert_eq!(human, "AAEC\n");
    assert_eq!(json, serde_json::json!({"ciphertext": "AAEC"}));
}
