//! HTTP load generator for the Vault KV v2 API (`/v1/<mount>/data/<key>`),
//! so that the same tool, settings and client stack drive a spike-rs Nexus,
//! a real OpenBao and the bare-stack baseline (`bare`).
//!
//! - `--connections` HTTP/1.1 keep-alive connections, one request in flight
//!   on each (as oha and wrk do); a connection that fails is re-opened.
//! - Built to take as little CPU from the server it measures as it can,
//!   since the two share the cores: as wrk does, each of `--threads`
//!   threads (one per core) runs its own event loop (a current-thread
//!   runtime) over its share of the connections; requests are written and
//!   answers framed by a minimal HTTP/1.1 client ([`http1`]); and the
//!   threads run under `SCHED_BATCH` (`--sched`), so that an answer that
//!   wakes one never preempts the server.
//! - Transport: SPIFFE mTLS with a client SVID (`--cert --key --bundle`;
//!   the server is verified against the bundle by spike-tls, as `spike`
//!   does), TLS with a CA file (`--cacert`, host name checked), or plain
//!   `http://`. `--token` adds `X-Vault-Token` (OpenBao).
//! - Phases: connect all, pre-fill (every key of the key space written
//!   once, unless `--no-prefill`), then `--duration` of `read`, `write` or
//!   `mixed` (`--read-fraction`) over uniformly random keys.
//! - Prints throughput and latency p50/p90/p99/max per operation; the last
//!   line is machine-readable:
//!   `loadgen label=L workload=W conns=N secs=S ok=N errors=N rps=R p50_us=..
//!   p90_us=.. p99_us=.. max_us=..`.
//!
//! ```text
//! loadgen --url https://127.0.0.1:8553 --cert svid.pem --key svid.key \
//!     --bundle bundle.pem --workload read --duration 10s
//! loadgen --url https://127.0.0.1:8200 --cacert vault-ca.pem --token root
//! ```

use std::error::Error as StdError;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use spike_tls::{PeerPolicy, PemSource};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

mod http1;

use http1::Conn;

type Error = Box<dyn StdError + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// GET /v1/<mount>/data/<key>.
    Read,
    /// POST /v1/<mount>/data/<key> with `{"data":{"value":"…"}}`.
    Write,
    /// Reads and writes, `--read-fraction` of them reads.
    Mixed,
}

#[derive(Parser, Debug)]
#[command(about = "Vault KV v2 load generator (Nexus, OpenBao, bare baseline)")]
struct Args {
    /// Server base URL: `https://host:port` or `http://host:port`.
    #[arg(long)]
    url: String,
    /// Keep-alive connections, one request in flight on each.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Length of the measured phase (`10s`, `500ms`, `2m`; a bare number is
    /// seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// What the measured phase does.
    #[arg(long, value_enum, default_value_t = Workload::Read)]
    workload: Workload,
    /// `mixed` only: the fraction of requests that are reads.
    #[arg(long, default_value_t = 0.9)]
    read_fraction: f64,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1000)]
    keys: u32,
    /// Length in bytes of the value written under each key.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// KV v2 mount.
    #[arg(long, default_value = "secret")]
    mount: String,
    /// Key prefix (keys are `<prefix>/k<n>`).
    #[arg(long, default_value = "loadgen")]
    prefix: String,
    /// Skip the pre-fill phase (the keys must exist for reads).
    #[arg(long)]
    no_prefill: bool,
    /// SPIFFE mTLS: the client X.509-SVID chain (PEM).
    #[arg(long, requires_all = ["key", "bundle"], conflicts_with = "cacert")]
    cert: Option<PathBuf>,
    /// SPIFFE mTLS: the client SVID's private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// SPIFFE mTLS: the trust bundle (PEM) that verifies the server's SVID.
    #[arg(long, requires = "cert")]
    bundle: Option<PathBuf>,
    /// Plain TLS: the CA certificate(s) (PEM) of the server; the host name
    /// in `--url` is checked.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// Vault token, sent as `X-Vault-Token`.
    #[arg(long)]
    token: Option<String>,
    /// Name printed in the result lines.
    #[arg(long, default_value = "target")]
    label: String,
    /// Generator threads, each driving its share of the connections
    /// (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Scheduling policy of the generator threads.
    #[arg(long, value_enum, default_value_t = Sched::Batch)]
    sched: Sched,
}

