//! The Vault KV v2-compatible API of Nexus (SPEC §7.2): the KV v2 engine
//! mounted at `secret/`, the few `sys/` routes clients probe, and
//! `auth/cert/login`, so that hvac, `bao`/`vault kv` and vaultrs work
//! unmodified. A real OpenBao dev server is the reference for every status
//! code and response shape (`conformance/vault_kv.py` compares them).
//!
//! - The caller is the token in `X-Vault-Token` (or `Authorization:
//!   Bearer`), issued by `auth/cert/login` and bound to the SPIFFE ID that
//!   logged in; without a live token, the verified client SVID itself. spike-core
//!   authorises and audits every call (`api = "vault/kv2"`), with the same
//!   policies as the SPIKE v1 API: read→read, create/update/patch/delete/
//!   undelete/destroy→write, list→list.
//! - Answers are Vault's: the envelope `{request_id, lease_id, renewable,
//!   lease_duration, data, wrap_info, warnings, auth}`, `{"errors":[…]}` for
//!   failures, 204 for writes without data, `Content-Type:
//!   application/json` on all of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Map, Value};
use spike_core::{Caller, Nexus, SpiffeId};

use crate::http::{PeerAddr, PeerIdentity, PrefixRoutes, json_answer, json_response};

mod kv;
mod sys;

/// The API name spike-core's audit trail records for these calls.
const API: &str = "vault/kv2";
/// The KV v2 mount.
const MOUNT: &str = "secret/";
/// How long a token from `auth/cert/login` is valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Most live tokens held at once; a login beyond it is refused (503) until
/// some expire.
const MAX_TOKENS: usize = 100_000;
/// The prefix of issued tokens (Vault's service tokens look alike).
const TOKEN_PREFIX: &str = "hvs.";

/// What the Vault routes share: the store and the issued tokens.
#[derive(Clone)]
pub(crate) struct VaultState {
    nexus: Nexus,
    tokens: Arc<Tokens>,
}

/// Issued tokens, in memory only (a restart revokes them all).
#[derive(Default)]
struct Tokens(Mutex<HashMap<String, (SpiffeId, Instant)>>);

impl Tokens {
    /// A fresh random token for `id`, valid for [`TOKEN_TTL`].
    fn issue(&self, id: SpiffeId) -> Result<String, VaultError> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|_| VaultError::internal())?;
        let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, expires)| *expires > now);
        if map.len() >= MAX_TOKENS {
            return Err(VaultError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many live tokens",
            ));
        }
        map.insert(token.clone(), (id, now + TOKEN_TTL));
        Ok(token)
    }

    /// The SPIFFE ID and expiry of a live token.
    fn lookup(&self, token: &str) -> Option<(SpiffeId, Instant)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(token)
            .filter(|(_, expires)| *expires > Instant::now())
            .cloned()
    }

    fn revoke(&self, token: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }
}

/// The Vault API's mounts, for [`crate::nexus_api::router`]: any method on
/// a path under `/v1/secret/`, `/v1/sys/` or `/v1/auth/`, inside Nexus's
/// middleware stack. Claimed by prefix: their paths are open-ended, and a
/// router's wildcard route would capture and decode the tail into every
/// request, unused (the handlers parse the path themselves, see
/// [`VaultRequest::new`]).
pub(crate) fn prefix_routes(nexus: Nexus) -> PrefixRoutes {
    let state = VaultState {
        nexus,
        tokens: Arc::new(Tokens::default()),
    };
    let (kv, sys, auth) = (state.clone(), state.clone(), state);
    PrefixRoutes::default()
        .route("/v1/secret/", move |req| kv::handle(kv.clone(), req))
        .route("/v1/sys/", move |req| sys::handle_sys(sys.clone(), req))
        .route("/v1/auth/", move |req| sys::handle_auth(auth.clone(), req))
}

// ---- requests --------------------------------------------------------------

/// The verb of a Vault request (`LIST` and `GET ?list=true` are List;
/// POST and PUT are Write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Read,
    List,
    Write,
    Patch,
    Delete,
    Other,
}

/// What a handler needs from a request, beyond its body.
struct VaultRequest {
    verb: Verb,
    /// The path after the route's prefix, as sent (not decoded).
    rest: String,
    query: Vec<(String, String)>,
    content_type: Option<String>,
    token: Option<String>,
    peer: Option<SpiffeId>,
    addr: Option<PeerAddr>,
}

