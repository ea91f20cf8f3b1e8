//! The harness: the binaries of this build, free loopback ports, a
//! `spike-server dev` per test in its own temporary directory, the `spike`
//! CLI run as a given identity, and cleanup that leaves no process behind.

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;
use spike_core::SpiffeId;
use spike_tls::{PeerPolicy, PemSource, TrustBundle};

/// Trust domain of every dev server here.
pub const TD: &str = "spike.ist";
/// Generous: a loaded 2-core machine runs these tests two at a time.
pub const READY_DEADLINE: Duration = Duration::from_secs(40);
/// The longest one `spike` call may take.
const SPIKE_DEADLINE: Duration = Duration::from_secs(30);

/// `target/<profile>/<name>`: a binary of this build, next to the test
/// binary's `deps/` directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut dir = exe
        .parent()
        .expect("the test binary's directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: the e2e tests run the workspace's binaries. Build them first: \
         `cargo build -p spike-server -p spike-cli` (`cargo test --workspace` builds them \
         before running any test; `cargo test -p spike-e2e` alone does not)",
        path.display()
    );
    path
}

pub fn server_bin() -> PathBuf {
    bin("spike-server")
}

pub fn spike_bin() -> PathBuf {
    bin("spike")
}

/// `n` distinct free loopback ports (bound at once, then released).
pub fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("binding a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address"))
        .collect()
}

pub fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).expect("a valid SPIFFE ID")
}

/// Polls `f` every 100 ms until it returns `Some`, or panics with `what`.
pub fn wait_for<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An X.509-SVID on disk: what `spike --cert --key --ca` takes.
#[derive(Debug, Clone)]
pub struct Ident {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The bundle that verifies Nexus.
    pub ca: PathBuf,
}

impl Ident {
    /// `svid.pem`, `svid.key` and `bundle.pem` in `dir` (as `dev` and
    /// `dev mint` write them).
    pub fn in_dir(dir: &Path) -> Ident {
        Ident {
            cert: dir.join("svid.pem"),
            key: dir.join("svid.key"),
            ca: dir.join("bundle.pem"),
        }
    }
}

/// What one `spike` run did.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub args: Vec<String>,
}

impl Out {
    #[track_caller]
    pub fn ok(self) -> Out {
        assert_eq!(self.code, 0, "spike {:?} failed: {self:#?}", self.args);
        self
    }

    /// Exit 1 with `(code)` in the error message.
    #[track_caller]
    pub fn err(self, code: &str) -> Out {
        assert_eq!(
            self.code, 1,
            "spike {:?}: expected exit 1: {self:#?}",
            self.args
        );
        assert!(
            self.stderr.contains(&format!("({code})")),
            "spike {:?}: expected `{code}` in stderr: {self:#?}",
            self.args
        );
        self
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("spike {:?}: stdout is not JSON ({e}): {self:#?}", self.args)
        })
    }
}

/// Runs `spike` against `nexus` as `who`, with a clean environment (no
/// `SPIKE_*` or `SPIFFE_ENDPOINT_SOCKET` from the caller's), feeding
/// `stdin`. Kills it after [`SPIKE_DEADLINE`].
pub fn spike(nexus: SocketAddr, who: &Ident, args: &[&str], stdin: Option<&str>) -> Out {
    let mut cmd = Command::new(spike_bin());
    cmd.env_clear()
        .env("SPIKE_NEXUS_API_URL", format!("https://{nexus}"))
        .arg("--cert")
        .arg(&who.cert)
        .arg("--key")
        .arg(&who.key)
        .arg("--ca")
        .arg(&who.ca)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("starting spike");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input.as_bytes())
            .expect("writing spike's stdin");
    }
    let mut stdout = child.stdout.take().expect("stdout pipe");
    let mut stderr = child.stderr.take().expect("stderr pipe");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let until = Instant::now() + SPIKE_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for spike") {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("spike {args:?} did not finish within {SPIKE_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Out {
        code: status.code().unwrap_or(-1),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
        args: args.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Whether process `pid`'s command line mentions `needle` (so that a
/// recycled pid is never signalled).
fn cmdline_mentions(pid: i32, needle: &Path) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).contains(&*needle.to_string_lossy()))
        .unwrap_or(false)
}

/// Live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &Path) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| alive(pid) && cmdline_mentions(pid, needle))
        .collect()
}

