//! HTTP load generator for the Vault KV v2 API (`/v1/<mount>/data/<key>`),
//! so that the same tool, settings and client stack drive a spike-rs Nexus,
//! a real OpenBao and the bare-stack baseline (`bare`).
//!
//! - `--connections` HTTP/1.1 keep-alive connections, one request in flight
//!   on each (as oha and wrk do), each driven by one task that both sends
//!   and does the connection's I/O; a connection that fails is re-opened.
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
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use spike_tls::{PeerPolicy, PemSource};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

type Error = Box<dyn StdError + Send + Sync>;
type Sender = SendRequest<Full<Bytes>>;
/// hyper's half of a client connection (reads and writes the socket).
type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One keep-alive connection: the request handle and the future that
/// drives the socket, polled in the same task as the requests (see
/// [`Conn::send`]).
struct Conn {
    sender: Sender,
    /// `None` once the connection has closed.
    driver: Option<Driver>,
}

impl Conn {
    /// Sends `req` and reads the whole answer; `Ok(Err(status))` for a
    /// non-2xx answer.
    ///
    /// The connection is driven here, by the task that sends, rather than
    /// by a task of its own (as hyper's examples do): a request then costs
    /// no hand-over between two tasks, and often between two threads. The
    /// generator shares the cores with the server it measures, so every µs
    /// it spends is taken from the server.
    async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Result<(), String>, Error> {
        let Self { sender, driver } = self;
        let work = send(sender, req);
        tokio::pin!(work);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            if let Some(d) = driver.as_mut() {
                if d.as_mut().poll(cx).is_ready() {
                    *driver = None;
                }
                // What the driver just read may have finished the request.
                if let Poll::Ready(out) = work.as_mut().poll(cx) {
                    return Poll::Ready(out);
                }
            }
            Poll::Pending
        })
        .await
    }
}

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
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
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
    token: Option<String>,
    /// `/v1/<mount>/data/<prefix>/k`: the key number is appended.
    path_prefix: String,
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
        Ok(Self {
            authority,
            tls,
            token: args.token.clone(),
            path_prefix: format!("/v1/{}/data/{prefix}/k", args.mount.trim_matches('/')),
        })
    }

    async fn connect(&self) -> Result<Conn, Error> {
        let tcp = TcpStream::connect(&self.authority).await?;
        tcp.set_nodelay(true)?;
        let (sender, driver): (Sender, Driver) = match &self.tls {
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await?;
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
                (sender, Box::pin(async move { drop(conn.await) }))
            }
            None => {
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                (sender, Box::pin(async move { drop(conn.await) }))
            }
        };
        Ok(Conn {
            sender,
            driver: Some(driver),
        })
    }

    fn request(&self, op: Op, key: u32, value: &Bytes) -> Result<Request<Full<Bytes>>, Error> {
        let mut req = Request::builder()
            .uri(format!("{}{key}", self.path_prefix))
            .header(HOST, self.authority.as_str());
        if let Some(token) = &self.token {
            req = req.header("x-vault-token", token.as_str());
        }
        let req = match op {
            Op::Read => req.method("GET").body(Full::new(Bytes::new()))?,
            Op::Write => req
                .method("POST")
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(value.clone()))?,
        };
        Ok(req)
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
    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

/// One request; `Ok(Err(status))` for a non-2xx answer.
async fn send(sender: &mut Sender, req: Request<Full<Bytes>>) -> Result<Result<(), String>, Error> {
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if status.is_success() {
        Ok(Ok(()))
    } else {
        let snippet = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        Ok(Err(format!("HTTP {status}: {snippet}")))
    }
}

