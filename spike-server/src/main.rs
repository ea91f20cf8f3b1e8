//! `spike-server`: the Nexus and Keeper servers of spike-rs.
//!
//! ```text
//! spike-server nexus    # SPIKE v1 API; unseals from Keepers
//! spike-server keeper   # holds one root-key share in memory
//! ```
//!
//! Configuration comes from flags or the environment variables upstream
//! SPIKE uses (see `--help`). Exit codes: 0 after a clean shutdown, 1 on a
//! start-up or runtime error, 2 for a usage error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use spike_core::{
    AuditOptions, Delivery, JsonLinesSink, Nexus, Role, SpiffeId, Status, TrustRoots,
};
use spike_server::shards::{self, KeeperClient};
use spike_server::{KeeperState, NexusState, keeper_api, nexus_api, serve};
use spike_tls::{IdentitySource, PeerPolicy, PemSource, WorkloadApiSource};

mod dev;

/// spike-rs servers: Nexus (the secrets store) and Keeper (share holder).
#[derive(Parser, Debug)]
#[command(name = "spike-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run Nexus: the SPIKE v1 API over SPIFFE mTLS.
    Nexus(NexusArgs),
    /// Run a Keeper: holds one root-key share for Nexus, in memory only.
    Keeper(KeeperArgs),
    /// Development: Nexus, three Keepers and a development CA on loopback,
    /// in one command (never for production).
    Dev(dev::DevArgs),
}

#[derive(Args, Debug)]
struct NexusArgs {
    /// Address to listen on.
    #[arg(long, env = "SPIKE_NEXUS_ADDR", default_value = "127.0.0.1:8553")]
    addr: SocketAddr,
    /// Directory of the redb store (`spike.redb` inside).
    #[arg(long, env = "SPIKE_NEXUS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Keeper base URLs, comma-separated; Keeper i holds share i.
    #[arg(long, env = "SPIKE_NEXUS_KEEPER_PEERS", value_delimiter = ',')]
    keeper_peers: Vec<String>,
    /// How often shares are pushed to Keepers (humantime: `5m`, `30s`).
    #[arg(long, env = "SPIKE_NEXUS_KEEPER_UPDATE_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    keeper_update_interval: Duration,
    /// Shares the root key is split into at init.
    #[arg(long, env = "SPIKE_NEXUS_SHAMIR_SHARES", default_value_t = 3)]
    shares: u8,
    /// Shares needed to rebuild the root key.
    #[arg(long, env = "SPIKE_NEXUS_SHAMIR_THRESHOLD", default_value_t = 2)]
    threshold: u8,
    /// Audit trail file (JSON lines); stderr when not set.
    #[arg(long, env = "SPIKE_NEXUS_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
    /// Replace secret paths and policy names in audit lines by their HMAC
    /// under the audit subkey (the same for a path until the root key
    /// rotates).
    #[arg(long, env = "SPIKE_NEXUS_AUDIT_HMAC_PATHS")]
    audit_hmac_paths: bool,
    /// No audit line, no answer: each line is written before the request
    /// is answered, and a request whose line cannot be written fails. A
    /// change also gets a line with status `started` before it is
    /// committed, so a failing audit log refuses the change itself. By
    /// default lines are written in batches by a dedicated thread, within
    /// about a millisecond; a crash can lose the lines of that moment.
    #[arg(long, env = "SPIKE_NEXUS_AUDIT_FAIL_CLOSED")]
    audit_fail_closed: bool,
    /// Bytes each of the store's two write-ahead log files holds. A
    /// checkpoint into the database starts every 1,024 commits or when a
    /// file is full; larger files mean fewer waits for checkpoints under
    /// heavy writes, and a longer replay after a crash (up to twice this).
    #[arg(long, env = "SPIKE_NEXUS_STORE_LOG_BYTES", default_value_t = DEFAULT_STORE_LOG_BYTES, value_parser = store_log_bytes_range())]
    store_log_bytes: u64,
    #[command(flatten)]
    common: CommonArgs,
}

/// The default of `--store-log-bytes` (RedbStore's own default).
pub(crate) const DEFAULT_STORE_LOG_BYTES: u64 = 16 * 1024 * 1024;

/// What `--store-log-bytes` accepts: a block at least, 4 GiB at most.
pub(crate) fn store_log_bytes_range() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(4096..=1 << 32)
}

#[derive(Args, Debug)]
struct KeeperArgs {
    /// Address to listen on.
    #[arg(long, env = "SPIKE_KEEPER_ADDR", default_value = "127.0.0.1:8443")]
    addr: SocketAddr,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args, Debug)]
struct CommonArgs {
    /// Trust domains whose built-in role IDs are honoured, comma-separated.
    #[arg(
        long,
        env = "SPIKE_TRUST_ROOT",
        value_delimiter = ',',
        default_value = "spike.ist"
    )]
    trust_root: Vec<String>,
    /// X.509-SVID chain (PEM); with --key and --bundle instead of the
    /// Workload API.
    #[arg(long, env = "SPIKE_TLS_CERT", requires_all = ["key", "bundle"])]
    cert: Option<PathBuf>,
    /// The SVID's private key (PEM).
    #[arg(long, env = "SPIKE_TLS_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// CA bundle of the SVID's trust domain (PEM).
    #[arg(long, env = "SPIKE_TLS_BUNDLE", requires = "cert")]
    bundle: Option<PathBuf>,
    /// SPIFFE Workload API endpoint (`unix:///path`), used without --cert.
    #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
    spiffe_endpoint_socket: Option<String>,
}

