//! `spike-server dev`: a whole spike-rs on loopback in one command.
//!
//! - A development CA for the trust domain (`DATA_DIR/ca/`) mints
//!   X.509-SVIDs for Nexus (with DNS `localhost` and IP `127.0.0.1` SANs, so
//!   clients that check host names work), the Keepers, and the Pilot roles
//!   superuser, recover and restore (`DATA_DIR/pilot/<role>/`), plus a shell
//!   file `DATA_DIR/pilot/env` exporting what `spike` needs.
//! - Three Keepers run as child processes of `dev`, in its process group:
//!   SIGKILL to `dev` alone leaves them running, and the next `dev` finds
//!   them on their ports and unseals from them. SIGTERM or Ctrl-C stops them
//!   all.
//! - Nexus runs in this process over redb in `DATA_DIR/nexus/`. On first
//!   start it initialises, pushes shares to the Keepers and — dev only —
//!   keeps the shares in `DATA_DIR/recovery/` (mode 0600), so that when the
//!   whole tree is gone the next start unseals from them. `nexus` never
//!   does this.
//! - `spike-server dev mint --id spiffe://spike.ist/... --out DIR` mints a
//!   workload SVID from the same CA, for trying policies.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use spike_core::{AuditOptions, Nexus, Role, Share, SpiffeId, TrustRoots};
use spike_server::shards::{self, KeeperClient};
use spike_tls::{DevCa, IdentitySource, PemSource};

use crate::{NexusPlan, create_private_dir, serve_nexus, shutdown_signal};

/// How long Nexus waits for Keepers' shares before it falls back to the
/// dev-only recovery shares.
const KEEPER_UNSEAL_WAIT: Duration = Duration::from_secs(5);

#[derive(Args, Debug)]
pub(crate) struct DevArgs {
    #[command(subcommand)]
    action: Option<DevAction>,
    /// Where everything lives: CA, store, SVIDs, recovery shares, logs.
    #[arg(
        long,
        env = "SPIKE_DEV_DATA_DIR",
        default_value = "./spike-data",
        global = true
    )]
    data_dir: PathBuf,
    /// Trust domain of the development CA.
    #[arg(
        long,
        env = "SPIKE_TRUST_ROOT",
        default_value = "spike.ist",
        global = true
    )]
    trust_domain: String,
    /// Nexus address.
    #[arg(long, default_value = "127.0.0.1:8553")]
    nexus_addr: SocketAddr,
    /// Keeper addresses (three by default; Keeper i holds share i).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:8443,127.0.0.1:8543,127.0.0.1:8643"
    )]
    keeper_addrs: Vec<SocketAddr>,
    /// Shares needed to unseal (of one per Keeper).
    #[arg(long, default_value_t = 2)]
    threshold: u8,
    /// How often Nexus re-sends shares to Keepers.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    keeper_update_interval: Duration,
    /// Bytes each of the store's two write-ahead log files holds (see
    /// `spike-server nexus --help`).
    #[arg(long, default_value_t = crate::DEFAULT_STORE_LOG_BYTES, value_parser = crate::store_log_bytes_range())]
    store_log_bytes: u64,
}

#[derive(Subcommand, Debug)]
enum DevAction {
    /// Mint an X.509-SVID for a workload from the development CA.
    Mint(MintArgs),
}

#[derive(Args, Debug)]
struct MintArgs {
    /// The workload's SPIFFE ID (in the CA's trust domain).
    #[arg(long)]
    id: String,
    /// Directory for svid.pem, svid.key (0600) and bundle.pem.
    #[arg(long)]
    out: PathBuf,
    /// Extra DNS SANs.
    #[arg(long, value_delimiter = ',')]
    dns: Vec<String>,
    /// Extra IP SANs.
    #[arg(long, value_delimiter = ',')]
    ip: Vec<IpAddr>,
    /// How long the SVID is valid.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    validity: Duration,
}

/// Validity of the SVIDs `dev` mints for itself (renewed every start).
const DEV_SVID_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

