//! Group commit: one task turns concurrent writes into few durable commits.
//!
//! Writers hand in a [`Mutation`] (records to put and delete, their effect
//! on the manifest digest, and a closure that publishes the new state in
//! memory) and wait. The task drains whatever has queued, appends the next
//! manifest, commits it all in one atomic, fsync'd batch (retrying
//! retryable store errors with exponential backoff up to a deadline), then
//! publishes every mutation in commit order and acknowledges. A write is
//! therefore acknowledged only once durable, and memory never shows a write
//! the store does not hold.
//!
//! When a commit fails its outcome is unknown (the store may have applied
//! it before failing). The task then refuses new writes until it has read
//! the stored manifest back: if the failed batch landed, its mutations are
//! published after all; if not, they are dropped. Writes prepared against
//! the old state are never committed on top of an unknown one.
//!
//! The loop runs on a thread of its own (`spike-writer`, driving the
//! runtime's handle), not as a runtime task, because one commit after
//! another is the write path's critical path. A task woken by a commit that
//! returned from the blocking pool waits in the runtime's global queue
//! behind the connections' tasks: under load that wait (~0.15 ms) was a
//! third of each commit. On its own thread the loop resumes at once, and a
//! synchronous store such as redb commits inline on it (the thread is
//! [dedicated](spike_storage::dedicate_current_thread) to store calls),
//! without a hop to the blocking pool. The thread runs under `SCHED_BATCH`
//! where it can ([`crate::sched`]): its wake-ups do not preempt the
//! request threads, and more writes gather per commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spike_storage::{BackingStore, StorageError, WriteBatch};
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::keyring::{EpochKeys, MANIFEST_KEY, xor_into};
use crate::nexus::Keys;
use crate::record::{self, Header, Kind, Manifest};
use crate::secrets::next_revision;
use crate::time::Timestamp;

/// Most mutations in one commit.
const MAX_GROUP: usize = 1024;
/// Most bytes in one commit (a single larger mutation still commits alone).
const MAX_GROUP_BYTES: usize = 16 * 1024 * 1024;
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Counters of the durable commits made so far (all unseals of one
/// [`crate::Nexus`]): how well writes are grouped and what they cost.
#[derive(Debug, Default)]
pub(crate) struct CommitCounters {
    commits: AtomicU64,
    writes: AtomicU64,
    nanos: AtomicU64,
}

/// What [`crate::Nexus::commit_stats`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Durable commits of the backing store.
    pub commits: u64,
    /// Writes acknowledged through them (a commit carries one or more).
    pub writes: u64,
    /// Time spent in the backing store's commits, fsync included.
    pub commit_time: Duration,
}

impl CommitCounters {
    pub(crate) fn snapshot(&self) -> CommitStats {
        CommitStats {
            commits: self.commits.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            commit_time: Duration::from_nanos(self.nanos.load(Ordering::Relaxed)),
        }
    }
}

/// Publishes a committed mutation in memory.
pub(crate) type Publish = Box<dyn FnOnce() + Send>;

/// One atomic change to the store: records to put and delete, their effect
/// on the manifest, and how to publish the change in memory.
pub(crate) struct Mutation {
    batch: WriteBatch,
    /// XOR of the digest shares of the records removed and added.
    digest_delta: [u8; 16],
    /// Records added minus records removed.
    count_delta: i64,
    publish: Option<Publish>,
    /// The writer's generation when the state this mutation builds on was
    /// read (see [`Writer::generation`]).
    generation: u64,
}

impl Mutation {
    /// A mutation building on state read after `generation` was taken.
    pub(crate) fn new(generation: u64) -> Self {
        Self {
            batch: WriteBatch::new(),
            digest_delta: [0; 16],
            count_delta: 0,
            publish: None,
            generation,
        }
    }

    /// Takes the record `header` at `storage_key` out of the manifest
    /// (`delete` also removes it from the store; a record overwritten in
    /// place needs no delete).
    pub(crate) fn retire(
        &mut self,
        keys: &EpochKeys,
        storage_key: &[u8],
        header: &Header,
        delete: bool,
    ) {
        xor_into(
            &mut self.digest_delta,
            &keys.digest_share(storage_key, header),
        );
        self.count_delta -= 1;
        if delete {
            self.batch.delete(storage_key.to_vec());
        }
    }

