//! [`RedbStore`]: the embedded default store, a redb file and its
//! write-ahead log.

mod wal;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redb::backends::FileBackend;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError};

use crate::backend::{
    BackingStore, Entry, StorageError, StoreFuture, WriteBatch, WriteOp, scan_bounds,
};
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
/// beside it (`spike.redb-wal`).
///
/// A commit is durable before it resolves: its batch is appended to the
/// log with one synchronous direct write (`O_DIRECT | O_DSYNC` on Linux;
/// elsewhere, or where the file system refuses direct I/O, a write and an
/// `fdatasync`), then merged into an in-memory overlay of the keys
/// written since the last checkpoint, which `get` and `scan` consult before
/// redb. A checkpoint (every thousand commits or so, when the log is full,
/// and when the store is dropped) writes the overlay to redb in one durable
/// commit, which makes the log's frames redundant; a store opened after a
/// crash replays them. The log's format and recovery rules are documented in
/// `redb_store/wal.rs`. The two files are one store: keep them together,
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
}

/// The keys written since the last checkpoint: their value, or `None` if
/// deleted.
type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// What the blocking-pool closures share.
struct Inner {
    db: Database,
    /// The log; `None` once a commit has failed. Held for the whole of a
    /// commit: commits are applied in log order.
    wal: Mutex<Option<Wal>>,
    /// Set when `wal` becomes `None`: read without waiting for a commit in
    /// flight (a checkpoint holds `wal` for as long as it takes).
    failed: AtomicBool,
    /// Changed only by a commit (holding `wal`), read by `get` and `scan`.
    overlay: RwLock<Overlay>,
    name: Arc<str>,
    /// Counted by checkpoints (holding `wal`), read by
    /// [`RedbStore::checkpoint_stats`].
    checkpoints: Mutex<CheckpointStats>,
    /// Tests: the next commit fails as an I/O error would, before writing.
    #[cfg(test)]
    fail_next_commit: AtomicBool,
}

