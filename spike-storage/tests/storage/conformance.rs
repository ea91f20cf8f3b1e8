//! Every store in this crate passes the conformance suite.

use spike_storage::conformance::run_all;
use spike_storage::{FaultyStore, MemoryStore, RedbOptions, RedbStore};

#[tokio::test]
async fn memory_store() {
    run_all(&MemoryStore::new()).await;
}

#[tokio::test]
async fn redb_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("spike.redb")).unwrap();
    run_all(&store).await;
}

/// A log of 1 KiB: most commits pass through a checkpoint, some go
/// straight to redb, and scans merge the overlay with redb at every step.
#[tokio::test]
async fn redb_store_with_a_tiny_log() {
    let dir = tempfile::tempdir().unwrap();
    let options = RedbOptions::default().log_capacity(1024);
    let store = RedbStore::open_with(dir.path().join("spike.redb"), options).unwrap();
    run_all(&store).await;
}

/// The same through the page cache (`fdatasync`), the fallback where the
/// file system refuses direct I/O.
#[tokio::test]
async fn redb_store_with_a_tiny_buffered_log() {
    let dir = tempfile::tempdir().unwrap();
    let options = RedbOptions::default().log_capacity(1024).buffered_log(true);
    let store = RedbStore::open_with(dir.path().join("spike.redb"), options).unwrap();
    run_all(&store).await;
}

#[tokio::test]
async fn faulty_store_without_faults() {
    let store = FaultyStore::new(MemoryStore::new());
    run_all(&store).await;
    assert_eq!(store.controller().injected_failures(), 0);
}

#[tokio::test]
async fn through_arc_dyn() {
    let store: std::sync::Arc<dyn spike_storage::BackingStore> =
        std::sync::Arc::new(MemoryStore::new());
    run_all(&store).await;
}

#[tokio::test]
#[should_panic(expected = "conformance check `empty store` failed on memory")]
async fn refuses_a_non_empty_store() {
    use spike_storage::{BackingStore, WriteBatch};
    let store = MemoryStore::new();
    let mut batch = WriteBatch::new();
    batch.put(*b"k", *b"v");
    store.commit(batch).await.unwrap();
    run_all(&store).await;
}

/// A store whose scan ignores `start_after`: the suite must catch it.
#[derive(Debug, Default)]
struct IgnoresStartAfter(MemoryStore);

impl spike_storage::BackingStore for IgnoresStartAfter {
    fn describe(&self) -> String {
        "ignores-start-after".into()
    }
    fn get<'a>(&'a self, key: &'a [u8]) -> spike_storage::StoreFuture<'a, Option<Vec<u8>>> {
        self.0.get(key)
    }
    fn scan<'a>(
        &'a self,
        prefix: &'a [u8],
        _start_after: Option<&'a [u8]>,
        limit: usize,
    ) -> spike_storage::StoreFuture<'a, Vec<spike_storage::Entry>> {
        self.0.scan(prefix, None, limit)
    }
    fn commit<'a>(
        &'a self,
        batch: spike_storage::WriteBatch,
    ) -> spike_storage::StoreFuture<'a, ()> {
        self.0.commit(batch)
    }
}

#[tokio::test]
#[should_panic(expected = "on ignores-start-after")]
async fn catches_a_store_that_ignores_start_after() {
    run_all(&IgnoresStartAfter::default()).await;
}