fn signal(pid: i32, sig: Signal) {
    if let Some(pid) = Pid::from_raw(pid) {
        let _ = kill_process(pid, sig);
    }
}

/// A `spike-server dev` in a temporary directory on its own free ports;
/// on drop every process it started (Nexus, Keepers) is killed.
pub struct Dev {
    _tmp: tempfile::TempDir,
    /// `DATA_DIR`.
    pub data: PathBuf,
    /// Scratch space of the test, beside `data`.
    pub scratch: PathBuf,
    pub nexus: SocketAddr,
    pub keepers: Vec<SocketAddr>,
    /// `--store-log-bytes` for Nexus's store, if not the default.
    pub store_log_bytes: Option<u64>,
    child: Option<Child>,
    runs: usize,
    log: PathBuf,
}

impl Dev {
    /// A started, unsealed dev.
    pub fn start() -> Dev {
        let mut dev = Dev::new();
        dev.spawn();
        dev.wait_ready();
        dev
    }

    /// A dev not started yet.
    pub fn new() -> Dev {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        // Canonical: `dev` canonicalises its data directory, and cleanup
        // finds its processes by this path on their command lines.
        let root = fs::canonicalize(tmp.path()).expect("canonical temporary directory");
        let data = root.join("data");
        let scratch = root.join("scratch");
        fs::create_dir_all(&scratch).expect("creating the scratch directory");
        let addrs = free_addrs(4);
        Dev {
            data,
            scratch,
            nexus: addrs[0],
            keepers: addrs[1..].to_vec(),
            store_log_bytes: None,
            child: None,
            runs: 0,
            log: root.join("dev-0.log"),
            _tmp: tmp,
        }
    }

