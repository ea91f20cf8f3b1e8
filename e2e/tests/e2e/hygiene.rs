//! No secret in any log line, and one audit line per request (SPEC §8).

use std::fs;

use serde_json::Value;

use crate::bad_input::{Raw, call, request};
use crate::support::Dev;

/// Every log a dev session writes: `dev`'s own (Nexus), the Keepers' and
/// the audit trail.
fn all_logs(dev: &Dev) -> Vec<(String, String)> {
    let mut logs = vec![("dev".to_owned(), dev.log())];
    for i in 1..=3 {
        let path = dev.data.join("logs").join(format!("keeper-{i}.log"));
        logs.push((
            path.display().to_string(),
            fs::read_to_string(&path).unwrap_or_default(),
        ));
    }
    logs.push((
        "audit.log".to_owned(),
        fs::read_to_string(dev.data.join("audit.log")).unwrap_or_default(),
    ));
    logs
}

/// The forms a share may take in a log: its hex (either case) and its
/// 32 bytes as the JSON ints of the SPIKE API.
fn share_forms(dev: &Dev) -> Vec<String> {
    let dir = dev.data.join("recovery");
    let mut forms = Vec::new();
    for entry in fs::read_dir(&dir).expect("the dev recovery directory") {
        let text = fs::read_to_string(entry.unwrap().path()).unwrap();
        let hex = text.trim().rsplit(':').next().unwrap().to_owned();
        assert_eq!(hex.len(), 64, "a share's hex");
        let bytes: Vec<String> = (0..32)
            .map(|i| {
                u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                    .unwrap()
                    .to_string()
            })
            .collect();
        forms.push(hex.to_ascii_uppercase());
        forms.push(bytes.join(","));
        forms.push(hex);
    }
    assert!(!forms.is_empty(), "no recovery shares in {}", dir.display());
    forms
}