pub(crate) async fn run(args: DevArgs) -> anyhow::Result<()> {
    create_private_dir(&args.data_dir)?;
    let data_dir = fs::canonicalize(&args.data_dir)
        .with_context(|| format!("resolving {}", args.data_dir.display()))?;
    let ca = DevCa::load_or_create(&data_dir.join("ca"), &args.trust_domain)
        .context("loading the development CA")?;
    if let Some(DevAction::Mint(mint)) = args.action {
        return mint_workload(&ca, &mint);
    }
    let td = args.trust_domain.clone();
    let loopback = [IpAddr::V4(Ipv4Addr::LOCALHOST)];

    // SVIDs: Nexus, Keepers, Pilot roles.
    let nexus_svid = ca.mint(
        &Role::Nexus.id_in(&td)?,
        &["localhost"],
        &loopback,
        DEV_SVID_VALIDITY,
    )?;
    ca.write_pem(&nexus_svid, &data_dir.join("nexus"))?;
    let keeper_dir = data_dir.join("keeper");
    let keeper_svid = ca.mint(
        &Role::Keeper.id_in(&td)?,
        &["localhost"],
        &loopback,
        DEV_SVID_VALIDITY,
    )?;
    ca.write_pem(&keeper_svid, &keeper_dir)?;
    for (role, name) in [
        (Role::Superuser, "superuser"),
        (Role::Recover, "recover"),
        (Role::Restore, "restore"),
    ] {
        let svid = ca.mint(&role.id_in(&td)?, &[], &[], DEV_SVID_VALIDITY)?;
        ca.write_pem(&svid, &data_dir.join("pilot").join(name))?;
    }
    let env_file = write_pilot_env(&data_dir, &args.nexus_addr, &td)?;

    // Keepers: adopt the ones already on their ports, start the others.
    let logs = data_dir.join("logs");
    create_private_dir(&logs)?;
    let mut children = Vec::new();
    for (i, addr) in args.keeper_addrs.iter().enumerate() {
        let index = i + 1;
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            tracing::info!(keeper = index, %addr, "a Keeper is already running there; using it");
            continue;
        }
        let child = spawn_keeper(index, *addr, &keeper_dir, &logs, &td)?;
        write_pid(&data_dir, index, child.id())?;
        children.push(child);
    }

    let source: Arc<dyn IdentitySource> = Arc::new(PemSource::new(nexus_svid, vec![ca.bundle()]));
    let plan = NexusPlan {
        addr: args.nexus_addr,
        data_dir: data_dir.join("nexus"),
        keeper_peers: args
            .keeper_addrs
            .iter()
            .map(|a| format!("https://{a}"))
            .collect(),
        keeper_update_interval: args.keeper_update_interval,
        shares: u8::try_from(args.keeper_addrs.len()).context("at most 255 Keepers")?,
        threshold: args.threshold,
        audit_log: Some(data_dir.join("audit.log")),
        audit: AuditOptions::default(),
        store_log_bytes: args.store_log_bytes,
        roots: TrustRoots::new([td.as_str()])?,
        source,
        dev_recovery: Some(data_dir.join("recovery")),
    };
    print_banner(&data_dir, &env_file, &args);
    let served = serve_nexus(plan, shutdown_signal()).await;
    stop_keepers(&data_dir, args.keeper_addrs.len(), children);
    served
}

fn mint_workload(ca: &DevCa, args: &MintArgs) -> anyhow::Result<()> {
    let id = SpiffeId::parse(&args.id).context("invalid --id")?;
    let dns: Vec<&str> = args.dns.iter().map(String::as_str).collect();
    let svid = ca.mint(&id, &dns, &args.ip, args.validity)?;
    ca.write_pem(&svid, &args.out)?;
    println!(
        "minted {id} into {} (svid.pem, svid.key, bundle.pem), valid {}",
        args.out.display(),
        humantime::format_duration(args.validity)
    );
    Ok(())
}

fn spawn_keeper(
    index: usize,
    addr: SocketAddr,
    svid_dir: &Path,
    logs: &Path,
    trust_domain: &str,
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("locating the spike-server binary")?;
    let log = logs.join(format!("keeper-{index}.log"));
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    let child = Command::new(exe)
        .arg("keeper")
        .arg("--addr")
        .arg(addr.to_string())
        .arg("--cert")
        .arg(svid_dir.join("svid.pem"))
        .arg("--key")
        .arg(svid_dir.join("svid.key"))
        .arg("--bundle")
        .arg(svid_dir.join("bundle.pem"))
        .arg("--trust-root")
        .arg(trust_domain)
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting Keeper {index}"))?;
    tracing::info!(keeper = index, %addr, pid = child.id(), log = %log.display(), "Keeper started");
    Ok(child)
}

fn pid_file(data_dir: &Path, index: usize) -> PathBuf {
    data_dir.join("run").join(format!("keeper-{index}.pid"))
}

fn write_pid(data_dir: &Path, index: usize, pid: u32) -> anyhow::Result<()> {
    let path = pid_file(data_dir, index);
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    fs::write(&path, pid.to_string()).with_context(|| format!("writing {}", path.display()))
}

/// SIGTERM to every Keeper started by this `dev` or an earlier one (their
/// pid files), so that they zeroise their shares and exit.
fn stop_keepers(data_dir: &Path, count: usize, children: Vec<Child>) {
    for index in 1..=count {
        let path = pid_file(data_dir, index);
        let pid = fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid
            && let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::TERM)
        {
            tracing::debug!(keeper = index, error = %e, "Keeper already gone");
        }
        let _ = fs::remove_file(&path);
    }
    for mut child in children {
        let _ = child.wait();
    }
}

