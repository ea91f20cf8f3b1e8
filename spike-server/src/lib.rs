//! spike-server: the Nexus and Keeper servers of spike-rs.
//!
//! Servers stay thin: [`nexus_api::router`] and [`keeper_api::router`]
//! build an [`App`], axum routes over their state inside the middleware
//! stack both share, a tower service that tests call without a socket;
//! [`serve::serve`] runs an [`App`] behind SPIFFE mTLS, putting the
//! peer's SPIFFE ID into every request as [`PeerIdentity`]; [`shards`]
//! moves root-key shares between Nexus and its Keepers. The Nexus router
//! also serves the Vault KV v2-compatible API (SPEC §7.2) next to SPIKE v1.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn spike_storage::BackingStore>) -> Result<(), Box<dyn std::error::Error>> {
//! use spike_server::nexus_api::{self, NexusState};
//! let nexus = spike_core::Nexus::builder(store).open().await?;
//! let app = nexus_api::router(NexusState::new(nexus));
//! // serve::serve(listener, tls_config, app, shutdown).await?;
//! # let _ = app; Ok(()) }
//! ```

mod error;
pub mod hardening;
mod http;
pub mod keeper_api;
mod metrics;
pub mod nexus_api;
pub mod serve;
pub mod shards;
mod vault_api;

pub use error::ApiError;
pub use http::{App, PeerAddr, PeerIdentity, REQUEST_TIMEOUT};
pub use keeper_api::{KeeperState, LockedShard};
pub use nexus_api::NexusState;
pub use shards::{KeeperClient, ShardError};