#[test]
fn no_secret_value_or_share_in_any_log() {
    let dev = Dev::start();
    let raw = Raw::new(dev.nexus, &dev.superuser());
    let secrets = [
        "S3cr3t-SPIKE-v1-7f1c9a",
        "S3cr3t-VAULT-kv2-b44e0d",
        "S3cr3t-VAULT-patch-91aa2c",
        "S3cr3t-CLI-arg-5d2e77",
        "S3cr3t-CLI-stdin-c0ffee",
        "S3cr3t-CIPHER-plain-0b1d",
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let body = format!(
            r#"{{"path":"hyg/spike","values":{{"pw":"{}"}}}}"#,
            secrets[0]
        );
        call(&raw, "POST", "/v1/store/secrets", &body).await;
        call(
            &raw,
            "POST",
            "/v1/store/secrets?action=get",
            r#"{"path":"hyg/spike"}"#,
        )
        .await;
        let body = format!(r#"{{"data":{{"pw":"{}"}}}}"#, secrets[1]);
        call(&raw, "PUT", "/v1/secret/data/hyg/vault", &body).await;
        let body = format!(r#"{{"data":{{"pw2":"{}"}}}}"#, secrets[2]);
        let resp = raw
            .send(request(
                "PATCH",
                "/v1/secret/data/hyg/vault",
                &[("content-type", "application/merge-patch+json")],
                body.as_bytes(),
            ))
            .await
            .unwrap();
        assert_eq!(resp.status, 200);
        call(&raw, "GET", "/v1/secret/data/hyg/vault", "").await;
        // Bad requests carrying a secret must not echo it either.
        let body = format!(
            r#"{{"path":"hyg/../x","values":{{"pw":"{}"}}}}"#,
            secrets[0]
        );
        let _ = raw
            .send(request("POST", "/v1/store/secrets", &[], body.as_bytes()))
            .await;
        let body = format!(
            r#"{{"data":{{"pw":"{}"}},"options":{{"cas":"x"}}}}"#,
            secrets[1]
        );
        let _ = raw
            .send(request(
                "PUT",
                "/v1/secret/data/hyg/vault",
                &[],
                body.as_bytes(),
            ))
            .await;
        // Encryption as a service: the plaintext is a secret too.
        let b64 = "UzNjcjN0LUNJUEhFUi1wbGFpbi0wYjFk"; // base64 of secrets[5]
        let enc = call(
            &raw,
            "POST",
            "/v1/cipher/encrypt",
            &format!(r#"{{"plaintext":"{b64}"}}"#),
        )
        .await;
        let ct = enc["ciphertext"].as_str().unwrap().to_owned();
        let dec = call(
            &raw,
            "POST",
            "/v1/cipher/decrypt",
            &format!(r#"{{"ciphertext":"{ct}"}}"#),
        )
        .await;
        assert_eq!(dec["plaintext"], Value::from(b64));
    });
    dev.spike_su(&["secret", "put", "hyg/cli", &format!("pw={}", secrets[3])])
        .ok();
    crate::support::spike(
        dev.nexus,
        &dev.superuser(),
        &["secret", "put", "hyg/cli2", "pw=-"],
        Some(secrets[4]),
    )
    .ok();
    dev.spike_su(&["secret", "get", "hyg/cli"]).ok();
    dev.spike_su(&["secret", "get", "hyg/cli2"]).ok();
    // Keepers received their shares by now; a restart would log more, but
    // the session's logs are what is checked.
    crate::support::wait_keepers_hold_shares(&dev);

    let mut needles: Vec<String> = secrets.iter().map(|s| (*s).to_owned()).collect();
    needles.push("UzNjcjN0LUNJUEhFUi1wbGFpbi0wYjFk".to_owned());
    needles.extend(share_forms(&dev));
    let logs = all_logs(&dev);
    assert!(
        logs.iter()
            .any(|(name, text)| name == "audit.log" && text.contains("hyg/vault")),
        "the audit trail should name the paths used"
    );
    for (name, text) in &logs {
        for needle in &needles {
            assert!(
                !text.contains(needle.as_str()),
                "{name} holds a secret or share ({needle}):\n{text}"
            );
        }
    }
}

const SUPERUSER: &str = "spiffe://spike.ist/spike/pilot/role/superuser";

/// A dev session, a raw mTLS client of its Nexus as the superuser, and a
/// runtime to drive the client.
fn superuser_session() -> (Dev, Raw, tokio::runtime::Runtime) {
    let dev = Dev::start();
    let raw = Raw::new(dev.nexus, &dev.superuser());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (dev, raw, rt)
}

/// The audit lines after the first `before`, parsed.
fn audit_since(dev: &Dev, before: usize) -> Vec<Value> {
    dev.audit_lines()[before..]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every request that reaches spike-core leaves exactly one audit line
/// naming the caller, for both APIs.
#[test]
fn one_audit_line_per_request_with_the_caller() {
    let (dev, raw, rt) = superuser_session();
    let su = SUPERUSER;
    let before = dev.audit_lines().len();
    let sent = rt.block_on(async {
        let reqs: &[(&str, &str, &str)] = &[
            (
                "POST",
                "/v1/store/secrets",
                r#"{"path":"aud/a","values":{"k":"v"}}"#,
            ),
            (
                "POST",
                "/v1/store/secrets?action=get",
                r#"{"path":"aud/a"}"#,
            ),
            ("POST", "/v1/store/secrets?action=list", "{}"),
            (
                "POST",
                "/v1/store/secrets/metadata?action=get",
                r#"{"path":"aud/a"}"#,
            ),
            ("POST", "/v1/acl/policy?action=list", "{}"),
            ("PUT", "/v1/secret/data/aud/b", r#"{"data":{"k":"v"}}"#),
            ("GET", "/v1/secret/data/aud/b", ""),
            ("GET", "/v1/secret/metadata/aud/b", ""),
            ("GET", "/v1/secret/metadata/?list=true", ""),
            ("DELETE", "/v1/secret/data/aud/b", ""),
        ];
        for (method, target, body) in reqs {
            call(&raw, method, target, body).await;
        }
        reqs.len()
    });
    let new = audit_since(&dev, before);
    assert_eq!(new.len(), sent, "audit lines for {sent} requests: {new:#?}");
    for line in &new {
        assert_eq!(line["caller"], su, "{line}");
        assert!(line["remote_addr"].is_string(), "{line}");
    }
    let apis: Vec<&str> = new.iter().filter_map(|l| l["api"].as_str()).collect();
    assert_eq!(
        apis.iter().filter(|a| **a == "spike/v1").count(),
        5,
        "{apis:?}"
    );
    assert_eq!(
        apis.iter().filter(|a| **a == "vault/kv2").count(),
        5,
        "{apis:?}"
    );
}

#[test]
fn requests_refused_before_the_store_are_audited_once_each() {
    let (dev, raw, rt) = superuser_session();
    let su = SUPERUSER;
    let before = dev.audit_lines().len();
    // SPEC §10: bodies above 2 MiB are refused.
    let oversized = vec![b'x'; 2 * 1024 * 1024 + 1];
    // (method, target, body, expected status, expected audit status)
    let refused: Vec<(&str, &str, &[u8], u16, &str)> = vec![
        (
            "POST",
            "/v1/store/secrets",
            b"{not json",
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/store/secrets?action=explode",
            b"{}",
            400,
            "bad_request",
        ),
        ("GET", "/v1/no/such/route", b"", 404, "not_found"),
        ("DELETE", "/v1/store/secrets", b"", 405, "bad_request"),
        ("POST", "/v1/store/secrets", &oversized, 413, "bad_request"),
        ("POST", "/v1/secret/data/aud/x", b"[1,2", 400, "bad_request"),
    ];
    let statuses = rt.block_on(async {
        let mut out = Vec::new();
        for (method, target, body, _, _) in &refused {
            let resp = raw.send(request(method, target, &[], body)).await;
            out.push(resp.map(|r| r.status));
        }
        out
    });
    let new = audit_since(&dev, before);
    assert_eq!(new.len(), refused.len(), "{new:#?}");
    for ((method, target, _, want_status, want_audit), (line, got)) in
        refused.iter().zip(new.iter().zip(&statuses))
    {
        let got = got.unwrap_or_else(|| panic!("{method} {target}: no answer"));
        assert!(
            got == *want_status || (*want_status == 413 && got == 400),
            "{method} {target}: {got}"
        );
        assert_eq!(line["caller"], su, "{line}");
        assert!(line["remote_addr"].is_string(), "{line}");
        assert_eq!(line["status"], *want_audit, "{method} {target}: {line}");
        let path = target.split('?').next().unwrap();
        if line["action"] == "http.request" {
            assert_eq!(line["path"], path, "{line}");
        }
    }
}
