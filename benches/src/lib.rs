//! Fixtures for the spike-rs benchmarks (unpublished).
//!
//! Deterministic secrets (~150-byte JSON values) and policies, stores
//! populated through the public [`Nexus`] API, a cached redb file for the
//! cold-start measurements, and the summary that prints each figure beside
//! its SPEC §11 target.
//!
//! ```text
//! cargo bench -p spike-benches                  # read, policy, write, cold_start
//! cargo bench -p spike-benches --bench read     # one of them
//! cargo run --release -p spike-benches --bin cold_start -- --secrets 1000000
//! ```
//!
//! Populated redb files are cached under `target/spike-bench-cache/`; delete
//! that directory to start over.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark fixtures: a failure means a broken setup, and a panic says where"
)]

use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use spike_core::{
    AuditOptions, AuditSink, Caller, Nexus, Permission, PolicySpec, SecretData, Share, SpiffeId,
    WriteOptions,
};
use spike_storage::{MemoryStore, RedbStore};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

/// The superuser role's SPIFFE ID in the default trust domain.
pub const SUPERUSER_ID: &str = "spiffe://spike.ist/spike/pilot/role/superuser";
/// Distinct `apps/svc-N/` folders secrets are spread over.
pub const APPS: usize = 1000;
/// The workload the read benches call as (`svc-42`).
pub const BENCH_WORKLOAD: usize = 42;
/// Size of every secret value, as stored (compact JSON).
pub const VALUE_LEN: usize = 150;
/// Password length giving a [`VALUE_LEN`]-byte JSON object.
const PASSWORD_LEN: usize = VALUE_LEN - 40;

/// The superuser caller.
pub fn superuser() -> Caller {
    Caller::new(SpiffeId::parse(SUPERUSER_ID).unwrap())
}

/// The SPIFFE ID of workload `n`: `spiffe://spike.ist/ns/prod/sa/svc-N`.
pub fn workload_id(n: usize) -> String {
    format!("spiffe://spike.ist/ns/prod/sa/svc-{n}")
}

/// Workload `n` as a caller.
pub fn workload(n: usize) -> Caller {
    Caller::new(SpiffeId::parse(&workload_id(n)).unwrap())
}

/// Path of secret `i`: `apps/svc-{i % APPS}/s-{i}`.
pub fn secret_path(i: usize) -> String {
    format!("apps/svc-{}/s-{i}", i % APPS)
}

/// Paths of the first `secrets` secrets that workload `n` owns.
pub fn paths_of_workload(n: usize, secrets: usize) -> Vec<String> {
    (n..secrets).step_by(APPS).map(secret_path).collect()
}

/// The value of secret `i`: `{"password":"…","username":"svc-NNNNNNN"}`,
/// exactly [`VALUE_LEN`] bytes, deterministic.
pub fn secret_value(i: usize) -> SecretData {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let password: String = (0..PASSWORD_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(ALPHABET[(x % ALPHABET.len() as u64) as usize])
        })
        .collect();
    SecretData::from_pairs([
        ("password", password),
        ("username", format!("svc-{:07}", i % 10_000_000)),
    ])
    .unwrap()
}

/// `n` policies with distinct SPIFFE ID patterns:
///
/// - `all-workloads`: `spiffe://spike\.ist/ns/prod/sa/.*` may read and
///   list `shared/common/.*`;
/// - `n / 100 - 1` group policies `g-G`: `…/sa/svc-G[0-9]*` on `shared/g-G/.*`;
/// - the rest `p-I`: exactly `…/sa/svc-I` on `apps/svc-I/.*` (read, write,
///   list).
///
/// So workload `svc-42` matches a few: `all-workloads`, `g-4`, `g-42` (with
/// more than 4,300 policies) and `p-42`, and its reads of `apps/svc-42/…`
/// are granted by the last of them in name order: every decision tests the
/// path pattern of every policy that matches the caller.
pub fn policy_specs(n: usize) -> Vec<PolicySpec> {
    use Permission::{List, Read, Write};
    let spec = |name: String, id: String, path: String, perms: &[Permission]| PolicySpec {
        name,
        spiffeid_pattern: id,
        path_pattern: path,
        permissions: perms.iter().copied().collect(),
    };
    let groups = (n / 100).max(1).min(n);
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    out.push(spec(
        "all-workloads".into(),
        r"spiffe://spike\.ist/ns/prod/sa/.*".into(),
        "shared/common/.*".into(),
        &[Read, List],
    ));
    for g in 0..groups - 1 {
        out.push(spec(
            format!("g-{g:05}"),
            format!(r"spiffe://spike\.ist/ns/prod/sa/svc-{g}[0-9]*"),
            format!("shared/g-{g}/.*"),
            &[Read, List],
        ));
    }
    for i in 0..n - groups {
        out.push(spec(
            format!("p-{i:05}"),
            format!(r"spiffe://spike\.ist/ns/prod/sa/svc-{i}"),
            format!("apps/svc-{i}/.*"),
            &[Read, Write, List],
        ));
    }
    out
}

