//! The [`BackingStore`] trait, the values it moves and its error type.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::Arc;

/// Boxed future returned by store methods (object-safe async without a macro crate).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StorageError>> + Send + 'a>>;

/// One key/value pair from a scan.
///
/// `Debug` prints the key in hex and only the length of the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// The storage key.
    pub key: Vec<u8>,
    /// The stored value (opaque ciphertext to the store).
    pub value: Vec<u8>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("key", &HexKey(&self.key))
            .field("value_len", &self.value.len())
            .finish()
    }
}

/// One write in a [`WriteBatch`].
///
/// `Debug` prints the key in hex and only the length of a value.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteOp {
    /// Set `key` to `value`, replacing any previous value.
    Put {
        /// The storage key.
        key: Vec<u8>,
        /// The value to store.
        value: Vec<u8>,
    },
    /// Remove `key`; removing a missing key is not an error.
    Delete {
        /// The storage key.
        key: Vec<u8>,
    },
}

impl WriteOp {
    /// The key this op writes.
    pub fn key(&self) -> &[u8] {
        match self {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } => key,
        }
    }

    /// Key plus value bytes of this op.
    fn encoded_len(&self) -> usize {
        match self {
            WriteOp::Put { key, value } => key.len().saturating_add(value.len()),
            WriteOp::Delete { key } => key.len(),
        }
    }
}

impl fmt::Debug for WriteOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteOp::Put { key, value } => f
                .debug_struct("Put")
                .field("key", &HexKey(key))
                .field("value_len", &value.len())
                .finish(),
            WriteOp::Delete { key } => f.debug_struct("Delete").field("key", &HexKey(key)).finish(),
        }
    }
}

/// An atomic, durable group of writes.
///
/// Applied all-or-nothing; ops apply in order (a later op on the same key
/// wins). `Debug` shows the first few ops without value bytes.
#[derive(Default, Clone)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a put of `value` at `key`.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(WriteOp::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Add a delete of `key`.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(WriteOp::Delete { key: key.into() });
        self
    }

    /// Number of ops.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no ops.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The ops, in the order they apply.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// Append the ops of `other` after this batch's ops.
    pub fn extend(&mut self, other: WriteBatch) {
        self.ops.extend(other.ops);
    }

    /// Sum of the key and value bytes of all ops.
    pub fn encoded_len(&self) -> usize {
        self.ops
            .iter()
            .fold(0usize, |n, op| n.saturating_add(op.encoded_len()))
    }

    /// Take the ops out, in order.
    pub fn into_ops(self) -> Vec<WriteOp> {
        self.ops
    }
}

impl fmt::Debug for WriteBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        struct Ops<'a>(&'a [WriteOp]);
        impl fmt::Debug for Ops<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut list = f.debug_list();
                list.entries(self.0.iter().take(SHOWN));
                if self.0.len() > SHOWN {
                    list.entry(&format_args!("… {} more", self.0.len() - SHOWN));
                }
                list.finish()
            }
        }
        f.debug_struct("WriteBatch")
            .field("len", &self.ops.len())
            .field("encoded_len", &self.encoded_len())
            .field("ops", &Ops(&self.ops))
            .finish()
    }
}

/// Hex form of a key for `Debug`; long keys are cut short.
struct HexKey<'a>(&'a [u8]);

