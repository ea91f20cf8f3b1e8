//! [`RedbStore`]: the embedded default store, a redb file and its
//! write-ahead log.

mod overlay;
mod wal;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redb::backends::FileBackend;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError};

use crate::backend::{
    BackingStore, Entry, StorageError, StoreFuture, WriteBatch, WriteOp, scan_bounds,
};
use overlay::{Changes, Overlay, Overlays};
use wal::{Fit, Wal};

/// The one table holding the whole keyspace.
const TABLE: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("spike");
/// The log's bookkeeping: [`APPLIED`] is the `seq` of the last log frame
/// whose batch a durable commit holds.
const WAL_TABLE: TableDefinition<'static, &str, u64> = TableDefinition::new("spike.wal");
const APPLIED: &str = "applied";

/// redb's own limit on a value (and, plus 768 MiB, on a key/value pair).
const REDB_MAX_VALUE: usize = 3 * 1024 * 1024 * 1024;

/// redb page cache size: spike-core serves from its own memory, so redb's
/// cache would only duplicate the file (see [`RedbStore::open`]).
const REDB_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// A store in a redb file (`spike.redb`, say) and its write-ahead log
/// beside it (`spike.redb-wal` and `spike.redb-wal2`).
///
/// A commit is durable before it resolves: its batch is appended to the
/// log with one synchronous direct write (`O_DIRECT | O_DSYNC` on Linux;
/// elsewhere, or where the file system refuses direct I/O, a write and an
/// `fdatasync`), then merged into an in-memory overlay of the keys
/// written since the last checkpoint, which `get` and `scan` consult before
/// redb. A checkpoint (every thousand commits or so, or when a log file is
/// full) writes the overlay to redb in one durable commit, which makes the
/// log's frames redundant. A store opened after a crash reads them back
/// into the overlay, and its first commit writes them to redb before its
/// own frame: a crash under heavy writes costs the next open little more
/// than reading the log, and its first commit one checkpoint.
/// Checkpoints run on a thread of their own while commits go on into the
/// log's other file; commits wait for one only if that file fills first.
/// Dropping the store waits for a running checkpoint and makes a last one.
/// The log's format and recovery rules are documented in
/// `redb_store/wal.rs`. The three files are one store: keep them together,
/// and copy them only while no process has the store open.
///
/// redb is synchronous, so commits and scans called inside a tokio runtime
/// run on its blocking thread pool; called outside one, or on a thread
/// [dedicated](crate::dedicate_current_thread) to store calls, they run
/// inline. A point `get` runs inline: it takes microseconds on an open
/// database.
///
/// Only one process may have the store open; a second open fails with
/// [`StorageError::Locked`].
///
/// After an I/O error during a commit the store refuses further commits
/// (the log's and redb's state on disk are then unknown); such errors are
/// [`StorageError::Io`] and not retryable: drop and reopen the store, which
/// recovers from the log.
pub struct RedbStore {
    inner: Arc<Inner>,
    path: PathBuf,
    /// Log frames that opening the store replayed.
    replayed_frames: u64,
}

/// What the blocking-pool closures share.
struct Inner {
    db: Arc<Database>,
    /// The log; `None` once a commit has failed. Held for the whole of a
    /// commit: commits are applied in log order.
    wal: Mutex<Option<Wal>>,
    /// The checkpoint running in the background, if any: started, waited
    /// for and taken only while holding `wal`.
    running: Mutex<Option<std::thread::JoinHandle<Result<(), StorageError>>>>,
    /// Set when `wal` becomes `None`, or a background checkpoint fails:
    /// read without waiting for a commit in flight.
    failed: Arc<AtomicBool>,
    /// Changed by commits (holding `wal`) and by the background checkpoint
    /// once done; read by `get` and `scan`.
    overlay: Arc<RwLock<Overlays>>,
    name: Arc<str>,
    /// Counted by checkpoints, read by [`RedbStore::checkpoint_stats`].
    checkpoints: Arc<Mutex<CheckpointStats>>,
    /// Tests: the next commit fails as an I/O error would, before writing.
    #[cfg(test)]
    fail_next_commit: AtomicBool,
    /// Tests: a background checkpoint waits for this lock before it writes.
    #[cfg(test)]
    checkpoint_gate: Arc<Mutex<()>>,
    /// Tests: the next background checkpoint fails as an I/O error would,
    /// before writing.
    #[cfg(test)]
    fail_next_checkpoint: AtomicBool,
}

/// What the checkpoints of a [`RedbStore`] have done since it was opened.
/// A checkpoint's cost grows with the keys it writes (random places in
/// redb's B-tree). It runs in the background, but commits wait for it when
/// the log's other file fills first, and when a batch larger than a log
/// file commits straight to redb: `waited` is how an operator or a
/// benchmark sees that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Checkpoints finished.
    pub count: u64,
    /// Keys they wrote to redb, all together.
    pub keys: u64,
    /// Their time, all together.
    pub time: Duration,
    /// Time that commits waited for checkpoints, all together.
    pub waited: Duration,
}

/// How [`RedbStore::open_with`] sets a store up.
#[derive(Debug, Clone)]
pub struct RedbOptions {
    log_capacity: u64,
    buffered_log: bool,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            log_capacity: 16 * 1024 * 1024,
            buffered_log: false,
        }
    }
}

