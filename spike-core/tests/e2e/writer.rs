//! The writer: group commit, durability before acknowledgement, and an
//! unavailable or flaky backing store (SPEC §4, §6).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spike_core::{Error, ErrorCode, Nexus, Share, WriteOptions};
use spike_storage::{FaultController, FaultyStore, MemoryStore, RedbStore};

use crate::{assert_err, data, put, su, value};

async fn faulty_memory(
    deadline: Option<Duration>,
) -> (
    Nexus,
    FaultController,
    Arc<FaultyStore<MemoryStore>>,
    Vec<Share>,
) {
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let control = store.controller();
    let mut builder = Nexus::builder(store.clone());
    if let Some(d) = deadline {
        builder = builder.write_deadline(d);
    }
    let nexus = builder.open().await.unwrap();
    let shares = nexus.init().await.unwrap();
    (nexus, control, store, shares)
}

/// A new handle on the same store, unsealed: what a restart sees.
async fn reopen_on(nexus: Nexus, store: &Arc<FaultyStore<MemoryStore>>, shares: &[Share]) -> Nexus {
    nexus.close().await;
    let nexus = Nexus::builder(store.clone()).open().await.unwrap();
    nexus.unseal(shares).await.unwrap();
    nexus
}

async fn try_put(nexus: &Nexus, path: &str, v: &str) -> Result<u64, Error> {
    nexus
        .put_secret(&su(), path, data(&[("k", v)]), WriteOptions::default())
        .await
        .map(|v| v.number)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits_and_never_lose_a_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FaultyStore::new(
        RedbStore::open(dir.path().join("spike.redb")).unwrap(),
    ));
    let control = store.controller();
    let nexus = Nexus::builder(store.clone()).open().await.unwrap();
    let shares = nexus.init().await.unwrap();
    const N: usize = 64;

    // Distinct paths: writes share commits.
    let before = control.commits();
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let nexus = nexus.clone();
            tokio::spawn(async move { try_put(&nexus, &format!("many/{i}"), &i.to_string()).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 1);
    }
    let commits = control.commits() - before;
    assert!(
        commits < N as u64,
        "{commits} commits for {N} concurrent writes: no group commit"
    );
    for i in 0..N {
        assert_eq!(value(&nexus, &format!("many/{i}")), i.to_string());
    }

    // One path: every acknowledged version distinct, consecutive, and the
    // data of the newest is the last writer's.
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let nexus = nexus.clone();
            tokio::spawn(async move {
                let n = try_put(&nexus, "one", &i.to_string()).await.unwrap();
                (n, i)
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    let versions: BTreeSet<u64> = acked.iter().map(|a| a.0).collect();
    assert_eq!(versions, (1..=N as u64).collect::<BTreeSet<_>>());
    let meta = nexus.secret_metadata(&su(), "one").unwrap();
    assert_eq!(meta.current_version, N as u64);
    let last_writer = acked.iter().find(|a| a.0 == N as u64).unwrap().1;
    assert_eq!(value(&nexus, "one"), last_writer.to_string());
    // Each retained version holds the data of the writer it was acked to.
    for (n, i) in &acked {
        if *n >= meta.oldest_version {
            assert_eq!(crate::live(&nexus, "one", *n)["k"], i.to_string());
        }
    }

    // All of it was durable: a restart sees the same.
    nexus.close().await;
    drop(store);
    let nexus = Nexus::builder(Arc::new(
        RedbStore::open(dir.path().join("spike.redb")).unwrap(),
    ))
    .open()
    .await
    .unwrap();
    nexus.unseal(&shares[..2]).await.unwrap();
    for i in 0..N {
        assert_eq!(value(&nexus, &format!("many/{i}")), i.to_string());
    }
    assert_eq!(
        nexus.secret_metadata(&su(), "one").unwrap().current_version,
        N as u64
    );
    assert_eq!(value(&nexus, "one"), last_writer.to_string());
}

#[tokio::test]
async fn a_briefly_unavailable_store_delays_writes_but_they_succeed() {
    let (nexus, control, store, shares) = faulty_memory(None).await;
    put(&nexus, "before", "x").await;
    control.set_unavailable(true);
    let healer = {
        let control = control.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            control.set_unavailable(false);
        })
    };
    let started = Instant::now();
    // Reads are served from memory meanwhile.
    assert_eq!(value(&nexus, "before"), "x");
    assert_eq!(try_put(&nexus, "during", "y").await.unwrap(), 1);
    assert!(started.elapsed() >= Duration::from_millis(90), "it waited");
    assert!(started.elapsed() < Duration::from_secs(5));
    healer.await.unwrap();
    assert!(control.injected_failures() > 0);
    assert_eq!(value(&nexus, "during"), "y");
    let nexus = reopen_on(nexus, &store, &shares[..2]).await;
    assert_eq!(value(&nexus, "during"), "y");
    assert_eq!(value(&nexus, "before"), "x");
}

