//! Bad input over the wire (SPEC §10): malformed requests, sent byte for
//! byte over mutual TLS to a running `spike-server dev`, to both APIs.
//!
//! Every one must get a 4xx with a stable code (SPIKE v1: `{"err":…}`;
//! Vault: `{"errors":[…]}`), never a 5xx; nothing may panic the server,
//! slow clients must be cut off by the header timeout, and the store must be
//! exactly as it was afterwards.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use spike_tls::TrustBundle;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::support::{Dev, Ident, TD, client_tls};

/// How long one request may take, end to end.
const REQUEST_DEADLINE: Duration = Duration::from_secs(40);
/// The server's header timeout (`serve::HEADER_READ_TIMEOUT`, 10 s) and
/// some slack for a loaded machine.
const SLOW_CLOSE_DEADLINE: Duration = Duration::from_secs(25);
const MIB: usize = 1024 * 1024;

/// What a malformed request must be answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// SPIKE v1: 4xx, `{"err":"<known code>"}`.
    Spike,
    /// Vault: 4xx, `{"errors":[…]}` (or an empty body, as OpenBao's 404
    /// for a patch of a missing secret).
    Vault,
    /// Either API's error shape (the route itself is malformed).
    Either,
    /// Refused by the HTTP layer before any route: a 4xx, any body (hyper
    /// writes the answer), or the connection closed without an answer.
    Framing,
}

/// One malformed request.
struct Case {
    category: &'static str,
    what: String,
    bytes: Vec<u8>,
    expect: Expect,
}

/// A parsed answer.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    head: String,
    pub(crate) body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A raw HTTP/1.1 client over mutual TLS: every byte is ours.
#[derive(Clone)]
pub(crate) struct Raw {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl Raw {
    pub(crate) fn new(addr: SocketAddr, who: &Ident) -> Raw {
        let bundle = TrustBundle::from_pem(TD, &fs::read(&who.ca).expect("reading the bundle"))
            .expect("a bundle");
        let mut config = (*client_tls(who, &bundle)).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Raw {
            addr,
            tls: Arc::new(config),
        }
    }

    async fn connect(&self) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, tcp)
            .await
    }

    /// Sends `bytes` on a fresh connection while reading the answer (the
    /// server may answer before the body is fully sent), until the server
    /// closes. `None` if it closed without an answer.
    pub(crate) async fn send(&self, bytes: Vec<u8>) -> Option<Resp> {
        let stream = self.connect().await.expect("TLS connection to Nexus");
        let (mut rd, mut wr) = tokio::io::split(stream);
        let writer = tokio::spawn(async move {
            if wr.write_all(&bytes).await.is_ok() {
                let _ = wr.flush().await;
            }
            // Keep the write half open until the reader is done.
            wr
        });
        let mut raw = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let until = Instant::now() + REQUEST_DEADLINE;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rd.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => raw.extend_from_slice(&chunk[..n]),
                Err(_) => panic!("no answer within {REQUEST_DEADLINE:?}"),
            }
        }
        writer.abort();
        parse_response(&raw)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_response(raw: &[u8]) -> Option<Resp> {
    let end = find(raw, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let rest = &raw[end + 4..];
    let lower = head.to_ascii_lowercase();
    let body = if lower.contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        rest[..len.min(rest.len())].to_vec()
    } else {
        rest.to_vec()
    };
    Some(Resp { status, head, body })
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(rest, b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || rest.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
        rest = &rest[(eol + 2 + size + 2).min(rest.len())..];
    }
    out
}

/// A request with `content-length`, `connection: close` and the given
/// extra headers (a `content-type` of JSON unless one is given).
pub(crate) fn request(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nhost: nexus\r\nconnection: close\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        out.push_str("content-type: application/json\r\n");
    }
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn post(target: &str, body: &[u8]) -> Vec<u8> {
    request("POST", target, &[], body)
}

/// Every SPIKE v1 route Nexus serves with a body, with its action.
const SPIKE_ROUTES: &[&str] = &[
    "/v1/store/secrets",
    "/v1/store/secrets?action=get",
    "/v1/store/secrets?action=delete",
    "/v1/store/secrets?action=undelete",
    "/v1/store/secrets?action=destroy",
    "/v1/store/secrets?action=list",
    "/v1/store/secrets/metadata?action=get",
    "/v1/acl/policy",
    "/v1/acl/policy?action=get",
    "/v1/acl/policy?action=delete",
    "/v1/acl/policy?action=list",
    "/v1/operator/recover",
    "/v1/operator/restore",
    "/v1/cipher/encrypt",
    "/v1/cipher/decrypt",
];

/// Vault routes that take a body: (method, target, extra headers).
/// Extra headers of a request.
type Headers = &'static [(&'static str, &'static str)];

const VAULT_BODY_ROUTES: &[(&str, &str, Headers)] = &[
    ("PUT", "/v1/secret/data/wt/x", &[]),
    ("POST", "/v1/secret/data/wt/x", &[]),
    ("POST", "/v1/secret/metadata/wt/x", &[]),
    ("POST", "/v1/secret/delete/canary/vault", &[]),
    ("POST", "/v1/secret/undelete/canary/vault", &[]),
    ("POST", "/v1/secret/destroy/canary/vault", &[]),
    ("POST", "/v1/secret/config", &[]),
    (
        "PATCH",
        "/v1/secret/data/canary/vault",
        &[("content-type", "application/merge-patch+json")],
    ),
];

