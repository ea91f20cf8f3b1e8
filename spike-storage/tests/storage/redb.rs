//! RedbStore: persistence, crash safety, locking, file mode.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use spike_storage::{
    BackingStore, CheckpointStats, RedbOptions, RedbStore, StorageError, WriteBatch,
};

#[tokio::test]
async fn data_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spike.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.path(), path);
        let mut batch = WriteBatch::new();
        batch.put(*b"a", *b"1").put(*b"b", *b"2").put(*b"c", *b"3");
        store.commit(batch).await.unwrap();
        let mut batch = WriteBatch::new();
        batch.delete(*b"b");
        store.commit(batch).await.unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    let all = store.scan(b"", None, 10).await.unwrap();
    let keys: Vec<&[u8]> = all.iter().map(|e| e.key.as_slice()).collect();
    assert_eq!(keys, [b"a", b"c"]);
    assert_eq!(store.get(b"c").await.unwrap(), Some(b"3".to_vec()));
}

#[test]
fn second_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spike.redb");
    let _first = RedbStore::open(&path).unwrap();
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StorageError::Locked { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let msg = err.to_string();
    assert!(
        msg.contains("another spike process has DATA_FILE open"),
        "{msg}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[test]
fn missing_parent_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = RedbStore::open(dir.path().join("no/such/dir/spike.redb")).unwrap_err();
    assert!(matches!(err, StorageError::Io { .. }), "{err:?}");
}

#[test]
fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spike.redb");
    std::fs::write(&path, vec![0x5A; 8192]).unwrap();
    let err = RedbStore::open(&path).unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
}

#[cfg(unix)]
#[test]
fn new_file_has_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spike.redb");
    let _store = RedbStore::open(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
}

#[tokio::test]
async fn concurrent_commits_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(dir.path().join("spike.redb")).unwrap());
    let tasks: Vec<_> = (0..8u8)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..10u8 {
                    let mut batch = WriteBatch::new();
                    batch.put([t, i], [t ^ i]);
                    store.commit(batch).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let all = store.scan(b"", None, 1000).await.unwrap();
    assert_eq!(all.len(), 80);
}

#[test]
fn works_outside_a_tokio_runtime() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    // Without a runtime the calls run inline: ready on the first poll.
    fn now<T>(fut: impl Future<Output = T>) -> T {
        let mut fut = std::pin::pin!(fut);
        match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("not ready on first poll"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("spike.redb")).unwrap();
    let mut batch = WriteBatch::new();
    batch.put(*b"k", *b"v");
    now(store.commit(batch)).unwrap();
    assert_eq!(now(store.get(b"k")).unwrap(), Some(b"v".to_vec()));
    assert_eq!(now(store.scan(b"", None, 5)).unwrap().len(), 1);
}

// ---- the write-ahead log ----

/// A copy of the store's files taken while it is open, once no checkpoint
/// runs in the background: what a crash at that instant would leave on
/// disk (every commit has returned, so its log frame, or its durable redb
/// commit, is in the files).
fn snapshot(store: &RedbStore, to: &Path) {
    store.wait_for_checkpoint().unwrap();
    let path = store.path();
    std::fs::copy(path, to).unwrap();
    for suffix in ["-wal", "-wal2"] {
        let mut from_log = path.as_os_str().to_owned();
        from_log.push(suffix);
        let mut to_log = to.as_os_str().to_owned();
        to_log.push(suffix);
        std::fs::copy(&from_log, &to_log).unwrap();
    }
}

async fn contents(store: &RedbStore) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let all = store.scan(b"", None, usize::MAX).await.unwrap();
    all.into_iter().map(|e| (e.key, e.value)).collect()
}