#[tokio::test]
async fn an_unavailable_store_fails_writes_at_the_deadline_and_reads_go_on() {
    let (nexus, control, store, shares) = faulty_memory(Some(Duration::from_millis(200))).await;
    put(&nexus, "kept", "v1").await;
    control.set_unavailable(true);
    let started = Instant::now();
    let e = try_put(&nexus, "lost", "x").await.unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(e, Error::Storage(_)), "{e:?}");
    assert_eq!(e.code(), ErrorCode::Unavailable);
    assert!(waited >= Duration::from_millis(100), "retried: {waited:?}");
    assert!(
        waited < Duration::from_secs(3),
        "gave up at the deadline: {waited:?}"
    );
    // Nothing visible.
    assert_err!(nexus.get_secret(&su(), "lost", 0), Error::NotFound);
    assert_eq!(nexus.list_all_secrets(&su()).unwrap(), ["kept"]);
    // An update of an existing secret fails the same way and changes nothing.
    assert_err!(try_put(&nexus, "kept", "v2").await, Error::Storage(_));
    assert_eq!(value(&nexus, "kept"), "v1");
    assert_eq!(
        nexus
            .secret_metadata(&su(), "kept")
            .unwrap()
            .current_version,
        1
    );
    // Reads keep working while the store is down.
    for _ in 0..3 {
        assert_eq!(value(&nexus, "kept"), "v1");
    }

    control.set_unavailable(false);
    assert_eq!(try_put(&nexus, "kept", "v2").await.unwrap(), 2);
    assert_eq!(try_put(&nexus, "new", "n").await.unwrap(), 1);
    let nexus = reopen_on(nexus, &store, &shares[1..]).await;
    assert_eq!(value(&nexus, "kept"), "v2");
    assert_err!(nexus.get_secret(&su(), "lost", 0), Error::NotFound);
    assert_eq!(nexus.list_all_secrets(&su()).unwrap(), ["kept", "new"]);
}

#[tokio::test]
async fn a_lost_acknowledgement_is_reconciled_by_the_next_write() {
    let (nexus, control, store, shares) = faulty_memory(Some(Duration::from_millis(200))).await;
    put(&nexus, "a", "1").await;
    // One lost acknowledgement alone is retried away (re-applying the same
    // batch is harmless): the write succeeds.
    control.fail_after_commit_next(1);
    assert_eq!(try_put(&nexus, "retried", "R").await.unwrap(), 1);
    assert_eq!(control.injected_failures(), 1);
    assert_eq!(value(&nexus, "retried"), "R");
    // Every attempt until the deadline lands but loses its acknowledgement:
    // the write reports an error, its outcome unknown.
    control.fail_after_commit_next(u64::MAX);
    let e = try_put(&nexus, "landed", "L").await.unwrap_err();
    control.fail_after_commit_next(0);
    assert!(matches!(e, Error::Storage(_)), "{e:?}");
    assert_eq!(e.code(), ErrorCode::Unavailable);
    assert!(control.injected_failures() > 1);
    // The store answers reads: the writer read the manifest back before
    // answering, found the write landed and published it.
    assert_eq!(value(&nexus, "landed"), "L");
    assert_eq!(try_put(&nexus, "next", "N").await.unwrap(), 1);
    assert_eq!(value(&nexus, "landed"), "L");
    assert_eq!(value(&nexus, "next"), "N");
    // The manifest matches the records: a restart unseals and sees both.
    let nexus = reopen_on(nexus, &store, &shares[..2]).await;
    assert_eq!(value(&nexus, "landed"), "L");
    assert_eq!(value(&nexus, "next"), "N");
    assert_eq!(value(&nexus, "a"), "1");
    assert_eq!(value(&nexus, "retried"), "R");
}

