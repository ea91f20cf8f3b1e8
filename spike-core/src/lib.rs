//! spike-core: an embeddable, SPIFFE-native secrets store.
//!
//! [`Nexus`] is the whole store behind one handle: versioned secrets with
//! Vault KV v2 semantics, path policies keyed on SPIFFE IDs, the root-key
//! lifecycle (init, Shamir shares, unseal, restore, recover, rotate) and an
//! audit trail. It needs no server: an application opens a backing store,
//! builds a `Nexus` and calls it as some [`SpiffeId`].
//!
//! - **Memory-first.** Reads are served from memory. A write returns only
//!   once the backing store has durably committed it; concurrent writes
//!   share commits (group commit, on a thread of its own, `spike-writer`,
//!   which runs under Linux's `SCHED_BATCH` ([`sched`]) so that its
//!   wake-ups do not preempt the application's threads). Unseal rebuilds
//!   memory from the store.
//! - **The backing store is untrusted.** It sees only keyed hashes of paths
//!   and names, and AES-256-GCM-SIV records bound to their storage key,
//!   kind, key epoch and revision. A manifest digest over all records
//!   catches records that were removed, added or rolled back one by one.
//!   See `docs/format.md` for the bytes.
//! - **Default deny.** The built-in roles of SPEC §2 and the policies of
//!   SPEC §3 (regexes anchored at both ends) decide every call.
//!
//! ```
//! use std::sync::Arc;
//! use spike_core::{Caller, Nexus, SecretData, SpiffeId, VersionRead, WriteOptions};
//! use spike_storage::RedbStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let store = Arc::new(RedbStore::open(dir.path().join("spike.redb"))?);
//! let nexus = Nexus::builder(store).open().await?;
//! let shares = nexus.init().await?; // hand these to Keepers or operators
//!
//! let admin = Caller::new(SpiffeId::parse("spiffe://spike.ist/spike/pilot/role/superuser")?);
//! let data = SecretData::from_pairs([("password", "hunter2")])?;
//! nexus.put_secret(&admin, "db/creds", data, WriteOptions::default()).await?;
//!
//! let VersionRead::Live { data, .. } = nexus.get_secret(&admin, "db/creds", 0)? else {
//!     unreachable!()
//! };
//! assert_eq!(data.to_object()["password"], "hunter2");
//!
//! // A workload with no policy is denied.
//! let app = Caller::new(SpiffeId::parse("spiffe://spike.ist/app")?);
//! assert!(nexus.get_secret(&app, "db/creds", 0).is_err());
//!
//! // Sealed again, the store needs two of the three shares.
//! nexus.seal().await?;
//! nexus.unseal(&shares[1..]).await?;
//! assert!(nexus.get_secret(&admin, "db/creds", 0).is_ok());
//! # Ok(())
//! # }
//! ```

mod acl;
mod audit;
mod cipher;
mod error;
mod identity;
mod keyring;
mod kv;
mod lifecycle;
mod nexus;
mod path;
mod policy;
pub mod record;
mod rotation;
pub mod sched;
mod secrets;
mod time;
mod writer;

pub use acl::PolicyFilter;
pub use audit::{
    AuditEvent, AuditOptions, AuditSink, Caller, Decision, Delivery, JsonLinesSink, MemorySink,
    track_audit,
};
pub use cipher::CIPHERTEXT_VERSION;
pub use error::{Error, ErrorCode, InputError, Result};
pub use identity::{MAX_SPIFFE_ID_LEN, Role, SpiffeId, TrustRoots};
pub use kv::WriteOptions;
pub use lifecycle::RestoreProgress;
pub use nexus::{Nexus, NexusBuilder, Status, code_name};
pub use path::{MAX_PATH_LEN, SecretPath};
pub use policy::{
    ACL_PATH, CIPHER_PATH, MAX_PATTERN_LEN, MAX_POLICY_NAME_LEN, Permission, Permissions, Policy,
    PolicySpec, SECRET_LIST_PATH, compile_pattern,
};
pub use rotation::{RotationProgress, RotationReport};
pub use secrets::{
    DEFAULT_MAX_VERSIONS, KvConfig, MAX_CUSTOM_METADATA_KEY_LEN, MAX_CUSTOM_METADATA_KEYS,
    MAX_CUSTOM_METADATA_VALUE_LEN, MAX_DATA_KEY_LEN, MAX_DATA_LEN, Secret, SecretData,
    SecretSettings, SettingsUpdate, Version, VersionRead,
};
pub use spike_crypto::Share;
pub use time::Timestamp;
pub use writer::CommitStats;
