//! [`FaultyStore`]: a wrapper that injects failures and latency, for tests
//! of the layers above and crash tests. Deterministic: faults happen exactly
//! when the [`FaultController`] says so.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::backend::{BackingStore, Entry, StorageError, StoreFuture, WriteBatch};

/// Wraps a store and injects the faults its [`FaultController`] asks for.
///
/// With no faults set it behaves exactly like the inner store.
pub struct FaultyStore<S> {
    inner: S,
    control: FaultController,
}

impl<S: BackingStore> FaultyStore<S> {
    /// Wrap `inner`, with no faults set.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            control: FaultController::default(),
        }
    }

    /// A handle that sets faults and reads counters; clones share state.
    pub fn controller(&self) -> FaultController {
        self.control.clone()
    }

    /// The wrapped store (no faults injected on calls made through it).
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn unavailable(&self, reason: &str) -> StorageError {
        StorageError::Unavailable {
            store: self.describe(),
            reason: reason.to_owned(),
        }
    }
}

impl<S: BackingStore> fmt::Debug for FaultyStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStore")
            .field("inner", &self.inner)
            .field("control", &self.control)
            .finish()
    }
}

/// Shared handle to a [`FaultyStore`]'s faults and counters.
#[derive(Clone, Default)]
pub struct FaultController {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    unavailable: bool,
    reads_failing: bool,
    fail_next_commits: u64,
    fail_after_commit_next: u64,
    latency: Duration,
    calls: u64,
    commits: u64,
    injected: u64,
}

/// What to do with one commit.
enum CommitFault {
    None,
    Before,
    After,
}

impl FaultController {
    // State is plain counters and flags, consistent after any panic.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// While `true`, every commit fails with [`StorageError::Unavailable`]
    /// and applies nothing.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.lock().unavailable = unavailable;
    }

    /// The next `n` commits fail with [`StorageError::Unavailable`] and apply
    /// nothing (replaces any count still pending).
    pub fn fail_next_commits(&self, n: u64) {
        self.lock().fail_next_commits = n;
    }

    /// The next `n` commits are applied to the inner store (durably) and then
    /// fail with [`StorageError::Unavailable`]: a crash or lost
    /// acknowledgement after a durable commit.
    pub fn fail_after_commit_next(&self, n: u64) {
        self.lock().fail_after_commit_next = n;
    }

    /// While `true`, `get` and `scan` fail with [`StorageError::Unavailable`].
    pub fn set_reads_failing(&self, failing: bool) {
        self.lock().reads_failing = failing;
    }

    /// Sleep this long (tokio timer) before every operation; zero for none.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Clear every fault (counters are kept).
    pub fn clear(&self) {
        let mut s = self.lock();
        s.unavailable = false;
        s.reads_failing = false;
        s.fail_next_commits = 0;
        s.fail_after_commit_next = 0;
        s.latency = Duration::ZERO;
    }

    /// Commits applied to the inner store, including those then reported
    /// as failed by [`fail_after_commit_next`](Self::fail_after_commit_next).
    pub fn commits(&self) -> u64 {
        self.lock().commits
    }

    /// Calls of `get`, `scan` and `commit` made, faulted or not.
    pub fn ops(&self) -> u64 {
        self.lock().calls
    }

    /// Failures injected so far.
    pub fn injected_failures(&self) -> u64 {
        self.lock().injected
    }

    /// Count a call; its latency.
    fn begin(&self) -> Duration {
        let mut s = self.lock();
        s.calls += 1;
        s.latency
    }

    fn read_fault(&self) -> bool {
        let mut s = self.lock();
        if s.reads_failing {
            s.injected += 1;
        }
        s.reads_failing
    }

    fn commit_fault(&self) -> CommitFault {
        let mut s = self.lock();
        if s.unavailable {
            s.injected += 1;
            CommitFault::Before
        } else if s.fail_next_commits > 0 {
            s.fail_next_commits -= 1;
            s.injected += 1;
            CommitFault::Before
        } else if s.fail_after_commit_next > 0 {
            s.fail_after_commit_next -= 1;
            s.injected += 1;
            CommitFault::After
        } else {
            CommitFault::None
        }
    }

    fn committed(&self) {
        self.lock().commits += 1;
    }
}

impl fmt::Debug for FaultController {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.lock().fmt(f)
    }
}

async fn delay(latency: Duration) {
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

impl<S: BackingStore> BackingStore for FaultyStore<S> {
    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }

    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            delay(self.control.begin()).await;
            if self.control.read_fault() {
                return Err(self.unavailable("injected: reads failing"));
            }
            self.inner.get(key).await
        })
    }

    fn scan<'a>(
        &'a self,
        prefix: &'a [u8],
        start_after: Option<&'a [u8]>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Entry>> {
        Box::pin(async move {
            delay(self.control.begin()).await;
            if self.control.read_fault() {
                return Err(self.unavailable("injected: reads failing"));
            }
            self.inner.scan(prefix, start_after, limit).await
        })
    }

    fn commit<'a>(&'a self, batch: WriteBatch) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            delay(self.control.begin()).await;
            match self.control.commit_fault() {
                CommitFault::Before => Err(self.unavailable("injected: commit refused")),
                CommitFault::After => {
                    self.inner.commit(batch).await?;
                    self.control.committed();
                    Err(self
                        .unavailable("injected: commit applied but its acknowledgement was lost"))
                }
                CommitFault::None => {
                    self.inner.commit(batch).await?;
                    self.control.committed();
                    Ok(())
                }
            }
        })
    }

    /// `Err` while [`FaultController::set_unavailable`] holds, else the
    /// inner store's answer.
    fn writable(&self) -> Result<(), StorageError> {
        if self.control.lock().unavailable {
            return Err(self.unavailable("injected: unavailable"));
        }
        self.inner.writable()
    }
}