impl fmt::Debug for HexKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 40;
        for b in self.0.iter().take(SHOWN) {
            write!(f, "{b:02x}")?;
        }
        if self.0.len() > SHOWN {
            write!(f, "…({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

/// A durable, ordered map of opaque byte keys to opaque byte values.
///
/// The store is untrusted and dumb: it sees only storage keys and
/// ciphertext, and the layer above detects anything it tampers with. What a
/// store must get right is order, atomicity and durability, as pinned down by
/// the conformance suite (cargo feature `conformance`).
///
/// Dropping a future returned by [`commit`](Self::commit) does not cancel the
/// write: the batch may still be applied. So may a batch whose commit
/// returned an error (an acknowledgement can be lost after the write became
/// durable); callers must treat a failed commit as "maybe applied".
pub trait BackingStore: Send + Sync + fmt::Debug {
    /// Short human name for logs and errors, e.g. `"redb:/path/to/file"` or `"memory"`.
    fn describe(&self) -> String;

    /// The value at `key`, if any.
    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// Up to `limit` entries whose key starts with `prefix`, in ascending key
    /// order, strictly after `start_after` if given. An empty page means the
    /// end. (`limit` 0 gives an empty page.)
    ///
    /// Pages are not a snapshot: a scan racing with commits may see some of
    /// them on later pages only.
    fn scan<'a>(
        &'a self,
        prefix: &'a [u8],
        start_after: Option<&'a [u8]>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Entry>>;

    /// Apply the batch atomically and durably (fsync'd before the future
    /// resolves `Ok`). An empty batch is `Ok` and a no-op.
    fn commit<'a>(&'a self, batch: WriteBatch) -> StoreFuture<'a, ()>;

    /// Whether commits can succeed, as far as the store knows without
    /// trying one: `Err` (why) from a store that refuses every commit until
    /// something outside it changes, such as a redb store after a failed
    /// commit, until it is reopened. For readiness checks: cheap, never
    /// waits for a commit in flight. The default knows of no such state.
    ///
    /// # Errors
    ///
    /// Why commits are refused.
    fn writable(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

impl<S: BackingStore + ?Sized> BackingStore for Arc<S> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Vec<u8>>> {
        (**self).get(key)
    }
    fn scan<'a>(
        &'a self,
        prefix: &'a [u8],
        start_after: Option<&'a [u8]>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Entry>> {
        (**self).scan(prefix, start_after, limit)
    }
    fn commit<'a>(&'a self, batch: WriteBatch) -> StoreFuture<'a, ()> {
        (**self).commit(batch)
    }
    fn writable(&self) -> Result<(), StorageError> {
        (**self).writable()
    }
}

impl<S: BackingStore + ?Sized> BackingStore for Box<S> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Vec<u8>>> {
        (**self).get(key)
    }
    fn scan<'a>(
        &'a self,
        prefix: &'a [u8],
        start_after: Option<&'a [u8]>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Entry>> {
        (**self).scan(prefix, start_after, limit)
    }
    fn commit<'a>(&'a self, batch: WriteBatch) -> StoreFuture<'a, ()> {
        (**self).commit(batch)
    }
    fn writable(&self) -> Result<(), StorageError> {
        (**self).writable()
    }
}

/// Why a store operation failed. Never carries key or value bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The store cannot be reached or refused service now; a retry later may succeed.
    #[error("backing store {store} unavailable: {reason}")]
    Unavailable {
        /// [`BackingStore::describe`] of the store.
        store: String,
        /// What happened.
        reason: String,
    },
    /// I/O or engine error.
    #[error("backing store {store}: I/O error: {source}")]
    Io {
        /// [`BackingStore::describe`] of the store.
        store: String,
        /// The underlying error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The store's own structures are corrupt.
    #[error("backing store {store} is corrupt: {reason}; restore it from a backup")]
    Corrupt {
        /// [`BackingStore::describe`] of the store.
        store: String,
        /// What the engine reported.
        reason: String,
    },
    /// Key or value or batch exceeds what this store accepts.
    #[error("{what} of {len} bytes exceeds this store's limit of {max} bytes")]
    TooLarge {
        /// What was too large, e.g. `"value"` or `"batch"`.
        what: &'static str,
        /// Its size in bytes.
        len: usize,
        /// The store's limit in bytes.
        max: usize,
    },
    /// The store's file is held open by another process.
    #[error(
        "backing store {store} is locked: another spike process has DATA_FILE open; \
         stop it or point this one at another data file"
    )]
    Locked {
        /// [`BackingStore::describe`] of the store.
        store: String,
    },
}

impl StorageError {
    /// Whether a retry of the same operation later may succeed: `Unavailable`,
    /// and `Io` caused by a transient I/O error (interrupted, timed out, would
    /// block, busy). An engine that must be reopened after an error (redb
    /// after a failed commit) reports a non-retryable `Io`.
    pub fn is_retryable(&self) -> bool {
        match self {
            StorageError::Unavailable { .. } => true,
            StorageError::Io { source, .. } => {
                let mut cause: Option<&(dyn StdError + 'static)> = Some(source.as_ref());
                while let Some(err) = cause {
                    if let Some(io) = err.downcast_ref::<std::io::Error>() {
                        return is_transient(io.kind());
                    }
                    cause = err.source();
                }
                false
            }
            StorageError::Corrupt { .. }
            | StorageError::TooLarge { .. }
            | StorageError::Locked { .. } => false,
        }
    }
}

fn is_transient(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        kind,
        K::Interrupted
            | K::TimedOut
            | K::WouldBlock
            | K::ResourceBusy
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::ConnectionRefused
            | K::NotConnected
            | K::BrokenPipe
    )
}