/// Puts, overwrites and deletes through a 4 KiB log, crossing checkpoints,
/// restarts of the log and batches too large for it; a crash after any
/// commit must find exactly what was committed.
#[tokio::test]
async fn a_crash_after_any_commit_recovers_every_commit_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spike.redb");
    let store = RedbStore::open_with(&path, RedbOptions::default().log_capacity(4096)).unwrap();
    let mut model = BTreeMap::new();
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..60u32 {
        let mut batch = WriteBatch::new();
        for _ in 0..rng.usize(1..5) {
            let key = vec![b'k', rng.u8(..20)];
            if rng.u8(..4) == 0 {
                batch.delete(key.clone());
                model.remove(&key);
            } else {
                // Mostly small values; now and then one larger than the log.
                let len = if rng.u8(..10) == 0 {
                    5000
                } else {
                    rng.usize(1..900)
                };
                let value = vec![round as u8; len];
                batch.put(key.clone(), value.clone());
                model.insert(key, value);
            }
        }
        store.commit(batch).await.unwrap();

        let crashed = dir.path().join(format!("crash-{round}.redb"));
        snapshot(&store, &crashed);
        let recovered = RedbStore::open(&crashed).unwrap();
        assert_eq!(contents(&recovered).await, model, "after commit {round}");
    }
}

/// Random commits, gets and paged scans against a model, through logs of
/// several sizes: reads must merge the overlay of un-checkpointed writes
/// with redb exactly, before and after each checkpoint.
#[tokio::test]
async fn reads_between_checkpoints_match_a_model() {
    for (seed, capacity, buffered) in [
        (1, 2048, false),
        (2, 16 * 1024, false),
        (3, 1 << 20, false),
        (4, 16 * 1024, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let options = RedbOptions::default()
            .log_capacity(capacity)
            .buffered_log(buffered);
        let store = RedbStore::open_with(dir.path().join("spike.redb"), options).unwrap();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut rng = fastrand::Rng::with_seed(seed);
        let key = |rng: &mut fastrand::Rng| vec![rng.u8(..3), rng.u8(..6)];
        for step in 0..400u32 {
            let mut batch = WriteBatch::new();
            for _ in 0..rng.usize(1..4) {
                let k = key(&mut rng);
                if rng.bool() {
                    batch.delete(k.clone());
                    model.remove(&k);
                } else {
                    let v = step.to_be_bytes().repeat(rng.usize(1..40));
                    batch.put(k.clone(), v.clone());
                    model.insert(k, v);
                }
            }
            store.commit(batch).await.unwrap();

            let k = key(&mut rng);
            assert_eq!(
                store.get(&k).await.unwrap().as_ref(),
                model.get(&k),
                "get at {step}"
            );
            // A paged scan of one prefix, or of everything.
            let prefix = if rng.bool() {
                vec![rng.u8(..3)]
            } else {
                Vec::new()
            };
            let limit = rng.usize(1..8);
            let mut got = Vec::new();
            let mut after: Option<Vec<u8>> = None;
            loop {
                let page = store.scan(&prefix, after.as_deref(), limit).await.unwrap();
                assert!(page.len() <= limit);
                let Some(last) = page.last() else { break };
                after = Some(last.key.clone());
                got.extend(page.into_iter().map(|e| (e.key, e.value)));
            }
            let want: Vec<_> = model
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(got, want, "scan of {prefix:?} by {limit} at step {step}");
        }
    }
}

#[tokio::test]
async fn checkpoints_are_counted_with_their_keys_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let options = RedbOptions::default().log_capacity(8 * 1024);
    let store = RedbStore::open_with(dir.path().join("spike.redb"), options).unwrap();
    assert_eq!(store.checkpoint_stats(), CheckpointStats::default());
    // 1 KiB values over five keys into an 8 KiB log: the log fills, and
    // so is checkpointed, every few commits.
    for i in 0..40u8 {
        let mut batch = WriteBatch::new();
        batch.put(vec![i % 5], vec![i; 1024]);
        store.commit(batch).await.unwrap();
    }
    let stats = store.checkpoint_stats();
    assert!(stats.count >= 4, "{stats:?}");
    // Each checkpoint writes the keys changed since the last: 1 to 5.
    assert!(
        stats.keys >= stats.count && stats.keys <= 5 * stats.count,
        "{stats:?}"
    );
    assert!(stats.time > Duration::ZERO, "{stats:?}");
}

