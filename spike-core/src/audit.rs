//! The audit trail: one record per call, to a pluggable sink.
//!
//! Records name who did what to which path, whether it was allowed and by
//! which policy or role, and how it ended. They never hold secret values,
//! shares or keys. With [`AuditOptions::hmac_paths`] the path is replaced by
//! an HMAC under the audit subkey, so a trail can be correlated without
//! revealing paths.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, LineWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::identity::SpiffeId;

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
        /// `role:<name>` or `policy:<name>`.
        by: String,
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
    /// Unique id of this record.
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
    /// `ok` or the error class.
    pub status: String,
    /// How long the call took, in microseconds.
    pub duration_us: u64,
}

/// Where audit records go.
pub trait AuditSink: Send + Sync {
    /// Records one event. An error makes a fail-closed store refuse the call.
    fn record(&self, event: &AuditEvent) -> io::Result<()>;
}

/// How audit records are written.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditOptions {
    /// Replace paths with their HMAC under the audit subkey.
    pub hmac_paths: bool,
    /// When the sink fails, refuse the call instead of answering.
    pub fail_closed: bool,
}

/// Writes one JSON object per line to a file (appending) or stderr.
pub struct JsonLinesSink {
    out: Mutex<LineWriter<Box<dyn Write + Send>>>,
}

impl JsonLinesSink {
    /// Appends to `path`, creating it with mode 0600.
    pub fn file(path: impl AsRef<Path>) -> io::Result<Self> {
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file: File = options.open(path)?;
        Ok(Self::writer(Box::new(file)))
    }

    /// Writes to stderr.
    pub fn stderr() -> Self {
        Self::writer(Box::new(io::stderr()))
    }

    /// Writes to any writer.
    pub fn writer(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: Mutex::new(LineWriter::new(out)),
        }
    }
}

impl fmt::Debug for JsonLinesSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JsonLinesSink")
    }
}

impl AuditSink for JsonLinesSink {
    fn record(&self, event: &AuditEvent) -> io::Result<()> {
        let mut line = serde_json::to_vec(event)?;
        line.push(b'\n');
        let mut out = self
            .out
            .lock()
            .map_err(|_| io::Error::other("audit sink lock poisoned"))?;
        out.write_all(&line)
    }
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
        format!("{:016x}{n:016x}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_one_object_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let sink = JsonLinesSink::file(&path).unwrap();
        let event = AuditEvent {
            time: "t".into(),
            trail_id: TrailIds::new().next(),
            caller: "spiffe://spike.ist/app".into(),
            remote_addr: None,
            api: "embedded",
            action: "secret.get",
            path: Some("a/b".into()),
            decision: Decision::Allow {
                by: "policy:p".into(),
            },
            status: "ok".into(),
            duration_us: 3,
        };
        sink.record(&event).unwrap();
        sink.record(&event).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["decision"]["result"], "allow");
        assert_eq!(v["decision"]["by"], "policy:p");
        assert_eq!(v["caller"], "spiffe://spike.ist/app");
        assert!(v.get("remote_addr").is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn trail_ids_are_unique() {
        let ids = TrailIds::new();
        assert_ne!(ids.next(), ids.next());
    }
}