/// A multi-thread runtime with `workers` worker threads.
pub fn runtime(workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// Writes secrets `range` as the superuser from `tasks` concurrent tasks
/// (their writes share commits).
pub async fn put_secrets(nexus: &Nexus, range: Range<usize>, tasks: usize) {
    let next = Arc::new(AtomicUsize::new(range.start));
    let mut set = JoinSet::new();
    for _ in 0..tasks.max(1) {
        let (nexus, next, end) = (nexus.clone(), Arc::clone(&next), range.end);
        set.spawn(async move {
            let admin = superuser();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                nexus
                    .put_secret(
                        &admin,
                        &secret_path(i),
                        secret_value(i),
                        WriteOptions::default(),
                    )
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

/// Stores `policies` as the superuser from 32 concurrent tasks.
pub async fn put_policies(nexus: &Nexus, policies: Vec<PolicySpec>) {
    let queue = Arc::new(std::sync::Mutex::new(policies));
    let mut set = JoinSet::new();
    for _ in 0..32 {
        let (nexus, queue) = (nexus.clone(), Arc::clone(&queue));
        set.spawn(async move {
            let admin = superuser();
            loop {
                let Some(spec) = queue.lock().unwrap().pop() else {
                    break;
                };
                nexus.put_policy(&admin, spec).await.unwrap();
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

/// An unsealed in-memory store with secrets and policies, and what it
/// takes to open it again.
pub struct MemoryFixture {
    /// Runs the store's group-commit task; keep it alive while benching.
    pub runtime: Runtime,
    /// The unsealed store, without an audit sink.
    pub nexus: Nexus,
    /// The backing store (for more handles over the same data).
    pub store: Arc<MemoryStore>,
    /// Two of the three shares.
    pub shares: Vec<Share>,
}

impl MemoryFixture {
    /// `secrets` secrets ([`secret_path`], [`secret_value`]), the secret
    /// `shared/common/s`, and [`policy_specs`]`(policies)`, over a
    /// [`MemoryStore`].
    pub fn new(secrets: usize, policies: usize) -> Self {
        let runtime = runtime(2);
        let store = Arc::new(MemoryStore::new());
        let started = Instant::now();
        let (nexus, shares) = runtime.block_on(async {
            let nexus = Nexus::builder(store.clone()).open().await.unwrap();
            let mut shares = nexus.init().await.unwrap();
            shares.truncate(2);
            put_policies(&nexus, policy_specs(policies)).await;
            put_secrets(&nexus, 0..secrets, 512).await;
            nexus
                .put_secret(
                    &superuser(),
                    "shared/common/s",
                    secret_value(0),
                    WriteOptions::default(),
                )
                .await
                .unwrap();
            (nexus, shares)
        });
        eprintln!(
            "fixture: {secrets} secrets of {VALUE_LEN} B and {policies} policies in memory ({:.1?})",
            started.elapsed()
        );
        Self {
            runtime,
            nexus,
            store,
            shares,
        }
    }

    /// Another handle over the same data that audits every call to `sink`
    /// (opened and unsealed with the fixture's shares).
    pub fn audited(&self, sink: Arc<dyn AuditSink>) -> Nexus {
        self.runtime.block_on(async {
            let nexus = Nexus::builder(self.store.clone())
                .audit(sink, AuditOptions::default())
                .open()
                .await
                .unwrap();
            nexus.unseal(&self.shares).await.unwrap();
            nexus
        })
    }
}

/// The Cargo target directory (`$CARGO_TARGET_DIR` or the workspace's
/// `target/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    )
}

/// A redb file holding `secrets` secrets and [`COLD_POLICIES`] policies,
/// closed cleanly, with two shares that unseal it.
pub struct ColdFixture {
    /// The redb file.
    pub db: PathBuf,
    /// Two of the three shares.
    pub shares: Vec<Share>,
    /// How long populating took, if this call populated it.
    pub populated_in: Option<Duration>,
}

/// Policies stored in the cold-start fixture besides the secrets.
pub const COLD_POLICIES: usize = 1000;

impl ColdFixture {
    /// The cached fixture for `secrets`, populated (through `put_secret`
    /// from 1,024 concurrent tasks on `runtime`) if it is not there yet.
    pub fn get_or_populate(secrets: usize, runtime: &Runtime) -> Self {
        let dir = target_dir()
            .join("spike-bench-cache")
            .join(format!("cold-{secrets}"));
        let db = dir.join("store.redb");
        let shares_file = dir.join("shares.txt");
        let ready = dir.join("ready");
        let mut populated_in = None;
        if !ready.exists() {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            eprintln!(
                "populating {} with {secrets} secrets and {COLD_POLICIES} policies …",
                db.display()
            );
            let started = Instant::now();
            let shares = runtime.block_on(async {
                let store = Arc::new(RedbStore::open(&db).unwrap());
                let nexus = Nexus::builder(store).open().await.unwrap();
                let shares = nexus.init().await.unwrap();
                put_policies(&nexus, policy_specs(COLD_POLICIES)).await;
                let step = 100_000;
                for start in (0..secrets).step_by(step) {
                    put_secrets(&nexus, start..(start + step).min(secrets), 1024).await;
                    eprintln!(
                        "  {} / {secrets} ({:.1?})",
                        (start + step).min(secrets),
                        started.elapsed()
                    );
                }
                nexus.close().await;
                shares
            });
            let mut text = String::new();
            for share in &shares[..2] {
                writeln!(text, "{}", share.to_text().as_str()).unwrap();
            }
            std::fs::write(&shares_file, text).unwrap();
            std::fs::write(&ready, b"").unwrap();
            populated_in = Some(started.elapsed());
            eprintln!("populated in {:.1?}", started.elapsed());
        }
        let shares = std::fs::read_to_string(&shares_file)
            .unwrap()
            .lines()
            .map(|l| Share::from_text(l).unwrap())
            .collect();
        Self {
            db,
            shares,
            populated_in,
        }
    }

    /// Opens the file, builds a `Nexus` and unseals it: the cold start.
    /// Returns the serving `Nexus`, its store (for its checkpoint figures)
    /// and the time it took.
    pub async fn open_and_unseal(&self) -> (Nexus, Arc<RedbStore>, Duration) {
        let started = Instant::now();
        let store = Arc::new(RedbStore::open(&self.db).unwrap());
        let nexus = Nexus::builder(store.clone()).open().await.unwrap();
        nexus.unseal(&self.shares).await.unwrap();
        let elapsed = started.elapsed();
        (nexus, store, elapsed)
    }
}

/// A field of `/proc/self/status` in bytes (`VmRSS`, `VmHWM`).
pub fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One line of a bench's summary: a Criterion result beside its target.
pub struct Row {
    /// Criterion group and function id (`group/id`).
    pub bench: &'static str,
    /// What it measures.
    pub what: &'static str,
    /// The SPEC §11 target, in words.
    pub target: &'static str,
    /// Elements per iteration, to print a rate instead of a time.
    pub elements: Option<u64>,
}

/// The median of a finished Criterion benchmark (`group/id`), in ns per
/// iteration, from `target/criterion/<group>/<id>/new/estimates.json`.
pub fn criterion_median_ns(bench: &str) -> Option<f64> {
    let home = std::env::var_os("CRITERION_HOME")
        .map_or_else(|| target_dir().join("criterion"), PathBuf::from);
    let text = std::fs::read_to_string(home.join(bench).join("new/estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

/// Human time from nanoseconds.
pub fn fmt_ns(ns: f64) -> String {
    match ns {
        n if n < 1e3 => format!("{n:.0} ns"),
        n if n < 1e6 => format!("{:.2} µs", n / 1e3),
        n if n < 1e9 => format!("{:.2} ms", n / 1e6),
        n => format!("{:.2} s", n / 1e9),
    }
}

/// Prints the medians of `rows` beside their targets (after Criterion's
/// own report). Benchmarks that did not run (filtered out, `--test`) show
/// `-`.
pub fn print_summary(title: &str, rows: &[Row]) {
    println!("\n== {title}: medians vs SPEC §11");
    println!("{:<44} {:>14}  {:<48} target", "bench", "median", "what");
    for row in rows {
        let figure = match (criterion_median_ns(row.bench), row.elements) {
            (Some(ns), Some(n)) => format!("{:.0}/s", n as f64 * 1e9 / ns),
            (Some(ns), None) => fmt_ns(ns),
            (None, _) => "-".to_owned(),
        };
        println!(
            "{:<44} {:>14}  {:<48} {}",
            row.bench, figure, row.what, row.target
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_advertised_size() {
        for i in [0, 1, 42, 99_999, 1_000_000] {
            assert_eq!(secret_value(i).len(), VALUE_LEN);
        }
    }

    #[test]
    fn policies_are_distinct_and_the_bench_workload_matches_a_few() {
        for n in [1000, 10_000] {
            let specs = policy_specs(n);
            assert_eq!(specs.len(), n);
            let mut ids: Vec<_> = specs.iter().map(|s| &s.spiffeid_pattern).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), n);
            let caller = workload_id(BENCH_WORKLOAD);
            let matching = specs
                .iter()
                .filter(|s| {
                    spike_core::compile_pattern("id", &s.spiffeid_pattern)
                        .unwrap()
                        .is_match(&caller)
                })
                .count();
            assert!((3..=4).contains(&matching), "{n}: {matching}");
        }
    }
}
