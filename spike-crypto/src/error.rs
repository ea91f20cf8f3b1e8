//! The one error type of this crate.

/// What went wrong in a cryptographic operation.
///
/// No variant ever carries key, share or plaintext bytes: errors end up in
/// logs and API answers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The bytes are not a valid root key: a root key is the big-endian
    /// encoding of a non-zero P-256 scalar (less than the group order).
    #[error("invalid root key: not the encoding of a non-zero P-256 scalar")]
    InvalidKey,
    /// Opening sealed data failed: wrong key, wrong associated data, or the
    /// data was tampered with, truncated or moved to another place.
    #[error("authentication failed: wrong key, or tampered or misplaced ciphertext")]
    Authentication,
    /// Sealed data cannot even be parsed (for example, shorter than nonce and tag).
    #[error("malformed sealed data: {0}")]
    Malformed(&'static str),
    /// A share is invalid: id 0, a value that is not a canonical scalar, or
    /// a text form that does not parse.
    #[error("invalid share: {0}")]
    InvalidShare(&'static str),
    /// The same share id was given twice.
    #[error("duplicate share id {0}")]
    DuplicateShare(u8),
    /// Too few shares to do anything (combining needs at least one).
    #[error("not enough shares: have {have}, need {need}")]
    NotEnoughShares {
        /// Shares given.
        have: usize,
        /// Shares needed.
        need: usize,
    },
    /// Split parameters out of range: need `1 <= threshold <= shares`.
    #[error("invalid threshold {threshold} for {shares} shares: need 1 <= threshold <= shares")]
    InvalidThreshold {
        /// Requested threshold.
        threshold: u8,
        /// Requested number of shares.
        shares: u8,
    },
    /// The secret-sharing library reported an error (its message is kept;
    /// it never contains share values).
    #[error("secret sharing failed: {0}")]
    Split(String),
    /// The operating system's random number generator failed.
    #[error("the operating system random number generator failed")]
    Rng,
}

impl From<vsss_rs::Error> for CryptoError {
    fn from(err: vsss_rs::Error) -> Self {
        // `vsss_rs::Error` is not `std::error::Error`; keep its message.
        CryptoError::Split(err.to_string())
    }
}

impl From<getrandom::Error> for CryptoError {
    fn from(_: getrandom::Error) -> Self {
        CryptoError::Rng
    }
}