/// Syntactically broken JSON: no parser may accept any of these.
fn broken_json() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        "{",
        "}",
        "{\"path\":",
        "{\"path\":\"a\",}",
        "{'path':'a'}",
        "nul",
        "tru",
        "{\"path\":\"a\"}}",
        "{}{}",
        "{\"path\":\"a\" \"values\":{}}",
        "{\"path\":\"a\\u00\"}",
        "[1,2",
        "{\"path\":\"a\",,}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    v.push(b"\xEF\xBB\xBF{}".to_vec());
    v.push(b"\x00".to_vec());
    v
}

fn cases(canary: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |category: &'static str, what: String, bytes: Vec<u8>, expect: Expect| {
        cases.push(Case {
            category,
            what,
            bytes,
            expect,
        });
    };

    // -- broken JSON, both APIs ------------------------------------------
    for (i, body) in broken_json().into_iter().enumerate() {
        for route in SPIKE_ROUTES {
            add(
                "broken_json",
                format!("POST {route} body #{i}"),
                post(route, &body),
                Expect::Spike,
            );
        }
        for (method, target, headers) in VAULT_BODY_ROUTES {
            add(
                "broken_json",
                format!("{method} {target} body #{i}"),
                request(method, target, headers, &body),
                Expect::Vault,
            );
        }
    }

    // -- wrong types and values ------------------------------------------
    let spike_wrong: &[(&str, &str)] = &[
        ("/v1/store/secrets", r#"{"path":1,"values":{"k":"v"}}"#),
        ("/v1/store/secrets", r#"{"path":"wt/a","values":[]}"#),
        ("/v1/store/secrets", r#"{"path":"wt/a","values":{"k":1}}"#),
        ("/v1/store/secrets", r#"{"path":"wt/a","values":"x"}"#),
        ("/v1/store/secrets", r#"{"path":null,"values":{"k":"v"}}"#),
        (
            "/v1/store/secrets",
            r#"{"path":["wt/a"],"values":{"k":"v"}}"#,
        ),
        ("/v1/store/secrets", r#"{"values":{"k":"v"}}"#),
        ("/v1/store/secrets", r#"[]"#),
        ("/v1/store/secrets", r#""wt/a""#),
        ("/v1/store/secrets", r#"{"path":"","values":{"k":"v"}}"#),
        ("/v1/store/secrets", r#"{"path":"wt/a","values":{"":"v"}}"#),
        ("/v1/store/secrets?action=get", r#"{"path":true}"#),
        (
            "/v1/store/secrets?action=get",
            r#"{"path":"canary/db","version":"1"}"#,
        ),
        (
            "/v1/store/secrets?action=get",
            r#"{"path":"canary/db","version":-1}"#,
        ),
        (
            "/v1/store/secrets?action=get",
            r#"{"path":"canary/db","version":1.5}"#,
        ),
        (
            "/v1/store/secrets?action=get",
            r#"{"path":"canary/db","version":1e999999}"#,
        ),
        (
            "/v1/store/secrets?action=get",
            r#"{"path":"canary/db","version":99}"#,
        ),
        ("/v1/store/secrets?action=get", r#"{"path":"wt/none"}"#),
        (
            "/v1/store/secrets?action=delete",
            r#"{"path":"canary/db","versions":"1"}"#,
        ),
        (
            "/v1/store/secrets?action=delete",
            r#"{"path":"canary/db","versions":[-1]}"#,
        ),
        (
            "/v1/store/secrets?action=delete",
            r#"{"path":"canary/db","versions":[1.5]}"#,
        ),
        (
            "/v1/store/secrets?action=delete",
            r#"{"path":"canary/db","versions":{"a":1}}"#,
        ),
        (
            "/v1/store/secrets?action=delete",
            r#"{"path":"canary/db","versions":[null]}"#,
        ),
        (
            "/v1/store/secrets?action=undelete",
            r#"{"path":5,"versions":[1]}"#,
        ),
        (
            "/v1/store/secrets?action=destroy",
            r#"{"path":"canary/db","versions":["1"]}"#,
        ),
        ("/v1/store/secrets/metadata?action=get", r#"{"path":5}"#),
        (
            "/v1/store/secrets/metadata?action=get",
            r#"{"path":"wt/none"}"#,
        ),
        (
            "/v1/acl/policy",
            r#"{"name":1,"spiffeidPattern":".*","pathPattern":".*","permissions":["read"]}"#,
        ),
        (
            "/v1/acl/policy",
            r#"{"name":"wt","spiffeidPattern":".*","pathPattern":".*","permissions":"read"}"#,
        ),
        (
            "/v1/acl/policy",
            r#"{"name":"wt","spiffeidPattern":".*","pathPattern":".*","permissions":[1]}"#,
        ),
        (
            "/v1/acl/policy",
            r#"{"name":"wt","spiffeidPattern":".*","pathPattern":".*","permissions":["bogus"]}"#,
        ),
        (
            "/v1/acl/policy",
            r#"{"name":"wt","spiffeidPattern":5,"pathPattern":".*","permissions":["read"]}"#,
        ),
        (
            "/v1/acl/policy",
            r#"{"name":"","spiffeidPattern":".*","pathPattern":".*","permissions":["read"]}"#,
        ),
        (
            "/v1/acl/policy",
            r#"{"name":"wt","spiffeidPattern":"(","pathPattern":".*","permissions":["read"]}"#,
        ),
        (
            "/v1/acl/policy",
            r#"{"name":"wt","spiffeidPattern":".*","pathPattern":"[z-a]","permissions":["read"]}"#,
        ),
        (
            "/v1/acl/policy",
            r#"{"name":"wt","spiffeidPattern":".*","pathPattern":"a{99999}{99999}","permissions":["read"]}"#,
        ),
        ("/v1/acl/policy?action=get", r#"{"id":1}"#),
        ("/v1/acl/policy?action=get", r#"{"id":"wt-none"}"#),
        ("/v1/acl/policy?action=delete", r#"{"id":["x"]}"#),
        ("/v1/acl/policy?action=list", r#"{"spiffeidPattern":5}"#),
        ("/v1/operator/restore", r#"{"id":"a","shard":[0]}"#),
        ("/v1/operator/restore", r#"{"id":1,"shard":[1,2,3]}"#),
        ("/v1/operator/restore", r#"{"id":300,"shard":[]}"#),
        ("/v1/operator/restore", r#"{"id":1,"shard":"abc"}"#),
        ("/v1/cipher/encrypt", r#"{"plaintext":"!!!"}"#),
        ("/v1/cipher/encrypt", r#"{"plaintext":5}"#),
        ("/v1/cipher/decrypt", r#"{"ciphertext":"AAAA"}"#),
        ("/v1/cipher/decrypt", r#"{"ciphertext":"%%%"}"#),
        ("/v1/cipher/decrypt", r#"{"ciphertext":""}"#),
    ];
    for (route, body) in spike_wrong {
        add(
            "wrong_types",
            format!("POST {route} {body}"),
            post(route, body.as_bytes()),
            Expect::Spike,
        );
    }
    let restore_long = format!(r#"{{"id":1,"shard":[{}]}}"#, vec!["1"; 33].join(","));
    let restore_big = format!(r#"{{"id":1,"shard":[{}]}}"#, vec!["256"; 32].join(","));
    let restore_neg = format!(r#"{{"id":1,"shard":[{}]}}"#, vec!["-1"; 32].join(","));
    for body in [restore_long, restore_big, restore_neg] {
        add(
            "wrong_types",
            "POST /v1/operator/restore bad shard".into(),
            post("/v1/operator/restore", body.as_bytes()),
            Expect::Spike,
        );
    }
    let vault_wrong: &[(&str, &str, &str)] = &[
        ("PUT", "/v1/secret/data/wt/x", r#"{"data":"x"}"#),
        ("PUT", "/v1/secret/data/wt/x", r#"{"data":[1]}"#),
        ("PUT", "/v1/secret/data/wt/x", r#"{"data":null}"#),
        ("PUT", "/v1/secret/data/wt/x", r#"{}"#),
        ("PUT", "/v1/secret/data/wt/x", r#"[]"#),
        ("PUT", "/v1/secret/data/wt/x", r#""str""#),
        ("PUT", "/v1/secret/data/wt/x", r#"5"#),
        (
            "PUT",
            "/v1/secret/data/wt/x",
            r#"{"data":{"k":"v"},"options":{"cas":"x"}}"#,
        ),
        (
            "PUT",
            "/v1/secret/data/wt/x",
            r#"{"data":{"k":"v"},"options":{"cas":-1}}"#,
        ),
        (
            "PUT",
            "/v1/secret/data/wt/x",
            r#"{"data":{"k":"v"},"options":{"cas":5}}"#,
        ),
        (
            "PUT",
            "/v1/secret/data/canary/vault",
            r#"{"data":{"k":"v"},"options":{"cas":0}}"#,
        ),
        ("PUT", "/v1/secret/data/wt/x/", r#"{"data":{"k":"v"}}"#),
        (
            "POST",
            "/v1/secret/metadata/wt/x",
            r#"{"max_versions":"x"}"#,
        ),
        ("POST", "/v1/secret/metadata/wt/x", r#"{"max_versions":-1}"#),
        (
            "POST",
            "/v1/secret/metadata/wt/x",
            r#"{"cas_required":"yes"}"#,
        ),
        (
            "POST",
            "/v1/secret/metadata/wt/x",
            r#"{"custom_metadata":{"a":1}}"#,
        ),
        (
            "POST",
            "/v1/secret/metadata/wt/x",
            r#"{"custom_metadata":"x"}"#,
        ),
        (
            "POST",
            "/v1/secret/metadata/wt/x",
            r#"{"custom_metadata":["a"]}"#,
        ),
        (
            "POST",
            "/v1/secret/metadata/wt/x",
            r#"{"max_versions":1e999999}"#,
        ),
        (
            "POST",
            "/v1/secret/metadata/wt/x",
            r#"{"delete_version_after":"bogus"}"#,
        ),
        ("POST", "/v1/secret/metadata/wt/x", r#"[]"#),
        (
            "POST",
            "/v1/secret/delete/canary/vault",
            r#"{"versions":"1"}"#,
        ),
        (
            "POST",
            "/v1/secret/delete/canary/vault",
            r#"{"versions":[-1]}"#,
        ),
        (
            "POST",
            "/v1/secret/undelete/canary/vault",
            r#"{"versions":["a"]}"#,
        ),
        ("POST", "/v1/secret/destroy/canary/vault", r#"{}"#),
        (
            "POST",
            "/v1/secret/destroy/canary/vault",
            r#"{"versions":{"1":true}}"#,
        ),
        ("POST", "/v1/secret/config", r#"{"max_versions":"x"}"#),
        ("POST", "/v1/secret/config", r#"{"cas_required":5}"#),
        (
            "POST",
            "/v1/secret/config",
            r#"{"delete_version_after":[]}"#,
        ),
        ("GET", "/v1/secret/data/canary/vault?version=abc", ""),
        ("GET", "/v1/secret/data/canary/vault?version=-1", ""),
        ("GET", "/v1/secret/data/canary/vault?version=99", ""),
        ("GET", "/v1/secret/data/wt/none", ""),
        ("GET", "/v1/secret/nonsense/wt/x", ""),
        ("GET", "/v1/secret/subkeys/canary/vault?depth=x", ""),
    ];
    for (method, target, body) in vault_wrong {
        add(
            "wrong_types",
            format!("{method} {target} {body}"),
            request(method, target, &[], body.as_bytes()),
            Expect::Vault,
        );
    }
    let patch: &[(&str, &str, &str)] = &[
        ("", "/v1/secret/data/canary/vault", r#"{"data":{"k":"w"}}"#),
        (
            "application/json",
            "/v1/secret/data/canary/vault",
            r#"{"data":{"k":"w"}}"#,
        ),
        (
            "text/plain",
            "/v1/secret/data/canary/vault",
            r#"{"data":{"k":"w"}}"#,
        ),
        (
            "application/merge-patch+json",
            "/v1/secret/data/canary/vault",
            r#"{"data":"x"}"#,
        ),
        (
            "application/merge-patch+json",
            "/v1/secret/data/canary/vault",
            r#"[]"#,
        ),
        (
            "application/merge-patch+json",
            "/v1/secret/data/canary/vault",
            r#"{"data":{"k":"w"},"options":{"cas":99}}"#,
        ),
        (
            "application/merge-patch+json",
            "/v1/secret/data/wt/none",
            r#"{"data":{"k":"w"}}"#,
        ),
        (
            "application/merge-patch+json",
            "/v1/secret/data/wt/x/",
            r#"{"data":{"k":"w"}}"#,
        ),
        (
            "application/merge-patch+json",
            "/v1/secret/metadata/canary/vault",
            r#"{"custom_metadata":"x"}"#,
        ),
        (
            "application/merge-patch+json",
            "/v1/secret/metadata/canary/vault",
            r#"{"custom_metadata":{"a":1}}"#,
        ),
        (
            "application/merge-patch+json",
            "/v1/secret/metadata/canary/vault",
            r#"{"max_versions":"x"}"#,
        ),
        (
            "application/merge-patch+json",
            "/v1/secret/metadata/wt/none",
            r#"{"max_versions":3}"#,
        ),
    ];
    for (ct, target, body) in patch {
        add(
            "wrong_types",
            format!("PATCH {target} ({ct}) {body}"),
            request("PATCH", target, &[("content-type", ct)], body.as_bytes()),
            Expect::Vault,
        );
    }

    // -- deep nesting ----------------------------------------------------
    let deep_arrays = "[".repeat(100_000).into_bytes();
    let deep_objects = "{\"a\":".repeat(50_000).into_bytes();
    let mut deep_in_data = b"{\"data\":{\"k\":".to_vec();
    deep_in_data.extend_from_slice(&deep_arrays);
    for body in [&deep_arrays, &deep_objects] {
        for route in SPIKE_ROUTES {
            add(
                "deep_nesting",
                format!("POST {route}"),
                post(route, body),
                Expect::Spike,
            );
        }
        for (method, target, headers) in VAULT_BODY_ROUTES {
            add(
                "deep_nesting",
                format!("{method} {target}"),
                request(method, target, headers, body),
                Expect::Vault,
            );
        }
    }
    add(
        "deep_nesting",
        "PUT data with a deep value".into(),
        request("PUT", "/v1/secret/data/wt/x", &[], &deep_in_data),
        Expect::Vault,
    );

    // -- invalid UTF-8 -----------------------------------------------------
    let utf8_spike: &[(&str, &[u8])] = &[
        ("/v1/store/secrets", b"{\"path\":\"wt/\xff\xfe\",\"values\":{\"k\":\"v\"}}"),
        ("/v1/store/secrets", b"{\"path\":\"wt/a\",\"values\":{\"k\":\"\xc3\x28\"}}"),
        ("/v1/store/secrets", b"{\"path\":\"wt/a\",\"values\":{\"\xed\xa0\x80\":\"v\"}}"),
        ("/v1/store/secrets", b"{\"path\":\"wt/a\",\"values\":{\"k\":\"\\ud800\"}}"),
        ("/v1/store/secrets?action=get", b"{\"path\":\"\xf0\x28\x8c\xbc\"}"),
        ("/v1/store/secrets/metadata?action=get", b"{\"path\":\"\xc0\xaf\"}"),
        ("/v1/acl/policy", b"{\"name\":\"\xff\",\"spiffeidPattern\":\".*\",\"pathPattern\":\".*\",\"permissions\":[\"read\"]}"),
        ("/v1/acl/policy?action=get", b"{\"id\":\"\x80\"}"),
        ("/v1/cipher/encrypt", b"{\"plaintext\":\"\xfe\xfe\"}"),
    ];
    for (route, body) in utf8_spike {
        add(
            "invalid_utf8",
            format!("POST {route}"),
            post(route, body),
            Expect::Spike,
        );
    }
    let utf8_vault: &[(&str, &[u8])] = &[
        ("/v1/secret/data/wt/x", b"{\"data\":{\"k\":\"\xff\"}}"),
        ("/v1/secret/data/wt/x", b"{\"data\":{\"\xc3\x28\":\"v\"}}"),
        (
            "/v1/secret/metadata/wt/x",
            b"{\"custom_metadata\":{\"a\":\"\xff\"}}",
        ),
        ("/v1/secret/data/wt/x", b"{\"data\":{\"k\":\"\\udc00\"}}"),
    ];
    for (target, body) in utf8_vault {
        add(
            "invalid_utf8",
            format!("PUT {target}"),
            request("PUT", target, &[], body),
            Expect::Vault,
        );
    }
    for target in [
        &b"/v1/secret/data/wt/\xff"[..],
        b"/v1/store/secrets\xc3\x28",
        b"/v1/secret/data/\x00",
    ] {
        let mut bytes = b"GET ".to_vec();
        bytes.extend_from_slice(target);
        bytes.extend_from_slice(b" HTTP/1.1\r\nhost: nexus\r\nconnection: close\r\n\r\n");
        add(
            "invalid_utf8",
            format!("raw bytes in the request target {target:?}"),
            bytes,
            Expect::Framing,
        );
    }
    // A token header that is not UTF-8: ignored, the SVID authenticates.
    add(
        "invalid_utf8",
        "X-Vault-Token not UTF-8".into(),
        b"GET /v1/secret/data/wt/none HTTP/1.1\r\nhost: nexus\r\nconnection: close\r\nx-vault-token: \xff\xfe\r\n\r\n".to_vec(),
        Expect::Vault,
    );

    // -- oversized bodies and fields --------------------------------------
    let huge = {
        // Valid JSON, 3 MiB: only the size is wrong.
        let mut b = br#"{"path":"wt/huge","values":{"k":""#.to_vec();
        b.extend(std::iter::repeat_n(b'a', 3 * MIB));
        b.extend_from_slice(br#""}}"#);
        b
    };
    for route in SPIKE_ROUTES {
        add(
            "oversized",
            format!("POST {route} 3 MiB"),
            post(route, &huge),
            Expect::Spike,
        );
    }
    let huge_vault = {
        let mut b = br#"{"data":{"k":""#.to_vec();
        b.extend(std::iter::repeat_n(b'a', 3 * MIB));
        b.extend_from_slice(br#""}}"#);
        b
    };
    for (method, target, headers) in VAULT_BODY_ROUTES {
        add(
            "oversized",
            format!("{method} {target} 3 MiB"),
            request(method, target, headers, &huge_vault),
            Expect::Vault,
        );
    }
    // Chunked, no length announced.
    for (target, body, expect) in [
        ("/v1/store/secrets", &huge, Expect::Spike),
        ("/v1/secret/data/wt/x", &huge_vault, Expect::Vault),
    ] {
        let method = if expect == Expect::Spike {
            "POST"
        } else {
            "PUT"
        };
        let mut bytes = format!(
            "{method} {target} HTTP/1.1\r\nhost: nexus\r\nconnection: close\r\n\
             content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        for chunk in body.chunks(64 * 1024) {
            bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            bytes.extend_from_slice(chunk);
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"0\r\n\r\n");
        add(
            "oversized",
            format!("{method} {target} 3 MiB chunked"),
            bytes,
            expect,
        );
    }
    // A Content-Length that lies (far larger than what is sent).
    add(
        "oversized",
        "content-length 10 GiB".into(),
        b"POST /v1/store/secrets HTTP/1.1\r\nhost: nexus\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 10737418240\r\n\r\n{}".to_vec(),
        Expect::Spike,
    );
    // A body announced but never sent: the body timeout (20 s) answers.
    for (method, target, expect) in [
        ("POST", "/v1/store/secrets", Expect::Spike),
        ("PUT", "/v1/secret/data/wt/x", Expect::Vault),
    ] {
        add(
            "oversized",
            format!("{method} {target}: 100 B announced, 2 sent"),
            format!(
                "{method} {target} HTTP/1.1\r\nhost: nexus\r\nconnection: close\r\n\
                 content-type: application/json\r\ncontent-length: 100\r\n\r\n{{}}"
            )
            .into_bytes(),
            expect,
        );
    }
    let long_path = format!("wt/{}", "p".repeat(501));
    let long_key = "k".repeat(251);
    let big_value = "v".repeat(MIB + 1024);
    let spike_fields = [
        json!({"path": long_path, "values": {"k": "v"}}),
        json!({"path": "wt/a", "values": {long_key.clone(): "v"}}),
        json!({"path": "wt/a", "values": {"k": big_value}}),
        json!({"path": long_path}),
    ];
    for (i, body) in spike_fields.iter().enumerate() {
        let route = if i == 3 {
            "/v1/store/secrets?action=get"
        } else {
            "/v1/store/secrets"
        };
        add(
            "oversized",
            format!("POST {route} field #{i}"),
            post(route, body.to_string().as_bytes()),
            Expect::Spike,
        );
    }
    add(
        "oversized",
        "policy pattern 501 B".into(),
        post(
            "/v1/acl/policy",
            json!({"name": "wt", "spiffeidPattern": ".*", "pathPattern": "a".repeat(501), "permissions": ["read"]})
                .to_string()
                .as_bytes(),
        ),
        Expect::Spike,
    );
    add(
        "oversized",
        "policy name 501 B".into(),
        post(
            "/v1/acl/policy",
            json!({"name": "n".repeat(501), "spiffeidPattern": ".*", "pathPattern": ".*", "permissions": ["read"]})
                .to_string()
                .as_bytes(),
        ),
        Expect::Spike,
    );
    let vault_fields = [
        (
            format!("/v1/secret/data/{long_path}"),
            json!({"data": {"k": "v"}}),
        ),
        (
            "/v1/secret/data/wt/x".to_owned(),
            json!({"data": {long_key: "v"}}),
        ),
        (
            "/v1/secret/data/wt/x".to_owned(),
            json!({"data": {"k": "v".repeat(MIB + 1024)}}),
        ),
        (
            "/v1/secret/data/wt/x".to_owned(),
            json!({"data": {"k": vec!["v"; 300_000]}}),
        ),
    ];
    for (target, body) in &vault_fields {
        add(
            "oversized",
            format!("PUT {} field", &target[..target.len().min(40)]),
            request("PUT", target, &[], body.to_string().as_bytes()),
            Expect::Vault,
        );
    }
    add(
        "oversized",
        "GET a 501 B path".into(),
        request("GET", &format!("/v1/secret/data/{long_path}"), &[], b""),
        Expect::Vault,
    );
    add(
        "oversized",
        "100 KiB URL".into(),
        request(
            "GET",
            &format!("/v1/secret/data/{}", "u".repeat(100 * 1024)),
            &[],
            b"",
        ),
        Expect::Framing,
    );
    add(
        "oversized",
        "1 MiB header".into(),
        request(
            "POST",
            "/v1/store/secrets?action=list",
            &[("x-big", &"h".repeat(MIB))],
            b"{}",
        ),
        Expect::Framing,
    );
    {
        let many: Vec<(String, String)> = (0..500)
            .map(|i| (format!("x-h{i}"), "v".to_owned()))
            .collect();
        let headers: Vec<(&str, &str)> =
            many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        add(
            "oversized",
            "500 headers".into(),
            request("POST", "/v1/store/secrets?action=list", &headers, b"{}"),
            Expect::Framing,
        );
    }

    // -- traversal -------------------------------------------------------
    let bad_paths = [
        "../wt",
        "wt/../canary/db",
        "wt/./a",
        "..",
        ".",
        "wt//a",
        "%2e%2e/wt",
        "wt%2Fa",
        "wt\\a",
        "wt/a\u{0}",
        " wt",
        "wt/a?b",
        "wt/\u{e9}",
    ];
    for p in bad_paths {
        add(
            "traversal",
            format!("SPIKE put {p:?}"),
            post(
                "/v1/store/secrets",
                json!({"path": p, "values": {"k": "v"}})
                    .to_string()
                    .as_bytes(),
            ),
            Expect::Spike,
        );
        add(
            "traversal",
            format!("SPIKE get {p:?}"),
            post(
                "/v1/store/secrets?action=get",
                json!({"path": p}).to_string().as_bytes(),
            ),
            Expect::Spike,
        );
    }
    let _ = canary;
    let vault_targets = [
        "/v1/secret/data/../x",
        "/v1/secret/data/wt/../../canary/vault",
        "/v1/secret/data/%2e%2e/x",
        "/v1/secret/data/%2E%2E/canary/vault",
        "/v1/secret/data/wt%2Fx",
        "/v1/secret/data/wt/%2e/x",
        "/v1/secret/data/wt/%2f%2e%2e%2fcanary",
        "/v1/secret/%2e%2e/data/x",
        "/v1/secret/data/.",
        "/v1/secret/data/..",
        "/v1/secret/data/wt//x",
        "/v1/secret/metadata/../x",
        "/v1/secret/metadata/%2e%2e/x",
        "/v1/secret/data/wt%00x",
        "/v1/secret/data/%252e%252e/x",
        "/v1/secret/data/wt/%zz",
    ];
    for target in vault_targets {
        add(
            "traversal",
            format!("PUT {target}"),
            request("PUT", target, &[], br#"{"data":{"k":"v"}}"#),
            Expect::Vault,
        );
        add(
            "traversal",
            format!("GET {target}"),
            request("GET", target, &[], b""),
            Expect::Vault,
        );
    }
    for target in [
        "/v1/store/../secret/data/x",
        "/v1/store/secrets/../../acl/policy",
        "/v1/%2e%2e/v1/store/secrets",
        "/v1/store%2Fsecrets",
        "/v1/acl/policy/..",
    ] {
        add(
            "traversal",
            format!("POST {target}"),
            post(target, br#"{"path":"wt/t","values":{"k":"v"}}"#),
            Expect::Either,
        );
    }

    // -- bad ?action= ------------------------------------------------------
    let actions = [
        "bogus",
        "GET",
        "get%00",
        "list&action=bogus",
        "get;list",
        "..",
        "%67et",
        "get%20",
        "ge",
        "listx",
    ];
    for action in actions {
        for (route, body) in [
            (
                "/v1/store/secrets",
                r#"{"path":"wt/act","values":{"k":"v"}}"#,
            ),
            ("/v1/store/secrets/metadata", r#"{"path":"canary/db"}"#),
            ("/v1/acl/policy", r#"{"id":"wt"}"#),
        ] {
            let target = format!("{route}?action={action}");
            add(
                "bad_action",
                format!("POST {target}"),
                post(&target, body.as_bytes()),
                Expect::Spike,
            );
        }
    }
    for route in [
        "/v1/operator/recover",
        "/v1/operator/restore",
        "/v1/cipher/encrypt",
        "/v1/cipher/decrypt",
    ] {
        let target = format!("{route}?action=get");
        add(
            "bad_action",
            format!("POST {target}"),
            post(&target, b"{}"),
            Expect::Spike,
        );
    }
    add(
        "bad_action",
        "metadata without action".into(),
        post("/v1/store/secrets/metadata", br#"{"path":"canary/db"}"#),
        Expect::Spike,
    );

    // -- wrong methods -----------------------------------------------------
    for route in SPIKE_ROUTES {
        for method in ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "FOO"] {
            add(
                "wrong_method",
                format!("{method} {route}"),
                request(method, route, &[], b"{}"),
                Expect::Spike,
            );
        }
    }
    for (method, target) in [
        ("POST", "/healthz"),
        ("DELETE", "/readyz"),
        ("PUT", "/metrics"),
        ("GET", "/v1/nope"),
        ("POST", "/"),
    ] {
        add(
            "wrong_method",
            format!("{method} {target}"),
            request(method, target, &[], b"{}"),
            Expect::Spike,
        );
    }
    for (method, target) in [
        ("FOO", "/v1/secret/data/wt/x"),
        ("LIST", "/v1/secret/data/wt/"),
        ("OPTIONS", "/v1/secret/data/wt/x"),
        ("PUT", "/v1/secret/subkeys/canary/vault"),
        ("DELETE", "/v1/secret/subkeys/canary/vault"),
        ("GET", "/v1/secret/delete/canary/vault"),
        ("GET", "/v1/secret/destroy/canary/vault"),
        ("FOO", "/v1/secret/metadata/wt/x"),
        ("DELETE", "/v1/secret/config"),
        ("FOO", "/v1/secret/config"),
        ("PATCH", "/v1/secret/delete/canary/vault"),
    ] {
        add(
            "wrong_method",
            format!("{method} {target}"),
            request(method, target, &[], b"{}"),
            Expect::Vault,
        );
    }
    for (name, raw) in [
        ("HTTP/1.0 garbage", &b"GARBAGE\r\n\r\n"[..]),
        ("HTTP/9.9", b"GET /healthz HTTP/9.9\r\nhost: nexus\r\n\r\n"),
        ("bare LF", b"POST /v1/store/secrets HTTP/1.1\nhost: nexus\n\n"),
        (
            "two content-lengths",
            b"POST /v1/store/secrets HTTP/1.1\r\nhost: nexus\r\ncontent-length: 2\r\ncontent-length: 5\r\n\r\n{}",
        ),
        (
            "bad content-length",
            b"POST /v1/store/secrets HTTP/1.1\r\nhost: nexus\r\ncontent-length: -1\r\n\r\n{}",
        ),
        (
            "bad chunk size",
            b"POST /v1/store/secrets HTTP/1.1\r\nhost: nexus\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        ),
        (
            "header without colon",
            b"POST /v1/store/secrets HTTP/1.1\r\nhost nexus\r\n\r\n",
        ),
        ("CONNECT", b"CONNECT nexus:443 HTTP/1.1\r\nhost: nexus\r\n\r\n"),
    ] {
        add("framing", name.into(), raw.to_vec(), Expect::Framing);
    }
    cases
}

/// Checks one answer; `Err` describes what was wrong.
fn check(expect: Expect, resp: Option<&Resp>) -> Result<(), String> {
    const SPIKE_CODES: &[&str] = &[
        "api_bad_request",
        "access_unauthorized",
        "api_not_found",
        "state_not_ready",
    ];
    let Some(resp) = resp else {
        return if expect == Expect::Framing {
            Ok(())
        } else {
            Err("connection closed without an answer".into())
        };
    };
    if !(400..500).contains(&resp.status) {
        return Err(format!(
            "status {}: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        ));
    }
    let spike_ok = || {
        resp.json()
            .and_then(|v| v.get("err").and_then(Value::as_str).map(str::to_owned))
            .is_some_and(|code| SPIKE_CODES.contains(&code.as_str()))
    };
    // `{"errors":[…]}`, or Vault's envelope with `warnings` (404 for a
    // path the KV v2 engine does not have, as OpenBao).
    let vault_ok = || {
        resp.body.is_empty()
            || resp
                .json()
                .is_some_and(|v| v["errors"].is_array() || v["warnings"].is_array())
    };
    let shape = match expect {
        Expect::Spike => spike_ok(),
        Expect::Vault => vault_ok(),
        Expect::Either => spike_ok() || vault_ok(),
        Expect::Framing => true,
    };
    if !shape {
        return Err(format!(
            "status {} but not the API's error shape: {:?}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        ));
    }
    if expect != Expect::Framing
        && !resp
            .head
            .to_ascii_lowercase()
            .contains("cache-control: no-store")
    {
        return Err("no `Cache-Control: no-store`".into());
    }
    Ok(())
}

/// A valid request's JSON answer (status 200 expected).
pub(crate) async fn call(raw: &Raw, method: &str, target: &str, body: &str) -> Value {
    let resp = raw
        .send(request(method, target, &[], body.as_bytes()))
        .await
        .unwrap_or_else(|| panic!("{method} {target}: no answer"));
    assert!(
        resp.status == 200 || resp.status == 204,
        "{method} {target}: {} {}",
        resp.status,
        String::from_utf8_lossy(&resp.body)
    );
    let mut v = resp.json().unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.remove("request_id");
    }
    v
}

/// Everything observable about the store, through both APIs.
async fn snapshot(raw: &Raw) -> Vec<Value> {
    vec![
        call(raw, "POST", "/v1/store/secrets?action=list", "{}").await,
        call(
            raw,
            "POST",
            "/v1/store/secrets?action=get",
            r#"{"path":"canary/db"}"#,
        )
        .await,
        call(
            raw,
            "POST",
            "/v1/store/secrets/metadata?action=get",
            r#"{"path":"canary/db"}"#,
        )
        .await,
        call(raw, "POST", "/v1/acl/policy?action=list", "{}").await,
        call(raw, "GET", "/v1/secret/data/canary/vault", "").await,
        call(raw, "GET", "/v1/secret/metadata/canary/vault", "").await,
        call(raw, "GET", "/v1/secret/metadata/?list=true", "").await,
        call(raw, "GET", "/v1/secret/config", "").await,
    ]
}

/// Opens a TLS connection, sends the start of a request and then one
/// header byte every 500 ms; returns how long until the server cut it off.
async fn slowloris(raw: Raw) -> Result<Duration, String> {
    let started = Instant::now();
    let mut tls = raw.connect().await.map_err(|e| e.to_string())?;
    tls.write_all(b"POST /v1/store/secrets?action=list HTTP/1.1\r\nhost: nexus\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let drip = async move {
        for b in b"x-slow: ".iter().chain(std::iter::repeat(&b'a')) {
            if wr.write_all(&[*b]).await.is_err() || wr.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let closed = async move {
        let mut buf = [0u8; 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // A 408 or similar answer: fine, keep reading to the close.
                Ok(_) => {}
            }
        }
    };
    match tokio::time::timeout(SLOW_CLOSE_DEADLINE, async {
        tokio::select! {
            () = closed => {}
            () = drip => {}
        }
    })
    .await
    {
        Ok(()) => Ok(started.elapsed()),
        Err(_) => Err(format!("still open after {SLOW_CLOSE_DEADLINE:?}")),
    }
}

/// A TCP connection that never starts TLS: the handshake timeout must
/// close it.
async fn silent_tcp(addr: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    // Half a TLS record header, then nothing.
    tcp.write_all(&[0x16, 0x03])
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(SLOW_CLOSE_DEADLINE, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    {
        Ok(()) => Ok(started.elapsed()),
        Err(_) => Err(format!("still open after {SLOW_CLOSE_DEADLINE:?}")),
    }
}

/// Sends every case with `workers` concurrent connections; returns the
/// failures.
async fn run_all(
    raw: &Raw,
    cases: Vec<Case>,
    workers: usize,
) -> (BTreeMap<&'static str, usize>, Vec<String>) {
    let mut counts = BTreeMap::new();
    for c in &cases {
        *counts.entry(c.category).or_insert(0) += 1;
    }
    let queue = Arc::new(Mutex::new(cases));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let queue = Arc::clone(&queue);
        let failures = Arc::clone(&failures);
        let raw = raw.clone();
        tasks.spawn(async move {
            loop {
                let case = queue.lock().unwrap().pop();
                let Some(case) = case else { break };
                let resp = raw.send(case.bytes).await;
                if let Err(e) = check(case.expect, resp.as_ref()) {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("[{}] {}: {e}", case.category, case.what));
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a request worker panicked");
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    (counts, failures)
}

#[test]
fn malformed_requests_get_4xx_and_change_nothing() {
    let mut dev = Dev::start();
    let raw = Raw::new(dev.nexus, &dev.superuser());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let (counts, failures) = rt.block_on(async {
        call(
            &raw,
            "POST",
            "/v1/store/secrets",
            r#"{"path":"canary/db","values":{"user":"u","pass":"p"}}"#,
        )
        .await;
        call(
            &raw,
            "PUT",
            "/v1/secret/data/canary/vault",
            r#"{"data":{"k":"v","n":1}}"#,
        )
        .await;
        let before = snapshot(&raw).await;

        let mut failures = Vec::new();
        // Slow clients, alongside everything else.
        let mut slow = tokio::task::JoinSet::new();
        for _ in 0..5 {
            slow.spawn(slowloris(raw.clone()));
        }
        for _ in 0..3 {
            let addr = dev.nexus;
            slow.spawn(silent_tcp(addr));
        }

        let (mut counts, mut fails) = run_all(&raw, cases("canary"), 16).await;
        failures.append(&mut fails);

        // Many connections at once: 200 malformed requests in parallel,
        // then a valid request while 200 idle connections are open.
        let many: Vec<Case> = (0..200)
            .map(|i| Case {
                category: "concurrent",
                what: format!("#{i}"),
                bytes: post("/v1/store/secrets?action=get", b"{\"path\":"),
                expect: Expect::Spike,
            })
            .collect();
        let (c, mut fails) = run_all(&raw, many, 200).await;
        counts.extend(c);
        failures.append(&mut fails);
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(raw.connect().await.expect("an idle connection"));
        }
        *counts.entry("concurrent").or_insert(0) += idle.len();
        call(&raw, "POST", "/v1/store/secrets?action=list", "{}").await;
        drop(idle);

        let mut slow_count = 0;
        while let Some(done) = slow.join_next().await {
            slow_count += 1;
            match done.expect("a slow client task panicked") {
                Ok(took) => assert!(took < SLOW_CLOSE_DEADLINE, "slow client open {took:?}"),
                Err(e) => failures.push(format!("[slow] {e}")),
            }
        }
        counts.insert("slow_clients", slow_count);

        let after = snapshot(&raw).await;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                failures.push(format!("store changed:\nbefore {b}\nafter  {a}"));
            }
        }
        (counts, failures)
    });

    let total: usize = counts.values().sum();
    eprintln!("bad input sent, by category ({total} in all):");
    for (category, n) in &counts {
        eprintln!("  {category:>14}: {n}");
    }
    dev.assert_running();
    let mut logs = dev.log();
    for i in 1..=3 {
        logs.push_str(
            &fs::read_to_string(dev.data.join("logs").join(format!("keeper-{i}.log")))
                .unwrap_or_default(),
        );
    }
    assert!(!logs.contains("panicked"), "a server panicked:\n{logs}");
    assert!(total >= 200, "only {total} malformed requests");
    assert!(
        failures.is_empty(),
        "{} of {total} malformed requests were mishandled:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