    /// Seals `plaintext` as the record `header` at `storage_key`.
    pub(crate) fn put(
        &mut self,
        keys: &EpochKeys,
        storage_key: Vec<u8>,
        header: Header,
        plaintext: &[u8],
    ) -> Result<(), Error> {
        let sealed = record::seal(&keys.cipher, header, &storage_key, plaintext)?;
        xor_into(
            &mut self.digest_delta,
            &keys.digest_share(&storage_key, &header),
        );
        self.count_delta += 1;
        self.batch.put(storage_key, sealed);
        Ok(())
    }

    /// Replaces a singleton record at a fixed storage key (the KV config,
    /// the cipher key): retires the copy stored as `previous` = (epoch,
    /// revision), if any, and seals `plaintext` under the current epoch with
    /// the next revision. Returns the new record's header.
    pub(crate) fn replace_singleton(
        &mut self,
        keys: &Keys,
        storage_key: &[u8],
        kind: Kind,
        previous: Option<(u32, u64)>,
        plaintext: &[u8],
    ) -> Result<Header, Error> {
        if let Some((epoch, revision)) = previous {
            let old_keys = keys.for_epoch(epoch).ok_or_else(|| Error::Tampered {
                what: format!("{kind:?} record sealed under an unknown epoch"),
            })?;
            let old = Header {
                kind,
                epoch,
                revision,
            };
            self.retire(old_keys, storage_key, &old, false);
        }
        let header = Header {
            kind,
            epoch: keys.current.epoch,
            revision: next_revision(previous.map_or(0, |(_, r)| r), Timestamp::now()),
        };
        self.put(&keys.current, storage_key.to_vec(), header, plaintext)?;
        Ok(header)
    }

    /// Puts a system record that the manifest does not cover.
    pub(crate) fn put_system(&mut self, storage_key: &[u8], value: Vec<u8>) {
        self.batch.put(storage_key.to_vec(), value);
    }

    /// Deletes a system record that the manifest does not cover.
    pub(crate) fn delete_system(&mut self, storage_key: &[u8]) {
        self.batch.delete(storage_key.to_vec());
    }

    /// What to run in memory once the mutation is durable.
    pub(crate) fn on_commit(mut self, publish: impl FnOnce() + Send + 'static) -> Self {
        self.publish = Some(Box::new(publish));
        self
    }

    /// Folds `other` into this mutation (one atomic commit).
    pub(crate) fn absorb(&mut self, other: Mutation) {
        self.generation = self.generation.min(other.generation);
        self.batch.extend(other.batch);
        xor_into(&mut self.digest_delta, &other.digest_delta);
        self.count_delta += other.count_delta;
        if let Some(p) = other.publish {
            let mine = self.publish.take();
            self.publish = Some(Box::new(move || {
                if let Some(m) = mine {
                    m();
                }
                p();
            }));
        }
    }
}

/// Seals and opens the manifest under the current keys.
pub(crate) trait ManifestCodec: Send + Sync {
    fn seal(&self, manifest: &Manifest) -> Result<Vec<u8>, Error>;
    fn open(&self, record: &[u8]) -> Result<Manifest, Error>;
}

struct Request {
    mutation: Mutation,
    done: oneshot::Sender<Result<(), Error>>,
}

/// Handle to the group-commit loop. Dropping every handle stops the loop
/// once it has drained its queue.
pub(crate) struct Writer {
    /// `None` only while dropping.
    tx: Option<mpsc::Sender<Request>>,
    finished: std::sync::Mutex<Option<oneshot::Receiver<()>>>,
    /// The loop's thread, and word from it once the loop has ended.
    #[allow(clippy::type_complexity)]
    exited: std::sync::Mutex<Option<(std::thread::ThreadId, std::sync::mpsc::Receiver<()>)>>,
    generation: Arc<AtomicU64>,
}