/// How the OS schedules the generator's threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Sched {
    /// Linux `SCHED_BATCH`: an answer that wakes a generator thread does
    /// not preempt the server thread that sent it. Under the default
    /// policy a generator thread, which sleeps between answers, preempts
    /// the server on almost every wake-up (measured: 0.29 involuntary
    /// context switches of the Nexus per read, 0.006 under batch), and the
    /// server pays for the generator's scheduling.
    Batch,
    /// The OS default (`SCHED_OTHER`).
    Default,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?}"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("not a positive duration: {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// Where and how to connect.
struct Target {
    /// `host:port`, for connecting and the `Host` header.
    authority: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// `/v1/<mount>/data/<prefix>/k`: the key number is appended.
    path_prefix: String,
    /// Header lines of a read: `Host`, and `X-Vault-Token` with `--token`.
    read_headers: Vec<String>,
    /// Those of a write: a read's and `Content-Type`.
    write_headers: Vec<String>,
}

impl Target {
    fn new(args: &Args) -> Result<Self, Error> {
        let (https, rest) = if let Some(r) = args.url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = args.url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("--url must start with http:// or https://: {}", args.url).into());
        };
        let authority = rest.trim_end_matches('/').to_owned();
        if authority.is_empty() || authority.contains('/') {
            return Err(format!(
                "--url must be a base URL (scheme://host:port): {}",
                args.url
            )
            .into());
        }
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => h,
            _ => authority.as_str(),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = if https {
            let mut config = if let (Some(cert), Some(key), Some(bundle)) =
                (&args.cert, &args.key, &args.bundle)
            {
                let source = PemSource::load(cert, key, bundle)?;
                (*spike_tls::client_config(Arc::new(source), PeerPolicy::Any)?).clone()
            } else if let Some(ca) = &args.cacert {
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca)? {
                    roots.add(cert?)?;
                }
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(roots)
                    .with_no_client_auth()
            } else {
                return Err(
                    "https:// needs --cert/--key/--bundle (SPIFFE mTLS) or --cacert".into(),
                );
            };
            // One request in flight per connection over HTTP/1.1, as for
            // every target.
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = ServerName::try_from(host)?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        let prefix = args.prefix.trim_matches('/');
        let mut read_headers = vec![format!("Host: {authority}")];
        if let Some(token) = &args.token {
            if token.bytes().any(|b| b.is_ascii_control()) {
                return Err("--token must not hold control characters".into());
            }
            read_headers.push(format!("X-Vault-Token: {token}"));
        }
        let mut write_headers = read_headers.clone();
        write_headers.push("Content-Type: application/json".to_owned());
        Ok(Self {
            authority,
            tls,
            path_prefix: format!("/v1/{}/data/{prefix}/k", args.mount.trim_matches('/')),
            read_headers,
            write_headers,
        })
    }

    async fn connect(&self) -> Result<Conn, Error> {
        let tcp = TcpStream::connect(&self.authority).await?;
        tcp.set_nodelay(true)?;
        Ok(match &self.tls {
            Some((connector, name)) => {
                Conn::new(Box::new(connector.connect(name.clone(), tcp).await?))
            }
            None => Conn::new(Box::new(tcp)),
        })
    }

    /// Sends one request on `conn`; `Ok(Err(status))` for a non-2xx answer.
    async fn send(
        &self,
        conn: &mut Conn,
        op: Op,
        key: u32,
        body: &[u8],
    ) -> Result<Result<(), String>, Error> {
        let path = KeyPath(&self.path_prefix, key);
        match op {
            Op::Read => conn.send("GET", path, &self.read_headers, None).await,
            Op::Write => {
                conn.send("POST", path, &self.write_headers, Some(body))
                    .await
            }
        }
    }
}

/// A key's request path: the prefix and the key number.
struct KeyPath<'a>(&'a str, u32);

impl std::fmt::Display for KeyPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.0, self.1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

