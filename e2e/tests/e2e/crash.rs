//! Crash consistency at the server level (issue 6): concurrent clients write
//! over mutual TLS through both APIs while Nexus is killed with SIGKILL at
//! random moments; after each restart every write a client saw
//! acknowledged (a 2xx answer) must be there, at its version.
//!
//! - `WRITERS` threads, each on its own keep-alive HTTP/1.1 connection, write
//!   unique values (`t<thread>-s<seq>`) to paths only that thread writes:
//!   even threads through the Vault KV v2 API (which answers the version),
//!   odd ones through the SPIKE v1 API. A round's paths overlap the previous
//!   round's, so writes land both on fresh secrets and on secrets loaded
//!   from the store after a restart.
//! - After a random delay (20–300 ms, from a printed seed:
//!   `SPIKE_CRASH_SEED` reproduces it) `dev` (Nexus) gets SIGKILL; its
//!   Keepers live on and unseal the restarted Nexus (the dev-only recovery
//!   shares are removed first).
//! - After each restart: every versioned ack must have had exactly the next
//!   version; the write in flight at the kill may have landed (as the next
//!   version) or not, nothing else; every ack of the round reads back at its
//!   version and every path's latest version is the last acknowledged or
//!   the landed in-flight write. At the end every ack of the whole run is
//!   read back again at its version.
//!
//! `SPIKE_CRASH_KILLS` sets the number of kills (default 5);
//! `scripts/crash-test.sh [KILLS]` runs the long version.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use serde_json::{Value, json};
use spike_tls::TrustBundle;

use crate::support::{
    Dev, Ident, READY_DEADLINE, TD, client_tls, wait_for, wait_keepers_hold_shares,
};

const WRITERS: usize = 8;
/// Paths a writer cycles through in one round; the next round moves the
/// window by half of it.
const PATHS_PER_ROUND: usize = 4;
const DEFAULT_KILLS: usize = 5;
/// Kill delay after the writers start, in ms: `[MIN, MIN + SPAN)`.
const KILL_DELAY_MIN_MS: u64 = 20;
const KILL_DELAY_SPAN_MS: u64 = 280;
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// The mount's `max_versions` here: no acknowledged version is pruned.
const MAX_VERSIONS: u64 = 1_000_000;
/// `--store-log-bytes` of the killed Nexus: 64 KiB per log file.
const STORE_LOG_BYTES: u64 = 64 * 1024;
const CANARY: &str = "crash/canary";
const UNSEALED_FROM_KEEPERS: &str = "unsealed from the Keepers";

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A blocking HTTP/1.1 keep-alive client over mutual TLS. A transport
/// error drops the connection; the next request opens a new one.
struct Http {
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    conn: Option<Tls>,
}

impl Http {
    fn new(addr: SocketAddr, config: Arc<ClientConfig>) -> Http {
        Http {
            addr,
            config,
            conn: None,
        }
    }

    fn connect(&mut self) -> io::Result<()> {
        let tcp = TcpStream::connect(self.addr)?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        let conn =
            ClientConnection::new(Arc::clone(&self.config), name).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, tcp);
        // Finish the handshake now, not on the first request.
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        self.conn = Some(tls);
        Ok(())
    }

    /// `(status, body)`.
    fn send(
        &mut self,
        method: &str,
        target: &str,
        body: Option<&Value>,
    ) -> io::Result<(u16, Vec<u8>)> {
        let result = self.try_send(method, target, body);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn try_send(
        &mut self,
        method: &str,
        target: &str,
        body: Option<&Value>,
    ) -> io::Result<(u16, Vec<u8>)> {
        if self.conn.is_none() {
            self.connect()?;
        }
        let Some(tls) = self.conn.as_mut() else {
            return Err(io::Error::other("no connection"));
        };
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut req = format!("{method} {target} HTTP/1.1\r\nhost: nexus\r\n");
        if !body.is_empty() {
            req.push_str("content-type: application/json\r\n");
        }
        req.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(&body);
        tls.write_all(&bytes)?;
        tls.flush()?;
        let (status, body, close) = read_response(tls)?;
        if close {
            self.conn = None;
        }
        Ok((status, body))
    }
}

