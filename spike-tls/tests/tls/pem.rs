//! PEM round trips and redaction.

use spike_tls::{Svid, TrustBundle};

use crate::common::*;

#[test]
fn svid_pem_roundtrip() {
    let (_dir, ca) = dev_ca(TD);
    let svid = ca.mint(&nexus_id(), &["localhost"], &[], HOUR).unwrap();
    let (chain, key) = svid.to_pem();
    assert!(chain.starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let back = Svid::from_pem(chain.as_bytes(), key.as_bytes()).unwrap();
    assert_eq!(back.id(), svid.id());
    assert_eq!(back.chain(), svid.chain());
    assert_eq!(back.not_after(), svid.not_after());
    assert_eq!(*back.to_pem().1, *key);

    // A key of another SVID does not fit this chain.
    let other = ca.mint(&nexus_id(), &[], &[], HOUR).unwrap();
    assert!(Svid::from_pem(chain.as_bytes(), other.to_pem().1.as_bytes()).is_err());
}

#[test]
fn bundle_pem_roundtrip() {
    let (_d1, a) = dev_ca(TD);
    let (_d2, b) = dev_ca(TD);
    let both = TrustBundle::new(TD, [a.bundle().roots(), b.bundle().roots()].concat()).unwrap();
    let back = TrustBundle::from_pem(TD, both.to_pem().as_bytes()).unwrap();
    assert_eq!(back, both);
    assert_eq!(back.roots().len(), 2);
    assert_eq!(back.trust_domain(), TD);
}

#[test]
fn debug_has_no_key_material() {
    let (_dir, ca) = dev_ca(TD);
    let svid = ca.mint(&nexus_id(), &[], &[], HOUR).unwrap();
    let key_pem = svid.to_pem().1;
    let body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for shown in [format!("{svid:?}"), format!("{svid:#?}"), format!("{ca:?}")] {
        assert!(!shown.contains(&body[40..72]), "{shown}");
        assert!(shown.contains("[key redacted]"), "{shown}");
    }
    assert!(format!("{svid:?}").contains("spiffe://spike.ist/spike/nexus"));
}