/// mimalloc: glibc malloc (with its consolidation passes) was the largest
/// single user-space cost of a request; A/B on reads: +8% (issue 5 note).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_tracing();
    // Before any key or secret is in memory; `dev`'s Keepers are separate
    // `spike-server keeper` processes and harden themselves.
    let _ = spike_server::hardening::harden_process();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spike-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Nexus(args) => run_nexus(args).await,
            Command::Keeper(args) => run_keeper(args).await,
            Command::Dev(args) => dev::run(args).await,
        }
    })
}

async fn identity(args: &CommonArgs) -> anyhow::Result<Arc<dyn IdentitySource>> {
    if let (Some(cert), Some(key), Some(bundle)) = (&args.cert, &args.key, &args.bundle) {
        let source =
            PemSource::load(cert, key, bundle).context("loading the SVID from PEM files")?;
        return Ok(Arc::new(source));
    }
    if args.spiffe_endpoint_socket.is_none() {
        bail!(
            "no identity: set --cert/--key/--bundle (SPIKE_TLS_CERT, SPIKE_TLS_KEY, \
             SPIKE_TLS_BUNDLE) or SPIFFE_ENDPOINT_SOCKET"
        );
    }
    let source = WorkloadApiSource::connect(
        args.spiffe_endpoint_socket.as_deref(),
        Duration::from_secs(30),
    )
    .await
    .context("fetching the SVID from the SPIFFE Workload API")?;
    Ok(Arc::new(source))
}

fn trust_roots(args: &CommonArgs) -> anyhow::Result<TrustRoots> {
    TrustRoots::new(args.trust_root.iter().map(String::as_str)).context("invalid SPIKE_TRUST_ROOT")
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".spike")
        .join("data")
}

async fn run_nexus(args: NexusArgs) -> anyhow::Result<()> {
    let roots = trust_roots(&args.common)?;
    let source = identity(&args.common).await?;
    let plan = NexusPlan {
        addr: args.addr,
        data_dir: args.data_dir.clone().unwrap_or_else(default_data_dir),
        keeper_peers: args.keeper_peers.clone(),
        keeper_update_interval: args.keeper_update_interval,
        shares: args.shares,
        threshold: args.threshold,
        audit_log: args.audit_log.clone(),
        audit: AuditOptions {
            hmac_paths: args.audit_hmac_paths,
            fail_closed: args.audit_fail_closed,
        },
        store_log_bytes: args.store_log_bytes,
        roots,
        source,
        dev_recovery: None,
    };
    serve_nexus(plan, shutdown_signal()).await
}

/// Everything a Nexus needs to run, however it was configured.
pub(crate) struct NexusPlan {
    pub(crate) addr: SocketAddr,
    pub(crate) data_dir: PathBuf,
    pub(crate) keeper_peers: Vec<String>,
    pub(crate) keeper_update_interval: Duration,
    pub(crate) shares: u8,
    pub(crate) threshold: u8,
    pub(crate) audit_log: Option<PathBuf>,
    pub(crate) audit: AuditOptions,
    /// Bytes per write-ahead log file of the redb store.
    pub(crate) store_log_bytes: u64,
    pub(crate) roots: TrustRoots,
    pub(crate) source: Arc<dyn IdentitySource>,
    /// `dev` only: where dev-only recovery shares are kept (see `dev.rs`).
    pub(crate) dev_recovery: Option<PathBuf>,
}

