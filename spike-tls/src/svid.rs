//! X.509-SVIDs with their keys, and trust bundles.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::aws_lc_rs::sign::any_supported_type;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor};
use rustls::sign::CertifiedKey;
use spike_core::SpiffeId;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::{Zeroize, Zeroizing};

use crate::error::TlsError;
use crate::identity::leaf_svid_id;

/// An X.509-SVID with its private key.
///
/// Built only from a chain whose leaf is an SVID (exactly one `spiffe://`
/// URI SAN) and a key that belongs to that leaf. `Debug` prints the ID and
/// `[key redacted]`; the key's DER bytes are zeroized on drop and leave only
/// through [`Svid::to_pem`] and the rustls signing key.
pub struct Svid {
    id: SpiffeId,
    not_after: SystemTime,
    certified: Arc<CertifiedKey>,
    key: SecretKeyDer,
}

/// A private key's DER, zeroized on drop.
struct SecretKeyDer(PrivateKeyDer<'static>);

impl Drop for SecretKeyDer {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Svid {
    /// An SVID from its chain (leaf first, then any intermediates; no root)
    /// and the leaf's private key.
    ///
    /// Fails when the chain is empty, the leaf is not an X.509-SVID, the key
    /// does not parse, or it does not match the leaf's public key.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Svid, TlsError> {
        let key = SecretKeyDer(key);
        let leaf = chain
            .first()
            .ok_or_else(|| TlsError::Certificate("empty certificate chain".to_owned()))?;
        let id = leaf_svid_id(leaf)?;
        let not_after = not_after_of(leaf)?;
        // Loaded by reference: no unzeroized copy of the DER is made.
        let signing_key = any_supported_type(&key.0)
            .map_err(|_| TlsError::PrivateKey("does not parse or is of an unsupported kind"))?;
        let certified = CertifiedKey::new(chain, signing_key);
        // With aws-lc-rs every supported key exposes its public key, so an
        // "unknown" answer is refused too.
        certified
            .keys_match()
            .map_err(|_| TlsError::PrivateKey("does not match the leaf certificate"))?;
        Ok(Svid {
            id,
            not_after,
            certified: Arc::new(certified),
            key,
        })
    }

    /// An SVID from PEM: `cert_pem` holds the chain (leaf first), `key_pem`
    /// one private key (PKCS#8, SEC1 or PKCS#1).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Svid, TlsError> {
        let chain = certs_from_pem(cert_pem)?;
        // The PEM parser's messages may quote input lines: report only the kind.
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
            pem::Error::NoItemsFound => TlsError::PrivateKey("no private key found in PEM"),
            _ => TlsError::PrivateKey("PEM does not parse"),
        })?;
        Self::new(chain, key)
    }

    /// The SPIFFE ID in the leaf's URI SAN.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    /// When the leaf expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The chain and signing key as rustls presents them.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.certified)
    }

    /// The chain as PEM, and the private key as PEM in a zeroizing string.
    pub fn to_pem(&self) -> (String, Zeroizing<String>) {
        let chain = certs_to_pem(self.chain());
        let (label, der) = match &self.key.0 {
            PrivateKeyDer::Pkcs8(k) => ("PRIVATE KEY", k.secret_pkcs8_der()),
            PrivateKeyDer::Sec1(k) => ("EC PRIVATE KEY", k.secret_sec1_der()),
            PrivateKeyDer::Pkcs1(k) => ("RSA PRIVATE KEY", k.secret_pkcs1_der()),
            // `PrivateKeyDer` is non-exhaustive; every kind rustls loads is above.
            _ => ("PRIVATE KEY", self.key.0.secret_der()),
        };
        let mut key = Zeroizing::new(String::with_capacity(pem_len(label, der.len())));
        pem_encode(label, der, &mut key);
        (chain, key)
    }
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid")
            .field("id", &self.id.as_str())
            .field("chain_len", &self.certified.cert.len())
            .field("not_after", &self.not_after)
            .field("key", &format_args!("[key redacted]"))
            .finish()
    }
}

/// The CA certificates (trust anchors) of one trust domain.
///
/// Cheap to clone; the anchors are parsed once, when the bundle is built.
#[derive(Clone)]
pub struct TrustBundle(Arc<BundleInner>);

struct BundleInner {
    trust_domain: String,
    roots: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
}

