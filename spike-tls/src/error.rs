//! Errors of SVID handling and TLS set-up.

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
}
