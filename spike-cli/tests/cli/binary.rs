//! The built `spike` binary against the stand-in Nexus.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use crate::nexus::TestNexus;

fn spike(nexus: &TestNexus, args: &[&str], stdin: &[u8]) -> Output {
    let (cert, key, ca) = nexus.pilot_files();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spike"))
        .args(args)
        .env_clear()
        .env("SPIKE_NEXUS_API_URL", nexus.url())
        .env("SPIKE_PILOT_CERT", cert)
        .env("SPIKE_PILOT_KEY", key)
        .env("SPIKE_PILOT_CA", ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn secrets_end_to_end() {
    let nexus = TestNexus::start(&[
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
    ]);

    let out = spike(
        &nexus,
        &["secret", "put", "db/creds", "user=app", "pass=-"],
        b"hunter2\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Secret `db/creds` written.\n");
    assert_eq!(
        nexus.last().body,
        serde_json::json!({"path": "db/creds", "values": {"user": "app", "pass": "hunter2"}})
    );

    let out = spike(&nexus, &["secret", "get", "db/creds"], b"");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "pass: hunter2\nuser: app\n");
    // Not a terminal: the raw value, no newline.
    let out = spike(&nexus, &["secret", "get", "db/creds", "--key", "pass"], b"");
    assert_eq!(text(&out.stdout), "hunter2");
    let out = spike(&nexus, &["secret", "get", "db/creds", "--key", "nope"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("has no key `nope` (its keys: pass, user)"));
    assert!(!text(&out.stderr).contains("hunter2"));

    let out = spike(&nexus, &["secret", "list", "--format", "json"], b"");
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json, serde_json::json!({"keys": ["a", "db/creds"]}));
    let out = spike(&nexus, &["--format", "yaml", "secret", "list"], b"");
    assert!(
        text(&out.stdout).contains("- db/creds"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn errors_and_exit_codes() {
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
    ]);
    let out = spike(&nexus, &["secret", "get", "db/creds"], b"");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with("error: your SPIFFE ID spiffe://spike.ist/spike/pilot/role/superuser is not allowed to read secret `db/creds`"), "{err}");
    assert!(out.stdout.is_empty());

    let out = spike(&nexus, &["secret", "list"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("Nexus is sealed"),
        "{}",
        text(&out.stderr)
    );
    nexus.set("/v1/store/secrets?action=list", 200, r#"{"keys":[]}"#);
    let out = spike(&nexus, &["secret", "list"], b"");
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(0), "No secrets.\n")
    );

    let out = spike(&nexus, &["secret", "policy"], b"");
    assert_eq!(out.status.code(), Some(2));
    // A malformed pair: usage error, nothing sent, value not echoed.
    let before = nexus.seen().len();
    let out = spike(&nexus, &["secret", "put", "a", "hunter2"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(!text(&out.stderr).contains("hunter2"));
    assert_eq!(nexus.seen().len(), before);

    let out = spike(
        &nexus,
        &["--nexus", "http://127.0.0.1:1", "secret", "list"],
        b"",
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    let out = spike(&nexus, &["completions", "bash"], b"");
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("spike"));
}

#[test]
fn operator_and_cipher_end_to_end() {
    let mut one = [0u8; 32];
    one[31] = 1;
    let shard = |b: [u8; 32]| serde_json::to_string(&b.to_vec()).unwrap();
    let mut two = [0u8; 32];
    two[31] = 2;
    let recover = format!(r#"{{"shards":{{"1":{},"2":{}}}}}"#, shard(one), shard(two));
    let nexus = TestNexus::start(&[
        ("/v1/operator/recover", 200, &recover),
        (
            "/v1/operator/restore",
            200,
            r#"{"collected":1,"remaining":1,"restored":false}"#,
        ),
        ("/v1/cipher/encrypt", 200, r#"{"ciphertext":"AQID"}"#),
        ("/v1/cipher/decrypt", 200, r#"{"plaintext":"aGk="}"#),
        ("/v1/acl/policy", 200, r#"{"id":"web"}"#),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("shares");
    let out_arg = out_dir.to_str().unwrap();

    let out = spike(&nexus, &["operator", "recover", "--out", out_arg], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Wrote 2 share files"));
    let file = out_dir.join("spike.recovery.1.txt");
    let share = std::fs::read_to_string(&file).unwrap();
    assert_eq!(share, format!("spike:1:{}01\n", "00".repeat(31)));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Shares never go to stdout.
    assert!(!text(&out.stdout).contains("spike:1:"));
    // A second recover into the same place refuses before asking Nexus.
    let before = nexus.seen().len();
    let out = spike(&nexus, &["operator", "recover", "--out", out_arg], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("refusing to overwrite"));
    assert_eq!(nexus.seen().len(), before);

    // Restore from stdin (not a terminal).
    let out = spike(&nexus, &["operator", "restore"], share.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 collected, 1 more needed"));
    let body = nexus.last().body;
    assert_eq!(body["id"], 1);
    assert_eq!(body["shard"][31], 1);
    let out = spike(
        &nexus,
        &["--format", "json", "operator", "restore"],
        share.as_bytes(),
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"collected": 1, "remaining": 1, "restored": false})
    );
    let out = spike(&nexus, &["operator", "restore"], b"spike:1:hunter2\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !text(&out.stderr).contains("hunter2"),
        "{}",
        text(&out.stderr)
    );

    // Cipher: raw bytes in and out, base64 on the wire.
    let out = spike(&nexus, &["cipher", "encrypt"], b"hi");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout, [1, 2, 3]);
    assert_eq!(nexus.last().body, serde_json::json!({"plaintext": "aGk="}));
    let enc = dir.path().join("enc");
    std::fs::write(&enc, [1, 2, 3]).unwrap();
    let plain = dir.path().join("plain");
    let out = spike(
        &nexus,
        &[
            "cipher",
            "decrypt",
            "--in",
            enc.to_str().unwrap(),
            "--out",
            plain.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(nexus.last().body, serde_json::json!({"ciphertext": "AQID"}));
    assert_eq!(std::fs::read(&plain).unwrap(), b"hi");
    assert_eq!(
        std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Policy from YAML on stdin.
    let yaml = "name: web\nspiffeidPattern: spiffe://spike.ist/web/.*\npathPattern: web/.*\npermissions: [read, list]\n";
    let out = spike(&nexus, &["policy", "apply", "-f", "-"], yaml.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Policy `web` saved.\n");
    assert_eq!(
        nexus.last().body["permissions"],
        serde_json::json!(["read", "list"])
    );
}
