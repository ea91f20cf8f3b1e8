//! Backing stores for spike-rs: a durable, ordered map of opaque byte keys
//! to opaque byte values, behind the object-safe async [`BackingStore`] trait.
//!
//! # The store is untrusted
//!
//! spike-core encrypts every record before it reaches a store and binds the
//! ciphertext to its location (kind, storage key, version) in the AEAD's
//! associated data. Storage keys are keyed hashes, never paths or names. So a
//! store sees only opaque keys and ciphertext; a record it swaps, truncates
//! or flips is detected and refused above it. What a store must get right is
//! what cannot be checked from above: order, atomicity and durability.
//!
//! # Durability contract
//!
//! [`BackingStore::commit`] applies a [`WriteBatch`] all-or-nothing, in op
//! order, and resolves `Ok` only once the batch is durable (for
//! [`RedbStore`]: written synchronously to its write-ahead log; there is no
//! weaker mode). One batch is one transaction: group commit is done by batching
//! many records into one commit. A commit that fails (or
//! whose future is dropped) may still have been applied; callers treat it as
//! "maybe applied". [`StorageError::is_retryable`] says whether trying again
//! later may help.
//!
//! # Stores
//!
//! - [`RedbStore`]: a redb file and its write-ahead log, the embedded
//!   default.
//! - [`MemoryStore`]: a `BTreeMap`, for tests.
//! - [`FaultyStore`]: wraps any store and injects failures and latency on
//!   command of its [`FaultController`], for tests of the layers above.
//! - `conformance::run_all` (cargo feature `conformance`): the behaviour
//!   suite every store passes.
//!
//! # Example
//!
//! ```
//! use spike_storage::{BackingStore, RedbStore, WriteBatch};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let runtime = tokio::runtime::Builder::new_current_thread().build()?;
//! runtime.block_on(async {
//!     let store = RedbStore::open(dir.path().join("spike.redb"))?;
//!
//!     let mut batch = WriteBatch::new();
//!     batch.put(*b"\x01key-a", *b"ciphertext a");
//!     batch.put(*b"\x01key-b", *b"ciphertext b");
//!     batch.put(*b"\x02other", *b"ciphertext c");
//!     store.commit(batch).await?; // durable once this returns
//!
//!     assert_eq!(store.get(b"\x01key-a").await?, Some(b"ciphertext a".to_vec()));
//!
//!     // All keys of kind 0x01, at most 100 per page.
//!     let page = store.scan(b"\x01", None, 100).await?;
//!     assert_eq!(page.len(), 2);
//!     let next = store.scan(b"\x01", Some(&page[1].key), 100).await?;
//!     assert!(next.is_empty());
//!     Ok::<_, spike_storage::StorageError>(())
//! })?;
//! # Ok(())
//! # }
//! ```

mod backend;
#[cfg(feature = "conformance")]
pub mod conformance;
mod faulty;
mod memory;
mod redb_store;

pub use backend::{BackingStore, Entry, StorageError, StoreFuture, WriteBatch, WriteOp};

thread_local! {
    static DEDICATED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Declares the current thread dedicated to store calls (spike-core's
/// group-commit thread is): a store that blocks, such as [`RedbStore`],
/// then runs its work inline on it instead of handing it to tokio's
/// blocking pool and back, which costs two thread wake-ups per call.
pub fn dedicate_current_thread() {
    DEDICATED.with(|d| d.set(true));
}

fn thread_is_dedicated() -> bool {
    DEDICATED.with(std::cell::Cell::get)
}
pub use faulty::{FaultController, FaultyStore};
pub use memory::MemoryStore;
pub use redb_store::{CheckpointStats, RedbOptions, RedbStore};