impl RedbOptions {
    /// The most bytes each of the write-ahead log's two files holds
    /// (default 16 MiB; at most 4 GiB). A batch larger than that commits
    /// to redb durably, without the log. The files grow to this size in
    /// steps and are reused; a crash costs a replay of at most twice this
    /// much.
    pub fn log_capacity(mut self, bytes: u64) -> Self {
        self.log_capacity = bytes;
        self
    }

    /// Write the log through the page cache and `fdatasync` it, instead of
    /// with direct I/O (`O_DIRECT | O_DSYNC`, Linux), which costs less CPU
    /// and latency per commit. The store falls back to this by itself where
    /// the file system refuses direct I/O; ask for it where direct I/O is
    /// accepted but known to misbehave. Either way the log's bytes are the
    /// same.
    pub fn buffered_log(mut self, buffered: bool) -> Self {
        self.buffered_log = buffered;
        self
    }
}

impl RedbStore {
    /// Open the store at `path` with the default [`RedbOptions`], creating
    /// it if missing, and recover what a crash left in its log.
    ///
    /// The parent directory must exist. New files (the database and its log
    /// at `path` + `-wal`) are created with mode `0600` on unix (the mode of
    /// an existing file is left alone) and their directory entries are
    /// fsync'd.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        Self::open_with(path, RedbOptions::default())
    }

    /// [`open`](Self::open) with `options`.
    pub fn open_with(path: impl AsRef<Path>, options: RedbOptions) -> Result<Self, StorageError> {
        let path = path.as_ref().to_path_buf();
        let name: Arc<str> = format!("redb:{}", path.display()).into();
        let io = |source: std::io::Error| io_error(&name, source);

        let (file, created) = open_private(&path).map_err(io)?;
        let backend = FileBackend::new(file).map_err(|e| map_err(&name, e))?;
        // spike-core keeps every record in memory and reads the store only
        // at unseal, so redb's page cache (1 GiB by default) would mostly
        // hold a second copy of the file: keep it small.
        let db = Database::builder()
            .set_cache_size(REDB_CACHE_BYTES)
            .create_with_backend(backend)
            .map_err(|e| map_err(&name, e))?;

        // Create the tables now, so that reads never meet a missing table.
        let mut txn = db.begin_write().map_err(|e| map_err(&name, e))?;
        txn.set_quick_repair(true);
        txn.open_table(TABLE).map_err(|e| map_err(&name, e))?;
        let applied = {
            let table = txn.open_table(WAL_TABLE).map_err(|e| map_err(&name, e))?;
            let applied = table.get(APPLIED).map_err(|e| map_err(&name, e))?;
            applied.map_or(0, |seq| seq.value())
        };
        txn.commit().map_err(|e| map_err(&name, e))?;

        let wal_paths = [log_path(&path, "-wal"), log_path(&path, "-wal2")];
        let (mut first, first_created) = open_private(&wal_paths[0]).map_err(io)?;
        let (mut second, second_created) = open_private(&wal_paths[1]).map_err(io)?;

        // A new file's directory entry must be durable too, or a crash can
        // lose the whole file with every commit in it.
        if created || first_created || second_created {
            sync_parent_dir(&path).map_err(io)?;
        }

        // What the log holds beyond redb's last durable commit goes into
        // memory now, and into redb with the first commit (or the close),
        // so that a crash under heavy writes does not make the next start
        // wait for thousands of B-tree updates on cores that the start
        // needs. The log is written again from offset 0 of its first file
        // once redb holds them.
        let batches = wal::read_frames_after([&mut first, &mut second], applied).map_err(io)?;
        let replayed_frames = batches.len() as u64;
        let next_seq = applied + replayed_frames + 1;
        let mut overlay = Overlay::new();
        for op in batches.into_iter().flat_map(WriteBatch::into_ops) {
            match op {
                WriteOp::Put { key, value } => overlay.insert(key, Some(value)),
                WriteOp::Delete { key } => overlay.insert(key, None),
            };
        }
        let replayed = (replayed_frames > 0).then(|| Arc::new(overlay));
        let buffered = options.buffered_log;
        let files = [
            wal::LogFile::open(first, &wal_paths[0], buffered).map_err(io)?,
            wal::LogFile::open(second, &wal_paths[1], buffered).map_err(io)?,
        ];
        let wal =
            Wal::new(files, options.log_capacity, next_seq, replayed_frames > 0).map_err(io)?;

        let inner = Arc::new(Inner {
            db: Arc::new(db),
            wal: Mutex::new(Some(wal)),
            running: Mutex::new(None),
            failed: Arc::new(AtomicBool::new(false)),
            overlay: Arc::new(RwLock::new(Overlays {
                active: Overlay::new(),
                frozen: replayed,
            })),
            name,
            checkpoints: Arc::new(Mutex::new(CheckpointStats::default())),
            #[cfg(test)]
            fail_next_commit: AtomicBool::new(false),
            #[cfg(test)]
            checkpoint_gate: Arc::new(Mutex::new(())),
            #[cfg(test)]
            fail_next_checkpoint: AtomicBool::new(false),
        });
        Ok(Self {
            inner,
            path,
            replayed_frames,
        })
    }

    /// How many write-ahead log frames (group commits) opening the store
    /// replayed: those after its last checkpoint, which a crash left in the
    /// log alone. They are read into memory during the open, and written
    /// to redb, in one durable commit, by the first commit after it (which
    /// waits that long) or by closing the store.
    pub fn replayed_frames(&self) -> u64 {
        self.replayed_frames
    }

    /// The path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What checkpoints have done since the store was opened.
    pub fn checkpoint_stats(&self) -> CheckpointStats {
        *self
            .inner
            .checkpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the checkpoint running in the background, if any, and
    /// returns its outcome. Benchmarks and tests use it to measure or copy
    /// a store whose files are at rest.
    pub fn wait_for_checkpoint(&self) -> Result<(), StorageError> {
        let _wal = self.inner.wal.lock().map_err(|_| self.inner.failed())?;
        self.inner.wait_for_checkpoint()
    }

    /// Run `f` on the blocking pool when inside a tokio runtime, else (or
    /// on a [dedicated](crate::dedicate_current_thread) thread) inline.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StorageError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        // Inside a runtime the work goes to its blocking pool (so that the
        // caller's other futures, a scan's consumer say, run meanwhile),
        // unless this thread is dedicated to store calls.
        let runtime = if crate::thread_is_dedicated() {
            None
        } else {
            tokio::runtime::Handle::try_current().ok()
        };
        match runtime {
            Some(handle) => handle
                .spawn_blocking(move || f(&inner))
                .await
                .map_err(|join| StorageError::Io {
                    store: self.inner.name.to_string(),
                    source: Box::new(join),
                })?,
            None => f(&inner),
        }
    }
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl BackingStore for RedbStore {
    fn describe(&self) -> String {
        self.inner.name.to_string()
    }

    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move { self.inner.get(key) })
    }

    fn scan<'a>(
        &'a self,
        prefix: &'a [u8],
        start_after: Option<&'a [u8]>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Entry>> {
        Box::pin(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let prefix = prefix.to_vec();
            let start_after = start_after.map(<[u8]>::to_vec);
            self.blocking(move |inner| inner.scan(&prefix, start_after.as_deref(), limit))
                .await
        })
    }

    fn commit<'a>(&'a self, batch: WriteBatch) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(());
            }
            self.blocking(move |inner| inner.commit(batch)).await
        })
    }

    /// `Err` once a commit has failed: the store refuses commits until it
    /// is reopened (see [`RedbStore`]).
    fn writable(&self) -> Result<(), StorageError> {
        if self.inner.failed.load(Ordering::Relaxed) || self.inner.wal.is_poisoned() {
            return Err(self.inner.failed());
        }
        Ok(())
    }
}