#[tokio::test]
async fn a_reopened_store_continues_the_log_where_recovery_left_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spike.redb");
    let crashed = dir.path().join("crashed.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        for i in 0..5u8 {
            let mut batch = WriteBatch::new();
            batch.put([i], [i]);
            store.commit(batch).await.unwrap();
        }
        snapshot(&store, &crashed);
    }
    // Recover from the log, write more, crash again: both generations hold.
    let store = RedbStore::open(&crashed).unwrap();
    let mut batch = WriteBatch::new();
    batch.put([9u8], [9u8]).delete([0u8]);
    store.commit(batch).await.unwrap();
    let twice = dir.path().join("twice.redb");
    snapshot(&store, &twice);
    let store = RedbStore::open(&twice).unwrap();
    let keys: Vec<Vec<u8>> = contents(&store).await.into_keys().collect();
    assert_eq!(keys, [[1u8], [2], [3], [4], [9]]);
}

#[tokio::test]
async fn a_clean_close_leaves_the_database_file_complete_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spike.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        let mut batch = WriteBatch::new();
        batch.put(*b"a", *b"1");
        store.commit(batch).await.unwrap();
    }
    // The log is not needed after a clean close (it was checkpointed).
    for suffix in ["-wal", "-wal2"] {
        let mut log = path.as_os_str().to_owned();
        log.push(suffix);
        std::fs::remove_file(&log).unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.get(b"a").await.unwrap(), Some(b"1".to_vec()));
}

#[cfg(unix)]
#[test]
fn the_log_files_have_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let _store = RedbStore::open(dir.path().join("spike.redb")).unwrap();
    for log in ["spike.redb-wal", "spike.redb-wal2"] {
        let mode = std::fs::metadata(dir.path().join(log))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{log}: mode {mode:o}");
    }
}

// ---- crash test: a writer child process killed with SIGKILL ----

/// Set in the child: the database path; selects the writer mode.
const WRITER_PATH: &str = "SPIKE_STORAGE_CRASH_WRITER_PATH";
/// Set in the child: the first batch number to write.
const WRITER_START: &str = "SPIKE_STORAGE_CRASH_WRITER_START";
/// Set in the child: the write-ahead log's capacity in bytes.
const WRITER_LOG_CAPACITY: &str = "SPIKE_STORAGE_CRASH_WRITER_LOG_CAPACITY";
const KEYS_PER_BATCH: u64 = 4;

fn crash_key(batch: u64, j: u64) -> Vec<u8> {
    let mut key = vec![0x01];
    key.extend_from_slice(&batch.to_be_bytes());
    key.extend_from_slice(&j.to_be_bytes());
    key
}

fn crash_value(batch: u64, j: u64) -> Vec<u8> {
    // A few KiB, so that a commit spans several pages.
    let len = 500 + (batch * 37 + j * 101) as usize % 3000;
    (0..len)
        .map(|i| (i as u64 ^ batch ^ (j << 4)) as u8)
        .collect()
}

/// The writer: a no-op in a normal test run. In the child it commits
/// numbered batches forever, printing `ack N` once batch N is committed.
#[tokio::test]
async fn crash_writer_child() {
    let Some(path) = std::env::var_os(WRITER_PATH) else {
        return;
    };
    let start: u64 = std::env::var(WRITER_START).unwrap().parse().unwrap();
    let capacity: u64 = std::env::var(WRITER_LOG_CAPACITY).unwrap().parse().unwrap();
    let store = RedbStore::open_with(&path, RedbOptions::default().log_capacity(capacity)).unwrap();
    let mut out = std::io::stdout().lock();
    let deadline = Instant::now() + Duration::from_secs(20); // if the parent dies
    for n in start.. {
        let mut batch = WriteBatch::new();
        for j in 0..KEYS_PER_BATCH {
            batch.put(crash_key(n, j), crash_value(n, j));
        }
        store.commit(batch).await.unwrap();
        writeln!(out, "ack {n}").unwrap();
        out.flush().unwrap();
        assert!(Instant::now() < deadline, "crash writer was never killed");
    }
}

