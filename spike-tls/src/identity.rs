//! SPIFFE IDs in certificates.

use rustls::pki_types::CertificateDer;
use spike_core::SpiffeId;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::TlsError;

/// Every URI SAN of `cert`.
pub fn uri_sans(cert: &CertificateDer<'_>) -> Result<Vec<String>, TlsError> {
    uris_of(&parse(cert)?)
}

fn parse<'a>(cert: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, TlsError> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    Ok(parsed)
}

fn uris_of(parsed: &X509Certificate<'_>) -> Result<Vec<String>, TlsError> {
    let mut out = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                out.push((*uri).to_owned());
            }
        }
    }
    Ok(out)
}

/// The SPIFFE ID of an X.509-SVID: its one and only URI SAN, which must
/// be a valid `spiffe://` ID (SPIFFE X.509-SVID spec §2).
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Result<SpiffeId, TlsError> {
    id_of(&parse(cert)?)
}

fn id_of(parsed: &X509Certificate<'_>) -> Result<SpiffeId, TlsError> {
    let uris = uris_of(parsed)?;
    match uris.as_slice() {
        [one] => SpiffeId::parse(one).map_err(|e| TlsError::NotAnSvid(e.to_string())),
        [] => Err(TlsError::NotAnSvid("no URI SAN".to_owned())),
        _ => Err(TlsError::NotAnSvid(format!(
            "{} URI SANs, exactly one allowed",
            uris.len()
        ))),
    }
}

/// The SPIFFE ID of an X.509-SVID *leaf*, after the leaf constraints of the
/// X.509-SVID spec §4.3 (as go-spiffe checks them): not a CA, key usage
/// `digitalSignature`, neither `keyCertSign` nor `cRLSign`.
pub(crate) fn leaf_svid_id(cert: &CertificateDer<'_>) -> Result<SpiffeId, TlsError> {
    let parsed = parse(cert)?;
    let id = id_of(&parsed)?;
    if parsed.is_ca() {
        return Err(TlsError::NotAnSvid("leaf has the CA flag set".to_owned()));
    }
    let usage = parsed
        .key_usage()
        .map_err(|e| TlsError::Certificate(e.to_string()))?
        .ok_or_else(|| TlsError::NotAnSvid("leaf has no key usage extension".to_owned()))?;
    if !usage.value.digital_signature() {
        return Err(TlsError::NotAnSvid(
            "leaf key usage lacks digitalSignature".to_owned(),
        ));
    }
    if usage.value.key_cert_sign() || usage.value.crl_sign() {
        return Err(TlsError::NotAnSvid(
            "leaf key usage has keyCertSign or cRLSign".to_owned(),
        ));
    }
    Ok(id)
}
