//! Throwaway measurements, not timed tests. Run with
//! `cargo test -p spike-storage --release --test storage -- --ignored --nocapture measure`.

use std::time::Instant;

use spike_storage::{BackingStore, RedbStore, WriteBatch};

fn key(i: u64) -> Vec<u8> {
    // The shape of a spike-core key: a kind byte and a 32-byte keyed hash.
    let mut k = vec![0x01];
    for r in 0..4u64 {
        k.extend_from_slice(&(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ r).to_be_bytes());
    }
    k
}

#[tokio::test]
#[ignore = "measurement; run in release by hand"]
async fn measure_redb() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("spike.redb")).unwrap();
    let value = vec![0xAB; 150];

    let n = 1_000u64;
    let start = Instant::now();
    for i in 0..n {
        let mut batch = WriteBatch::new();
        batch.put(key(i), value.clone());
        store.commit(batch).await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!("1-record commits: {:.0} commits/s", n as f64 / secs);

    let commits = 500u64;
    let start = Instant::now();
    for c in 0..commits {
        let mut batch = WriteBatch::new();
        for j in 0..32 {
            batch.put(key(1_000_000 + c * 32 + j), value.clone());
        }
        store.commit(batch).await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "32-record commits: {:.0} commits/s, {:.0} records/s",
        commits as f64 / secs,
        (commits * 32) as f64 / secs
    );

    // Fill to 100k records, then time reads.
    for c in 0..10u64 {
        let mut batch = WriteBatch::new();
        for j in 0..10_000 {
            batch.put(key(2_000_000 + c * 10_000 + j), value.clone());
        }
        store.commit(batch).await.unwrap();
    }
    let reads = 20_000u64;
    let start = Instant::now();
    for i in 0..reads {
        assert!(store.get(&key(2_000_000 + i)).await.unwrap().is_some());
    }
    let inline = start.elapsed().as_secs_f64() / reads as f64;
    println!("get (inline): {:.2} µs", inline * 1e6);
    let store = std::sync::Arc::new(store);
    let start = Instant::now();
    for i in 0..reads {
        let s = std::sync::Arc::clone(&store);
        let k = key(2_000_000 + i);
        let v = tokio::task::spawn_blocking(move || {
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            let mut fut = s.get(&k);
            match fut.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(v) => v,
                std::task::Poll::Pending => unreachable!(),
            }
        })
        .await
        .unwrap();
        assert!(v.unwrap().is_some());
    }
    let blocking = start.elapsed().as_secs_f64() / reads as f64;
    println!("get (spawn_blocking): {:.2} µs", blocking * 1e6);

    let start = Instant::now();
    let mut after: Option<Vec<u8>> = None;
    let mut total = 0;
    loop {
        let page = store.scan(&[0x01], after.as_deref(), 10_000).await.unwrap();
        if page.is_empty() {
            break;
        }
        total += page.len();
        after = Some(page.last().unwrap().key.clone());
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "scan: {total} records in pages of 10k: {:.1} ms ({:.0} records/s)",
        secs * 1e3,
        total as f64 / secs
    );
}
