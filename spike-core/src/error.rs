//! Errors. None of them ever carries secret values, keys or shares.

use spike_crypto::CryptoError;
use spike_storage::StorageError;

/// Input a caller sent that cannot be accepted. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// A SPIFFE ID is malformed.
    #[error("invalid SPIFFE ID: {reason}")]
    SpiffeId {
        /// What is wrong.
        reason: &'static str,
    },
    /// A secret path is malformed.
    #[error("invalid secret path: {reason}")]
    Path {
        /// What is wrong.
        reason: &'static str,
    },
    /// A policy field is malformed.
    #[error("invalid policy {field}: {reason}")]
    Policy {
        /// Which field.
        field: &'static str,
        /// What is wrong (for patterns: the regex compiler's message).
        reason: String,
    },
    /// A value exceeds its size limit.
    #[error("{what} is too large: {len} bytes, at most {max}")]
    TooLarge {
        /// Which value.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Secret data is not acceptable.
    #[error("invalid secret data: {reason}")]
    Data {
        /// What is wrong.
        reason: &'static str,
    },
    /// Custom metadata breaks a limit.
    #[error("invalid custom_metadata: {reason}")]
    CustomMetadata {
        /// What is wrong.
        reason: &'static str,
    },
    /// A share is malformed, duplicated or out of range.
    #[error("invalid share: {reason}")]
    Share {
        /// What is wrong.
        reason: &'static str,
    },
    /// A cipher API ciphertext is malformed, altered or not ours.
    #[error("invalid ciphertext: {reason}")]
    Ciphertext {
        /// What is wrong.
        reason: &'static str,
    },
    /// A configuration value is out of range.
    #[error("invalid {field}: {reason}")]
    Config {
        /// Which setting.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Why a [`crate::Nexus`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store is sealed: unseal it with shares (or restore them one at a
    /// time) first. Servers answer 503 `state_not_ready`.
    #[error("the store is sealed: unseal it with the root key shares first")]
    Sealed,
    /// The store has never been initialised.
    #[error("the store is not initialised: call init first")]
    NotInitialized,
    /// `init` on a store that already holds a root key.
    #[error("the store is already initialised; re-initialising would orphan its data")]
    AlreadyInitialized,
    /// Unseal or restore while already unsealed.
    #[error("the store is already unsealed")]
    AlreadyUnsealed,
    /// The caller may not do this. Deliberately says nothing more.
    #[error("access denied")]
    Denied,
    /// No such secret, version or policy.
    #[error("not found")]
    NotFound,
    /// The request is malformed; nothing was changed.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Check-and-set failed: the secret's current version is not the one
    /// the caller expected. Nothing was changed.
    #[error("check-and-set mismatch: expected version {expected}, current is {current}")]
    CasMismatch {
        /// The `cas` the caller sent.
        expected: u64,
        /// The current version (0 when absent).
        current: u64,
    },
    /// The secret (or mount) requires `cas` and the write had none.
    #[error("check-and-set parameter required for this secret")]
    CasRequired,
    /// Shares combined into a key that does not match this store's key check
    /// value: wrong, stale or too few shares. Nothing was unsealed.
    #[error("the shares do not reconstruct this store's root key (wrong, stale or too few shares)")]
    WrongKey,
    /// A stored record failed authentication or decoding: the backing store
    /// was tampered with or corrupted. Never served.
    #[error("tampered or corrupt record in the backing store: {what}")]
    Tampered {
        /// Which record and how (no secret content).
        what: String,
    },
    /// A root-key rotation is running; try again when it has finished.
    #[error("a root key rotation is in progress")]
    RotationInProgress,
    /// The backing store failed (after retries for writes). For a write the
    /// outcome is unknown: it may be applied once the store recovers.
    #[error("backing store error: {0}")]
    Storage(#[from] StorageError),
    /// A cryptographic operation failed.
    #[error("cryptographic error: {0}")]
    Crypto(#[from] CryptoError),
    /// The audit sink failed and the store runs fail-closed.
    #[error("audit trail unavailable: {0}")]
    Audit(String),
    /// The store is shutting down.
    #[error("the store is shutting down")]
    ShuttingDown,
}

impl Error {
    /// The stable code a server answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Sealed | Error::NotInitialized | Error::ShuttingDown => ErrorCode::NotReady,
            Error::AlreadyInitialized | Error::AlreadyUnsealed | Error::RotationInProgress => {
                ErrorCode::Conflict
            }
            Error::Denied => ErrorCode::Denied,
            Error::NotFound => ErrorCode::NotFound,
            Error::Input(_) | Error::CasRequired => ErrorCode::BadRequest,
            Error::CasMismatch { .. } => ErrorCode::CasMismatch,
            Error::WrongKey => ErrorCode::WrongKey,
            Error::Storage(e) if e.is_retryable() => ErrorCode::Unavailable,
            Error::Audit(_) => ErrorCode::Unavailable,
            Error::Tampered { .. } | Error::Storage(_) | Error::Crypto(_) => ErrorCode::Internal,
        }
    }
}

/// Stable error classes; servers map them to status codes and wire codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Sealed, uninitialised or shutting down (503 `state_not_ready`).
    NotReady,
    /// Bad input (400 `api_bad_request`).
    BadRequest,
    /// Denied (401 `access_unauthorized` / 403).
    Denied,
    /// Missing (404 `api_not_found`).
    NotFound,
    /// Check-and-set mismatch (400).
    CasMismatch,
    /// The request conflicts with the current state (400/409).
    Conflict,
    /// Shares did not reconstruct the key (400).
    WrongKey,
    /// The backing store or audit is unavailable (503).
    Unavailable,
    /// A fault on our side (500 `api_internal_error`).
    Internal,
}

/// Result alias for [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
