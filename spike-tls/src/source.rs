//! Where a process gets its SVID and trust bundles.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spiffe::{TrustDomain, X509Bundle, X509Source, X509Svid};

use crate::error::TlsError;
use crate::svid::{Svid, TrustBundle};

/// Where this process gets its SVID and trust bundles.
///
/// Asked on every handshake, so rotation needs no restart.
pub trait IdentitySource: Send + Sync + fmt::Debug {
    /// The current SVID.
    fn svid(&self) -> Result<Arc<Svid>, TlsError>;
    /// The CA certificates of `trust_domain`; `None` for an unknown trust
    /// domain (its peers are refused).
    fn bundle(&self, trust_domain: &str) -> Option<TrustBundle>;
}

/// Fixed material: an SVID and the bundles to trust, from PEM files or
/// built in memory (e.g. from a [`crate::DevCa`]).
///
/// [`PemSource::reload`] re-reads the files, for a caller that watches them.
pub struct PemSource {
    current: RwLock<(Arc<Svid>, Vec<TrustBundle>)>,
    files: Option<[PathBuf; 3]>,
}

impl PemSource {
    /// Loads the SVID chain `cert` (leaf first), its private `key`, and
    /// `bundle`: the CA certificates of the SVID's own trust domain.
    pub fn load(cert: &Path, key: &Path, bundle: &Path) -> Result<Self, TlsError> {
        let files = [cert.to_owned(), key.to_owned(), bundle.to_owned()];
        let current = read_files(&files)?;
        Ok(Self {
            current: RwLock::new(current),
            files: Some(files),
        })
    }

    /// Fixed material in memory: `svid` and the bundles to trust (one per
    /// trust domain; the first for a trust domain wins).
    pub fn new(svid: Svid, bundles: Vec<TrustBundle>) -> Self {
        Self {
            current: RwLock::new((Arc::new(svid), bundles)),
            files: None,
        }
    }

    /// Re-reads the files given to [`PemSource::load`]; the next handshake
    /// uses them. On error the previous material stays. A no-op for a
    /// source made with [`PemSource::new`].
    pub fn reload(&self) -> Result<(), TlsError> {
        if let Some(files) = &self.files {
            let fresh = read_files(files)?;
            *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        }
        Ok(())
    }
}

fn read_files(files: &[PathBuf; 3]) -> Result<(Arc<Svid>, Vec<TrustBundle>), TlsError> {
    let [cert, key, bundle] = files;
    let read = |p: &PathBuf| std::fs::read(p).map_err(TlsError::io(p));
    let key_pem = zeroize::Zeroizing::new(read(key)?);
    let svid = Svid::from_pem(&read(cert)?, &key_pem)?;
    let bundle = TrustBundle::from_pem(svid.id().trust_domain(), &read(bundle)?)?;
    Ok((Arc::new(svid), vec![bundle]))
}

impl IdentitySource for PemSource {
    fn svid(&self) -> Result<Arc<Svid>, TlsError> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        Ok(Arc::clone(&current.0))
    }

    fn bundle(&self, trust_domain: &str) -> Option<TrustBundle> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current
            .1
            .iter()
            .find(|b| b.trust_domain() == trust_domain)
            .cloned()
    }
}

impl fmt::Debug for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("PemSource")
            .field("svid", &current.0)
            .field("bundles", &current.1)
            .field("files", &self.files)
            .finish()
    }
}

/// The SPIFFE Workload API (e.g. a SPIRE agent), through the `spiffe`
/// crate's `X509Source`: it streams SVID and bundle updates in the
/// background, so rotated material is used from the next handshake on.
pub struct WorkloadApiSource {
    source: X509Source,
    /// The last conversion, kept while the source hands out the same SVID.
    svid: Mutex<Option<(Arc<X509Svid>, Arc<Svid>)>>,
    bundles: Mutex<HashMap<String, (Arc<X509Bundle>, TrustBundle)>>,
}

impl WorkloadApiSource {
    /// Connects to `endpoint` (`unix:///path/to/agent.sock` or
    /// `tcp://host:port`), or to `SPIFFE_ENDPOINT_SOCKET` when `None`, and
    /// waits at most `initial_sync_timeout` for the first SVID and bundles.
    pub async fn connect(
        endpoint: Option<&str>,
        initial_sync_timeout: Duration,
    ) -> Result<Self, TlsError> {
        let mut builder = X509Source::builder().initial_sync_timeout(initial_sync_timeout);
        if let Some(endpoint) = endpoint {
            builder = builder.endpoint(endpoint);
        }
        let source = builder
            .build()
            .await
            .map_err(|e| TlsError::WorkloadApi(e.to_string()))?;
        let this = Self {
            source,
            svid: Mutex::new(None),
            bundles: Mutex::new(HashMap::new()),
        };
        // Fail now, not at the first handshake, if the SVID is unusable.
        this.svid()?;
        Ok(this)
    }

    /// Stops the background updates; later handshakes fail.
    pub async fn shutdown(&self) {
        self.source.shutdown().await;
    }
}

impl IdentitySource for WorkloadApiSource {
    fn svid(&self) -> Result<Arc<Svid>, TlsError> {
        let current = self
            .source
            .svid()
            .map_err(|e| TlsError::WorkloadApi(e.to_string()))?;
        let mut cache = self.svid.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((seen, svid)) = cache.as_ref()
            && Arc::ptr_eq(seen, &current)
        {
            return Ok(Arc::clone(svid));
        }
        let chain = current
            .cert_chain()
            .iter()
            .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
            .collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            current.private_key().as_bytes().to_vec(),
        ));
        let svid = Arc::new(Svid::new(chain, key)?);
        *cache = Some((current, Arc::clone(&svid)));
        Ok(svid)
    }

    fn bundle(&self, trust_domain: &str) -> Option<TrustBundle> {
        let td = TrustDomain::new(trust_domain).ok()?;
        let current = self.source.try_bundle_for_trust_domain(&td)?;
        let mut cache = self.bundles.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((seen, bundle)) = cache.get(trust_domain)
            && Arc::ptr_eq(seen, &current)
        {
            return Some(bundle.clone());
        }
        let roots = current
            .authorities()
            .iter()
            .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
            .collect();
        // A bundle that cannot serve as trust anchors trusts nobody.
        let bundle = TrustBundle::new(trust_domain, roots).ok()?;
        cache.insert(trust_domain.to_owned(), (current, bundle.clone()));
        Some(bundle)
    }
}

impl fmt::Debug for WorkloadApiSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let svid = self.svid.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("WorkloadApiSource")
            .field("svid", &svid.as_ref().map(|(_, s)| s.id().as_str()))
            .finish_non_exhaustive()
    }
}