/// Writes the dev-only recovery shares (mode 0600).
pub(crate) fn write_recovery_shares(dir: &Path, shares: &[Share]) -> anyhow::Result<()> {
    create_private_dir(dir)?;
    for share in shares {
        let path = dir.join(format!("spike.recovery.{}.txt", share.id()));
        let mut options = OpenOptions::new();
        options.create(true).write(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        file.write_all(share.to_text().as_bytes())?;
        file.sync_all()?;
    }
    eprintln!(
        "\n  WARNING: development mode keeps the root key's recovery shares in\n  \
         {}\n  Anyone who can read them can decrypt the store. Never use `dev` for real secrets.\n",
        dir.display()
    );
    tracing::warn!(dir = %dir.display(), "dev-only recovery shares written to disk");
    Ok(())
}

fn read_recovery_shares(dir: &Path) -> anyhow::Result<Vec<Share>> {
    let mut shares = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let text = fs::read_to_string(&path)?;
        let share = Share::from_text(&text)
            .with_context(|| format!("{} is not a share file", path.display()))?;
        shares.push(share);
    }
    if shares.is_empty() {
        bail!("no recovery shares in {}", dir.display());
    }
    Ok(shares)
}

/// Unseals a dev Nexus: from the Keepers if they answer soon, else from
/// the dev-only recovery shares (then re-seeds the Keepers).
pub(crate) async fn unseal(nexus: &Nexus, keepers: &[KeeperClient], threshold: u8, dir: &Path) {
    if !keepers.is_empty() {
        match tokio::time::timeout(
            KEEPER_UNSEAL_WAIT,
            shards::pull_and_unseal(nexus, keepers, threshold),
        )
        .await
        {
            Ok(Ok(shards::Unsealed::FromKeepers)) => {
                tracing::info!("unsealed from the Keepers");
                return;
            }
            Ok(Ok(shards::Unsealed::Meanwhile)) => {
                tracing::info!("unsealed meanwhile by an operator's restore");
                return;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "unseal from the Keepers failed"),
            Err(_) => tracing::warn!("the Keepers hold no usable shares (they were restarted)"),
        }
    }
    let shares = match read_recovery_shares(dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot unseal: use `spike operator restore`");
            return;
        }
    };
    match nexus.unseal(&shares).await {
        Ok(()) => {
            tracing::warn!(
                dir = %dir.display(),
                "unsealed from the dev-only recovery shares on disk (never in production)"
            );
            if let Err(e) = shards::push_all(nexus, keepers).await {
                tracing::warn!(error = %e, "re-seeding the Keepers failed");
            }
        }
        Err(e) => tracing::error!(error = %e, "the dev recovery shares do not unseal this store"),
    }
}

/// `DATA_DIR/pilot/env`: what `spike` and Vault clients need, as shell
/// exports.
fn write_pilot_env(data_dir: &Path, nexus: &SocketAddr, td: &str) -> anyhow::Result<PathBuf> {
    let pilot = data_dir.join("pilot").join("superuser");
    let mut env = String::from(
        "# spike-rs dev: `source` this file, then use `spike` against the dev Nexus.\n",
    );
    let mut export = |name: &str, value: &str| {
        env.push_str(&format!("export {name}={}\n", shell_quote(value)));
    };
    export("SPIKE_NEXUS_API_URL", &format!("https://{nexus}"));
    export("SPIKE_TRUST_ROOT", td);
    export(
        "SPIKE_PILOT_CERT",
        &pilot.join("svid.pem").to_string_lossy(),
    );
    export("SPIKE_PILOT_KEY", &pilot.join("svid.key").to_string_lossy());
    export(
        "SPIKE_PILOT_CA",
        &pilot.join("bundle.pem").to_string_lossy(),
    );
    // Vault clients (`bao`/`vault kv`, hvac, vaultrs) against the Vault
    // KV v2 API, authenticated by the superuser SVID.
    export("VAULT_ADDR", &format!("https://{nexus}"));
    export("VAULT_CACERT", &pilot.join("bundle.pem").to_string_lossy());
    export(
        "VAULT_CLIENT_CERT",
        &pilot.join("svid.pem").to_string_lossy(),
    );
    export(
        "VAULT_CLIENT_KEY",
        &pilot.join("svid.key").to_string_lossy(),
    );
    // `spike` is built next to `spike-server`: put it on PATH.
    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    if let Some(bin_dir) = bin_dir
        && bin_dir.join("spike").exists()
    {
        env.push_str(&format!(
            "export PATH={}:\"$PATH\"\n",
            shell_quote(&bin_dir.to_string_lossy())
        ));
    }
    let path = data_dir.join("pilot").join("env");
    fs::write(&path, env).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Single-quotes `s` for POSIX shells.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn print_banner(data_dir: &Path, env_file: &Path, args: &DevArgs) {
    let keepers: Vec<String> = args.keeper_addrs.iter().map(ToString::to_string).collect();
    eprintln!(
        "\nspike-rs dev (development only: a dev CA, recovery shares on disk)\n  \
         Nexus    https://{}   (trust domain {})\n  \
         Keepers  {}\n  \
         data     {}\n\n\
         Try it:\n  \
         source {}\n  \
         spike secret put demo/hello greeting=world\n  \
         spike secret get demo/hello\n\n\
         Other identities: {}/pilot/{{recover,restore}}/; a workload SVID:\n  \
         spike-server dev mint --id spiffe://{}/app --out ./app-svid\n",
        args.nexus_addr,
        args.trust_domain,
        keepers.join(", "),
        data_dir.display(),
        env_file.display(),
        data_dir.display(),
        args.trust_domain,
    );
}