impl Writer {
    pub(crate) fn spawn(
        store: Arc<dyn BackingStore>,
        codec: Arc<dyn ManifestCodec>,
        manifest: Manifest,
        deadline: Duration,
        counters: Arc<CommitCounters>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_GROUP);
        let generation = Arc::new(AtomicU64::new(0));
        let task = Task {
            generation: Arc::clone(&generation),
            store,
            codec,
            manifest,
            deadline,
            unknown: None,
            counters,
        };
        let (finished_tx, finished) = oneshot::channel();
        let (exited_tx, exited) = std::sync::mpsc::channel();
        let run = async move {
            task.run(rx).await; // drops the task, and with it the store
            let _ = finished_tx.send(());
            let _ = exited_tx.send(());
        };
        // The loop gets a thread of its own (see the module docs); if the
        // OS refuses one, it runs as a task. The thread is handed the loop
        // once it exists, so that a refusal still has the loop to spawn.
        let (hand_over, handed) = std::sync::mpsc::channel();
        let handle = tokio::runtime::Handle::current();
        let spawned = std::thread::Builder::new()
            .name("spike-writer".to_owned())
            .spawn(move || {
                if let Ok(run) = handed.recv() {
                    spike_storage::dedicate_current_thread();
                    if let Err(reason) = crate::sched::batch_scheduling() {
                        tracing::debug!(%reason, "the group-commit thread keeps the default scheduling policy");
                    }
                    handle.block_on(run);
                }
            });
        let thread = match spawned {
            Ok(thread) => {
                let id = thread.thread().id();
                // The thread is waiting for it: the send cannot fail.
                let _ = hand_over.send(run);
                Some(id)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no thread for the group-commit loop; running it as a task");
                tokio::spawn(run);
                None
            }
        };
        Self {
            tx: Some(tx),
            finished: std::sync::Mutex::new(Some(finished)),
            exited: std::sync::Mutex::new(thread.map(|id| (id, exited))),
            generation,
        }
    }

    /// Read this *before* reading the in-memory state a mutation builds on,
    /// and give it to [`Mutation::new`]. It moves on whenever a commit whose
    /// outcome was unknown turns out to have landed and is published late:
    /// mutations built on the state before that are refused (retryable), so
    /// none is committed on top of a state it did not see.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Resolves when the loop has ended, after every handle is dropped.
    pub(crate) fn take_finished(&self) -> Option<oneshot::Receiver<()>> {
        self.finished.lock().ok().and_then(|mut t| t.take())
    }

    /// Commits `mutation` durably, publishes it, then returns.
    pub(crate) async fn commit(&self, mutation: Mutation) -> Result<(), Error> {
        let (done, wait) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or(Error::ShuttingDown)?;
        tx.send(Request { mutation, done })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        wait.await.map_err(|_| Error::ShuttingDown)?
    }
}

/// How long dropping the last handle waits for the loop to end.
const DROP_WAIT: Duration = Duration::from_secs(5);

impl Drop for Writer {
    /// Closes the queue and waits (briefly: no writer holds a handle any
    /// more, so the queue is all but empty) for the loop to end, so that
    /// the store is released when the Nexus is dropped and can be reopened
    /// at once.
    fn drop(&mut self) {
        drop(self.tx.take());
        let exited = self.exited.get_mut().ok().and_then(Option::take);
        if let Some((thread, exited)) = exited
            && std::thread::current().id() != thread
        {
            let _ = exited.recv_timeout(DROP_WAIT);
        }
    }
}

/// A commit whose outcome is unknown.
struct Unknown {
    attempted: Manifest,
    publishes: Vec<Publish>,
}

struct Task {
    generation: Arc<AtomicU64>,
    store: Arc<dyn BackingStore>,
    codec: Arc<dyn ManifestCodec>,
    manifest: Manifest,
    deadline: Duration,
    unknown: Option<Unknown>,
    counters: Arc<CommitCounters>,
}

fn unavailable(store: &dyn BackingStore, reason: impl Into<String>) -> Error {
    Error::Storage(StorageError::Unavailable {
        store: store.describe(),
        reason: reason.into(),
    })
}