impl VaultRequest {
    fn new(parts: &Parts, prefix: &str) -> Result<Self, VaultError> {
        let path = parts.uri.path();
        // Dot segments never reach a store path: refused, not resolved.
        if path.split('/').any(|s| s == "." || s == "..") {
            return Err(VaultError::new(
                StatusCode::BAD_REQUEST,
                "invalid path: '.' or '..' segment",
            ));
        }
        let query: Vec<(String, String)> = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (kv.to_owned(), String::new()),
            })
            .collect();
        let list_param = query
            .iter()
            .any(|(k, v)| k == "list" && matches!(v.as_str(), "true" | "1" | "t" | "True"));
        let verb = match parts.method.as_str() {
            "GET" | "HEAD" if list_param => Verb::List,
            "GET" | "HEAD" => Verb::Read,
            "LIST" => Verb::List,
            "POST" | "PUT" => Verb::Write,
            "PATCH" => Verb::Patch,
            "DELETE" => Verb::Delete,
            _ => Verb::Other,
        };
        let token = parts
            .headers
            .get("x-vault-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| {
                parts
                    .headers
                    .get(AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_owned)
            })
            .filter(|t| !t.trim().is_empty());
        Ok(Self {
            verb,
            rest: path.strip_prefix(prefix).unwrap_or("").to_owned(),
            query,
            content_type: parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            token,
            peer: parts.extensions.get::<PeerIdentity>().map(|p| p.0.clone()),
            addr: parts.extensions.get::<PeerAddr>().copied(),
        })
    }

    /// The first value of query parameter `name`.
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The caller: the SPIFFE ID of a live token when one is sent (the
    /// token is the credential), else the verified client SVID (also when
    /// the token is unknown or expired: a stale `~/.vault-token` must not
    /// lock out a workload whose SVID is valid); 403 without either.
    fn caller(&self, state: &VaultState) -> Result<Caller, VaultError> {
        let by_token = self
            .token
            .as_deref()
            .and_then(|t| state.tokens.lookup(t))
            .map(|(id, _)| id);
        let id = by_token
            .or_else(|| self.peer.clone())
            .ok_or_else(VaultError::denied)?;
        Ok(match self.addr {
            Some(addr) => Caller::remote(id, addr.0, API),
            None => Caller {
                remote_addr: None,
                api: API,
                ..Caller::new(id)
            },
        })
    }

    /// 415 unless the body is `application/merge-patch+json` (PATCH).
    fn require_merge_patch(&self) -> Result<(), VaultError> {
        let media = self
            .content_type
            .as_deref()
            .and_then(|c| c.split(';').next())
            .map(str::trim)
            .unwrap_or("");
        if media.eq_ignore_ascii_case("application/merge-patch+json") {
            return Ok(());
        }
        Err(VaultError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "PATCH requires Content-Type of application/merge-patch+json, provided {media}"
            ),
        ))
    }
}

/// Parses a JSON request body as an object (an empty body is `{}`);
/// anything else is `None`.
fn body_object(body: &[u8]) -> Option<BodyObject> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(BodyObject(Map::new()));
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => Some(BodyObject(m)),
        _ => None,
    }
}

/// A parsed request body, whose strings are overwritten when it is
/// dropped: a KV write's body holds the secret's values, and this parsed
/// copy would otherwise go back to the allocator as it is. (Numbers and
/// keys stay; the raw body and the TLS layer's buffers are not ours to
/// wipe.)
struct BodyObject(Map<String, Value>);

