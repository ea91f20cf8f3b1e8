//! In-process authorised reads (SPEC §11: ≤ 1 µs median at 100k secrets
//! and 1,000 policies).
//!
//! `Nexus::get_secret` over a `MemoryStore` (reads are served from memory
//! whatever the store), called as:
//!
//! - the superuser role (no policy is consulted), on 4,096 paths spread
//!   over all 100k secrets (`superuser_spread`: mostly cache misses in the
//!   path map) and on the 100 paths of workload `svc-42`
//!   (`superuser_hot`);
//! - workload `svc-42`, which matches a few of the 1,000 policies and is
//!   granted its own 100 secrets by the last of them; paths cycle
//!   (compare with `superuser_hot`: the difference is the decision);
//! - the same workload on a path no policy grants it (denied);
//!
//! first with **no audit sink** (the SPEC figure), then with a
//! `JsonLinesSink` appending to a file in a temporary directory, to show
//! what auditing every call costs.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use spike_benches::{
    BENCH_WORKLOAD, MemoryFixture, Row, paths_of_workload, print_summary, secret_path, superuser,
    workload,
};
use spike_core::{Delivery, Error, JsonLinesSink, Nexus};

const SECRETS: usize = 100_000;
const POLICIES: usize = 1000;

fn cycle<'a>(paths: &'a [String]) -> impl FnMut() -> &'a str {
    let mut k = 0;
    move || {
        k = (k + 1) % paths.len();
        &paths[k]
    }
}

fn bench_reads(c: &mut Criterion, name: &str, nexus: &Nexus, measure: Duration) {
    let su = superuser();
    let app = workload(BENCH_WORKLOAD);
    // Spread over the whole map; a stride co-prime with APPS.
    let all: Vec<String> = (0..4096).map(|k| secret_path(k * 7919 % SECRETS)).collect();
    let own = paths_of_workload(BENCH_WORKLOAD, SECRETS);
    let denied = paths_of_workload(BENCH_WORKLOAD + 1, SECRETS);
    assert!(nexus.get_secret(&app, &own[0], 0).is_ok());
    assert!(matches!(
        nexus.get_secret(&app, &denied[0], 0),
        Err(Error::Denied)
    ));

    let mut g = c.benchmark_group(name);
    g.measurement_time(measure);
    let mut next = cycle(&all);
    g.bench_function("superuser_spread", |b| {
        b.iter(|| black_box(nexus.get_secret(&su, next(), 0).unwrap()))
    });
    let mut next = cycle(&own);
    g.bench_function("superuser_hot", |b| {
        b.iter(|| black_box(nexus.get_secret(&su, next(), 0).unwrap()))
    });
    let mut next = cycle(&own);
    g.bench_function("workload_policy", |b| {
        b.iter(|| black_box(nexus.get_secret(&app, next(), 0).unwrap()))
    });
    let mut next = cycle(&denied);
    g.bench_function("workload_denied", |b| {
        b.iter(|| black_box(nexus.get_secret(&app, next(), 0).unwrap_err()))
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    println!(
        "read: get_secret, {SECRETS} secrets of {} B, {POLICIES} policies",
        spike_benches::VALUE_LEN
    );

    let fx = MemoryFixture::new(SECRETS, POLICIES);
    bench_reads(
        &mut c,
        "read_100k_no_audit",
        &fx.nexus,
        Duration::from_secs(2),
    );

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let sink = Arc::new(JsonLinesSink::file(&log, Delivery::Synchronous).unwrap());
    let audited = fx.audited(sink);
    // Shorter: the log grows by ~300 bytes per call.
    bench_reads(
        &mut c,
        "read_100k_audit_file",
        &audited,
        Duration::from_secs(1),
    );
    let audit_bytes = std::fs::metadata(&log).map_or(0, |m| m.len());

    c.final_summary();
    let row = |bench, what, target| Row {
        bench,
        what,
        target,
        elements: None,
    };
    print_summary(
        "read (in-process, 100k secrets, 1,000 policies)",
        &[
            row(
                "read_100k_no_audit/workload_policy",
                "policy-authorised read, no audit sink",
                "≤ 1 µs median",
            ),
            row(
                "read_100k_no_audit/superuser_hot",
                "superuser read, same 100 paths, no audit sink",
                "≤ 1 µs median",
            ),
            row(
                "read_100k_no_audit/superuser_spread",
                "superuser read, paths across 100k, no audit",
                "≤ 1 µs median",
            ),
            row(
                "read_100k_no_audit/workload_denied",
                "denied read, no audit sink",
                "-",
            ),
            row(
                "read_100k_audit_file/workload_policy",
                "policy-authorised read, JSON-lines file",
                "- (cost of auditing)",
            ),
            row(
                "read_100k_audit_file/superuser_hot",
                "superuser read (same 100 paths), JSON-lines file",
                "- (cost of auditing)",
            ),
            row(
                "read_100k_audit_file/superuser_spread",
                "superuser read (across 100k), JSON-lines file",
                "- (cost of auditing)",
            ),
            row(
                "read_100k_audit_file/workload_denied",
                "denied read, JSON-lines file",
                "-",
            ),
        ],
    );
    println!("(audit file grew to {audit_bytes} bytes during the run)");
}
