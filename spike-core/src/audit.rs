//! The audit trail: one record per call, to a pluggable sink.
//!
//! Records name who did what to which path, whether it was allowed and by
//! which policy or role, and how it ended. They never hold secret values,
//! shares or keys. With [`AuditOptions::hmac_paths`] the path is replaced by
//! an HMAC under the audit subkey, so a trail can be correlated without
//! revealing paths. The audit subkey comes from the root key like every
//! other: a path's HMAC stays the same across restarts and changes when a
//! rotation begins (a rotation answers a root key that may have leaked, and
//! with it the audit key).

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::identity::SpiffeId;

mod json_lines;
mod line;

pub use json_lines::{Delivery, JsonLinesSink};

/// Who is calling, from where, through which API. Every [`crate::Nexus`]
/// call takes one.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The caller's SPIFFE ID (from its verified SVID).
    pub id: SpiffeId,
    /// The peer address, for servers.
    pub remote_addr: Option<SocketAddr>,
    /// The API the call came through (`embedded`, `spike/v1`, `vault/kv2`).
    pub api: &'static str,
}

impl Caller {
    /// An in-process caller.
    pub fn new(id: SpiffeId) -> Self {
        Self {
            id,
            remote_addr: None,
            api: "embedded",
        }
    }

    /// The same caller, seen at `addr` through `api`.
    pub fn remote(id: SpiffeId, addr: SocketAddr, api: &'static str) -> Self {
        Self {
            id,
            remote_addr: Some(addr),
            api,
        }
    }
}

/// Why a call was allowed or denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Decision {
    /// Allowed by a built-in role or a named policy.
    Allow {
        /// `role:<name>` or `policy:<name>` (borrowed for the built-in
        /// roles: no allocation on their hot path).
        by: Cow<'static, str>,
    },
    /// Denied.
    Deny,
    /// No authorisation applies (lifecycle calls by the embedding process).
    NotApplicable,
}

/// One audit record: a JSON line in the file sink.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// RFC 3339 time the call finished.
    pub time: String,
    /// Unique id of this record, or of this call: in fail-closed mode the
    /// `started` line of a change and its outcome line share one.
    pub trail_id: String,
    /// The caller's SPIFFE ID.
    pub caller: String,
    /// The peer address, if remote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
    /// The API the call came through.
    pub api: &'static str,
    /// What was done (`secret.get`, `policy.put`, `operator.restore`, …).
    pub action: &'static str,
    /// The secret path or policy name, or its HMAC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Allowed or denied, and by what.
    pub decision: Decision,
    /// `ok` or the error class; `started` on the line a fail-closed store
    /// writes before committing a change ([`AuditOptions::fail_closed`]).
    pub status: &'static str,
    /// How long the call took, in microseconds.
    pub duration_us: u64,
}

/// Where audit records go.
pub trait AuditSink: Send + Sync {
    /// Records one event. An error makes a fail-closed store refuse the call.
    fn record(&self, event: &AuditEvent) -> io::Result<()>;

    /// Makes every record so far reach its destination (called when a
    /// [`crate::Nexus`] closes).
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

/// How audit records are written.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditOptions {
    /// Replace paths with their HMAC under the audit subkey.
    pub hmac_paths: bool,
    /// When the sink fails, refuse the call instead of answering. A call
    /// that changes state also gets a line with status `started` before
    /// the change is committed, so that a failing sink refuses the change
    /// itself, not only its answer, and no change goes unaudited.
    pub fail_closed: bool,
}

/// Keeps records in memory; for tests and for applications that forward
/// records themselves.
#[derive(Debug, Default)]
pub struct MemorySink {
    events: Mutex<Vec<AuditEvent>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every record so far.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl AuditSink for MemorySink {
    fn record(&self, event: &AuditEvent) -> io::Result<()> {
        self.events
            .lock()
            .map_err(|_| io::Error::other("audit sink lock poisoned"))?
            .push(event.clone());
        Ok(())
    }
}

tokio::task_local! {
    static TRACKED: std::cell::Cell<bool>;
}

/// Runs `call` and tells whether it wrote an audit record: a server wraps
/// each request in it, and audits with [`crate::Nexus::audit_request`] the
/// requests that it answered without an audited store call, so that every
/// request leaves one line.
pub async fn track_audit<F: std::future::Future>(call: F) -> (F::Output, bool) {
    TRACKED
        .scope(std::cell::Cell::new(false), async move {
            let out = call.await;
            (out, TRACKED.with(std::cell::Cell::get))
        })
        .await
}

/// Marks the current [`track_audit`] scope, if any, as audited.
pub(crate) fn mark_audited() {
    let _ = TRACKED.try_with(|t| t.set(true));
}

/// Process-unique trail ids: a random prefix and a counter.
pub(crate) struct TrailIds {
    prefix: u64,
    next: AtomicU64,
}

impl TrailIds {
    pub(crate) fn new() -> Self {
        let mut b = [0u8; 8];
        // A failed OS RNG only makes ids less unique across processes.
        let _ = getrandom::fill(&mut b);
        Self {
            prefix: u64::from_be_bytes(b),
            next: AtomicU64::new(1),
        }
    }