impl std::ops::Deref for BodyObject {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for BodyObject {
    fn drop(&mut self) {
        self.0.values_mut().for_each(wipe_strings);
    }
}

/// Overwrites every string in `value`, at any depth, with zeros.
fn wipe_strings(value: &mut Value) {
    match value {
        Value::String(s) => zeroize::Zeroize::zeroize(s),
        Value::Array(items) => items.iter_mut().for_each(wipe_strings),
        Value::Object(map) => map.values_mut().for_each(wipe_strings),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

// ---- answers ---------------------------------------------------------------

/// A UUID-shaped request id, unique within the process and, through a
/// random per-process prefix, across processes. A counter rather than an
/// OS random call per answer: request ids are correlation handles, not
/// secrets, and a `getrandom` system call per request was measurable.
fn request_id() -> String {
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    // The first three groups, from a random per-process prefix.
    static PREFIX: LazyLock<String> = LazyLock::new(|| {
        let mut b = [0u8; 8];
        // A failed OS RNG only makes ids less unique across processes.
        let _ = getrandom::fill(&mut b);
        let p = u64::from_be_bytes(b);
        format!(
            "{:08x}-{:04x}-{:04x}-",
            p >> 32,
            (p >> 16) & 0xffff,
            p & 0xffff
        )
    });
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // The last two groups, `xxxx-xxxxxxxxxxxx`, without `format!` (which
    // cost more than the rest of the envelope).
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut tail = [b'-'; 17];
    for (i, b) in tail.iter_mut().enumerate().filter(|(i, _)| *i != 4) {
        let shift = 4 * (if i < 4 { 15 - i } else { 16 - i });
        *b = DIGITS[((n >> shift) & 0xf) as usize];
    }
    let mut id = String::with_capacity(36);
    id.push_str(&PREFIX);
    id.extend(tail.iter().map(|&b| char::from(b)));
    id
}

/// `status` with `data` in the envelope.
fn envelope<T: Serialize + ?Sized>(status: StatusCode, data: &T) -> Response {
    envelope_full(status, data, None, None)
}

fn envelope_full<T: Serialize + ?Sized>(
    status: StatusCode,
    data: &T,
    warnings: Option<&[String]>,
    auth: Option<&Value>,
) -> Response {
    envelope_with(status, warnings, auth, |out| {
        serde_json::to_writer(out, data)
    })
}

/// Vault's response envelope (its fields in Vault's order) around `data`,
/// which writes the `data` field's JSON. The answers to KV reads and
/// writes, on every request of a Vault client's hot path, write theirs by
/// hand; everything else through `serde_json` ([`envelope`]).
fn envelope_with(
    status: StatusCode,
    warnings: Option<&[String]>,
    auth: Option<&Value>,
    data: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>,
) -> Response {
    // Most answers are a few hundred bytes: one allocation, not a series.
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"{\"request_id\":");
    let written = json_str(&mut out, &request_id()).and_then(|()| {
        out.extend_from_slice(
            b",\"lease_id\":\"\",\"renewable\":false,\"lease_duration\":0,\"data\":",
        );
        data(&mut out)?;
        out.extend_from_slice(b",\"wrap_info\":null,\"warnings\":");
        match warnings {
            None => out.extend_from_slice(b"null"),
            Some(w) => serde_json::to_writer(&mut out, w)?,
        }
        out.extend_from_slice(b",\"auth\":");
        match auth {
            None => out.extend_from_slice(b"null"),
            Some(a) => serde_json::to_writer(&mut out, a)?,
        }
        out.push(b'}');
        Ok(())
    });
    json_answer(status, written.map(|()| out))
}

/// `s` as a JSON string: copied when nothing in it needs escaping (ids and
/// times, on the hot path), else escaped by `serde_json`, which does it a
/// byte at a time.
fn json_str(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    // A scan without an early exit, which the compiler vectorises.
    let plain = s.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(out, s)
    }
}

/// 204 with `Content-Type: application/json`, as Vault answers writes
/// without data.
fn no_content() -> Response {
    bodiless(StatusCode::NO_CONTENT)
}

/// `status` with no body (`Content-Type: application/json` all the same,
/// as Vault sends it).
fn bodiless(status: StatusCode) -> Response {
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
    )
        .into_response()
}

/// A Vault failure: `{"errors":[…]}` with a status, or (`empty`) no body.
#[derive(Debug)]
pub(crate) struct VaultError {
    status: StatusCode,
    errors: Vec<String>,
    empty: bool,
}

impl VaultError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            errors: vec![message.into()],
            empty: false,
        }
    }

    /// `status` with `{"errors":[]}`.
    fn no_message(status: StatusCode) -> Self {
        Self {
            status,
            errors: Vec::new(),
            empty: false,
        }
    }

    /// 404 `{"errors":[]}`.
    fn not_found() -> Self {
        Self::no_message(StatusCode::NOT_FOUND)
    }

    /// 403 `{"errors":["permission denied"]}`.
    fn denied() -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission denied")
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    /// 405 for an operation the path does not support, in OpenBao's words.
    fn unsupported() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "1 error occurred:\n\t* unsupported operation\n\n",
        )
    }

    /// Whether this is a plain 404 (a missing secret).
    fn is_not_found(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
    }
}

impl From<spike_core::Error> for VaultError {
    fn from(e: spike_core::Error) -> Self {
        use spike_core::ErrorCode as C;
        match (&e, e.code()) {
            (spike_core::Error::CasRequired, _) => {
                Self::bad_request("check-and-set parameter required for this call")
            }
            (_, C::CasMismatch) => {
                Self::bad_request("check-and-set parameter did not match the current version")
            }
            (_, C::Denied) => Self::denied(),
            (_, C::NotFound) => Self::not_found(),
            (_, C::NotReady | C::Unavailable) => {
                tracing::warn!(error = %e, "request failed");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "Vault is sealed")
            }
            // spike-core's input errors name the field and the rule, never
            // the value.
            (_, C::BadRequest | C::Conflict | C::WrongKey) => Self::bad_request(e.to_string()),
            _ => {
                tracing::error!(error = %e, "request failed");
                Self::internal()
            }
        }
    }
}

