//! Durable write throughput (SPEC §6, §11): `Nexus::put_secret` on a real
//! redb file (every commit fsync'd, `Durability::Immediate`), from 1 and
//! from 32 concurrent writers on a 2-worker multi-thread tokio runtime.
//!
//! Each writer writes new ~150-byte secrets one after another; a write
//! returns once durable. One Criterion iteration = one write per writer,
//! so the rate printed (`thrpt`, elements/s) is durable writes per second
//! across all writers. Concurrent writers share commits (group commit).
//! The file lives in a temporary directory under `target/` (a real disk:
//! a tmpfs would make fsync free).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use spike_benches::{Row, print_summary, runtime, secret_value, superuser, target_dir};
use spike_core::{Nexus, WriteOptions};
use spike_storage::RedbStore;

const WRITERS: [usize; 2] = [1, 32];

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let rt = runtime(2);
    std::fs::create_dir_all(target_dir()).unwrap();
    let dir = tempfile::tempdir_in(target_dir()).unwrap();
    let db = dir.path().join("write.redb");
    println!("write: put_secret to {} (fsync per commit)", db.display());
    let nexus = rt.block_on(async {
        let nexus = Nexus::builder(Arc::new(RedbStore::open(&db).unwrap()))
            .open()
            .await
            .unwrap();
        nexus.init().await.unwrap();
        nexus
    });
    let counter = Arc::new(AtomicUsize::new(0));

    let mut g = c.benchmark_group("durable_put");
    for writers in WRITERS {
        g.throughput(Throughput::Elements(writers as u64));
        g.bench_function(format!("writers_{writers}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    let mut tasks = tokio::task::JoinSet::new();
                    for w in 0..writers {
                        let (nexus, counter) = (nexus.clone(), Arc::clone(&counter));
                        tasks.spawn(async move {
                            let admin = superuser();
                            for _ in 0..iters {
                                let n = counter.fetch_add(1, Ordering::Relaxed);
                                nexus
                                    .put_secret(
                                        &admin,
                                        &format!("bench/w-{w}/s-{n}"),
                                        secret_value(n),
                                        WriteOptions::default(),
                                    )
                                    .await
                                    .unwrap();
                            }
                        });
                    }
                    while let Some(r) = tasks.join_next().await {
                        r.unwrap();
                    }
                    started.elapsed()
                })
            })
        });
    }
    g.finish();
    let written = counter.load(Ordering::Relaxed);
    rt.block_on(nexus.close());

    c.final_summary();
    print_summary(
        "durable writes (redb, fsync, group commit)",
        &[
            Row {
                bench: "durable_put/writers_1",
                what: "durable writes/s, 1 writer (1 record per commit)",
                target: "- (SPEC: redb 4.4k commits/s of 1 record)",
                elements: Some(1),
            },
            Row {
                bench: "durable_put/writers_32",
                what: "durable writes/s, 32 concurrent writers",
                target: "≥ 8× OpenBao's 2k-4k writes/s (over mTLS)",
                elements: Some(32),
            },
        ],
    );
    println!("({written} secrets written in all)");
}
