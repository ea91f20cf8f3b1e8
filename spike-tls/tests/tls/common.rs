//! Shared helpers: handshakes over loopback, a raw rcgen CA for malformed
//! certificates.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use spike_core::SpiffeId;
use spike_tls::{DevCa, PemSource, TrustBundle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

pub const TD: &str = "spike.ist";
pub const HOUR: Duration = Duration::from_secs(3600);

pub fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

pub fn nexus_id() -> SpiffeId {
    id("spiffe://spike.ist/spike/nexus")
}

pub fn pilot_id() -> SpiffeId {
    id("spiffe://spike.ist/spike/pilot/role/superuser")
}

pub fn dev_ca(td: &str) -> (tempfile::TempDir, DevCa) {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::load_or_create(dir.path(), td).unwrap();
    (dir, ca)
}

/// A source holding `ca`'s SVID for `who` and `ca`'s bundle.
pub fn source(ca: &DevCa, who: &SpiffeId) -> Arc<PemSource> {
    let svid = ca
        .mint(who, &["localhost"], &["127.0.0.1".parse().unwrap()], HOUR)
        .unwrap();
    Arc::new(PemSource::new(svid, vec![ca.bundle()]))
}

pub struct Outcome {
    pub server: io::Result<server::TlsStream<TcpStream>>,
    pub client: io::Result<client::TlsStream<TcpStream>>,
}

/// One handshake over loopback TCP, both sides at once.
pub async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        TlsAcceptor::from(server).accept(tcp).await
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let client = tokio::time::timeout(Duration::from_secs(5), async {
        TlsConnector::from(client).connect(name, tcp).await
    })
    .await
    .expect("client handshake timed out");
    let server = tokio::time::timeout(Duration::from_secs(5), accept)
        .await
        .expect("server handshake timed out")
        .unwrap();
    Outcome { server, client }
}

/// A handshake that must succeed; sends a line each way.
pub async fn connect_ok(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> (server::TlsStream<TcpStream>, client::TlsStream<TcpStream>) {
    let Outcome { server, client } = handshake(server, client).await;
    let (mut s, mut c) = (server.expect("server side"), client.expect("client side"));
    c.write_all(b"ping").await.unwrap();
    c.flush().await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    s.write_all(b"pong").await.unwrap();
    s.flush().await.unwrap();
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    (s, c)
}

/// Asserts the server refused the client in the handshake, and the client
/// cannot exchange data either.
pub async fn assert_client_refused(outcome: Outcome, why: &str, expect: &str) {
    let err = match outcome.server {
        Ok(_) => panic!("server accepted a client with {why}"),
        Err(e) => e,
    };
    // With TLS 1.3 the client's handshake completes before the server has
    // judged its certificate; it then reads the alert.
    if let Ok(mut c) = outcome.client {
        let mut buf = [0u8; 1];
        assert!(
            c.read(&mut buf).await.map(|n| n == 0).unwrap_or(true),
            "client read data after refusal ({why})"
        );
    }
    let msg = err.to_string();
    assert!(expect.split('|').any(|e| msg.contains(e)), "{why}: {msg}");
}

/// A CA made with rcgen directly, to mint certificates `DevCa` refuses to.
pub struct RawCa {
    pub cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl RawCa {
    pub fn new(td: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("raw CA {td}"));
        params.subject_alt_names = vec![SanType::URI(format!("spiffe://{td}").try_into().unwrap())];
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn bundle(&self, td: &str) -> TrustBundle {
        TrustBundle::new(td, vec![self.cert.clone()]).unwrap()
    }

    /// A leaf with exactly these URI SANs and validity.
    pub fn leaf(
        &self,
        uris: &[&str],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        self.leaf_with(uris, not_before, not_after, |_| {})
    }

    /// As [`RawCa::leaf`], with `tweak` applied to the parameters last.
    pub fn leaf_with(
        &self,
        uris: &[&str],
        not_before: SystemTime,
        not_after: SystemTime,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "test");
        params.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI((*u).try_into().unwrap()))
            .collect();
        if uris.is_empty() {
            params.subject_alt_names = vec![SanType::DnsName("localhost".try_into().unwrap())];
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        tweak(&mut params);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }
}

/// A plain rustls client (no SPIFFE logic) presenting `chain`/`key` and
/// verifying the server by its IP SAN against `root`.
pub fn raw_client(
    root: &CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap(),
    )
}