#[cfg(unix)]
fn sync_parent_dir(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)?.sync_all()
}

#[cfg(not(unix))]
fn sync_parent_dir(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

impl Inner {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        {
            let overlays = self.read_overlay()?;
            let frozen = overlays.frozen.as_deref();
            if let Some(value) = overlays
                .active
                .get(key)
                .or_else(|| frozen.and_then(|f| f.get(key)))
            {
                return Ok(value.clone());
            }
        }
        // A checkpoint that finishes meanwhile drops its overlay only once
        // redb holds it.
        let name = &*self.name;
        let txn = self.db.begin_read().map_err(|e| map_err(name, e))?;
        let table = match txn.open_table(TABLE) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(map_err(name, e)),
        };
        let value = table.get(key).map_err(|e| map_err(name, e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// redb's entries merged with the overlays', which win (a `None` hides
    /// the key). The overlays stay read-locked throughout, so a checkpoint
    /// cannot drop the one it wrote halfway: what redb's snapshot lacks,
    /// the overlays hold.
    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let Some(bounds) = scan_bounds(prefix, start_after) else {
            return Ok(Vec::new());
        };
        let name = &*self.name;
        let overlays = self.read_overlay()?;
        let mut changed = Changes::new(&overlays, &bounds).peekable();
        let txn = self.db.begin_read().map_err(|e| map_err(name, e))?;
        let table = match txn.open_table(TABLE) {
            Ok(table) => Some(table),
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(map_err(name, e)),
        };
        let mut stored = match &table {
            Some(table) => Some(
                table
                    .range::<&[u8]>(bounds.range())
                    .map_err(|e| map_err(name, e))?,
            ),
            None => None,
        };
        let mut next_stored = || -> Result<Option<Entry>, StorageError> {
            let Some(item) = stored.as_mut().and_then(Iterator::next) else {
                return Ok(None);
            };
            let (key, value) = item.map_err(|e| map_err(name, e))?;
            Ok(Some(Entry {
                key: key.value().to_vec(),
                value: value.value().to_vec(),
            }))
        };
        // `limit` may be huge ("everything"): do not reserve it up front.
        let mut page = Vec::with_capacity(limit.min(16 * 1024));
        let mut held = next_stored()?;
        while page.len() < limit {
            let from_overlay = match (&held, changed.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(entry), Some((key, _))) => key.as_slice() <= entry.key.as_slice(),
            };
            if from_overlay {
                let Some((key, value)) = changed.next() else {
                    break;
                };
                if held.as_ref().is_some_and(|e| &e.key == key) {
                    held = next_stored()?; // overwritten or deleted
                }
                if let Some(value) = value {
                    page.push(Entry {
                        key: key.clone(),
                        value: value.clone(),
                    });
                }
            } else if let Some(entry) = held.take() {
                page.push(entry);
                held = next_stored()?;
            }
        }
        Ok(page)
    }

    fn read_overlay(&self) -> Result<std::sync::RwLockReadGuard<'_, Overlays>, StorageError> {
        self.overlay.read().map_err(|_| self.failed())
    }

    fn write_overlay(&self) -> Result<std::sync::RwLockWriteGuard<'_, Overlays>, StorageError> {
        self.overlay.write().map_err(|_| self.failed())
    }

    /// Make `batch` durable and visible; see [`RedbStore`].
    fn commit(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut wal = self.wal.lock().map_err(|_| self.failed())?;
        let Some(log) = wal.as_mut() else {
            return Err(self.failed());
        };
        // A background checkpoint failed: redb's state on disk is unknown.
        if self.failed.load(Ordering::Relaxed) {
            *wal = None;
            return Err(self.failed());
        }
        let result = self.commit_through_log(log, batch);
        if result.is_err() {
            // The log and redb may now disagree with what is on disk.
            *wal = None;
            self.failed.store(true, Ordering::Relaxed);
        }
        result
    }

    fn commit_through_log(&self, log: &mut Wal, batch: WriteBatch) -> Result<(), StorageError> {
        #[cfg(test)]
        if self.fail_next_commit.swap(false, Ordering::Relaxed) {
            return Err(io_error(&self.name, std::io::Error::other("injected")));
        }
        if log.holds_replayed() {
            // Frames from before the open, which redb does not hold yet,
            // are where this one would go.
            let started = Instant::now();
            let applied = self.apply_replayed(log);
            self.count_commit_wait(started);
            applied?;
        }
        if log.fits(&batch) == Fit::AfterCheckpoint {
            self.start_checkpoint(log)?;
        }
        if log.fits(&batch) == Fit::Now {
            log.append(&batch).map_err(|e| io_error(&self.name, e))?;
            // The batch's keys and values move into the overlay, uncopied.
            let mut overlays = self.write_overlay()?;
            for op in batch.into_ops() {
                match op {
                    WriteOp::Put { key, value } => overlays.active.insert(key, Some(value)),
                    WriteOp::Delete { key } => overlays.active.insert(key, None),
                };
            }
            drop(overlays);
            // Due by its count of commits, a checkpoint waits for the one
            // before to finish, rather than the commit waiting for it; a
            // full file cannot wait (above).
            if log.checkpoint_due() && !self.checkpoint_running()? {
                self.start_checkpoint(log)?;
            }
        } else {
            // Larger than a log file: straight to redb, in the same durable
            // commit as the overlay (which it follows).
            let started = Instant::now();
            let waited = self.wait_for_checkpoint();
            let seq = log.assign_seq();
            let checkpointed = waited.and_then(|()| self.checkpoint_now(log, batch.ops(), seq));
            self.count_commit_wait(started);
            checkpointed?;
        }
        Ok(())
    }

    /// Begins a checkpoint of every frame so far, in the background: the
    /// active overlay is frozen for it, and frames go on into the log's
    /// other file. Waits first for the checkpoint before, which covers
    /// that file's frames. The caller holds `wal`.
    fn start_checkpoint(&self, log: &mut Wal) -> Result<(), StorageError> {
        let started = Instant::now();
        let waited = self.wait_for_checkpoint();
        self.count_commit_wait(started);
        waited?;
        let through = log.last_seq();
        let frozen = {
            let mut overlays = self.write_overlay()?;
            let frozen = Arc::new(std::mem::take(&mut overlays.active));
            overlays.frozen = Some(Arc::clone(&frozen));
            frozen
        };
        log.switch();
        let job = Checkpoint {
            db: Arc::clone(&self.db),
            name: Arc::clone(&self.name),
            overlay: Arc::clone(&self.overlay),
            failed: Arc::clone(&self.failed),
            stats: Arc::clone(&self.checkpoints),
            #[cfg(test)]
            gate: Arc::clone(&self.checkpoint_gate),
            #[cfg(test)]
            fail: self.fail_next_checkpoint.swap(false, Ordering::Relaxed),
        };
        let spawned = std::thread::Builder::new()
            .name("spike-checkpoint".to_owned())
            .spawn(move || job.run(&frozen, through));
        let handle = spawned.map_err(|e| io_error(&self.name, e))?;
        *self.running.lock().map_err(|_| self.failed())? = Some(handle);
        Ok(())
    }

    /// Writes what opening the store replayed from the log (the frozen
    /// overlay; no checkpoint has run since) to redb in one durable commit
    /// that holds every frame so far, and lets the log be written again.
    /// The caller holds `wal`.
    fn apply_replayed(&self, log: &mut Wal) -> Result<(), StorageError> {
        let started = Instant::now();
        let frozen = self.read_overlay()?.frozen.clone();
        if let Some(frozen) = frozen {
            let ops = frozen
                .iter()
                .map(|(key, value)| (key.as_slice(), value.as_deref()));
            apply(&self.db, &self.name, ops, log.last_seq())?;
            self.write_overlay()?.frozen = None;
            record_checkpoint(&self.checkpoints, frozen.len() as u64, started);
        }
        log.replayed_applied();
        Ok(())
    }

    /// Whether a checkpoint is still running in the background.
    fn checkpoint_running(&self) -> Result<bool, StorageError> {
        let running = self.running.lock().map_err(|_| self.failed())?;
        Ok(running.as_ref().is_some_and(|handle| !handle.is_finished()))
    }

    /// Waits for the checkpoint running in the background, if any; its
    /// error, if it failed, after which the store refuses commits (see
    /// [`Inner::commit`]). The caller holds `wal` (or, dropping the store,
    /// has it to itself).
    fn wait_for_checkpoint(&self) -> Result<(), StorageError> {
        let running = self.running.lock().map_err(|_| self.failed())?.take();
        let Some(handle) = running else {
            return Ok(());
        };
        let outcome = handle.join().unwrap_or_else(|_| Err(self.failed()));
        if outcome.is_err() {
            // Set by the checkpoint on its own errors already, not if it
            // panicked.
            self.failed.store(true, Ordering::Relaxed);
        }
        outcome
    }

    /// Counts the time since `started` as time a commit waited for
    /// checkpoints.
    fn count_commit_wait(&self, started: Instant) {
        let mut stats = self
            .checkpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        stats.waited += started.elapsed();
    }

    /// Writes the overlay, then `more`, to redb in one durable commit that
    /// holds every log frame up to `through`; empties the overlay and
    /// starts the log's current file again. No checkpoint runs (the caller
    /// waited for it and holds `wal`, so no commit changes the overlay
    /// meanwhile), and readers find each entry in the overlay or in redb.
    fn checkpoint_now(
        &self,
        log: &mut Wal,
        more: &[WriteOp],
        through: u64,
    ) -> Result<(), StorageError> {
        let started = Instant::now();
        let keys = {
            let overlays = self.read_overlay()?;
            let ops = overlays
                .active
                .iter()
                .map(|(key, value)| (key.as_slice(), value.as_deref()))
                .chain(more.iter().map(op_parts));
            apply(&self.db, &self.name, ops, through)?;
            overlays.active.len() as u64
        };
        self.write_overlay()?.active.clear();
        log.restart();
        record_checkpoint(&self.checkpoints, keys, started);
        Ok(())
    }

    fn failed(&self) -> StorageError {
        io_error(
            &self.name,
            std::io::Error::other("an earlier commit failed; reopen the store"),
        )
    }
}