/// Commits `batch`, retrying retryable errors with exponential backoff
/// until `deadline` has passed.
async fn commit_with_retry(
    store: &dyn BackingStore,
    batch: WriteBatch,
    deadline: Duration,
) -> Result<(), StorageError> {
    let started = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    loop {
        match store.commit(batch.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && started.elapsed() + backoff < deadline => {
                tracing::debug!(error = %e, ?backoff, "commit failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => return Err(e),
        }
    }
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        while let Some(first) = rx.recv().await {
            let mut bytes = first.mutation.batch.encoded_len();
            let mut group = vec![first];
            while group.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(r) => {
                        bytes += r.mutation.batch.encoded_len();
                        group.push(r);
                    }
                    Err(_) => break,
                }
            }
            if self.unknown.is_some() {
                let refuse = match self.reconcile().await {
                    Err(e) => Some(format!("an earlier write's outcome is still unknown: {e}")),
                    // Everything queued was prepared against memory without
                    // the write that just landed: committing it on top would
                    // reuse its version numbers and break the manifest.
                    Ok(true) => {
                        while let Ok(r) = rx.try_recv() {
                            group.push(r);
                        }
                        Some("an earlier write landed after all; try again".to_owned())
                    }
                    Ok(false) => None,
                };
                if let Some(reason) = refuse {
                    for r in group {
                        let _ = r.done.send(Err(unavailable(&*self.store, reason.clone())));
                    }
                    continue;
                }
            }
            self.commit_group(group).await;
        }
    }

    async fn commit_group(&mut self, group: Vec<Request>) {
        let now = self.generation.load(Ordering::SeqCst);
        let (group, stale): (Vec<_>, Vec<_>) = group
            .into_iter()
            .partition(|r| r.mutation.generation >= now);
        for r in stale {
            let _ = r.done.send(Err(unavailable(
                &*self.store,
                "an earlier write landed after all; try again",
            )));
        }
        if group.is_empty() {
            return;
        }
        let mut next = self.manifest;
        next.seq += 1;
        let mut batch = WriteBatch::new();
        let mut waiters = Vec::with_capacity(group.len());
        let mut publishes = Vec::with_capacity(group.len());
        for r in group {
            let m = r.mutation;
            xor_into(&mut next.digest, &m.digest_delta);
            next.count = next.count.wrapping_add_signed(m.count_delta);
            batch.extend(m.batch);
            if let Some(p) = m.publish {
                publishes.push(p);
            }
            waiters.push(r.done);
        }
        let sealed = match self.codec.seal(&next) {
            Ok(s) => s,
            Err(e) => {
                let msg = e.to_string();
                for w in waiters {
                    let _ = w.send(Err(unavailable(&*self.store, msg.clone())));
                }
                return;
            }
        };
        batch.put(MANIFEST_KEY, sealed);
        let started = Instant::now();
        let committed = commit_with_retry(&*self.store, batch, self.deadline).await;
        let c = &self.counters;
        c.commits.fetch_add(1, Ordering::Relaxed);
        c.nanos.fetch_add(
            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        match committed {
            Ok(()) => {
                c.writes.fetch_add(waiters.len() as u64, Ordering::Relaxed);
                self.manifest = next;
                for publish in publishes {
                    publish();
                }
                for w in waiters {
                    let _ = w.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "commit failed; its outcome is unknown until the store answers");
                let msg = e.to_string();
                self.unknown = Some(Unknown {
                    attempted: next,
                    publishes,
                });
                // Settle it now if the store answers reads, before the
                // failed writers release their path locks: a retry then
                // builds on what the store really holds.
                if let Err(e) = self.reconcile().await {
                    tracing::warn!(error = %e, "cannot settle the failed commit yet");
                }
                let mut first = Some(e);
                for w in waiters {
                    let err = match first.take() {
                        Some(e) => Error::Storage(e),
                        None => unavailable(&*self.store, msg.clone()),
                    };
                    let _ = w.send(Err(err));
                }
            }
        }
    }

    /// Settles an unknown outcome by reading the stored manifest back.
    /// `Ok(true)`: the failed commit had landed and is now published.
    async fn reconcile(&mut self) -> Result<bool, Error> {
        let Some(attempted) = self.unknown.as_ref().map(|u| u.attempted) else {
            return Ok(false);
        };
        let stored = match self.store.get(MANIFEST_KEY).await? {
            Some(bytes) => self.codec.open(&bytes)?,
            None => Manifest::default(),
        };
        if stored == self.manifest {
            tracing::info!("the failed commit did not land; continuing");
            self.unknown = None;
            Ok(false)
        } else if stored == attempted {
            tracing::info!("the failed commit landed after all; publishing it");
            if let Some(unknown) = self.unknown.take() {
                self.manifest = unknown.attempted;
                for publish in unknown.publishes {
                    publish();
                }
                // After publishing: a mutation stamped with the new
                // generation read memory that holds the late commit.
                self.generation.fetch_add(1, Ordering::SeqCst);
            }
            Ok(true)
        } else {
            Err(Error::Tampered {
                what: format!(
                    "stored manifest is at commit {}, expected {} or {}",
                    stored.seq, self.manifest.seq, attempted.seq
                ),
            })
        }
    }
}