    pub(crate) fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut out = [0u8; 32];
        hex_into(&mut out[..16], self.prefix);
        hex_into(&mut out[16..], n);
        // ASCII by construction.
        std::str::from_utf8(&out).map_or_else(|_| String::new(), str::to_owned)
    }
}

/// Lowercase hex digits.
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes `v` as `out.len()` lowercase hex digits (the low ones), without
/// the formatting machinery: ids are printed once per request.
pub(crate) fn hex_into(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = HEX_DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

/// Appends `bytes` as lowercase hex, two digits a byte.
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        out.push(char::from(HEX_DIGITS[usize::from(b >> 4)]));
        out.push(char::from(HEX_DIGITS[usize::from(b & 0xf)]));
    }
}

/// `addr` as `Display` writes it; IPv4 without the formatting machinery,
/// which cost more than the rest of building an audit record.
pub(crate) fn addr_text(addr: SocketAddr) -> String {
    let SocketAddr::V4(v4) = addr else {
        return addr.to_string();
    };
    let mut out = String::with_capacity(21);
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        push_decimal(&mut out, u32::from(octet));
    }
    out.push(':');
    push_decimal(&mut out, u32::from(v4.port()));
    out
}

fn push_decimal(out: &mut String, v: u32) {
    let mut buf = [0u8; 20];
    out.extend(
        decimal(&mut buf, u64::from(v))
            .iter()
            .map(|&d| char::from(d)),
    );
}

/// `v`'s decimal digits, written at the end of `buf`, without the
/// formatting machinery (audit lines print numbers on every request).
pub(crate) fn decimal(buf: &mut [u8; 20], mut v: u64) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_text_matches_display() {
        let mut rng = fastrand::Rng::with_seed(5);
        let mut addrs: Vec<SocketAddr> = vec![
            "0.0.0.0:0".parse().unwrap(),
            "255.255.255.255:65535".parse().unwrap(),
            "127.0.0.1:8443".parse().unwrap(),
            "[::1]:443".parse().unwrap(),
        ];
        for _ in 0..1000 {
            let ip = std::net::Ipv4Addr::from(rng.u32(..));
            addrs.push(SocketAddr::from((ip, rng.u16(..))));
        }
        for addr in addrs {
            assert_eq!(addr_text(addr), addr.to_string());
        }
    }

    #[tokio::test]
    async fn track_audit_tells_whether_a_record_was_written() {
        let ((), audited) = track_audit(async {}).await;
        assert!(!audited);
        let ((), audited) = track_audit(async {
            tokio::task::yield_now().await;
            mark_audited();
        })
        .await;
        assert!(audited);
        // Outside a scope, marking is a no-op.
        mark_audited();
    }

    #[test]
    fn hex_into_writes_the_low_digits_zero_padded() {
        let mut out = [0u8; 16];
        hex_into(&mut out, 0xab_cdef);
        assert_eq!(&out, b"0000000000abcdef");
        let mut short = [0u8; 4];
        hex_into(&mut short, 0x1234_5678);
        assert_eq!(&short, b"5678");
    }

    #[test]
    fn push_hex_writes_two_lowercase_digits_a_byte() {
        let mut out = String::from("x");
        push_hex(&mut out, &[0x00, 0x0f, 0xa5, 0xff]);
        assert_eq!(out, "x000fa5ff");
    }

    #[test]
    fn trail_ids_are_unique() {
        let ids = TrailIds::new();
        let id = ids.next();
        assert_eq!(id.len(), 32);
        assert_eq!(&id[..16], &format!("{:016x}", ids.prefix));
        assert_ne!(ids.next(), ids.next());
    }
}