/// A checkpoint run in the background, and what it needs of the store.
struct Checkpoint {
    db: Arc<Database>,
    name: Arc<str>,
    overlay: Arc<RwLock<Overlays>>,
    failed: Arc<AtomicBool>,
    stats: Arc<Mutex<CheckpointStats>>,
    #[cfg(test)]
    gate: Arc<Mutex<()>>,
    #[cfg(test)]
    fail: bool,
}

impl Checkpoint {
    /// Writes `frozen` to redb in one durable commit that holds every log
    /// frame up to `through`, then drops it from the overlays. On failure
    /// the overlay stays (reads still find it) and the store refuses
    /// commits from then on.
    fn run(self, frozen: &Overlay, through: u64) -> Result<(), StorageError> {
        #[cfg(test)]
        drop(self.gate.lock());
        let started = Instant::now();
        let ops = frozen
            .iter()
            .map(|(key, value)| (key.as_slice(), value.as_deref()));
        #[cfg(test)]
        let applied = if self.fail {
            Err(io_error(&self.name, std::io::Error::other("injected")))
        } else {
            apply(&self.db, &self.name, ops, through)
        };
        #[cfg(not(test))]
        let applied = apply(&self.db, &self.name, ops, through);
        if let Err(e) = applied {
            self.failed.store(true, Ordering::Relaxed);
            return Err(e);
        }
        match self.overlay.write() {
            Ok(mut overlays) => overlays.frozen = None,
            Err(_) => self.failed.store(true, Ordering::Relaxed),
        }
        record_checkpoint(&self.stats, frozen.len() as u64, started);
        Ok(())
    }
}

