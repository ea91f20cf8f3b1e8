//! Wire types of the SPIKE v1 API, shared by `spike-server` (Nexus,
//! Keeper) and `spike` (Pilot).
//!
//! Every route is `POST` with a JSON body; the operation is chosen by the
//! path and `?action=`. Field names follow upstream SPIKE 0.8 and
//! spike-sdk-go exactly (camelCase where upstream uses it), so upstream
//! clients work unchanged. Errors are `{"err":"<code>"}` with the codes of
//! [`ErrorCode`].
//!
//! ```
//! use spike_api::{SecretPutRequest, routes};
//! let body: SecretPutRequest =
//!     serde_json::from_str(r#"{"path":"db/creds","values":{"user":"app"}}"#).unwrap();
//! assert_eq!(body.values["user"], "app");
//! assert_eq!(routes::SECRETS, "/v1/store/secrets");
//! ```

mod error;
mod operator;
mod policy;
mod secrets;
mod shard;

pub use error::{ErrorCode, ErrorResponse};
pub use operator::{
    CipherDecryptRequest, CipherDecryptResponse, CipherEncryptRequest, CipherEncryptResponse,
    RecoverRequest, RecoverResponse, RestoreRequest, RestoreResponse,
};
pub use policy::{
    PolicyDeleteRequest, PolicyGetRequest, PolicyListItem, PolicyListRequest, PolicyListResponse,
    PolicyPutRequest, PolicyPutResponse, PolicyView,
};
pub use secrets::{
    Empty, SecretDeleteRequest, SecretDestroyRequest, SecretGetRequest, SecretGetResponse,
    SecretListRequest, SecretListResponse, SecretMetadata, SecretMetadataRequest,
    SecretMetadataResponse, SecretPutRequest, SecretUndeleteRequest, SecretVersionInfo,
};
pub use shard::{ContributeRequest, ShardBytes, ShardRequest, ShardResponse};

/// Route paths and `?action=` values.
pub mod routes {
    /// Secrets: put (no action), `get`, `delete`, `undelete`, `list`,
    /// `destroy` (spike-rs extension).
    pub const SECRETS: &str = "/v1/store/secrets";
    /// Secret metadata: `get`.
    pub const SECRETS_METADATA: &str = "/v1/store/secrets/metadata";
    /// Policies: put (no action), `get`, `delete`, `list`.
    pub const POLICY: &str = "/v1/acl/policy";
    /// Operator recover (recover role).
    pub const OPERATOR_RECOVER: &str = "/v1/operator/recover";
    /// Operator restore (restore role).
    pub const OPERATOR_RESTORE: &str = "/v1/operator/restore";
    /// Encryption as a service.
    pub const CIPHER_ENCRYPT: &str = "/v1/cipher/encrypt";
    /// Decryption as a service.
    pub const CIPHER_DECRYPT: &str = "/v1/cipher/decrypt";
    /// Keeper: Nexus hands the Keeper its share.
    pub const KEEPER_CONTRIBUTE: &str = "/v1/store/contribute";
    /// Keeper: Nexus fetches the Keeper's share.
    pub const KEEPER_SHARD: &str = "/v1/store/shard";
    /// Liveness.
    pub const HEALTHZ: &str = "/healthz";
    /// Readiness: unsealed and the store reachable.
    pub const READYZ: &str = "/readyz";
    /// Prometheus metrics.
    pub const METRICS: &str = "/metrics";

    /// `?action=get`
    pub const ACTION_GET: &str = "get";
    /// `?action=delete`
    pub const ACTION_DELETE: &str = "delete";
    /// `?action=undelete`
    pub const ACTION_UNDELETE: &str = "undelete";
    /// `?action=list`
    pub const ACTION_LIST: &str = "list";
    /// `?action=destroy` (a spike-rs extension: upstream SPIKE has no
    /// destroy route; Vault's KV v2 does).
    pub const ACTION_DESTROY: &str = "destroy";
}

/// Largest request body accepted (SPEC §10).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