impl IntoResponse for VaultError {
    fn into_response(self) -> Response {
        if self.empty {
            return bodiless(self.status);
        }
        json_response(self.status, &serde_json::json!({ "errors": self.errors }))
    }
}

type VaultResult = Result<Response, VaultError>;

/// 405 unless `method` is one of `allowed`.
fn only(method: &Method, allowed: &[Method]) -> Result<(), VaultError> {
    if allowed.contains(method) {
        Ok(())
    } else {
        Err(VaultError::no_message(StatusCode::METHOD_NOT_ALLOWED))
    }
}

// ---- durations (Go's `time.Duration` text, as Vault uses) --------------------

/// Formats `d` as Go does: `0s`, `90s` → `1m30s`, `1h0m0s`, `500ms`.
fn go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if secs == 0 {
        return if nanos.is_multiple_of(1_000_000) {
            format!("{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            format!("{}µs", nanos / 1_000)
        } else {
            format!("{nanos}ns")
        };
    }
    let s = if nanos == 0 {
        format!("{}s", secs % 60)
    } else {
        let frac = format!("{nanos:09}");
        format!("{}.{}s", secs % 60, frac.trim_end_matches('0'))
    };
    match (secs / 3600, (secs % 3600) / 60) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

/// Parses a duration as Vault accepts it: a JSON number of seconds, a
/// string of digits (seconds), or Go's `1h30m`, `45s`, `1.5h`, `500ms`.
fn parse_duration(v: &Value) -> Option<Duration> {
    match v {
        Value::Number(n) => n.as_u64().map(Duration::from_secs),
        Value::String(s) => parse_go_duration(s.trim()),
        _ => None,
    }
}

fn parse_go_duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok().map(Duration::from_secs);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parsed_body_has_its_strings_wiped_at_any_depth() {
        let mut value = serde_json::json!({
            "data": {"password": "s3cret", "list": ["a", {"deep": "b"}], "n": 7, "t": true},
            "options": {"cas": "1"},
        });
        wipe_strings(&mut value);
        assert_eq!(
            value,
            serde_json::json!({
                "data": {"password": "", "list": ["", {"deep": ""}], "n": 7, "t": true},
                "options": {"cas": ""},
            })
        );
    }

    async fn body_text(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_envelope_holds_vaults_fields_in_vaults_order() {
        let text = body_text(envelope(StatusCode::OK, &serde_json::json!({"k": "v"}))).await;
        let id = &text[15..51];
        assert_eq!(
            text,
            format!(
                r#"{{"request_id":"{id}","lease_id":"","renewable":false,"lease_duration":0,"data":{{"k":"v"}},"wrap_info":null,"warnings":null,"auth":null}}"#
            )
        );
        let warnings = ["w\"1".to_owned()];
        let auth = serde_json::json!({"client_token": "t"});
        let text = body_text(envelope_full(
            StatusCode::NOT_FOUND,
            &Value::Null,
            Some(&warnings),
            Some(&auth),
        ))
        .await;
        let id = &text[15..51];
        assert_eq!(
            text,
            format!(
                r#"{{"request_id":"{id}","lease_id":"","renewable":false,"lease_duration":0,"data":null,"wrap_info":null,"warnings":["w\"1"],"auth":{{"client_token":"t"}}}}"#
            )
        );
    }

    #[test]
    fn json_str_escapes_as_serde_json_escapes() {
        for c in (0u8..0x80).map(char::from).chain(['é', '✓']) {
            let s = format!("a{c}b");
            let mut out = Vec::new();
            json_str(&mut out, &s).unwrap();
            assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{c:?}");
        }
    }

    #[test]
    fn durations_round_trip_go_text() {
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(45)), "45s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        let p = |s: &str| parse_duration(&Value::String(s.to_owned()));
        assert_eq!(p("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(p("30"), Some(Duration::from_secs(30)));
        assert_eq!(p("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(p("0s"), Some(Duration::ZERO));
        assert_eq!(p("1x"), None);
        assert_eq!(p(""), None);
        assert_eq!(
            parse_duration(&serde_json::json!(60)),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let id = request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_ne!(request_id(), request_id());
        // The counter's 64 bits, in the last two groups.
        let (a, b) = (request_id(), request_id());
        let n = |id: &str| {
            u64::from_str_radix(&id[24..], 16).unwrap()
                | (u64::from_str_radix(&id[19..23], 16).unwrap() << 48)
        };
        assert_eq!(n(&b), n(&a) + 1, "{a} {b}");
        assert_eq!(&a[..19], &b[..19]);
    }
}
