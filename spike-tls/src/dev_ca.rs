//! A development CA that mints X.509-SVIDs. Never for production.

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use spike_core::SpiffeId;
use zeroize::Zeroizing;

use crate::error::TlsError;
use crate::svid::{Svid, TrustBundle, check_trust_domain, not_after_of};

/// How long a new development CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start this long before "now", for clock skew between
/// processes.
const BACKDATE: Duration = Duration::from_secs(60);

/// A development CA (never for production): an ECDSA P-256 CA for one trust
/// domain, persisted in a directory as `ca.pem` and `ca.key` (mode 0600),
/// minting SVIDs.
pub struct DevCa {
    trust_domain: String,
    bundle: TrustBundle,
    issuer: Issuer<'static, KeyPair>,
}

impl DevCa {
    /// Loads the CA in `dir`, or creates one for `trust_domain` there.
    ///
    /// Safe when several processes start at once: one creates the CA, the
    /// others load it. Fails when the stored CA is for another trust
    /// domain, has expired, its key does not match, or `ca.key` is readable
    /// by group or others.
    pub fn load_or_create(dir: &Path, trust_domain: &str) -> Result<DevCa, TlsError> {
        check_trust_domain(trust_domain)?;
        create_private_dir(dir)?;
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        if !key_path.exists() {
            match create(dir, trust_domain) {
                Ok(ca) => return Ok(ca),
                // Another process created it first: load theirs.
                Err(TlsError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        // The creator links ca.key before it renames ca.pem into place.
        for _ in 0..100 {
            if cert_path.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        load(&cert_path, &key_path, trust_domain)
    }

    /// The trust domain whose SVIDs this CA mints.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The CA certificate as the trust bundle of its trust domain.
    pub fn bundle(&self) -> TrustBundle {
        self.bundle.clone()
    }

    /// A leaf SVID for `id` (which must be in this trust domain), with
    /// optional DNS and IP SANs beside its one URI SAN (for clients that
    /// check host names, like Vault's), valid from a minute ago for
    /// `validity`.
    ///
    /// The leaf has a fresh P-256 key, `CA:FALSE`, key usage
    /// `digitalSignature` and extended key usages server and client auth
    /// (X.509-SVID spec §4).
    pub fn mint(
        &self,
        id: &SpiffeId,
        dns: &[&str],
        ips: &[IpAddr],
        validity: Duration,
    ) -> Result<Svid, TlsError> {
        if id.trust_domain() != self.trust_domain {
            return Err(TlsError::TrustDomainMismatch {
                what: "SPIFFE ID to mint",
                found: id.trust_domain().to_owned(),
                expected: self.trust_domain.clone(),
            });
        }
        let mut sans = vec![SanType::URI(ia5(id.as_str())?)];
        for name in dns {
            sans.push(SanType::DnsName(ia5(name)?));
        }
        sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));

        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "spike-rs development");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, validity)?;
        params.serial_number = Some(random_serial()?);

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(dev_ca_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(dev_ca_error)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Svid::new(vec![cert.der().clone()], key_der)
    }

    /// Writes `svid.pem` (the chain), `svid.key` (mode 0600) and
    /// `bundle.pem` (this CA) into `dir`, each replaced atomically.
    pub fn write_pem(&self, svid: &Svid, dir: &Path) -> Result<(), TlsError> {
        create_private_dir(dir)?;
        let (chain, key) = svid.to_pem();
        write_atomic(&dir.join("svid.key"), key.as_bytes(), 0o600)?;
        write_atomic(&dir.join("svid.pem"), chain.as_bytes(), 0o644)?;
        write_atomic(
            &dir.join("bundle.pem"),
            self.bundle.to_pem().as_bytes(),
            0o644,
        )
    }
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCa")
            .field("trust_domain", &self.trust_domain)
            .field("key", &format_args!("[key redacted]"))
            .finish()
    }
}