/// Counts a checkpoint of `keys` keys, begun at `started`, in `stats`.
fn record_checkpoint(stats: &Mutex<CheckpointStats>, keys: u64, started: Instant) {
    let mut stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
    stats.count += 1;
    stats.keys += keys;
    stats.time += started.elapsed();
}

impl Drop for Inner {
    /// Waits for a running checkpoint, then checkpoints what is left, so
    /// that the next open has nothing to replay and the database file alone
    /// holds every commit.
    fn drop(&mut self) {
        // Joined even after a failure, so that the database is closed (and
        // the store can be opened again) once the drop returns.
        let checkpointed = self.wait_for_checkpoint();
        if let Ok(mut wal) = self.wal.lock()
            && let Some(log) = wal.as_mut()
            && checkpointed.is_ok()
        {
            // Best effort: on failure the next open replays the log.
            if log.holds_replayed() {
                let _ = self.apply_replayed(log);
            } else if log.has_frames() {
                let through = log.last_seq();
                let _ = self.checkpoint_now(log, &[], through);
            }
        }
    }
}

/// The path of one of the log's files: the database's path and `suffix`.
fn log_path(path: &Path, suffix: &str) -> PathBuf {
    let mut log = path.as_os_str().to_owned();
    log.push(suffix);
    PathBuf::from(log)
}

