//! Cold start (SPEC §6, §11): from `RedbStore::open` + `Nexus::builder(store)
//! .open()` + `unseal(shares)` to serving, for 100,000 secrets of 150 B
//! and 1,000 policies in a redb file (warm page cache).
//!
//! The file is populated once and cached under
//! `target/spike-bench-cache/cold-100000/`. Memory is not measured here:
//! `cargo run --release -p spike-benches --bin cold_start -- --secrets N`
//! prints time and resident memory beside the SPEC target (1M ≤ 2 s,
//! ≤ 2× payload + 300 B per secret).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use criterion::{Criterion, SamplingMode};
use spike_benches::{ColdFixture, Row, print_summary, runtime, superuser};

const SECRETS: usize = 100_000;

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let rt = runtime(2);
    let fx = ColdFixture::get_or_populate(SECRETS, &rt);
    println!("cold_start: open + unseal of {}", fx.db.display());

    let mut g = c.benchmark_group("cold_start");
    g.sampling_mode(SamplingMode::Flat);
    g.bench_function("open_unseal_100k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                rt.block_on(async {
                    let (nexus, _, took) = fx.open_and_unseal().await;
                    total += took;
                    assert!(nexus.get_secret(&superuser(), "apps/svc-0/s-0", 0).is_ok());
                    nexus.close().await;
                });
            }
            total
        })
    });
    g.finish();

    c.final_summary();
    print_summary(
        "cold start (redb file, warm page cache)",
        &[Row {
            bench: "cold_start/open_unseal_100k",
            what: "open + unseal to serving, 100k secrets",
            target: "1M in ≤ 2 s (≈ 0.2 s per 100k, linear)",
            elements: None,
        }],
    );
}
