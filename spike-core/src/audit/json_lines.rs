//! The JSON-lines file sink and its two ways of delivering lines.
//!
//! [`Delivery::Synchronous`] writes each line with one `write(2)` before
//! the call is answered: what fail-closed auditing needs. Under load that
//! system call per request is one of the largest costs of a read, so
//! [`Delivery::Batched`] hands lines to a dedicated thread that writes
//! whatever has queued in one call, at most about once a millisecond. Lines
//! reach the OS within about a millisecond of being recorded; what a
//! process crash can lose is the queue of that moment (the OS keeps
//! everything already written, even if the process dies). Clean shutdown
//! ([`AuditSink::flush`], drop) writes everything.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{AuditEvent, AuditSink};

/// Most bytes queued before recording waits for the writer thread, so a
/// stalled disk slows callers down instead of growing memory.
const MAX_QUEUED_BYTES: usize = 8 * 1024 * 1024;

/// How long the writer thread lets lines gather after writing a batch.
/// Waking it for every line costs more than the write it saves (a thread
/// switch per request); after a quiet spell the next line wakes it at once.
const LINGER: Duration = Duration::from_millis(1);

/// When a recorded line reaches the OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Before [`AuditSink::record`] returns, and a failed write is that
    /// call's error. Use with [`super::AuditOptions::fail_closed`].
    #[default]
    Synchronous,
    /// Queued and written by a dedicated thread in batches. A write error
    /// is reported by the next `record` call.
    Batched,
}

/// Writes one JSON object per line to a file (appending) or stderr.
pub struct JsonLinesSink {
    shared: Arc<Shared>,
    delivery: Delivery,
    writer: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    out: Mutex<Box<dyn Write + Send>>,
    queue: Mutex<Queue>,
    /// Signals the writer thread: lines queued, or closing.
    wake: Condvar,
    /// Signals waiters: a batch was written.
    written: Condvar,
}

#[derive(Default)]
struct Queue {
    lines: Vec<u8>,
    /// Lines queued so far, and how many of them were written.
    queued: u64,
    done: u64,
    writer_idle: bool,
    closing: bool,
    /// The last background write error, reported once by `record`.
    error: Option<io::Error>,
}

impl JsonLinesSink {
    /// Appends to `path`, creating it with mode 0600.
    pub fn file(path: impl AsRef<Path>, delivery: Delivery) -> io::Result<Self> {
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file: File = options.open(path)?;
        Ok(Self::writer(Box::new(file), delivery))
    }

    /// Writes to stderr.
    pub fn stderr(delivery: Delivery) -> Self {
        Self::writer(Box::new(io::stderr()), delivery)
    }

    /// Writes to any writer (unbuffered writers keep one line one write).
    pub fn writer(out: Box<dyn Write + Send>, delivery: Delivery) -> Self {
        let shared = Arc::new(Shared {
            out: Mutex::new(out),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            written: Condvar::new(),
        });
        let mut sink = Self {
            shared,
            delivery: Delivery::Synchronous,
            writer: Mutex::new(None),
        };
        if delivery == Delivery::Batched {
            let shared = Arc::clone(&sink.shared);
            // Without a thread, lines are written synchronously instead.
            if let Ok(handle) = std::thread::Builder::new()
                .name("spike-audit".into())
                .spawn(move || shared.write_batches())
            {
                sink.delivery = Delivery::Batched;
                sink.writer = Mutex::new(Some(handle));
            }
        }
        sink
    }

