//! SPIFFE mutual TLS for spike-rs.
//!
//! Every spike-rs connection is mTLS with X.509-SVIDs: the peer is the
//! SPIFFE ID in the URI SAN of its verified leaf certificate.
//!
//! The crypto provider is aws-lc-rs, the only one in the dependency tree:
//! it gives rustls the post-quantum hybrid key exchange X25519MLKEM768,
//! preferred by default, so recorded traffic stays safe from a future
//! quantum adversary.

mod error;
mod identity;

pub use error::TlsError;
pub use identity::{spiffe_id_of, uri_sans};