/// Sends `req` on `conn`, re-opening the connection once on a transport
/// error; records the outcome.
async fn one(target: &Target, conn: &mut Conn, tally: &mut Tally, op: Op, key: u32, value: &Bytes) {
    let req = match target.request(op, key, value) {
        Ok(r) => r,
        Err(e) => return tally.error(e),
    };
    let start = Instant::now();
    match conn.send(req).await {
        Ok(Ok(())) => {
            let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            match op {
                Op::Read => tally.reads.push(ns),
                Op::Write => tally.writes.push(ns),
            }
        }
        Ok(Err(status)) => tally.error(status),
        Err(e) => {
            tally.error(format!("transport: {e}"));
            match target.connect().await {
                Ok(c) => *conn = c,
                Err(e) => {
                    tally.error(format!("reconnect: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
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

async fn run(args: Args) -> Result<(), Error> {
    if args.connections == 0 || args.keys == 0 {
        return Err("--connections and --keys must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&args.read_fraction) {
        return Err("--read-fraction must be within 0..=1".into());
    }
    let target = Arc::new(Target::new(&args)?);
    let value = Bytes::from(format!(
        "{{\"data\":{{\"value\":\"{}\"}}}}",
        "v".repeat(args.value_size)
    ));

    // Connect all.
    let t0 = Instant::now();
    let mut connecting = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let target = Arc::clone(&target);
        connecting.push(tokio::spawn(async move { target.connect().await }));
    }
    let mut conns = Vec::with_capacity(args.connections);
    for c in connecting {
        conns.push(c.await??);
    }
    eprintln!(
        "{}: {} connections to {} in {:.1} ms",
        args.label,
        conns.len(),
        args.url,
        t0.elapsed().as_secs_f64() * 1e3
    );

    // Pre-fill: connection i writes keys i, i+N, i+2N, ...
    if !args.no_prefill {
        let t0 = Instant::now();
        let n = u32::try_from(conns.len())?;
        let mut tasks = Vec::with_capacity(conns.len());
        for (i, mut conn) in conns.drain(..).enumerate() {
            let target = Arc::clone(&target);
            let value = value.clone();
            let keys = args.keys;
            let i = u32::try_from(i)?;
            tasks.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut key = i;
                while key < keys {
                    one(&target, &mut conn, &mut tally, Op::Write, key, &value).await;
                    key += n;
                }
                (conn, tally)
            }));
        }
        let mut errors = 0;
        let mut first = None;
        for t in tasks {
            let (conn, tally) = t.await?;
            conns.push(conn);
            errors += tally.errors;
            first = first.or(tally.first_error);
        }
        eprintln!(
            "{}: pre-filled {} keys ({} B values) in {:.2} s, {errors} errors",
            args.label,
            args.keys,
            args.value_size,
            t0.elapsed().as_secs_f64()
        );
        if errors > 0 {
            return Err(format!(
                "pre-fill failed: {errors} errors; first: {}",
                first.unwrap_or_default()
            )
            .into());
        }
    }

    // Measured phase.
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut tasks = Vec::with_capacity(conns.len());
    for (i, mut conn) in conns.drain(..).enumerate() {
        let target = Arc::clone(&target);
        let value = value.clone();
        let (workload, keys, read_fraction) = (args.workload, args.keys, args.read_fraction);
        tasks.push(tokio::spawn(async move {
            // One deterministic PRNG per connection.
            let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15 ^ ((i as u64 + 1) << 17));
            let mut tally = Tally::default();
            // A few µs per request: ample headroom for an expected 1M
            // requests over a 10 s run.
            tally.reads.reserve(1 << 16);
            while Instant::now() < deadline {
                let op = match workload {
                    Workload::Read => Op::Read,
                    Workload::Write => Op::Write,
                    Workload::Mixed if rng.f64() < read_fraction => Op::Read,
                    Workload::Mixed => Op::Write,
                };
                let key = rng.u32(..keys.max(1));
                one(&target, &mut conn, &mut tally, op, key, &value).await;
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for t in tasks {
        let tally = t.await?;
        all.reads.extend_from_slice(&tally.reads);
        all.writes.extend_from_slice(&tally.writes);
        all.errors += tally.errors;
        all.first_error = all.first_error.or(tally.first_error);
    }
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
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let result = rt
        .build()
        .map_err(Error::from)
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