fn create(dir: &Path, trust_domain: &str) -> Result<DevCa, TlsError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "spike-rs development");
    params.distinguished_name.push(
        DnType::CommonName,
        format!("spike-rs development CA for {trust_domain}"),
    );
    // The trust domain's SPIFFE ID, as SPIFFE CA certificates carry.
    params.subject_alt_names = vec![SanType::URI(ia5(&format!("spiffe://{trust_domain}"))?)];
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_VALIDITY)?;
    params.serial_number = Some(random_serial()?);

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(dev_ca_error)?;
    let cert = params.self_signed(&key).map_err(dev_ca_error)?;
    let key_pem = Zeroizing::new(key.serialize_pem());

    // Claim ca.key first (a hard link fails if it exists: the loser of a
    // race loads the winner's CA), then put ca.pem in place.
    let (key_tmp, cert_tmp) = (tmp_path(&dir.join("ca.key")), tmp_path(&dir.join("ca.pem")));
    write_new(&key_tmp, key_pem.as_bytes(), 0o600)?;
    write_new(&cert_tmp, cert.pem().as_bytes(), 0o644).inspect_err(|_| {
        let _ = std::fs::remove_file(&key_tmp);
    })?;
    let key_path = dir.join("ca.key");
    let claimed = std::fs::hard_link(&key_tmp, &key_path).map_err(TlsError::io(&key_path));
    let _ = std::fs::remove_file(&key_tmp);
    if let Err(e) = claimed {
        let _ = std::fs::remove_file(&cert_tmp);
        return Err(e);
    }
    let cert_path = dir.join("ca.pem");
    std::fs::rename(&cert_tmp, &cert_path).map_err(TlsError::io(&cert_path))?;
    sync_dir(dir);

    let der = cert.der().clone();
    Ok(DevCa {
        trust_domain: trust_domain.to_owned(),
        bundle: TrustBundle::new(trust_domain, vec![der])?,
        issuer: Issuer::new(params, key),
    })
}

fn load(cert_path: &Path, key_path: &Path, trust_domain: &str) -> Result<DevCa, TlsError> {
    check_key_file_mode(key_path)?;
    let cert_pem = std::fs::read(cert_path).map_err(TlsError::io(cert_path))?;
    let key_pem =
        Zeroizing::new(std::fs::read_to_string(key_path).map_err(TlsError::io(key_path))?);
    let cert = CertificateDer::from_pem_slice(&cert_pem)
        .map_err(|e| TlsError::Pem(format!("{}: {e}", cert_path.display())))?;
    let key = KeyPair::from_pem(&key_pem)
        .map_err(|_| TlsError::PrivateKey("the development CA key does not parse"))?;

    let ca_id = crate::identity::spiffe_id_of(&cert)
        .map_err(|e| TlsError::DevCa(format!("{}: {e}", cert_path.display())))?;
    if ca_id.trust_domain() != trust_domain {
        return Err(TlsError::TrustDomainMismatch {
            what: "the development CA in the data directory",
            found: ca_id.trust_domain().to_owned(),
            expected: trust_domain.to_owned(),
        });
    }
    if not_after_of(&cert)? <= SystemTime::now() {
        return Err(TlsError::DevCa(format!(
            "{} has expired: remove ca.pem and ca.key to create a new CA",
            cert_path.display()
        )));
    }
    let signing_key = rustls::crypto::aws_lc_rs::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
        PrivatePkcs8KeyDer::from(key.serialized_der()),
    ))
    .map_err(|_| TlsError::PrivateKey("the development CA key is of an unsupported kind"))?;
    CertifiedKey::new(vec![cert.clone()], signing_key)
        .keys_match()
        .map_err(|_| TlsError::PrivateKey("the development CA key does not match ca.pem"))?;

    let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(dev_ca_error)?;
    Ok(DevCa {
        trust_domain: trust_domain.to_owned(),
        bundle: TrustBundle::new(trust_domain, vec![cert])?,
        issuer,
    })
}

fn dev_ca_error(e: rcgen::Error) -> TlsError {
    TlsError::DevCa(e.to_string())
}

fn ia5(s: &str) -> Result<rcgen::string::Ia5String, TlsError> {
    rcgen::string::Ia5String::try_from(s).map_err(|e| TlsError::DevCa(format!("{s:?}: {e}")))
}

fn set_validity(params: &mut CertificateParams, validity: Duration) -> Result<(), TlsError> {
    let now = SystemTime::now();
    let not_after = now
        .checked_add(validity)
        .ok_or_else(|| TlsError::DevCa("validity too long".to_owned()))?;
    params.not_before = (now - BACKDATE).into();
    params.not_after = not_after.into();
    Ok(())
}

/// A random, positive 128-bit serial number.
fn random_serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| TlsError::DevCa("no randomness for a serial number".to_owned()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // no leading zero byte to trim
    Ok(SerialNumber::from_slice(&bytes))
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(TlsError::io(dir))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(TlsError::io(path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(TlsError::io(path))
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, bytes, mode)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        TlsError::io(path)(e)
    })?;
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

/// A temporary name beside `path`, unique across processes and threads.
fn tmp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Makes renames durable; best effort.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn check_key_file_mode(path: &Path) -> Result<(), TlsError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(TlsError::io(path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(TlsError::KeyFilePermissions {
                path: path.to_owned(),
                mode: mode & 0o7777,
            });
        }
    }
    Ok(())
}