    /// How this sink delivers lines.
    pub fn delivery(&self) -> Delivery {
        self.delivery
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent across a panic (byte buffers and
    // counters), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn write_batches(&self) {
        let mut spare = Vec::new();
        loop {
            let mut q = lock(&self.queue);
            while q.lines.is_empty() && !q.closing {
                q.writer_idle = true;
                q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            q.writer_idle = false;
            if q.lines.is_empty() {
                return;
            }
            std::mem::swap(&mut q.lines, &mut spare);
            let upto = q.queued;
            drop(q);
            let result = lock(&self.out).write_all(&spare);
            spare.clear();
            let mut q = lock(&self.queue);
            if let Err(e) = result {
                q.error = Some(e);
            }
            q.done = upto;
            let closing = q.closing;
            drop(q);
            self.written.notify_all();
            if !closing {
                std::thread::sleep(LINGER);
            }
        }
    }
}

impl fmt::Debug for JsonLinesSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesSink")
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

impl AuditSink for JsonLinesSink {
    fn record(&self, event: &AuditEvent) -> io::Result<()> {
        // A line is ~300 bytes: one allocation instead of a doubling series.
        let mut line = Vec::with_capacity(384);
        super::line::write_line(event, &mut line);
        if self.delivery == Delivery::Synchronous {
            return lock(&self.shared.out).write_all(&line);
        }
        let mut q = lock(&self.shared.queue);
        while q.lines.len() >= MAX_QUEUED_BYTES && !q.closing {
            q = self
                .shared
                .written
                .wait(q)
                .unwrap_or_else(|p| p.into_inner());
        }
        q.lines.extend_from_slice(&line);
        q.queued += 1;
        let wake = std::mem::take(&mut q.writer_idle);
        let error = q.error.take();
        drop(q);
        if wake {
            self.shared.wake.notify_one();
        }
        error.map_or(Ok(()), Err)
    }

    fn flush(&self) -> io::Result<()> {
        if self.delivery == Delivery::Batched {
            let mut q = lock(&self.shared.queue);
            let target = q.queued;
            while q.done < target {
                q = self
                    .shared
                    .written
                    .wait(q)
                    .unwrap_or_else(|p| p.into_inner());
            }
            if let Some(e) = q.error.take() {
                return Err(e);
            }
        }
        lock(&self.shared.out).flush()
    }
}

impl Drop for JsonLinesSink {
    fn drop(&mut self) {
        lock(&self.shared.queue).closing = true;
        self.shared.wake.notify_one();
        if let Some(handle) = lock(&self.writer).take() {
            // The thread writes what is queued, then ends.
            let _ = handle.join();
        }
        let _ = lock(&self.shared.out).flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Decision, TrailIds};

    fn event(n: u64) -> AuditEvent {
        AuditEvent {
            time: "t".into(),
            trail_id: TrailIds::new().next(),
            caller: "spiffe://spike.ist/app".into(),
            remote_addr: None,
            api: "embedded",
            action: "secret.get",
            path: Some(format!("a/{n}")),
            decision: Decision::Allow {
                by: "policy:p".into(),
            },
            status: "ok",
            duration_us: 3,
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn synchronous_lines_are_one_object_per_line_in_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let sink = JsonLinesSink::file(&path, Delivery::Synchronous).unwrap();
        sink.record(&event(1)).unwrap();
        sink.record(&event(2)).unwrap();
        // Written before `record` returned: no flush, no drop.
        let got = lines(&path);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0]["decision"]["result"], "allow");
        assert_eq!(got[0]["decision"]["by"], "policy:p");
        assert_eq!(got[0]["caller"], "spiffe://spike.ist/app");
        assert_eq!(got[1]["path"], "a/2");
        assert!(got[0].get("remote_addr").is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn batched_lines_from_many_threads_all_arrive_whole_and_in_order_per_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let sink = Arc::new(JsonLinesSink::file(&path, Delivery::Batched).unwrap());
        assert_eq!(sink.delivery(), Delivery::Batched);
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let sink = Arc::clone(&sink);
                std::thread::spawn(move || {
                    for i in 0..500 {
                        sink.record(&event(t * 1000 + i)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        sink.flush().unwrap();
        let got = lines(&path);
        assert_eq!(got.len(), 2000);
        for t in 0..4u64 {
            let seen: Vec<u64> = got
                .iter()
                .filter_map(|l| l["path"].as_str()?.strip_prefix("a/")?.parse().ok())
                .filter(|n| n / 1000 == t)
                .collect();
            let want: Vec<u64> = (0..500).map(|i| t * 1000 + i).collect();
            assert_eq!(seen, want);
        }
    }

    #[test]
    fn dropping_a_batched_sink_writes_everything_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let sink = JsonLinesSink::file(&path, Delivery::Batched).unwrap();
        for i in 0..100 {
            sink.record(&event(i)).unwrap();
        }
        drop(sink);
        assert_eq!(lines(&path).len(), 100);
    }

    /// A disk that is always full.
    struct Failing;

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_errors_reach_the_caller_in_both_modes() {
        let sync = JsonLinesSink::writer(Box::new(Failing), Delivery::Synchronous);
        assert!(sync.record(&event(1)).is_err());

        let batched = JsonLinesSink::writer(Box::new(Failing), Delivery::Batched);
        batched.record(&event(1)).unwrap();
        // The background failure surfaces on flush (or the next record).
        assert!(batched.flush().is_err());
    }
}