/// Reads one response: `(status, body, the server closes)`.
fn read_response(tls: &mut Tls) -> io::Result<(u16, Vec<u8>, bool)> {
    let mut r = Reader {
        tls,
        buf: Vec::new(),
        pos: 0,
    };
    let status_line = r.line()?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
    let (mut length, mut chunked, mut close) = (0usize, false, false);
    loop {
        let line = r.line()?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().to_ascii_lowercase();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().map_err(io::Error::other)?,
            "transfer-encoding" => chunked = value.contains("chunked"),
            "connection" => close = value.contains("close"),
            _ => {}
        }
    }
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let size_line = r.line()?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(io::Error::other)?;
            if size == 0 {
                // Trailers, then the empty line.
                while !r.line()?.is_empty() {}
                break;
            }
            body.extend_from_slice(&r.take(size)?);
            r.line()?;
        }
        body
    } else {
        r.take(length)?
    };
    Ok((status, body, close))
}

struct Reader<'a> {
    tls: &'a mut Tls,
    buf: Vec<u8>,
    pos: usize,
}

impl Reader<'_> {
    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.tls.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[self.pos..self.pos + i]).into_owned();
                self.pos += i + 2;
                return Ok(line);
            }
            self.fill()?;
        }
    }

    fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() - self.pos < n {
            self.fill()?;
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(out)
    }
}

