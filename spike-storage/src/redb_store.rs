//! [`RedbStore`]: the embedded default store, one redb file.

use std::fmt;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::backends::FileBackend;
use redb::{Database, Durability, ReadableDatabase, TableDefinition, TableError};

use crate::backend::{
    BackingStore, Entry, StorageError, StoreFuture, WriteBatch, WriteOp, scan_bounds,
};

/// The one table holding the whole keyspace.
const TABLE: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("spike");

/// redb's own limit on a value (and, plus 768 MiB, on a key/value pair).
const REDB_MAX_VALUE: usize = 3 * 1024 * 1024 * 1024;

/// redb page cache size: spike-core serves from its own memory, so redb's
/// cache would only duplicate the file (see [`RedbStore::open`]).
const REDB_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// A store in one redb file.
///
/// Every commit is one redb write transaction with
/// [`Durability::Immediate`]: it is fsync'd before `commit` resolves. redb is
/// synchronous, so commits and scans run on tokio's blocking thread pool
/// (when called inside a tokio runtime; elsewhere they run inline). A point
/// `get` runs inline: it takes microseconds on an open database.
///
/// Only one process may have the file open; a second open fails with
/// [`StorageError::Locked`].
///
/// After an I/O error during a commit, redb refuses further writes until
/// the file is reopened; such errors are [`StorageError::Io`] and not
/// retryable: restart the process (or drop and reopen the store).
pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
    name: Arc<str>,
}

impl RedbStore {
    /// Open the store at `path`, creating it if missing.
    ///
    /// The parent directory must exist. A new file is created with mode
    /// `0600` on unix (the mode of an existing file is left alone) and its
    /// directory entry is fsync'd.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        let path = path.as_ref().to_path_buf();
        let name: Arc<str> = format!("redb:{}", path.display()).into();
        let io = |source: std::io::Error| StorageError::Io {
            store: name.to_string(),
            source: Box::new(source),
        };

        let mut options = OpenOptions::new();
        options.read(true).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let (file, created) = match options.clone().create_new(true).open(&path) {
            Ok(file) => (file, true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                (options.open(&path).map_err(io)?, false)
            }
            Err(e) => return Err(io(e)),
        };
        let backend = FileBackend::new(file).map_err(|e| map_err(&name, e))?;
        // spike-core keeps every record in memory and reads the store only
        // at unseal, so redb's page cache (1 GiB by default) would mostly
        // hold a second copy of the file: keep it small.
        let db = Database::builder()
            .set_cache_size(REDB_CACHE_BYTES)
            .create_with_backend(backend)
            .map_err(|e| map_err(&name, e))?;

        // Create the table now, so that reads never meet a missing table.
        let txn = db.begin_write().map_err(|e| map_err(&name, e))?;
        txn.open_table(TABLE).map_err(|e| map_err(&name, e))?;
        txn.commit().map_err(|e| map_err(&name, e))?;

        // A new file's directory entry must be durable too, or a crash can
        // lose the whole file with every commit in it.
        if created {
            sync_parent_dir(&path).map_err(io)?;
        }

        Ok(Self {
            db: Arc::new(db),
            path,
            name,
        })
    }

    /// The path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` on the blocking pool when inside a tokio runtime, else inline.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Database, &str) -> Result<T, StorageError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        let name = Arc::clone(&self.name);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn_blocking(move || f(&db, &name))
                .await
                .map_err(|join| StorageError::Io {
                    store: self.name.to_string(),
                    source: Box::new(join),
                })?,
            Err(_) => f(&db, &name),
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
        self.name.to_string()
    }

    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move { get(&self.db, &self.name, key) })
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
            self.blocking(move |db, name| scan(db, name, &prefix, start_after.as_deref(), limit))
                .await
        })
    }

    fn commit<'a>(&'a self, batch: WriteBatch) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(());
            }
            self.blocking(move |db, name| commit(db, name, batch)).await
        })
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

fn get(db: &Database, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
    let txn = db.begin_read().map_err(|e| map_err(name, e))?;
    let table = match txn.open_table(TABLE) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(map_err(name, e)),
    };
    let value = table.get(key).map_err(|e| map_err(name, e))?;
    Ok(value.map(|v| v.value().to_vec()))
}

fn scan(
    db: &Database,
    name: &str,
    prefix: &[u8],
    start_after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<Entry>, StorageError> {
    let Some(bounds) = scan_bounds(prefix, start_after) else {
        return Ok(Vec::new());
    };
    let txn = db.begin_read().map_err(|e| map_err(name, e))?;
    let table = match txn.open_table(TABLE) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(map_err(name, e)),
    };
    let range = table
        .range::<&[u8]>(bounds.range())
        .map_err(|e| map_err(name, e))?;
    // `limit` may be huge ("everything"): do not reserve it up front.
    let mut page = Vec::with_capacity(limit.min(16 * 1024));
    for item in range.take(limit) {
        let (key, value) = item.map_err(|e| map_err(name, e))?;
        page.push(Entry {
            key: key.value().to_vec(),
            value: value.value().to_vec(),
        });
    }
    Ok(page)
}

fn commit(db: &Database, name: &str, batch: WriteBatch) -> Result<(), StorageError> {
    let mut txn = db.begin_write().map_err(|e| map_err(name, e))?;
    // The default, stated so that it stays the contract.
    txn.set_durability(Durability::Immediate)
        .map_err(|e| map_err(name, e))?;
    {
        let mut table = txn.open_table(TABLE).map_err(|e| map_err(name, e))?;
        for op in batch.ops() {
            match op {
                WriteOp::Put { key, value } => {
                    table
                        .insert(key.as_slice(), value.as_slice())
                        .map_err(|e| map_err(name, e))?;
                }
                WriteOp::Delete { key } => {
                    table.remove(key.as_slice()).map_err(|e| map_err(name, e))?;
                }
            }
        }
    }
    // An error before this point drops `txn`, which aborts it: nothing applied.
    txn.commit().map_err(|e| map_err(name, e))
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
