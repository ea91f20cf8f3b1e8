//! The validated connection settings: where Nexus is, who we are, whom we
//! accept as Nexus.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use spike_core::SpiffeId;
use spike_tls::{IdentitySource, PeerPolicy, PemSource, Svid, TrustBundle, WorkloadApiSource};
use zeroize::Zeroizing;

use crate::cli::Cli;
use crate::client::Client;
use crate::error::Error;

/// How long to wait for the Workload API's first SVID.
pub const WORKLOAD_API_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the Pilot's SVID comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// PEM files.
    Pem {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
        /// Trust bundle of Nexus's trust domain.
        ca: PathBuf,
    },
    /// The SPIFFE Workload API at this endpoint (`SPIFFE_ENDPOINT_SOCKET`).
    WorkloadApi(String),
}

/// Validated connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Nexus base URL (https).
    pub nexus: Url,
    /// Our SVID's source.
    pub identity: Identity,
    /// The SPIFFE IDs accepted for Nexus.
    pub nexus_ids: Vec<SpiffeId>,
}

impl Config {
    /// Validates the connection options of `cli`; `env` looks up the
    /// fallback variables `SPIKE_CERT`, `SPIKE_KEY`, `SPIKE_CA` and
    /// `SPIFFE_ENDPOINT_SOCKET` (clap reads the primary ones).
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] for a malformed URL, trust root or ID;
    /// [`Error::Config`] when no identity is configured or only part of it.
    pub fn from_cli(cli: &Cli, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Error> {
        let nexus: Url = cli
            .nexus
            .parse()
            .map_err(|e| Error::Usage(format!("--nexus `{}` is not a URL: {e}", cli.nexus)))?;
        if nexus.scheme() != "https" {
            return Err(Error::Usage(format!(
                "--nexus must be an https:// URL (Nexus speaks mTLS only), not `{}`",
                cli.nexus
            )));
        }
        if nexus.host().is_none() {
            return Err(Error::Usage(format!("--nexus `{}` has no host", cli.nexus)));
        }

        let nexus_ids = match &cli.nexus_id {
            Some(id) => vec![
                SpiffeId::parse(id).map_err(|e| Error::Usage(format!("--nexus-id `{id}`: {e}")))?,
            ],
            None => {
                let mut ids = Vec::new();
                for td in cli.trust_root.split(',').map(str::trim) {
                    let id = format!("spiffe://{td}/spike/nexus");
                    ids.push(SpiffeId::parse(&id).map_err(|e| {
                        Error::Usage(format!("--trust-root `{td}` is not a trust domain: {e}"))
                    })?);
                }
                ids
            }
        };

        let pick = |flag: &Option<PathBuf>, var: &str| {
            flag.clone()
                .or_else(|| env(var).filter(|v| !v.is_empty()).map(PathBuf::from))
        };
        let cert = pick(&cli.cert, "SPIKE_CERT");
        let key = pick(&cli.key, "SPIKE_KEY");
        let ca = pick(&cli.ca, "SPIKE_CA");
        let identity = match (cert, key, ca) {
            (Some(cert), Some(key), Some(ca)) => Identity::Pem { cert, key, ca },
            (None, None, None) => match env("SPIFFE_ENDPOINT_SOCKET").filter(|v| !v.is_empty()) {
                Some(endpoint) => Identity::WorkloadApi(endpoint),
                None => {
                    return Err(Error::Config(
                        "no identity: pass --cert, --key and --ca (or set SPIKE_PILOT_CERT, \
                         SPIKE_PILOT_KEY and SPIKE_PILOT_CA; `spike-server dev` prints them), \
                         or set SPIFFE_ENDPOINT_SOCKET to use the SPIFFE Workload API"
                            .into(),
                    ));
                }
            },
            (cert, key, ca) => {
                let missing: Vec<&str> = [
                    (cert.is_none(), "--cert"),
                    (key.is_none(), "--key"),
                    (ca.is_none(), "--ca"),
                ]
                .into_iter()
                .filter_map(|(m, name)| m.then_some(name))
                .collect();
                return Err(Error::Config(format!(
                    "incomplete identity: also give {} (or the SPIKE_PILOT_* variables)",
                    missing.join(" and ")
                )));
            }
        };
        Ok(Config {
            nexus,
            identity,
            nexus_ids,
        })
    }

    /// Loads the identity and builds the client. Returns our own SPIFFE ID
    /// too, for messages.
    ///
    /// # Errors
    ///
    /// [`Error::Identity`] when the SVID cannot be loaded or the TLS
    /// configuration not built; [`Error::Config`] from the client.
    pub async fn connect(&self) -> Result<(Client, SpiffeId), Error> {
        let source: Arc<dyn IdentitySource> = match &self.identity {
            Identity::Pem { cert, key, ca } => {
                Arc::new(pem_source(cert, key, ca, &self.nexus_ids).map_err(|e| {
                    Error::Identity(format!(
                        "cannot load the Pilot SVID from --cert {} / --key {} / --ca {}: {e}",
                        cert.display(),
                        key.display(),
                        ca.display()
                    ))
                })?)
            }
            Identity::WorkloadApi(endpoint) => Arc::new(
                WorkloadApiSource::connect(Some(endpoint), WORKLOAD_API_TIMEOUT)
                    .await
                    .map_err(|e| {
                        Error::Identity(format!(
                            "cannot get an SVID from the Workload API at {endpoint}: {e}; is the \
                             SPIFFE agent running and this workload registered?"
                        ))
                    })?,
            ),
        };
        let me = source
            .svid()
            .map_err(|e| Error::Identity(format!("no SVID: {e}")))?
            .id()
            .clone();
        let tls = spike_tls::client_config(source, PeerPolicy::Exact(self.nexus_ids.clone()))
            .map_err(|e| Error::Identity(format!("cannot set up TLS: {e}")))?;
        let client =
            Client::new(self.nexus.clone(), tls).map_err(|e| Error::Config(e.to_string()))?;
        Ok((client, me))
    }
}

/// The Pilot's SVID from `cert`/`key`, trusting `ca` as the bundle of Nexus's
/// trust domain(s) (those of `nexus_ids`) and of the SVID's own.
///
/// Not `PemSource::load`: it takes the bundle for the SVID's own trust
/// domain only, so a Pilot from another trust domain could never verify
/// Nexus with `--ca`.
fn pem_source(
    cert: &Path,
    key: &Path,
    ca: &Path,
    nexus_ids: &[SpiffeId],
) -> Result<PemSource, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let key_pem = Zeroizing::new(read(key)?);
    let svid = Svid::from_pem(&read(cert)?, &key_pem).map_err(|e| e.to_string())?;
    let ca_pem = read(ca)?;
    let mut domains: Vec<&str> = nexus_ids.iter().map(SpiffeId::trust_domain).collect();
    domains.push(svid.id().trust_domain());
    let mut bundles: Vec<TrustBundle> = Vec::new();
    for td in domains {
        if bundles.iter().all(|b| b.trust_domain() != td) {
            bundles.push(TrustBundle::from_pem(td, &ca_pem).map_err(|e| e.to_string())?);
        }
    }
    Ok(PemSource::new(svid, bundles))
}