/// The batch number of an `ack N` line (libtest may print its own text
/// before the first one, on the same line).
fn ack(line: &str) -> Option<u64> {
    let at = line.find("ack ")?;
    Some(line[at + 4..].trim().parse().unwrap())
}

/// Run the writer in a child, kill it with SIGKILL after `kill_after` acks
/// (so mid-commit, most likely), and return every batch number it acked.
fn run_writer_and_kill(path: &Path, log_capacity: u64, start: u64, kill_after: usize) -> Vec<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "redb::crash_writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER_PATH, path)
        .env(WRITER_START, start.to_string())
        .env(WRITER_LOG_CAPACITY, log_capacity.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    let mut killed = false;
    for line in lines.by_ref() {
        if let Some(n) = ack(&line.unwrap()) {
            acked.push(n);
            if acked.len() == kill_after {
                child.kill().unwrap(); // SIGKILL on unix
                killed = true;
                break;
            }
        }
    }
    // Acks already in the pipe were acknowledged before the kill: they count.
    for line in lines {
        if let Some(n) = ack(&line.unwrap()) {
            acked.push(n);
        }
    }
    let status = child.wait().unwrap();
    assert!(killed, "writer exited before {kill_after} acks: {status}");
    acked
}

#[test]
fn committed_data_survives_sigkill_of_the_writer() {
    sigkill_rounds(16 * 1024 * 1024);
}

/// A log of 8 KiB holds about one batch: commits go through checkpoints
/// and restarts of the log all the time, and some straight to redb.
#[test]
fn committed_data_survives_sigkill_of_the_writer_with_a_small_log() {
    sigkill_rounds(8 * 1024);
}

fn sigkill_rounds(log_capacity: u64) {
    if std::env::var_os(WRITER_PATH).is_some() {
        return; // in a child
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spike.redb");
    let mut acked_all: Vec<u64> = Vec::new();
    let mut next = 0;
    for kill_after in [40, 150, 7, 90] {
        let acked = run_writer_and_kill(&path, log_capacity, next, kill_after);
        assert_eq!(acked.first(), Some(&next));
        next = acked.last().unwrap() + 1;
        acked_all.extend(acked);

        // Reopen (recovering if the kill hit a commit) and check.
        let store = RedbStore::open(&path).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let all = runtime
            .block_on(store.scan(&[0x01], None, usize::MAX))
            .unwrap();
        // Every batch in the file is whole (atomic across the kill) and intact.
        let mut batches = Vec::new();
        for chunk in all.chunks(KEYS_PER_BATCH as usize) {
            let n = u64::from_be_bytes(chunk[0].key[1..9].try_into().unwrap());
            for (j, entry) in chunk.iter().enumerate() {
                assert_eq!(entry.key, crash_key(n, j as u64), "batch {n} is torn");
                assert_eq!(
                    entry.value,
                    crash_value(n, j as u64),
                    "batch {n} is damaged"
                );
            }
            batches.push(n);
        }
        // Every acknowledged batch is there, plus at most the one batch
        // committed after the last acknowledgement was printed.
        let want: Vec<u64> = (0..next).collect();
        assert_eq!(acked_all, want, "acks are not consecutive");
        assert!(
            batches == want || batches == (0..=next).collect::<Vec<_>>(),
            "after the kill: batches 0..{} in the file, acknowledged 0..{next}",
            batches.len()
        );
    }
}