/// Opens the store, serves the SPIKE v1 API until `shutdown`, and unseals
/// (or initialises) in the background meanwhile.
pub(crate) async fn serve_nexus(
    plan: NexusPlan,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let roots = plan.roots.clone();
    let source = Arc::clone(&plan.source);
    let server_tls = spike_tls::server_config(
        Arc::clone(&source),
        PeerPolicy::TrustDomains(roots.domains().to_vec()),
    )
    .context("building the server TLS config")?;
    let keepers = keeper_clients(&roots, &source, &plan.keeper_peers)?;

    let dir = plan.data_dir.clone();
    create_private_dir(&dir)?;
    let opening = std::time::Instant::now();
    let store = Arc::new(
        spike_storage::RedbStore::open_with(
            dir.join("spike.redb"),
            spike_storage::RedbOptions::default().log_capacity(plan.store_log_bytes),
        )
        .with_context(|| format!("opening the store in {}", dir.display()))?,
    );
    tracing::info!(
        elapsed_ms = opening.elapsed().as_millis(),
        replayed_frames = store.replayed_frames(),
        "store opened"
    );
    // Fail-closed needs each line written before its answer.
    let delivery = if plan.audit.fail_closed {
        Delivery::Synchronous
    } else {
        Delivery::Batched
    };
    let audit: Arc<dyn spike_core::AuditSink> = match &plan.audit_log {
        Some(path) => Arc::new(
            JsonLinesSink::file(path, delivery)
                .with_context(|| format!("opening the audit log {}", path.display()))?,
        ),
        None => Arc::new(JsonLinesSink::stderr(delivery)),
    };
    let nexus = Nexus::builder(store.clone())
        .trust_roots(roots)
        .shares(plan.shares, plan.threshold)
        .audit(audit, plan.audit)
        .open()
        .await
        .context("opening Nexus")?;

    // Serve at once: while sealed, data routes answer 503 and an operator
    // can still restore shares.
    let listener = tokio::net::TcpListener::bind(plan.addr)
        .await
        .with_context(|| format!("binding {}", plan.addr))?;
    tracing::info!(addr = %plan.addr, keepers = keepers.len(), "Nexus listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let lifecycle = tokio::spawn(lifecycle(
        nexus.clone(),
        Arc::clone(&keepers),
        plan.threshold,
        plan.keeper_update_interval,
        plan.dev_recovery.clone(),
        stop_rx,
    ));
    let app = nexus_api::router(NexusState::new(nexus.clone()).with_redb(store));
    let served = serve::serve(listener, server_tls, app, shutdown).await;
    let _ = stop_tx.send(true);
    lifecycle.abort();
    nexus.close().await;
    served.context("serving")
}

/// Clients of the Keepers at `peers`, which must present the exact Keeper
/// role ID of a trust root.
pub(crate) fn keeper_clients(
    roots: &TrustRoots,
    source: &Arc<dyn IdentitySource>,
    peers: &[String],
) -> anyhow::Result<Arc<[KeeperClient]>> {
    let keeper_ids = roots
        .domains()
        .iter()
        .map(|td| Role::Keeper.id_in(td))
        .collect::<Result<Vec<SpiffeId>, _>>()?;
    let client_tls = spike_tls::client_config(Arc::clone(source), PeerPolicy::Exact(keeper_ids))
        .context("building the Keeper client TLS config")?;
    Ok(peers
        .iter()
        .filter(|u| !u.trim().is_empty())
        .map(|u| KeeperClient::with_tls(u.trim(), (*client_tls).clone()))
        .collect::<Result<Vec<_>, _>>()?
        .into())
}

/// Unseals (or initialises) in the background, then pushes shares
/// periodically. With `dev_recovery`, init also writes the shares there,
/// and a Nexus that cannot get them from its Keepers soon unseals from them.
async fn lifecycle(
    nexus: Nexus,
    keepers: Arc<[KeeperClient]>,
    threshold: u8,
    interval: Duration,
    dev_recovery: Option<PathBuf>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    match nexus.status() {
        Status::Uninitialized => match nexus.init().await {
            Ok(shares) => {
                if let Some(dir) = &dev_recovery
                    && let Err(e) = dev::write_recovery_shares(dir, &shares)
                {
                    tracing::error!(error = %e, "writing dev recovery shares failed");
                }
                if keepers.is_empty() {
                    tracing::warn!(
                        "initialised with no Keepers configured: run `spike operator recover` \
                         now, or the root key is lost when this process stops"
                    );
                } else if let Err(e) =
                    shards::push_until(&nexus, &keepers, usize::from(threshold)).await
                {
                    tracing::error!(error = %e, "pushing the first shares failed");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "init failed");
                return;
            }
        },
        Status::Sealed { .. } if keepers.is_empty() && dev_recovery.is_none() => {
            tracing::warn!(
                "sealed and no Keepers configured: waiting for `spike operator restore`"
            );
        }
        Status::Sealed { .. } => match &dev_recovery {
            Some(dir) => dev::unseal(&nexus, &keepers, threshold, dir).await,
            None => match shards::pull_and_unseal(&nexus, &keepers, threshold).await {
                Ok(shards::Unsealed::FromKeepers) => {}
                Ok(shards::Unsealed::Meanwhile) => {
                    tracing::info!("unsealed meanwhile by an operator's restore");
                }
                Err(e) => {
                    tracing::error!(error = %e, "unseal from Keepers failed");
                    return;
                }
            },
        },
        _ => {}
    }
    if keepers.is_empty() {
        return;
    }
    let mut stop = stop;
    let _ = shards::spawn_push_loop(nexus, keepers, interval, async move {
        let _ = stop.wait_for(|s| *s).await;
    })
    .await;
}

async fn run_keeper(args: KeeperArgs) -> anyhow::Result<()> {
    let roots = trust_roots(&args.common)?;
    let source = identity(&args.common).await?;
    let tls = spike_tls::server_config(source, PeerPolicy::TrustDomains(roots.domains().to_vec()))
        .context("building the server TLS config")?;
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    tracing::info!(addr = %args.addr, "Keeper listening");
    let app = keeper_api::router(KeeperState::new(roots));
    serve::serve(listener, tls, app, shutdown_signal())
        .await
        .context("serving")
}

pub(crate) fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}