/// A write whose acknowledgement was lost, followed by a write to the SAME
/// path: no version may be lost or numbered twice, and the store must
/// still unseal. Regression: the retry was numbered 2 again and replaced
/// the landed version 2, and the manifest no longer matched the records.
#[tokio::test]
async fn a_lost_acknowledgement_then_a_write_to_the_same_path() {
    let (nexus, control, store, shares) = faulty_memory(Some(Duration::from_millis(200))).await;
    put(&nexus, "p", "v1").await;
    control.fail_after_commit_next(u64::MAX);
    assert_err!(try_put(&nexus, "p", "v2").await, Error::Storage(_));
    control.fail_after_commit_next(0);
    // The retry of a client that saw the failure.
    assert_eq!(try_put(&nexus, "p", "v3").await.unwrap(), 3, "v2 landed");
    assert_eq!(crate::live(&nexus, "p", 2)["k"], "v2");
    assert_eq!(value(&nexus, "p"), "v3");
    let nexus = reopen_on(nexus, &store, &shares[..2]).await;
    let meta = nexus.secret_metadata(&su(), "p").unwrap();
    assert_eq!(meta.current_version, 3);
    assert_eq!(crate::live(&nexus, "p", 1)["k"], "v1");
    assert_eq!(crate::live(&nexus, "p", 2)["k"], "v2");
    assert_eq!(value(&nexus, "p"), "v3");
}

/// As above, but the store does not even answer reads when the commit
/// fails, so the outcome stays unknown until a later write. Writes
/// prepared meanwhile must not be committed on top of the landed one.
#[tokio::test]
async fn a_lost_acknowledgement_settled_later_never_reuses_a_version() {
    let (nexus, control, store, shares) = faulty_memory(Some(Duration::from_millis(200))).await;
    put(&nexus, "p", "v1").await;
    put(&nexus, "q", "q1").await;
    control.set_reads_failing(true);
    control.fail_after_commit_next(u64::MAX);
    assert_err!(try_put(&nexus, "p", "v2").await, Error::Storage(_));
    control.fail_after_commit_next(0);
    assert_eq!(value(&nexus, "p"), "v1", "unknown outcome: not published");
    // While the outcome cannot be settled, writes are refused.
    let e = try_put(&nexus, "q", "q2").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable);
    assert_eq!(value(&nexus, "q"), "q1");
    control.set_reads_failing(false);
    // This retry was prepared against version 1: refused, not committed.
    let retry = try_put(&nexus, "p", "v3").await;
    assert_eq!(value(&nexus, "p"), "v2", "the landed write is published");
    match retry {
        Ok(n) => panic!("a write prepared before the landed version 2 was acked as {n}"),
        Err(e) => assert_eq!(e.code(), ErrorCode::Unavailable, "{e:?}"),
    }
    assert_eq!(try_put(&nexus, "p", "v3").await.unwrap(), 3);
    assert_eq!(try_put(&nexus, "q", "q2").await.unwrap(), 2);
    let nexus = reopen_on(nexus, &store, &shares[1..]).await;
    assert_eq!(
        nexus.secret_metadata(&su(), "p").unwrap().current_version,
        3
    );
    assert_eq!(crate::live(&nexus, "p", 2)["k"], "v2");
    assert_eq!(value(&nexus, "p"), "v3");
    assert_eq!(value(&nexus, "q"), "q2");
}
