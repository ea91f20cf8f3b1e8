//! SPIFFE peer verification inside the TLS handshake.
//!
//! Both directions run the same steps on the peer's chain:
//!
//! 1. the leaf's SPIFFE ID (exactly one `spiffe://` URI SAN, else refused);
//! 2. the bundle of *that ID's* trust domain, asked from the
//!    [`IdentitySource`] on every handshake (unknown trust domain: refused);
//! 3. chain, signatures, validity period and extended key usage checked by
//!    webpki against that bundle's roots, with the peer's intermediates;
//! 4. the [`PeerPolicy`].
//!
//! The TLS server name is never used for identity: SPIFFE authenticates by
//! URI SAN, so a client may dial `127.0.0.1`.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, SignatureScheme,
};
use spike_core::SpiffeId;
use webpki::{EndEntityCert, KeyUsage};

use crate::error::TlsError;
use crate::identity::leaf_svid_id;
use crate::source::IdentitySource;

/// Which peers a TLS config accepts, checked in the handshake.
///
/// Whatever the policy, a peer is refused unless its leaf carries exactly
/// one SPIFFE URI SAN and its chain verifies, unexpired, against the bundle
/// the [`IdentitySource`] holds for that ID's trust domain.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerPolicy {
    /// Any ID in one of these trust domains (bare names, `spike.ist`).
    TrustDomains(Vec<String>),
    /// Only these IDs.
    Exact(Vec<SpiffeId>),
    /// Any ID in a trust domain the source holds a bundle for (this includes
    /// federated trust domains).
    Any,
}

impl PeerPolicy {
    /// Whether the policy admits an (already authenticated) peer `id`.
    pub fn allows(&self, id: &SpiffeId) -> bool {
        match self {
            PeerPolicy::TrustDomains(tds) => tds.iter().any(|td| td == id.trust_domain()),
            PeerPolicy::Exact(ids) => ids.contains(id),
            PeerPolicy::Any => true,
        }
    }
}

/// The checks shared by the client and server verifiers.
#[derive(Debug)]
pub(crate) struct SpiffeVerifier {
    source: Arc<dyn IdentitySource>,
    policy: PeerPolicy,
    provider: Arc<CryptoProvider>,
}

impl SpiffeVerifier {
    pub(crate) fn new(
        source: Arc<dyn IdentitySource>,
        policy: PeerPolicy,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        Self {
            source,
            policy,
            provider,
        }
    }

    /// Runs steps 1–4 of the module doc; returns the peer's ID.
    pub(crate) fn verify_peer(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: KeyUsage,
    ) -> Result<SpiffeId, Error> {
        let id = leaf_svid_id(end_entity).map_err(refuse)?;
        let bundle = self.source.bundle(id.trust_domain()).ok_or_else(|| {
            refuse(TlsError::Bundle(format!(
                "no trust bundle for trust domain {} (peer {id})",
                id.trust_domain()
            )))
        })?;
        let cert = EndEntityCert::try_from(end_entity).map_err(pki_error)?;
        cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            bundle.anchors(),
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(pki_error)?;
        if !self.policy.allows(&id) {
            return Err(refuse(TlsError::PeerNotAllowed(id.to_string())));
        }
        Ok(id)
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A refusal carrying our own message (shown in logs of the refusing side).
fn refuse(e: TlsError) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// webpki's errors as rustls reports them (the subset that matters here).
fn pki_error(e: webpki::Error) -> Error {
    use webpki::Error as W;
    let ce = match e {
        W::BadDer | W::BadDerTime | W::TrailingData(_) => CertificateError::BadEncoding,
        W::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }
        }
        W::CertExpired { time, not_after } => CertificateError::ExpiredContext { time, not_after },
        W::InvalidCertValidity => CertificateError::Expired,
        W::UnknownIssuer => CertificateError::UnknownIssuer,
        W::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        W::CertRevoked => CertificateError::Revoked,
        W::RequiredEkuNotFoundContext(_) => CertificateError::InvalidPurpose,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    Error::InvalidCertificate(ce)
}

/// Server side: requires and verifies a client SVID.
#[derive(Debug)]
pub(crate) struct ClientSvidVerifier(pub(crate) SpiffeVerifier);

impl ClientCertVerifier for ClientSvidVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // SPIFFE clients pick their SVID themselves; no CA hints.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.0
            .verify_peer(end_entity, intermediates, now, KeyUsage::client_auth())?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}

/// Client side: verifies the server's SVID; ignores the server name.
#[derive(Debug)]
pub(crate) struct ServerSvidVerifier(pub(crate) SpiffeVerifier);

impl ServerCertVerifier for ServerSvidVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.0
            .verify_peer(end_entity, intermediates, now, KeyUsage::server_auth())?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}

/// Presents the source's current SVID, asked anew on every handshake.
#[derive(Debug)]
pub(crate) struct SvidResolver(pub(crate) Arc<dyn IdentitySource>);

impl SvidResolver {
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        // No SVID (e.g. the Workload API withdrew it): present none, so the
        // handshake fails closed.
        self.0.svid().ok().map(|svid| svid.certified_key())
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        let id = SpiffeId::parse("spiffe://spike.ist/spike/nexus").unwrap();
        let other = SpiffeId::parse("spiffe://spike.ist/spike/keeper").unwrap();
        assert!(PeerPolicy::Any.allows(&id));
        assert!(PeerPolicy::TrustDomains(vec!["spike.ist".into()]).allows(&id));
        assert!(!PeerPolicy::TrustDomains(vec!["other.org".into()]).allows(&id));
        assert!(PeerPolicy::Exact(vec![id.clone()]).allows(&id));
        assert!(!PeerPolicy::Exact(vec![id]).allows(&other));
    }
}