impl TrustBundle {
    /// A bundle of `roots` for `trust_domain` (a bare name like `spike.ist`).
    ///
    /// Fails on an invalid trust domain name, no roots, or a root that
    /// cannot serve as a trust anchor.
    pub fn new(trust_domain: &str, roots: Vec<CertificateDer<'static>>) -> Result<Self, TlsError> {
        check_trust_domain(trust_domain)?;
        if roots.is_empty() {
            return Err(TlsError::Bundle(format!(
                "no CA certificate for trust domain {trust_domain}"
            )));
        }
        let anchors = roots
            .iter()
            .map(|root| {
                webpki::anchor_from_trusted_cert(root)
                    .map(|a| a.to_owned())
                    .map_err(|e| TlsError::Bundle(format!("not a usable CA certificate: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(Arc::new(BundleInner {
            trust_domain: trust_domain.to_owned(),
            roots,
            anchors,
        })))
    }

    /// A bundle from the PEM certificates in `pem`.
    pub fn from_pem(trust_domain: &str, pem: &[u8]) -> Result<Self, TlsError> {
        Self::new(trust_domain, certs_from_pem(pem)?)
    }

    /// The trust domain name.
    pub fn trust_domain(&self) -> &str {
        &self.0.trust_domain
    }

    /// The CA certificates.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.0.roots
    }

    /// The CA certificates as PEM.
    pub fn to_pem(&self) -> String {
        certs_to_pem(self.roots())
    }

    pub(crate) fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.0.anchors
    }
}

impl PartialEq for TrustBundle {
    fn eq(&self, other: &Self) -> bool {
        self.0.trust_domain == other.0.trust_domain && self.0.roots == other.0.roots
    }
}

impl Eq for TrustBundle {}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle")
            .field("trust_domain", &self.0.trust_domain)
            .field("roots", &self.0.roots.len())
            .finish()
    }
}

/// Checks the syntax of a bare trust domain name.
pub(crate) fn check_trust_domain(trust_domain: &str) -> Result<(), TlsError> {
    let id = SpiffeId::parse(&format!("spiffe://{trust_domain}"))
        .map_err(|e| TlsError::Bundle(format!("invalid trust domain {trust_domain:?}: {e}")))?;
    if id.trust_domain() != trust_domain {
        return Err(TlsError::Bundle(format!(
            "invalid trust domain {trust_domain:?}"
        )));
    }
    Ok(())
}

/// When `cert` expires.
pub(crate) fn not_after_of(cert: &CertificateDer<'_>) -> Result<SystemTime, TlsError> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let ts = parsed.validity().not_after.timestamp();
    Ok(match u64::try_from(ts) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH - Duration::from_secs(ts.unsigned_abs()),
    })
}

fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(format!("certificates: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("no CERTIFICATE found".to_owned()));
    }
    Ok(certs)
}

fn certs_to_pem(certs: &[CertificateDer<'_>]) -> String {
    let len = certs.iter().map(|c| pem_len("CERTIFICATE", c.len())).sum();
    let mut out = String::with_capacity(len);
    for cert in certs {
        pem_encode("CERTIFICATE", cert, &mut out);
    }
    out
}

/// The exact length of [`pem_encode`]'s output, so that a key's PEM is
/// written into a buffer that never reallocates (no stray copies).
fn pem_len(label: &str, der_len: usize) -> usize {
    let b64 = der_len.div_ceil(3) * 4;
    let lines = b64.div_ceil(64);
    // "-----BEGIN " + label + "-----\n", body with newlines, "-----END " + label + "-----\n"
    (11 + label.len() + 6) + b64 + lines + (9 + label.len() + 6)
}

/// Appends `der` as a PEM block (RFC 7468, 64-column base64).
fn pem_encode(label: &str, der: &[u8], out: &mut String) {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    let mut col = 0;
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            let c = if i <= chunk.len() {
                char::from(B64[((n >> (18 - 6 * i)) & 63) as usize])
            } else {
                '='
            };
            out.push(c);
        }
        col += 4;
        if col == 64 {
            out.push('\n');
            col = 0;
        }
    }
    if col != 0 {
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_encoding_matches_length_and_decodes() {
        for len in [0usize, 1, 2, 3, 47, 48, 49, 100, 1000] {
            let der: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut out = String::new();
            pem_encode("CERTIFICATE", &der, &mut out);
            assert_eq!(out.len(), pem_len("CERTIFICATE", len), "len {len}");
            if len > 0 {
                let back = CertificateDer::from_pem_slice(out.as_bytes()).unwrap();
                assert_eq!(back.as_ref(), der.as_slice());
            }
        }
    }

    #[test]
    fn bundle_rejects_bad_input() {
        assert!(TrustBundle::new("spike.ist", vec![]).is_err());
        assert!(TrustBundle::new("Bad TD", vec![CertificateDer::from(vec![0x30])]).is_err());
        assert!(TrustBundle::new("spike.ist/x", vec![CertificateDer::from(vec![0x30])]).is_err());
        assert!(TrustBundle::new("spike.ist", vec![CertificateDer::from(vec![1, 2, 3])]).is_err());
        assert!(TrustBundle::from_pem("spike.ist", b"nothing here").is_err());
    }

    #[test]
    fn svid_from_garbage_fails_without_echoing_key() {
        let err = Svid::from_pem(
            b"",
            b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(!err.to_string().contains("c2VjcmV0"));
    }
}
