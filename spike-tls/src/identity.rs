//! SPIFFE IDs in certificates.

use rustls::pki_types::CertificateDer;
use spike_core::SpiffeId;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::TlsError;

/// Every URI SAN of `cert`.
pub fn uri_sans(cert: &CertificateDer<'_>) -> Result<Vec<String>, TlsError> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
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
    let uris = uri_sans(cert)?;
    match uris.as_slice() {
        [one] => SpiffeId::parse(one).map_err(|e| TlsError::NotAnSvid(e.to_string())),
        [] => Err(TlsError::NotAnSvid("no URI SAN".to_owned())),
        _ => Err(TlsError::NotAnSvid(format!(
            "{} URI SANs, exactly one allowed",
            uris.len()
        ))),
    }
}