/// What the checkpoints of a [`RedbStore`] have done since it was opened.
/// Commits wait while a checkpoint runs, and its cost grows with the keys
/// it writes (random places in redb's B-tree): this is how an operator or
/// a benchmark sees that wait.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Checkpoints run.
    pub count: u64,
    /// Keys they wrote to redb, all together.
    pub keys: u64,
    /// Their time, all together: time that commits waited.
    pub time: Duration,
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
    /// The most bytes the write-ahead log holds between two checkpoints
    /// (default 16 MiB; at most 4 GiB). A batch larger than that commits
    /// to redb durably, without the log. The log file grows to this size
    /// in steps and is reused; a crash costs a replay of at most this much.
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

        let mut wal_path = path.clone().into_os_string();
        wal_path.push("-wal");
        let (mut wal_file, wal_created) = open_private(Path::new(&wal_path)).map_err(io)?;

        // A new file's directory entry must be durable too, or a crash can
        // lose the whole file with every commit in it.
        if created || wal_created {
            sync_parent_dir(&path).map_err(io)?;
        }

        // Replay what the log holds beyond redb's last durable commit.
        let batches = wal::read_frames_after(&mut wal_file, applied).map_err(io)?;
        let mut next_seq = applied + 1;
        if !batches.is_empty() {
            let last = applied + batches.len() as u64;
            let ops = batches.iter().flat_map(WriteBatch::ops).map(op_parts);
            apply(&db, &name, ops, last)?;
            next_seq = last + 1;
        }
        // The log's frames are all in redb now: it is written again from
        // offset 0.
        let log_file =
            wal::LogFile::open(wal_file, Path::new(&wal_path), options.buffered_log).map_err(io)?;
        let wal = Wal::new(log_file, options.log_capacity, next_seq).map_err(io)?;

        Ok(Self {
            inner: Arc::new(Inner {
                db,
                wal: Mutex::new(Some(wal)),
                failed: AtomicBool::new(false),
                overlay: RwLock::new(Overlay::new()),
                name,
                checkpoints: Mutex::new(CheckpointStats::default()),
                #[cfg(test)]
                fail_next_commit: AtomicBool::new(false),
            }),
            path,
        })
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
        if let Some(value) = self.read_overlay()?.get(key) {
            return Ok(value.clone());
        }
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

    /// redb's entries merged with the overlay's, which win (a `None` hides
    /// the key). The overlay stays read-locked throughout, so a checkpoint
    /// cannot move entries from it to redb halfway.
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
        let overlay = self.read_overlay()?;
        let mut changed = overlay
            .range::<[u8], (Bound<&[u8]>, Bound<&[u8]>)>(bounds.range())
            .peekable();
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

    fn read_overlay(&self) -> Result<std::sync::RwLockReadGuard<'_, Overlay>, StorageError> {
        self.overlay.read().map_err(|_| self.failed())
    }

    /// Make `batch` durable and visible; see [`RedbStore`].
    fn commit(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut wal = self.wal.lock().map_err(|_| self.failed())?;
        let Some(log) = wal.as_mut() else {
            return Err(self.failed());
        };
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
        if log.fits(&batch) == Fit::AfterCheckpoint {
            self.checkpoint(log)?;
        }
        if log.fits(&batch) == Fit::Now {
            log.append(&batch).map_err(|e| io_error(&self.name, e))?;
            // The batch's keys and values move into the overlay, uncopied.
            let mut overlay = self.overlay.write().map_err(|_| self.failed())?;
            for op in batch.into_ops() {
                match op {
                    WriteOp::Put { key, value } => overlay.insert(key, Some(value)),
                    WriteOp::Delete { key } => overlay.insert(key, None),
                };
            }
            drop(overlay);
            if log.checkpoint_due() {
                self.checkpoint(log)?;
            }
        } else {
            // Larger than the whole log: straight to redb, in the same
            // durable commit as the overlay (which it follows).
            let seq = log.assign_seq();
            self.write_overlay_to_redb(log, batch.ops(), seq)?;
        }
        Ok(())
    }

    /// Writes the overlay to redb in one durable commit; the log starts
    /// again.
    fn checkpoint(&self, log: &mut Wal) -> Result<(), StorageError> {
        let through = log.last_seq();
        let started = Instant::now();
        let keys = self.write_overlay_to_redb(log, &[], through)?;
        let mut stats = self
            .checkpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        stats.count += 1;
        stats.keys += keys;
        stats.time += started.elapsed();
        Ok(())
    }

    /// Writes the overlay, then `more`, to redb in one durable commit that
    /// holds every log frame up to `through`; empties the overlay and
    /// starts the log again. Returns how many keys the overlay held. The
    /// caller holds `wal`, so no commit changes the overlay meanwhile, and
    /// readers find each entry in the overlay or in redb.
    fn write_overlay_to_redb(
        &self,
        log: &mut Wal,
        more: &[WriteOp],
        through: u64,
    ) -> Result<u64, StorageError> {
        let keys = {
            let overlay = self.read_overlay()?;
            let ops = overlay
                .iter()
                .map(|(key, value)| (key.as_slice(), value.as_deref()))
                .chain(more.iter().map(op_parts));
            apply(&self.db, &self.name, ops, through)?;
            overlay.len() as u64
        };
        self.overlay.write().map_err(|_| self.failed())?.clear();
        log.restart();
        Ok(keys)
    }

    fn failed(&self) -> StorageError {
        io_error(
            &self.name,
            std::io::Error::other("an earlier commit failed; reopen the store"),
        )
    }
}

impl Drop for Inner {
    /// Checkpoint, so that the next open has nothing to replay and the
    /// database file alone holds every commit.
    fn drop(&mut self) {
        if let Ok(mut wal) = self.wal.lock()
            && let Some(log) = wal.as_mut()
            && log.has_frames()
        {
            // Best effort: on failure the next open replays the log.
            let _ = self.checkpoint(log);
        }
    }
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
    use super::*;

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
