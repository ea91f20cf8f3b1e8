//! SPIFFE mutual TLS for spike-rs.
//!
//! Every spike-rs connection is mTLS with X.509-SVIDs: the peer is the
//! SPIFFE ID in the URI SAN of its verified leaf certificate. A process gets
//! its SVID and trust bundles from an [`IdentitySource`] — the SPIFFE
//! Workload API ([`WorkloadApiSource`]), PEM files ([`PemSource`]), or a
//! development CA ([`DevCa`]) — asked anew on every handshake, so rotation
//! needs no restart. [`server_config`] and [`client_config`] refuse, inside
//! the handshake, any peer from a trust domain without a bundle, expired,
//! without exactly one SPIFFE URI SAN, or not admitted by the
//! [`PeerPolicy`]. [`peer_id`] names the peer afterwards.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use spike_core::SpiffeId;
//! use spike_tls::{DevCa, PeerPolicy, PemSource, client_config, server_config};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let ca = DevCa::load_or_create(dir.path(), "spike.ist")?;
//! let id = SpiffeId::parse("spiffe://spike.ist/spike/nexus")?;
//! let svid = ca.mint(&id, &["localhost"], &[], Duration::from_secs(3600))?;
//! let source = Arc::new(PemSource::new(svid, vec![ca.bundle()]));
//! let peers = PeerPolicy::TrustDomains(vec!["spike.ist".into()]);
//! let _server = server_config(source.clone(), peers.clone())?;
//! let _client = client_config(source, peers)?;
//! # Ok(()) }
//! ```
//!
//! The crypto provider is aws-lc-rs, the only one in the dependency tree:
//! it gives rustls the post-quantum hybrid key exchange X25519MLKEM768,
//! preferred by default, so recorded traffic stays safe from a future
//! quantum adversary.

mod config;
mod dev_ca;
mod error;
mod identity;
mod source;
mod svid;
#[cfg(feature = "testing")]
pub mod testing;
mod verify;

pub use config::{client_config, peer_id, server_config};
pub use dev_ca::DevCa;
pub use error::TlsError;
pub use identity::{spiffe_id_of, uri_sans};
pub use source::{IdentitySource, PemSource, WorkloadApiSource};
pub use svid::{Svid, TrustBundle};
pub use verify::PeerPolicy;