/// Key bounds of a scan: every key within them starts with the prefix.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ScanBounds<'a> {
    lower: Bound<&'a [u8]>,
    /// Exclusive upper end; `None` for unbounded.
    end: Option<Vec<u8>>,
}

impl ScanBounds<'_> {
    /// The bounds as a range argument.
    pub(crate) fn range(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        let upper = match &self.end {
            Some(end) => Bound::Excluded(end.as_slice()),
            None => Bound::Unbounded,
        };
        (self.lower, upper)
    }
}

/// Key bounds of a scan of `prefix` strictly after `start_after`, or `None`
/// if no key can match.
pub(crate) fn scan_bounds<'a>(
    prefix: &'a [u8],
    start_after: Option<&'a [u8]>,
) -> Option<ScanBounds<'a>> {
    let end = prefix_end(prefix);
    let lower = match start_after {
        Some(after) if after >= prefix => Bound::Excluded(after),
        // Every key with the prefix sorts at or after the prefix itself.
        _ => Bound::Included(prefix),
    };
    if let (Bound::Excluded(after), Some(end)) = (lower, &end)
        && after >= end.as_slice()
    {
        return None;
    }
    Some(ScanBounds { lower, end })
}

/// The least key greater than every key starting with `prefix`, or `None`
/// if there is none (empty prefix, or all `0xFF`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b != 0xFF)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_cases() {
        assert_eq!(prefix_end(b""), None);
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFE]), Some(vec![0xFF]));
    }

    #[test]
    fn scan_bounds_cases() {
        // start_after before the prefix: the prefix bounds the scan.
        let bounds = scan_bounds(b"ab", Some(b"a")).unwrap();
        assert_eq!(
            bounds.range(),
            (Bound::Included(&b"ab"[..]), Bound::Excluded(&b"ac"[..]))
        );
        // start_after at or past the end of the prefix range: nothing.
        assert_eq!(scan_bounds(b"ab", Some(b"ac")), None);
        assert_eq!(scan_bounds(b"ab", Some(b"b")), None);
        let bounds = scan_bounds(b"", Some(b"x")).unwrap();
        assert_eq!(
            bounds.range(),
            (Bound::Excluded(&b"x"[..]), Bound::Unbounded)
        );
    }

    #[test]
    fn debug_hides_values() {
        let mut batch = WriteBatch::new();
        batch.put(vec![0xAB], vec![0x42; 3]).delete(*b"k");
        for i in 0..10u8 {
            batch.put([i], []);
        }
        let shown = format!("{batch:?}");
        assert!(shown.contains("key: ab, value_len: 3"), "{shown}");
        assert!(shown.contains("Delete { key: 6b }"), "{shown}");
        assert!(shown.contains("… 4 more"), "{shown}");
        assert!(!shown.contains("42"), "value bytes leaked: {shown}");
        let entry = Entry {
            key: vec![1],
            value: vec![0x99; 5],
        };
        assert_eq!(format!("{entry:?}"), "Entry { key: 01, value_len: 5 }");
    }

    #[test]
    fn batch_extend_and_len() {
        let mut a = WriteBatch::new();
        a.put(*b"k1", *b"vv");
        let mut b = WriteBatch::new();
        b.delete(*b"k22");
        a.extend(b);
        assert_eq!(a.len(), 2);
        assert!(!a.is_empty());
        assert_eq!(a.encoded_len(), 2 + 2 + 3);
        assert_eq!(a.ops()[1].key(), b"k22");
    }

    #[test]
    fn retryable() {
        let unavailable = StorageError::Unavailable {
            store: "s".into(),
            reason: "down".into(),
        };
        assert!(unavailable.is_retryable());
        let transient = StorageError::Io {
            store: "s".into(),
            source: Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut)),
        };
        assert!(transient.is_retryable());
        let hard = StorageError::Io {
            store: "s".into(),
            source: Box::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
        };
        assert!(!hard.is_retryable());
        assert!(!StorageError::Locked { store: "s".into() }.is_retryable());
    }
}
