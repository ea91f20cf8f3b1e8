//! spike-tls SVID and trust-bundle loading from untrusted bytes: what
//! `PemSource::load` (and the Pilot's `--cert/--key/--ca`) reads from files,
//! and what a peer's certificate DER becomes in `spiffe_id_of`.
//!
//! Input, byte 0 even (PEM): `CERT_PEM 0xFF KEY_PEM 0xFF BUNDLE_PEM` (0xFF
//! never occurs in PEM), loaded as `PemSource::load` does: the SVID from
//! chain and key, then the bundle for the SVID's trust domain. Byte 0 odd
//! (DER): a 2-byte big-endian length, that many bytes of leaf certificate
//! DER, then private key DER (PKCS#8, SEC1 or PKCS#1 by its shape).
//!
//! Asserts: no panic; an accepted SVID's SPIFFE ID round-trips
//! (`SpiffeId::parse` of its text, the leaf's one URI SAN,
//! `spiffe_id_of`), and so do its PEM (`to_pem` → `from_pem`: same ID,
//! chain and key); an accepted bundle round-trips through `to_pem` and a
//! `PemSource` built from both hands them back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use spike_core::SpiffeId;
use spike_tls::{IdentitySource, PemSource, Svid, TrustBundle, spiffe_id_of, uri_sans};

fn check_svid(svid: &Svid) {
    let id = svid.id();
    let reparsed = SpiffeId::parse(id.as_str()).expect("an SVID's ID re-parses");
    assert_eq!(&reparsed, id, "ID text does not round-trip");
    let leaf = svid.chain().first().expect("an SVID has a leaf");
    assert_eq!(
        spiffe_id_of(leaf).expect("leaf ID"),
        *id,
        "spiffe_id_of differs"
    );
    let sans = uri_sans(leaf).expect("leaf SANs");
    assert_eq!(sans.len(), 1, "an SVID leaf has one URI SAN");
    assert_eq!(
        SpiffeId::parse(&sans[0]).expect("the SAN parses"),
        *id,
        "URI SAN differs from the ID"
    );
    let (chain_pem, key_pem) = svid.to_pem();
    let again =
        Svid::from_pem(chain_pem.as_bytes(), key_pem.as_bytes()).expect("an SVID's own PEM loads");
    assert_eq!(again.id(), id, "ID changed through PEM");
    assert_eq!(again.chain(), svid.chain(), "chain changed through PEM");
    assert_eq!(again.to_pem().1, key_pem, "key changed through PEM");
}

fn check_bundle(bundle: &TrustBundle) {
    let again = TrustBundle::from_pem(bundle.trust_domain(), bundle.to_pem().as_bytes())
        .expect("a bundle's own PEM loads");
    assert_eq!(&again, bundle, "bundle changed through PEM");
}

/// `PemSource::load` of three files, from bytes.
fn pem(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == 0xFF);
    let (cert, key, bundle) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    // A bundle is also loaded on its own (a Pilot's --ca for Nexus's domain).
    if let Ok(b) = TrustBundle::from_pem("spike.ist", bundle) {
        check_bundle(&b);
    }
    let Ok(svid) = Svid::from_pem(cert, key) else {
        return;
    };
    check_svid(&svid);
    let td = svid.id().trust_domain().to_owned();
    let Ok(bundle) = TrustBundle::from_pem(&td, bundle) else {
        return;
    };
    check_bundle(&bundle);
    let id = svid.id().clone();
    let source = PemSource::new(svid, vec![bundle.clone()]);
    assert_eq!(source.svid().expect("svid").id(), &id);
    assert_eq!(source.bundle(&td), Some(bundle));
}

/// A peer's leaf as the TLS layer sees it (DER), and an SVID from DER.
fn der(data: &[u8]) {
    let [hi, lo, rest @ ..] = data else {
        return;
    };
    let n = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
    let (cert, key) = rest.split_at(n);
    let cert = CertificateDer::from(cert.to_vec());
    if let Ok(id) = spiffe_id_of(&cert) {
        assert_eq!(SpiffeId::parse(id.as_str()).expect("re-parses"), id);
    }
    let _ = uri_sans(&cert);
    let _ = TrustBundle::new("spike.ist", vec![cert.clone()]);
    if let Ok(key) = PrivateKeyDer::try_from(key.to_vec())
        && let Ok(svid) = Svid::new(vec![cert], key)
    {
        check_svid(&svid);
    }
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((mode, rest)) if mode % 2 == 0 => pem(rest),
        Some((_, rest)) => der(rest),
        None => {}
    }
    // Keep the PEM item parser itself exercised on the whole input.
    let _ = CertificateDer::pem_slice_iter(data).count();
});
