//! rustls configurations for SPIFFE mTLS, and the peer's ID.

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, ServerConfig};
use spike_core::SpiffeId;

use crate::error::TlsError;
use crate::identity::spiffe_id_of;
use crate::source::IdentitySource;
use crate::verify::{
    ClientSvidVerifier, PeerPolicy, ServerSvidVerifier, SpiffeVerifier, SvidResolver,
};

/// ALPN protocols offered by both configs, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The one crypto provider: aws-lc-rs, with X25519MLKEM768 preferred.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A server config that presents the source's current SVID and requires a
/// client SVID admitted by `peers`.
///
/// The SVID and the bundles are asked from `source` on every handshake, so
/// a rotated SVID or bundle is used at once, with no restart. Session
/// resumption is off: every connection is a full handshake, so an expired
/// or no longer trusted peer cannot come back through a resumed session.
/// ALPN offers `h2` and `http/1.1`.
///
/// Fails when the source has no SVID now.
pub fn server_config(
    source: Arc<dyn IdentitySource>,
    peers: PeerPolicy,
) -> Result<Arc<ServerConfig>, TlsError> {
    source.svid()?;
    let provider = provider();
    let verifier = ClientSvidVerifier(SpiffeVerifier::new(
        Arc::clone(&source),
        peers,
        Arc::clone(&provider),
    ));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SvidResolver(source)));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A client config that presents the source's current SVID and accepts a
/// server whose SVID is admitted by `peers`.
///
/// The server's chain and validity are verified against the bundle of the
/// server ID's trust domain; the TLS server name is not used for identity
/// (connecting to `127.0.0.1` works). Resumption is off, as for
/// [`server_config`]. ALPN offers `h2` and `http/1.1`: a client that speaks
/// only HTTP/1.1 must clear `alpn_protocols` (or set it to `http/1.1`) on
/// a clone.
///
/// Fails when the source has no SVID now.
pub fn client_config(
    source: Arc<dyn IdentitySource>,
    peers: PeerPolicy,
) -> Result<Arc<ClientConfig>, TlsError> {
    source.svid()?;
    let provider = provider();
    let verifier = ServerSvidVerifier(SpiffeVerifier::new(
        Arc::clone(&source),
        peers,
        Arc::clone(&provider),
    ));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(SvidResolver(source)));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// The SPIFFE ID of a connected peer, from the leaf of its verified chain
/// (`peer_certificates()` of a rustls connection).
///
/// After a handshake with [`server_config`] or [`client_config`] this is
/// always `Some`: the verifiers refuse every other peer.
pub fn peer_id(certs: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    spiffe_id_of(certs?.first()?).ok()
}