/// One connection's results.
#[derive(Default)]
struct Tally {
    /// Latencies of successful requests, in nanoseconds.
    reads: Vec<u64>,
    writes: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn absorb(&mut self, other: Tally) {
        self.reads.extend_from_slice(&other.reads);
        self.writes.extend_from_slice(&other.writes);
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
    }

    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

/// Sends one request on `conn`, re-opening the connection on a transport
/// error or once the server closes it; records the outcome.
async fn one(target: &Target, conn: &mut Conn, tally: &mut Tally, op: Op, key: u32, value: &[u8]) {
    let start = Instant::now();
    let reconnect = match target.send(conn, op, key, value).await {
        Ok(Ok(())) => {
            let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            match op {
                Op::Read => tally.reads.push(ns),
                Op::Write => tally.writes.push(ns),
            }
            !conn.reusable()
        }
        Ok(Err(status)) => {
            tally.error(status);
            !conn.reusable()
        }
        Err(e) => {
            tally.error(format!("transport: {e}"));
            true
        }
    };
    if reconnect {
        match target.connect().await {
            Ok(c) => *conn = c,
            Err(e) => {
                tally.error(format!("reconnect: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

struct Summary {
    count: usize,
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
}

/// Percentiles (nearest rank) of `v`, sorted here.
fn summarise(v: &mut [u64]) -> Summary {
    v.sort_unstable();
    let rank = |p: f64| -> u64 {
        if v.is_empty() {
            return 0;
        }
        let idx = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v.get(idx).copied().unwrap_or(0)
    };
    Summary {
        count: v.len(),
        p50: rank(0.50),
        p90: rank(0.90),
        p99: rank(0.99),
        max: v.last().copied().unwrap_or(0),
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

fn print_line(label: &str, what: &str, s: &Summary, secs: f64) {
    println!(
        "{label:>10} {what:<6} {:>9} ok {:>11.0}/s   p50 {:>9.1} µs  p90 {:>9.1} µs  p99 {:>9.1} µs  max {:>10.1} µs",
        s.count,
        s.count as f64 / secs,
        us(s.p50),
        us(s.p90),
        us(s.p99),
        us(s.max)
    );
}

/// A phase of the run, done by every generator thread on its connections.
#[derive(Clone, Copy)]
enum Phase {
    /// Open the connections.
    Connect,
    /// Write every key once: connection `i` of `N` writes keys `i`, `i+N`, …
    Prefill,
    /// The measured phase, up to this instant.
    Measure(Instant),
}

/// What every thread knows of the run.
struct Plan {
    target: Target,
    /// The body of a write.
    value: Vec<u8>,
    connections: u32,
    keys: u32,
    workload: Workload,
    read_fraction: f64,
    sched: Sched,
}

/// One generator thread's handle: phases go in, their tallies come out.
struct Thread {
    phases: mpsc::Sender<Phase>,
    done: mpsc::Receiver<Result<Tally, String>>,
    handle: std::thread::JoinHandle<()>,
}

/// A generator thread: a current-thread runtime driving its share of the
/// connections (`ids`), phase after phase. One runtime per thread rather
/// than one work-stealing runtime: a connection's request and answer never
/// move between threads, so no wake-up crosses to the other core.
fn generator(
    plan: Arc<Plan>,
    ids: Vec<u32>,
    phases: mpsc::Receiver<Phase>,
    done: mpsc::Sender<Result<Tally, String>>,
) {
    if plan.sched == Sched::Batch
        && let Err(e) = spike_core::sched::batch_scheduling()
    {
        let _ = done.send(Err(format!("--sched batch: {e} (try --sched default)")));
        return;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = done.send(Err(format!("runtime: {e}")));
            return;
        }
    };
    let mut conns: Vec<(u32, Conn)> = Vec::with_capacity(ids.len());
    for phase in phases {
        let out = rt.block_on(async {
            let mut tasks = Vec::with_capacity(ids.len());
            if let Phase::Connect = phase {
                for &id in &ids {
                    let plan = Arc::clone(&plan);
                    tasks.push(tokio::spawn(async move {
                        let conn = plan.target.connect().await.map_err(|e| e.to_string())?;
                        Ok::<_, String>((id, conn, Tally::default()))
                    }));
                }
            } else {
                for (id, mut conn) in conns.drain(..) {
                    let plan = Arc::clone(&plan);
                    tasks.push(tokio::spawn(async move {
                        // Connected already: this phase pre-fills or measures.
                        let tally = if let Phase::Measure(deadline) = phase {
                            measure(&plan, id, &mut conn, deadline).await
                        } else {
                            prefill(&plan, id, &mut conn).await
                        };
                        Ok((id, conn, tally))
                    }));
                }
            }
            let mut all = Tally::default();
            for task in tasks {
                let (id, conn, tally) = task.await.map_err(|e| e.to_string())??;
                conns.push((id, conn));
                all.absorb(tally);
            }
            Ok(all)
        });
        if done.send(out).is_err() {
            return;
        }
    }
}

async fn prefill(plan: &Plan, id: u32, conn: &mut Conn) -> Tally {
    let mut tally = Tally::default();
    let mut key = id;
    while key < plan.keys {
        one(&plan.target, conn, &mut tally, Op::Write, key, &plan.value).await;
        key = key.saturating_add(plan.connections);
    }
    tally
}

async fn measure(plan: &Plan, id: u32, conn: &mut Conn, deadline: Instant) -> Tally {
    // One deterministic PRNG per connection.
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15 ^ ((u64::from(id) + 1) << 17));
    let mut tally = Tally::default();
    // A few µs per request: ample headroom for an expected 1M requests
    // over a 10 s run.
    tally.reads.reserve(1 << 16);
    while Instant::now() < deadline {
        let op = match plan.workload {
            Workload::Read => Op::Read,
            Workload::Write => Op::Write,
            Workload::Mixed if rng.f64() < plan.read_fraction => Op::Read,
            Workload::Mixed => Op::Write,
        };
        let key = rng.u32(..plan.keys.max(1));
        one(&plan.target, conn, &mut tally, op, key, &plan.value).await;
    }
    tally
}

/// Runs `phase` on every thread and merges their tallies.
fn run_phase(threads: &[Thread], phase: Phase) -> Result<Tally, Error> {
    for t in threads {
        t.phases
            .send(phase)
            .map_err(|_| "a generator thread has stopped")?;
    }
    let mut all = Tally::default();
    for t in threads {
        all.absorb(
            t.done
                .recv()
                .map_err(|_| "a generator thread has stopped")??,
        );
    }
    Ok(all)
}

fn run(args: Args) -> Result<(), Error> {
    if args.connections == 0 || args.keys == 0 {
        return Err("--connections and --keys must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&args.read_fraction) {
        return Err("--read-fraction must be within 0..=1".into());
    }
    let connections = u32::try_from(args.connections)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, args.connections);
    let plan = Arc::new(Plan {
        target: Target::new(&args)?,
        value: format!(
            "{{\"data\":{{\"value\":\"{}\"}}}}",
            "v".repeat(args.value_size)
        )
        .into_bytes(),
        connections,
        keys: args.keys,
        workload: args.workload,
        read_fraction: args.read_fraction,
        sched: args.sched,
    });
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let ids: Vec<u32> = (0..connections)
            .filter(|i| *i as usize % threads == t)
            .collect();
        let (phases, phases_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let plan = Arc::clone(&plan);
        let handle = std::thread::Builder::new()
            .name(format!("loadgen-{t}"))
            .spawn(move || generator(plan, ids, phases_rx, done_tx))?;
        handles.push(Thread {
            phases,
            done,
            handle,
        });
    }
    let result = phases(&args, &handles);
    for t in handles {
        drop(t.phases);
        let _ = t.handle.join();
    }
    result
}

/// Connect, pre-fill, measure, print.
fn phases(args: &Args, threads: &[Thread]) -> Result<(), Error> {
    let t0 = Instant::now();
    run_phase(threads, Phase::Connect)?;
    eprintln!(
        "{}: {} connections to {} in {:.1} ms ({} threads, --sched {:?})",
        args.label,
        args.connections,
        args.url,
        t0.elapsed().as_secs_f64() * 1e3,
        threads.len(),
        args.sched
    );

    if !args.no_prefill {
        let t0 = Instant::now();
        let tally = run_phase(threads, Phase::Prefill)?;
        eprintln!(
            "{}: pre-filled {} keys ({} B values) in {:.2} s, {} errors",
            args.label,
            args.keys,
            args.value_size,
            t0.elapsed().as_secs_f64(),
            tally.errors
        );
        if tally.errors > 0 {
            return Err(format!(
                "pre-fill failed: {} errors; first: {}",
                tally.errors,
                tally.first_error.unwrap_or_default()
            )
            .into());
        }
    }

    let start = Instant::now();
    let mut all = run_phase(threads, Phase::Measure(start + args.duration))?;
    let secs = start.elapsed().as_secs_f64();

    if let Some(e) = &all.first_error {
        eprintln!("{}: {} errors; first: {e}", args.label, all.errors);
    }
    let mut total: Vec<u64> = all.reads.iter().chain(&all.writes).copied().collect();
    let reads = summarise(&mut all.reads);
    let writes = summarise(&mut all.writes);
    let overall = summarise(&mut total);
    if reads.count > 0 {
        print_line(&args.label, "read", &reads, secs);
    }
    if writes.count > 0 {
        print_line(&args.label, "write", &writes, secs);
    }
    let workload = match args.workload {
        Workload::Read => "read",
        Workload::Write => "write",
        Workload::Mixed => "mixed",
    };
    println!(
        "loadgen label={} workload={workload} conns={} secs={secs:.2} ok={} errors={} rps={:.0} p50_us={:.1} p90_us={:.1} p99_us={:.1} max_us={:.1}",
        args.label,
        args.connections,
        overall.count,
        all.errors,
        overall.count as f64 / secs,
        us(overall.p50),
        us(overall.p90),
        us(overall.p99),
        us(overall.max)
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
