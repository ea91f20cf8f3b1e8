//! The policy decision at 10,000 policies (SPEC §3, §11: sub-µs).
//!
//! Through the public API only: `get_secret` of a small secret in a store
//! of 1,000 secrets and 10,000 policies.
//!
//! - `superuser`: the same read with no policy consulted (the baseline);
//! - `allowed`: workload `svc-42` (matching 4 of the 10,000 policies by
//!   SPIFFE ID) reads a path its last matching policy grants;
//! - `denied`: the same workload on a path none grants.
//!
//! `allowed − superuser` is the cost of the decision for a known caller.
//! The set of policies matching a caller is cached per caller; the first
//! request of a caller (or any request after the policies change) tests
//! every policy's SPIFFE ID pattern once:
//!
//! - `new_caller`: each call from a caller not seen since the last change
//!   (30,000 distinct IDs, more than the cache holds), i.e. the cache-miss
//!   cost at 10,000 policies.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use spike_benches::{BENCH_WORKLOAD, MemoryFixture, Row, print_summary, secret_path, superuser};
use spike_core::{Caller, Error, SpiffeId};

const SECRETS: usize = 1000;
const POLICIES: usize = 10_000;

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    println!("policy: get_secret of a small secret, {POLICIES} policies, {SECRETS} secrets");
    let fx = MemoryFixture::new(SECRETS, POLICIES);
    let nexus = &fx.nexus;
    let su = superuser();
    let app = spike_benches::workload(BENCH_WORKLOAD);
    let own = secret_path(BENCH_WORKLOAD);
    let other = secret_path(BENCH_WORKLOAD + 1);
    assert!(nexus.get_secret(&app, &own, 0).is_ok());
    assert!(matches!(
        nexus.get_secret(&app, &other, 0),
        Err(Error::Denied)
    ));

    let mut g = c.benchmark_group("policy_10k");
    g.bench_function("superuser", |b| {
        b.iter(|| black_box(nexus.get_secret(&su, &own, 0).unwrap()))
    });
    g.bench_function("allowed", |b| {
        b.iter(|| black_box(nexus.get_secret(&app, &own, 0).unwrap()))
    });
    g.bench_function("denied", |b| {
        b.iter(|| black_box(nexus.get_secret(&app, &other, 0).unwrap_err()))
    });
    // Distinct callers, cycled: more than the per-caller cache holds, so
    // every call misses it. They all match `all-workloads`.
    let callers: Vec<Caller> = (0..30_000)
        .map(|k| {
            Caller::new(SpiffeId::parse(&format!("spiffe://spike.ist/ns/prod/sa/job-{k}")).unwrap())
        })
        .collect();
    let mut k = 0;
    g.sample_size(10);
    g.bench_function("new_caller", |b| {
        b.iter(|| {
            k = (k + 1) % callers.len();
            black_box(nexus.get_secret(&callers[k], "shared/common/s", 0).unwrap())
        })
    });
    g.finish();

    c.final_summary();
    let row = |bench, what, target| Row {
        bench,
        what,
        target,
        elements: None,
    };
    print_summary(
        "policy decision (10,000 policies, via get_secret)",
        &[
            row(
                "policy_10k/superuser",
                "read without a policy decision (baseline)",
                "-",
            ),
            row(
                "policy_10k/allowed",
                "read granted by a policy (known caller)",
                "decision sub-µs (minus baseline)",
            ),
            row(
                "policy_10k/denied",
                "read denied (known caller)",
                "decision sub-µs",
            ),
            row(
                "policy_10k/new_caller",
                "first read of a caller (per-caller cache miss)",
                "- (no per-request scan)",
            ),
        ],
    );
    if let (Some(a), Some(b)) = (
        spike_benches::criterion_median_ns("policy_10k/allowed"),
        spike_benches::criterion_median_ns("policy_10k/superuser"),
    ) {
        println!(
            "policy decision ≈ allowed − superuser = {}",
            spike_benches::fmt_ns(a - b)
        );
    }
}
