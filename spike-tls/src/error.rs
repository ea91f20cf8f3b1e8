//! Errors of SVID handling and TLS set-up.

use std::path::PathBuf;

/// Why an identity could not be loaded, minted or verified. Never carries
/// key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate does not parse as X.509.
    #[error("certificate does not parse: {0}")]
    Certificate(String),
    /// The leaf does not carry exactly one `spiffe://` URI SAN, or it is not
    /// a valid SPIFFE ID.
    #[error("not an X.509-SVID: {0}")]
    NotAnSvid(String),
    /// The private key does not parse, is of an unsupported kind, or does
    /// not belong to the leaf certificate. The message never holds key bytes.
    #[error("private key: {0}")]
    PrivateKey(&'static str),
    /// A PEM file or buffer holds no usable object.
    #[error("PEM: {0}")]
    Pem(String),
    /// A trust bundle is empty, names an invalid trust domain, or holds a
    /// certificate that cannot be a trust anchor.
    #[error("trust bundle: {0}")]
    Bundle(String),
    /// An ID or bundle belongs to another trust domain than expected.
    #[error("{what} is in trust domain {found:?}, expected {expected:?}")]
    TrustDomainMismatch {
        /// What was checked.
        what: &'static str,
        /// The trust domain found.
        found: String,
        /// The trust domain required.
        expected: String,
    },
    /// An authenticated peer is not admitted by the endpoint's peer policy.
    #[error("peer {0} is not allowed by the peer policy")]
    PeerNotAllowed(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A private key file is readable by group or others: fix with
    /// `chmod 600`.
    #[error("{}: private key readable by group or others (mode {mode:o}); run chmod 600", path.display())]
    KeyFilePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The SPIFFE Workload API gave no usable SVID or could not be reached.
    #[error("SPIFFE Workload API: {0}")]
    WorkloadApi(String),
    /// The development CA could not mint or load a certificate.
    #[error("development CA: {0}")]
    DevCa(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TlsError {
        let path = path.into();
        move |source| TlsError::Io { path, source }
    }
}