/// The superuser's client TLS config (HTTP/1.1).
fn superuser_tls(who: &Ident) -> Arc<ClientConfig> {
    let bundle = TrustBundle::from_pem(TD, &fs::read(&who.ca).unwrap()).unwrap();
    let mut config = (*client_tls(who, &bundle)).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn data_target(path: &str, version: Option<u64>) -> String {
    match version {
        Some(v) => format!("/v1/secret/data/{path}?version={v}"),
        None => format!("/v1/secret/data/{path}"),
    }
}

/// `(version, value)` of `path` at `version` (latest if `None`) through the
/// Vault API; `None` for a 404 of a path never written. Panics otherwise.
fn read(http: &mut Http, path: &str, version: Option<u64>) -> Option<(u64, String)> {
    let (status, body) = http
        .send("GET", &data_target(path, version), None)
        .unwrap_or_else(|e| panic!("reading {path} (version {version:?}): {e}"));
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status == 404 && json == json!({"errors": []}) {
        return None;
    }
    assert_eq!(
        status, 200,
        "reading {path} (version {version:?}): {status} {json}"
    );
    let number = json["data"]["metadata"]["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("reading {path}: no version in {json}"));
    let value = json["data"]["data"]["v"]
        .as_str()
        .unwrap_or_else(|| panic!("reading {path} version {number}: no value in {json}"))
        .to_owned();
    Some((number, value))
}

fn put_vault(http: &mut Http, path: &str, value: &str) -> io::Result<(u16, Vec<u8>)> {
    http.send(
        "POST",
        &data_target(path, None),
        Some(&json!({"data": {"v": value}})),
    )
}

fn put_spike(http: &mut Http, path: &str, value: &str) -> io::Result<(u16, Vec<u8>)> {
    http.send(
        "POST",
        "/v1/store/secrets",
        Some(&json!({"path": path, "values": {"v": value}})),
    )
}

/// A write the client saw acknowledged; `version` when the API told it.
#[derive(Debug, Clone)]
struct Ack {
    path: String,
    value: String,
    version: Option<u64>,
}

/// What one writer did in one round.
#[derive(Debug, Default)]
struct Writes {
    acks: Vec<Ack>,
    /// The write that got no answer (the kill): `(path, value)`.
    in_flight: Option<(String, String)>,
    /// A non-2xx answer from a live Nexus: a failure of the test.
    refused: Option<String>,
}

fn writer_path(thread: usize, round: usize, seq: u64) -> String {
    let slot = usize::try_from(seq).unwrap() % PATHS_PER_ROUND;
    format!("crash/t{thread}/p{}", round * (PATHS_PER_ROUND / 2) + slot)
}

/// Writes until the first transport error (Nexus killed) or `stop`.
fn writer(
    thread: usize,
    round: usize,
    mut http: Http,
    seq: &mut u64,
    start: &Barrier,
    stop: &AtomicBool,
) -> Writes {
    let mut out = Writes::default();
    let connected = http.connect();
    start.wait();
    if let Err(e) = connected {
        out.refused = Some(format!("writer {thread} could not connect: {e}"));
        return out;
    }
    let vault = thread.is_multiple_of(2);
    while !stop.load(Ordering::Relaxed) {
        *seq += 1;
        let path = writer_path(thread, round, *seq);
        let value = format!("t{thread}-s{seq}");
        let answer = if vault {
            put_vault(&mut http, &path, &value)
        } else {
            put_spike(&mut http, &path, &value)
        };
        match answer {
            Ok((status, body)) if (200..300).contains(&status) => {
                let version = if vault {
                    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let v = json["data"]["version"].as_u64();
                    if v.is_none() {
                        out.refused = Some(format!("write {path}: no version in {json}"));
                        return out;
                    }
                    v
                } else {
                    None
                };
                out.acks.push(Ack {
                    path,
                    value,
                    version,
                });
            }
            Ok((status, body)) => {
                out.refused = Some(format!(
                    "write {path}={value}: {status} {}",
                    String::from_utf8_lossy(&body)
                ));
                out.in_flight = Some((path, value));
                return out;
            }
            Err(_) => {
                out.in_flight = Some((path, value));
                return out;
            }
        }
    }
    out
}

/// Spawns `dev` again and waits for the first successful authenticated
/// read: the restart time.
fn restart(dev: &mut Dev, tls: &Arc<ClientConfig>) -> Duration {
    let started = Instant::now();
    dev.spawn();
    let mut http = Http::new(dev.nexus, Arc::clone(tls));
    loop {
        if let Ok((200, _)) = http.send("GET", &data_target(CANARY, None), None) {
            return started.elapsed();
        }
        dev.assert_running();
        assert!(
            started.elapsed() < READY_DEADLINE,
            "Nexus not serving {READY_DEADLINE:?} after a restart:\n{}",
            dev.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads every `(path, version, value)` back at its version, on `WRITERS`
/// connections; returns how many matched (panics on the first mismatch).
fn verify_versions(
    nexus: SocketAddr,
    tls: &Arc<ClientConfig>,
    acks: &[(String, u64, String)],
) -> usize {
    if acks.is_empty() {
        return 0;
    }
    let chunk = acks.len().div_ceil(WRITERS);
    std::thread::scope(|s| {
        let handles: Vec<_> = acks
            .chunks(chunk)
            .map(|part| {
                let mut http = Http::new(nexus, Arc::clone(tls));
                s.spawn(move || {
                    for (path, version, value) in part {
                        let got = read(&mut http, path, Some(*version));
                        assert_eq!(
                            got,
                            Some((*version, value.clone())),
                            "LOST acknowledged write: {path} version {version} = {value}"
                        );
                    }
                    part.len()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

/// Nearest-rank percentile of sorted `v`.
fn percentile(v: &[u128], p: usize) -> u128 {
    if v.is_empty() {
        return 0;
    }
    let rank = (v.len() * p).div_ceil(100).max(1);
    v[rank - 1]
}

#[test]
fn sigkilled_nexus_keeps_every_acknowledged_write() {
    let kills: usize = std::env::var("SPIKE_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_KILLS);
    let seed: u64 = std::env::var("SPIKE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        | 1;
    println!("crash: seed={seed} kills={kills} (SPIKE_CRASH_SEED={seed} repeats the kill delays)");
    // Kill delays from a printed seed.
    let mut rng = fastrand::Rng::with_seed(seed);

    // Small log files: checkpoints, and switches between the log's two
    // files, happen all through the run (every few dozen writes), so that
    // kills land during them too.
    let mut dev = Dev::new();
    dev.store_log_bytes = Some(STORE_LOG_BYTES);
    dev.spawn();
    dev.wait_ready();
    let tls = superuser_tls(&dev.superuser());
    let mut http = Http::new(dev.nexus, Arc::clone(&tls));
    let (status, body) = http
        .send(
            "POST",
            "/v1/secret/config",
            Some(&json!({"max_versions": MAX_VERSIONS})),
        )
        .unwrap();
    assert!(
        (200..300).contains(&status),
        "{status} {}",
        String::from_utf8_lossy(&body)
    );
    let (status, _) = put_vault(&mut http, CANARY, "alive").unwrap();
    assert_eq!(status, 200);
    // Only the Keepers can unseal from here on.
    wait_keepers_hold_shares(&dev);
    fs::remove_dir_all(dev.data.join("recovery")).unwrap();
    drop(http);

    // Every path's values, version i + 1 at index i: exact after each
    // reconciliation.
    let mut state: HashMap<String, Vec<String>> = HashMap::new();
    let mut all_acks: Vec<(String, u64, String)> = Vec::new();
    let mut seqs = [0u64; WRITERS];
    let mut landed = 0usize;
    let mut restarts_ms: Vec<u128> = Vec::new();

    for round in 0..kills {
        let start = Barrier::new(WRITERS + 1);
        let stop = AtomicBool::new(false);
        let delay = Duration::from_millis(KILL_DELAY_MIN_MS + rng.u64(..KILL_DELAY_SPAN_MS));
        let results: Vec<Writes> = std::thread::scope(|s| {
            let handles: Vec<_> = seqs
                .iter_mut()
                .enumerate()
                .map(|(thread, seq)| {
                    let http = Http::new(dev.nexus, Arc::clone(&tls));
                    let (start, stop) = (&start, &stop);
                    s.spawn(move || writer(thread, round, http, seq, start, stop))
                })
                .collect();
            start.wait();
            std::thread::sleep(delay);
            dev.kill_dev();
            stop.store(true, Ordering::Relaxed);
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for w in &results {
            if let Some(why) = &w.refused {
                panic!("round {round}: {why}\nlog:\n{}", dev.log());
            }
        }

        let took = restart(&mut dev, &tls);
        restarts_ms.push(took.as_millis());
        // The log line may follow the first read by a moment.
        wait_for("dev to log its unseal", Duration::from_secs(10), || {
            dev.log().contains(UNSEALED_FROM_KEEPERS).then_some(())
        });

        // Reconcile: acks in order, then the write in flight at the kill.
        let mut http = Http::new(dev.nexus, Arc::clone(&tls));
        let mut round_acks = Vec::new();
        let mut touched = BTreeSet::new();
        for w in results {
            for ack in w.acks {
                let versions = state.entry(ack.path.clone()).or_default();
                let expected = versions.len() as u64 + 1;
                if let Some(v) = ack.version {
                    assert_eq!(
                        v, expected,
                        "round {round}: {} acknowledged as version {v}, expected {expected}",
                        ack.path
                    );
                }
                versions.push(ack.value.clone());
                touched.insert(ack.path.clone());
                round_acks.push((ack.path, expected, ack.value));
            }
            if let Some((path, value)) = w.in_flight {
                let versions = state.entry(path.clone()).or_default();
                let known = versions.len() as u64;
                match read(&mut http, &path, None) {
                    None if known == 0 => {}
                    Some((v, _)) if v == known + 1 => {
                        assert_eq!(
                            read(&mut http, &path, Some(v)),
                            Some((v, value.clone())),
                            "round {round}: {path} version {v} is not the write in flight"
                        );
                        versions.push(value);
                        landed += 1;
                    }
                    Some((v, _)) if v == known => {}
                    got => panic!(
                        "round {round}: LOST acknowledged write or unexpected version: {path} \
                         holds {got:?}; acknowledged up to version {known} ({:?}); in flight {value}",
                        versions.last()
                    ),
                }
                touched.insert(path);
            }
        }
        // Latest of every path of the round: the last acknowledged or
        // landed write.
        for path in &touched {
            let versions = &state[path];
            let want = versions.last().map(|v| (versions.len() as u64, v.clone()));
            assert_eq!(
                read(&mut http, path, None),
                want,
                "round {round}: LOST acknowledged write: latest of {path}"
            );
        }
        // Every ack of the round at its version.
        let checked = verify_versions(dev.nexus, &tls, &round_acks);
        assert_eq!(checked, round_acks.len());
        all_acks.extend(round_acks);
        // An older version of an earlier path still reads.
        if let Some((path, _, value)) = all_acks.first() {
            assert_eq!(read(&mut http, path, Some(1)), Some((1, value.clone())));
        }
        assert_eq!(read(&mut http, CANARY, None), Some((1, "alive".to_owned())));
    }

    // After the last restart: every acknowledged write of the run, at its
    // version, and the latest of every path.
    let verified = verify_versions(dev.nexus, &tls, &all_acks);
    let mut http = Http::new(dev.nexus, Arc::clone(&tls));
    for (path, versions) in &state {
        let want = versions.last().map(|v| (versions.len() as u64, v.clone()));
        assert_eq!(read(&mut http, path, None), want, "latest of {path}");
    }
    // The store still takes writes.
    let (status, _) = put_vault(&mut http, CANARY, "still").unwrap();
    assert_eq!(status, 200);

    restarts_ms.sort_unstable();
    println!(
        "crash: kills={kills} acknowledged={} verified={verified} unacknowledged_landed={landed} \
         restart_ms p50={} max={}",
        all_acks.len(),
        percentile(&restarts_ms, 50),
        restarts_ms.last().copied().unwrap_or(0),
    );
    assert_eq!(verified, all_acks.len());
}