    /// Starts `dev` (again) with the same data directory and ports; its
    /// stderr goes to `dev-<run>.log`. Does not wait.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "dev is already running");
        self.runs += 1;
        self.log = self
            .scratch
            .with_file_name(format!("dev-{}.log", self.runs));
        let log = fs::File::create(&self.log).expect("creating the dev log");
        let keepers: Vec<String> = self.keepers.iter().map(ToString::to_string).collect();
        let log_bytes: Vec<String> = self
            .store_log_bytes
            .map(|n| vec!["--store-log-bytes".to_owned(), n.to_string()])
            .unwrap_or_default();
        let child = Command::new(server_bin())
            .env_clear()
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .arg("dev")
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--nexus-addr")
            .arg(self.nexus.to_string())
            .arg("--keeper-addrs")
            .arg(keepers.join(","))
            .arg("--keeper-update-interval")
            .arg("1s")
            .args(&log_bytes)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("starting spike-server dev");
        self.child = Some(child);
    }

    /// This run's log (stdout and stderr of `dev`).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the log) if `dev` has exited.
    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("spike-server dev exited ({status}):\n{}", self.log());
        }
    }

    /// Waits until the superuser can list secrets (Nexus up and unsealed).
    pub fn wait_ready(&mut self) {
        let until = Instant::now() + READY_DEADLINE;
        loop {
            self.assert_running();
            let out = self.spike_as(&self.superuser(), &["secret", "list"]);
            if out.code == 0 {
                return;
            }
            assert!(
                Instant::now() < until,
                "dev not ready after {READY_DEADLINE:?}: last {out:#?}\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// SIGKILL to `dev` alone (its Keepers keep running).
    pub fn kill_dev(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL to `dev` and every Keeper it or an earlier run started:
    /// every process whose command line names this dev's data directory.
    pub fn kill_all(&mut self) {
        self.kill_dev();
        for pid in processes_mentioning(&self.data) {
            signal(pid, Signal::KILL);
        }
        let until = Instant::now() + Duration::from_secs(10);
        while !processes_mentioning(&self.data).is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Pids of the Keepers, from `DATA_DIR/run/keeper-<i>.pid`, i = 1..=3.
    pub fn keeper_pids(&self) -> Vec<i32> {
        (1..=self.keepers.len())
            .filter_map(|i| {
                fs::read_to_string(self.data.join("run").join(format!("keeper-{i}.pid"))).ok()
            })
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    }

    /// SIGKILL to a Keeper of this dev (checked by its command line).
    pub fn kill_keeper(&self, pid: i32) {
        if alive(pid) && cmdline_mentions(pid, &self.data) {
            signal(pid, Signal::KILL);
            wait_for("the Keeper to die", Duration::from_secs(10), || {
                (!alive(pid)).then_some(())
            });
        }
    }

    pub fn superuser(&self) -> Ident {
        self.pilot("superuser")
    }

    pub fn recover(&self) -> Ident {
        self.pilot("recover")
    }

    pub fn restore(&self) -> Ident {
        self.pilot("restore")
    }

    fn pilot(&self, role: &str) -> Ident {
        Ident::in_dir(&self.data.join("pilot").join(role))
    }

    /// Mints an SVID for `id` with `spike-server dev mint` (the dev's CA).
    pub fn mint(&self, id: &str) -> Ident {
        let out = self
            .scratch
            .join(id.trim_start_matches("spiffe://").replace('/', "_"));
        let status = Command::new(server_bin())
            .env_clear()
            .arg("dev")
            .arg("--data-dir")
            .arg(&self.data)
            .arg("mint")
            .arg("--id")
            .arg(id)
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::null())
            .status()
            .expect("running spike-server dev mint");
        assert!(status.success(), "dev mint --id {id} failed: {status}");
        Ident::in_dir(&out)
    }

    pub fn spike_as(&self, who: &Ident, args: &[&str]) -> Out {
        spike(self.nexus, who, args, None)
    }

    pub fn spike_su(&self, args: &[&str]) -> Out {
        spike(self.nexus, &self.superuser(), args, None)
    }

    /// Lines of the audit trail so far.
    /// The audit log's lines once it has stopped growing: Nexus writes
    /// lines in batches from a thread of its own, just after answering.
    pub fn audit_lines(&self) -> Vec<String> {
        let read = || fs::read_to_string(self.data.join("audit.log")).unwrap_or_default();
        let mut text = read();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let again = read();
            if again == text {
                break;
            }
            text = again;
        }
        text.lines().map(str::to_owned).collect()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// A client TLS config as `identity` (PEM files) that accepts only the
/// Nexus of trust domain `TD`, trusting `nexus_bundle`.
pub fn client_tls(identity: &Ident, nexus_bundle: &TrustBundle) -> Arc<rustls::ClientConfig> {
    client_tls_for(identity, nexus_bundle, "spike/nexus")
}

/// A client TLS config as `identity` accepting only `spiffe://TD/<server>`.
fn client_tls_for(
    identity: &Ident,
    bundle: &TrustBundle,
    server: &str,
) -> Arc<rustls::ClientConfig> {
    let cert = fs::read(&identity.cert).expect("reading the SVID");
    let key = fs::read(&identity.key).expect("reading the key");
    let svid = spike_tls::Svid::from_pem(&cert, &key).expect("a valid SVID");
    let source = Arc::new(PemSource::new(svid, vec![bundle.clone()]));
    spike_tls::client_config(
        source,
        PeerPolicy::Exact(vec![id(&format!("spiffe://{TD}/{server}"))]),
    )
    .expect("a client TLS config")
}

/// Whether the Keeper at `addr` holds a share (its `/readyz`), asked over
/// mTLS as `who` (any ID of the trust domain); `None` if it does not
/// answer.
pub fn keeper_has_shard(addr: SocketAddr, who: &Ident) -> Option<bool> {
    let bundle = TrustBundle::from_pem(TD, &fs::read(&who.ca).expect("reading the bundle"))
        .expect("a bundle");
    let mut config = (*client_tls_for(who, &bundle, "spike/keeper")).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let Ok(conn) = rustls::ClientConnection::new(Arc::new(config), name) else {
        return None;
    };
    let Ok(tcp) = std::net::TcpStream::connect(addr) else {
        return None;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let request = "GET /readyz HTTP/1.1\r\nhost: keeper\r\nconnection: close\r\n\r\n";
    if tls.write_all(request.as_bytes()).is_err() {
        return None;
    }
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    if !response.starts_with("HTTP/1.1 200") {
        return None;
    }
    Some(response.contains(r#""hasShard":true"#))
}

/// Waits until every Keeper of `dev` holds a share.
pub fn wait_keepers_hold_shares(dev: &Dev) {
    let who = dev.superuser();
    for &addr in &dev.keepers {
        wait_for("a Keeper to hold its share", READY_DEADLINE, || {
            (keeper_has_shard(addr, &who) == Some(true)).then_some(())
        });
    }
}

/// The X.509 serial number of a DER certificate.
pub fn serial(der: &[u8]) -> Vec<u8> {
    use x509_parser::prelude::{FromDer as _, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).expect("a DER certificate");
    cert.raw_serial().to_vec()
}