/// An op as (key, value to put or `None` to delete).
fn op_parts(op: &WriteOp) -> (&[u8], Option<&[u8]>) {
    match op {
        WriteOp::Put { key, value } => (key, Some(value)),
        WriteOp::Delete { key } => (key, None),
    }
}

/// Apply `ops` (a value to put, or `None` to delete) in one durable redb
/// transaction that records that redb now holds every log frame up to
/// `durable_through`.
fn apply<'a>(
    db: &Database,
    name: &str,
    ops: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    durable_through: u64,
) -> Result<(), StorageError> {
    let mut txn = db.begin_write().map_err(|e| map_err(name, e))?;
    // The default, stated so that it stays the contract.
    txn.set_durability(Durability::Immediate)
        .map_err(|e| map_err(name, e))?;
    // Save the allocator state with the commit (and commit in two phases),
    // so that opening after a crash needs no walk of the whole file to
    // rebuild it (~0.5 s at 1M secrets). Checkpoints are rare: the extra
    // cost is spread over a thousand commits.
    txn.set_quick_repair(true);
    {
        let mut table = txn.open_table(TABLE).map_err(|e| map_err(name, e))?;
        for (key, value) in ops {
            match value {
                Some(value) => {
                    table.insert(key, value).map_err(|e| map_err(name, e))?;
                }
                None => {
                    table.remove(key).map_err(|e| map_err(name, e))?;
                }
            }
        }
        let mut wal = txn.open_table(WAL_TABLE).map_err(|e| map_err(name, e))?;
        wal.insert(APPLIED, durable_through)
            .map_err(|e| map_err(name, e))?;
    }
    // An error before this point drops `txn`, which aborts it: nothing applied.
    txn.commit().map_err(|e| map_err(name, e))
}

/// Open `path` for reading and writing, creating it with mode `0600` on
/// unix if missing; says whether it was created.
fn open_private(path: &Path) -> std::io::Result<(File, bool)> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.clone().create_new(true).open(path) {
        Ok(file) => Ok((file, true)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((options.open(path)?, false)),
        Err(e) => Err(e),
    }
}

fn io_error(name: &str, source: std::io::Error) -> StorageError {
    StorageError::Io {
        store: name.to_owned(),
        source: Box::new(source),
    }
}

