//! FaultyStore injects exactly the faults it is told to.

use std::time::{Duration, Instant};

use spike_storage::{BackingStore, FaultyStore, MemoryStore, StorageError, WriteBatch};

fn batch(key: &str) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.put(key, "value");
    batch
}

#[tokio::test]
async fn unavailable_commit_fails_retryably_and_applies_nothing() {
    let store = FaultyStore::new(MemoryStore::new());
    let control = store.controller();
    control.set_unavailable(true);

    let err = store.commit(batch("k")).await.unwrap_err();
    assert!(matches!(err, StorageError::Unavailable { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("faulty(memory)"), "{err}");
    assert_eq!(store.inner().get(b"k").await.unwrap(), None);
    assert_eq!(control.commits(), 0);
    // Reads still work while commits fail.
    assert_eq!(store.get(b"k").await.unwrap(), None);

    control.set_unavailable(false);
    store.commit(batch("k")).await.unwrap();
    assert_eq!(store.get(b"k").await.unwrap(), Some(b"value".to_vec()));
    assert_eq!(control.commits(), 1);
    assert_eq!(control.ops(), 4);
    assert_eq!(control.injected_failures(), 1);
}

#[tokio::test]
async fn fail_next_commits_counts_down() {
    let store = FaultyStore::new(MemoryStore::new());
    let control = store.controller();
    control.fail_next_commits(2);
    assert!(store.commit(batch("a")).await.is_err());
    assert!(store.commit(batch("a")).await.is_err());
    assert_eq!(store.inner().get(b"a").await.unwrap(), None);
    store.commit(batch("a")).await.unwrap();
    assert_eq!(control.commits(), 1);
}

#[tokio::test]
async fn fail_after_commit_reports_an_error_but_the_data_is_applied() {
    let store = FaultyStore::new(MemoryStore::new());
    let control = store.controller();
    control.fail_after_commit_next(1);

    let err = store.commit(batch("k")).await.unwrap_err();
    assert!(err.is_retryable());
    assert!(
        err.to_string().contains("acknowledgement was lost"),
        "{err}"
    );
    assert_eq!(store.get(b"k").await.unwrap(), Some(b"value".to_vec()));
    assert_eq!(control.commits(), 1);

    store.commit(batch("k2")).await.unwrap();
    assert_eq!(control.commits(), 2);
}

#[tokio::test]
async fn failing_reads_leave_commits_working() {
    let store = FaultyStore::new(MemoryStore::new());
    let control = store.controller();
    control.set_reads_failing(true);
    store.commit(batch("k")).await.unwrap();
    assert!(store.get(b"k").await.unwrap_err().is_retryable());
    assert!(store.scan(b"", None, 10).await.is_err());
    control.clear();
    assert_eq!(store.scan(b"", None, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn latency_is_applied_to_every_op() {
    let store = FaultyStore::new(MemoryStore::new());
    let latency = Duration::from_millis(30);
    store.controller().set_latency(latency);
    let start = Instant::now();
    store.commit(batch("k")).await.unwrap();
    assert!(start.elapsed() >= latency);
    let start = Instant::now();
    store.get(b"k").await.unwrap();
    store.scan(b"", None, 1).await.unwrap();
    assert!(start.elapsed() >= 2 * latency);
}