/// Map any redb error to a [`StorageError`] naming the store.
fn map_err(name: &str, err: impl Into<redb::Error>) -> StorageError {
    let store = name.to_owned();
    match err.into() {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            StorageError::Locked { store }
        }
        redb::Error::Corrupted(reason) => StorageError::Corrupt { store, reason },
        redb::Error::ValueTooLarge(len) => StorageError::TooLarge {
            what: "value",
            len,
            max: REDB_MAX_VALUE,
        },
        redb::Error::Io(source) => StorageError::Io {
            store,
            source: Box::new(source),
        },
        other => StorageError::Io {
            store,
            source: Box::new(other),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn put(key: &[u8], value: &[u8]) -> WriteBatch {
        let mut batch = WriteBatch::new();
        batch.put(key.to_vec(), value.to_vec());
        batch
    }

    /// A background checkpoint that fails leaves what it froze readable,
    /// makes the store refuse commits, and loses nothing: a reopened store
    /// replays the log.
    #[tokio::test]
    async fn a_failed_background_checkpoint_makes_the_store_unwritable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let store =
                RedbStore::open_with(&path, RedbOptions::default().log_capacity(4096)).unwrap();
            store
                .inner
                .fail_next_checkpoint
                .store(true, Ordering::Relaxed);
            store.commit(put(b"a", &[1; 1500])).await.unwrap();
            store.commit(put(b"b", &[1; 1500])).await.unwrap();
            // Does not fit: the failing checkpoint of a and b begins.
            store.commit(put(b"c", &[1; 1500])).await.unwrap();
            assert!(store.wait_for_checkpoint().is_err());
            assert!(store.writable().is_err());
            for key in [b"a", b"b", b"c"] {
                assert_eq!(store.get(key).await.unwrap(), Some(vec![1; 1500]));
            }
            // Later commits are refused, and change nothing.
            assert!(store.commit(put(b"d", &[1; 1500])).await.is_err());
            assert_eq!(store.get(b"d").await.unwrap(), None);
        }
        let store = RedbStore::open(&path).unwrap();
        store.writable().unwrap();
        for key in [b"a", b"b", b"c"] {
            assert_eq!(
                store.get(key).await.unwrap(),
                Some(vec![1; 1500]),
                "{key:?}"
            );
        }
        assert_eq!(store.get(b"d").await.unwrap(), None);
    }

    /// Commits go on while a checkpoint runs even when the next one is due
    /// by its count of commits: that one waits for the running one instead,
    /// and starts with the first commit after it has finished.
    #[tokio::test]
    // The guard held across awaits is the gate that holds the checkpoint
    // thread; no task of the runtime takes it.
    #[allow(clippy::await_holding_lock)]
    async fn a_checkpoint_due_by_count_does_not_hold_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path().join("s.redb")).unwrap();
        let gate = Arc::clone(&store.inner.checkpoint_gate);
        let held = gate.lock().unwrap();
        let commits = wal::CHECKPOINT_COMMITS;
        for i in 0..commits {
            store.commit(put(&i.to_be_bytes(), b"v")).await.unwrap();
        }
        assert!(store.inner.read_overlay().unwrap().frozen.is_some());
        let more = tokio::time::timeout(Duration::from_secs(30), async {
            for i in commits..2 * commits + 10 {
                store.commit(put(&i.to_be_bytes(), b"v")).await.unwrap();
            }
        })
        .await;
        drop(held);
        assert!(more.is_ok(), "commits waited for the held checkpoint");
        store.wait_for_checkpoint().unwrap();
        assert_eq!(store.checkpoint_stats().count, 1);
        // The deferred checkpoint starts with the next commit.
        store.commit(put(b"last", b"v")).await.unwrap();
        store.wait_for_checkpoint().unwrap();
        let stats = store.checkpoint_stats();
        assert_eq!((stats.count, stats.keys), (2, u64::from(2 * commits) + 11));
    }

    /// `waited` counts the time commits waited for a checkpoint (here, a
    /// batch that fits neither log file until the held checkpoint ends),
    /// not the time a caller of `wait_for_checkpoint` waited.
    #[tokio::test]
    async fn only_the_commits_wait_for_checkpoints_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open_with(
            dir.path().join("s.redb"),
            RedbOptions::default().log_capacity(4096),
        )
        .unwrap();
        // Holds the gate for `HOLD` from when it says so.
        const HOLD: Duration = Duration::from_millis(300);
        let hold_gate = |store: &RedbStore| {
            let gate = Arc::clone(&store.inner.checkpoint_gate);
            let (locked, is_locked) = std::sync::mpsc::channel();
            let holder = std::thread::spawn(move || {
                let _held = gate.lock().unwrap();
                locked.send(()).unwrap();
                std::thread::sleep(HOLD);
            });
            is_locked.recv().unwrap();
            holder
        };

        let holder = hold_gate(&store);
        let started = Instant::now();
        for key in [b"a", b"b", b"c", b"d"] {
            // The third starts a checkpoint (held); the third and the
            // fourth go to the second file.
            store.commit(put(key, &[1; 1500])).await.unwrap();
        }
        // Fits neither file: waits for the held checkpoint.
        store.commit(put(b"e", &[1; 1500])).await.unwrap();
        let held_for = HOLD.saturating_sub(started.elapsed());
        holder.join().unwrap();
        let waited = store.checkpoint_stats().waited;
        assert!(waited >= held_for, "{waited:?} < {held_for:?}");

        // A checkpoint held again; a caller waits for it, and no commit does.
        store.wait_for_checkpoint().unwrap();
        let holder = hold_gate(&store);
        for key in [b"f", b"g"] {
            store.commit(put(key, &[1; 1500])).await.unwrap();
        }
        store.wait_for_checkpoint().unwrap();
        holder.join().unwrap();
        let more = store.checkpoint_stats().waited - waited;
        assert!(more < HOLD / 4, "the caller's wait was counted: {more:?}");
    }

    /// While a checkpoint is held before it writes: reads merge the frozen
    /// overlay, the active one and redb; a crash at that instant recovers
    /// every commit from the log's two files; and once it has run, redb
    /// holds what it froze.
    #[tokio::test]
    // The guard held across awaits is the gate that holds the checkpoint
    // thread; no task of the runtime takes it.
    #[allow(clippy::await_holding_lock)]
    async fn reads_and_recovery_while_a_checkpoint_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = RedbStore::open_with(&path, RedbOptions::default().log_capacity(4096)).unwrap();
        let gate = Arc::clone(&store.inner.checkpoint_gate);
        let held = gate.lock().unwrap();
        // Two frames of ~1.5 KB fill the first 4 KiB file; the third does
        // not fit, so a checkpoint of the first two begins (and waits at the
        // gate) and frames go on in the second file.
        store.commit(put(b"a", &[1; 1500])).await.unwrap();
        let mut batch = put(b"b", &[1; 1500]);
        batch.put(b"d".to_vec(), vec![4; 10]); // only in the frozen overlay
        store.commit(batch).await.unwrap();
        store.commit(put(b"a", &[2; 1500])).await.unwrap();
        let mut batch = put(b"c", &[3; 10]);
        batch.delete(b"b".to_vec());
        store.commit(batch).await.unwrap();
        assert!(store.inner.read_overlay().unwrap().frozen.is_some());

        let want = BTreeMap::from([
            (b"a".to_vec(), vec![2; 1500]),
            (b"c".to_vec(), vec![3; 10]),
            (b"d".to_vec(), vec![4; 10]),
        ]);
        let check = |store: &RedbStore, when: &'static str| {
            let store_inner = Arc::clone(&store.inner);
            let want = want.clone();
            async move {
                let all = store_inner.scan(b"", None, usize::MAX).unwrap();
                let got: BTreeMap<_, _> = all.into_iter().map(|e| (e.key, e.value)).collect();
                assert_eq!(got, want, "scan {when}");
                for key in [&b"a"[..], b"b", b"c", b"d"] {
                    assert_eq!(
                        store_inner.get(key).unwrap().as_ref(),
                        want.get(key),
                        "get {key:?} {when}"
                    );
                }
            }
        };
        check(&store, "during the checkpoint").await;

        // A crash now: redb holds none of it (the checkpoint has not
        // written), the first log file frames 1-2, the second 3-4.
        let crashed = dir.path().join("crashed.redb");
        for suffix in ["", "-wal", "-wal2"] {
            std::fs::copy(log_path(&path, suffix), log_path(&crashed, suffix)).unwrap();
        }

        drop(held);
        store.wait_for_checkpoint().unwrap();
        assert!(store.inner.read_overlay().unwrap().frozen.is_none());
        let stats = store.checkpoint_stats();
        assert_eq!((stats.count, stats.keys), (1, 3), "{stats:?}");
        check(&store, "after the checkpoint").await;

        let recovered = RedbStore::open(&crashed).unwrap();
        assert_eq!(
            recovered.replayed_frames(),
            4,
            "frames 1-4, from both files"
        );
        check(&recovered, "after recovery").await;
        drop(recovered);
        // Closing the recovered store wrote them to redb.
        assert_eq!(RedbStore::open(&crashed).unwrap().replayed_frames(), 0);
    }

    /// What a crash left in the log is readable as soon as the store is
    /// open, from memory; the first commit writes it to redb before its own
    /// frame (which goes where the replayed frames were), and a crash at
    /// any point recovers all of it.
    #[tokio::test]
    async fn replayed_frames_reach_redb_before_the_log_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let copy = |from: &Path, to: &str| {
            let to = dir.path().join(to);
            for suffix in ["", "-wal", "-wal2"] {
                std::fs::copy(log_path(from, suffix), log_path(&to, suffix)).unwrap();
            }
            to
        };
        let contents = |store: &RedbStore| {
            let all = store.inner.scan(b"", None, usize::MAX).unwrap();
            all.into_iter()
                .map(|e| (e.key, e.value))
                .collect::<Vec<_>>()
        };
        let entry = |key: &[u8], byte: u8| (key.to_vec(), vec![byte; 100]);
        let abc = vec![entry(b"a", 1), entry(b"b", 2), entry(b"c", 3)];
        let abcd = [abc.clone(), vec![entry(b"d", 4)]].concat();

        let path = dir.path().join("s.redb");
        let store = RedbStore::open(&path).unwrap();
        for (key, byte) in [(b"a", 1), (b"b", 2), (b"c", 3)] {
            store.commit(put(key, &[byte; 100])).await.unwrap();
        }
        // A crash: the three commits are in the log alone.
        let crashed = copy(&path, "crashed.redb");
        drop(store);

        let store = RedbStore::open(&crashed).unwrap();
        assert_eq!(store.replayed_frames(), 3);
        assert_eq!(store.checkpoint_stats().count, 0, "nothing written yet");
        assert_eq!(contents(&store), abc, "from memory");
        assert_eq!(store.get(b"b").await.unwrap(), Some(vec![2; 100]));
        let before_commit = copy(&crashed, "before.redb");

        store.commit(put(b"d", &[4; 100])).await.unwrap();
        let stats = store.checkpoint_stats();
        assert_eq!((stats.count, stats.keys), (1, 3), "{stats:?}");
        assert!(stats.waited > Duration::ZERO);
        assert_eq!(contents(&store), abcd, "after the commit");
        let after_commit = copy(&crashed, "after.redb");

        for (crash, frames, want) in [(&before_commit, 3, &abc), (&after_commit, 1, &abcd)] {
            let recovered = RedbStore::open(crash).unwrap();
            assert_eq!(recovered.replayed_frames(), frames, "{crash:?}");
            assert_eq!(&contents(&recovered), want, "{crash:?}");
        }
        // Closed with no commit, a recovered store wrote its replay to redb.
        let reopened = RedbStore::open(&before_commit).unwrap();
        assert_eq!(reopened.replayed_frames(), 0);
        assert_eq!(contents(&reopened), abc);
        // Closing writes what is left: nothing to replay.
        drop(store);
        let reopened = RedbStore::open(&crashed).unwrap();
        assert_eq!(reopened.replayed_frames(), 0);
        assert_eq!(contents(&reopened), abcd);
    }

    #[tokio::test]
    async fn a_failed_commit_makes_the_store_unwritable_until_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let mut first = WriteBatch::new();
        first.put(b"k", b"v1".to_vec());
        let mut second = WriteBatch::new();
        second.put(b"k", b"v2".to_vec());
        {
            let store = RedbStore::open(&path).unwrap();
            store.commit(first).await.unwrap();
            store.writable().unwrap();
            store.inner.fail_next_commit.store(true, Ordering::Relaxed);
            assert!(store.commit(second.clone()).await.is_err());
            let refused = store.writable().unwrap_err();
            assert!(!refused.is_retryable(), "{refused}");
            // Later commits are refused too, and nothing changed.
            assert!(store.commit(second.clone()).await.is_err());
            assert_eq!(store.get(b"k").await.unwrap().as_deref(), Some(&b"v1"[..]));
        }
        let store = RedbStore::open(&path).unwrap();
        store.writable().unwrap();
        store.commit(second).await.unwrap();
        assert_eq!(store.get(b"k").await.unwrap().as_deref(), Some(&b"v2"[..]));
    }
}
