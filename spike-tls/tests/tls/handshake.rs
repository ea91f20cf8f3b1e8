//! Successful handshakes: both sides name each other.

use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject as _;
use spike_tls::{PeerPolicy, PemSource, client_config, peer_id, server_config};

use crate::common::*;

fn td_policy() -> PeerPolicy {
    PeerPolicy::TrustDomains(vec![TD.into()])
}

#[tokio::test]
async fn dev_ca_svids_handshake_and_name_each_other() {
    let (_dir, ca) = dev_ca(TD);
    let server = server_config(source(&ca, &nexus_id()), td_policy()).unwrap();
    let client = client_config(
        source(&ca, &pilot_id()),
        PeerPolicy::Exact(vec![nexus_id()]),
    )
    .unwrap();
    let (s, c) = connect_ok(server, client).await;
    assert_eq!(peer_id(s.get_ref().1.peer_certificates()), Some(pilot_id()));
    assert_eq!(peer_id(c.get_ref().1.peer_certificates()), Some(nexus_id()));
    // ALPN: h2 preferred.
    assert_eq!(c.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn any_policy_accepts_federated_trust_domain() {
    let (_d1, ours) = dev_ca(TD);
    let (_d2, theirs) = dev_ca("partner.org");
    let federated = Arc::new(PemSource::new(
        ours.mint(&nexus_id(), &[], &[], HOUR).unwrap(),
        vec![ours.bundle(), theirs.bundle()],
    ));
    let server = server_config(federated, PeerPolicy::Any).unwrap();
    let partner = id("spiffe://partner.org/app");
    let client = client_config(source(&theirs, &partner), PeerPolicy::Any);
    // The partner's source holds no bundle for spike.ist: it refuses us.
    let refused = handshake(server.clone(), client.unwrap()).await;
    assert!(refused.client.is_err());

    let partner_source = Arc::new(PemSource::new(
        theirs.mint(&partner, &[], &[], HOUR).unwrap(),
        vec![theirs.bundle(), ours.bundle()],
    ));
    let client = client_config(partner_source, PeerPolicy::Any).unwrap();
    let (s, _c) = connect_ok(server, client).await;
    assert_eq!(peer_id(s.get_ref().1.peer_certificates()), Some(partner));
}

/// DNS and IP SANs beside the one URI SAN: SPIFFE peers accept the SVID,
/// and so does a plain (host-name checking) TLS client dialing 127.0.0.1.
#[tokio::test]
async fn dns_and_ip_sans_beside_uri_san_are_accepted() {
    let (_dir, ca) = dev_ca(TD);
    let svid = ca
        .mint(
            &nexus_id(),
            &["localhost", "nexus.spike.internal"],
            &["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            HOUR,
        )
        .unwrap();
    assert_eq!(svid.id(), &nexus_id());
    let server_source = Arc::new(PemSource::new(svid, vec![ca.bundle()]));
    let server = server_config(server_source, td_policy()).unwrap();
    let client = client_config(source(&ca, &pilot_id()), td_policy()).unwrap();
    connect_ok(server.clone(), client).await;

    // A plain rustls client with webpki's host-name check.
    let pilot = ca.mint(&pilot_id(), &[], &[], HOUR).unwrap();
    let root = ca.bundle().roots()[0].clone();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pilot.to_pem().1.as_bytes());
    let plain = raw_client(&root, pilot.chain().to_vec(), key.unwrap());
    connect_ok(server, plain).await;
}

#[tokio::test]
async fn svid_not_after_follows_validity() {
    let (_dir, ca) = dev_ca(TD);
    let svid = ca.mint(&nexus_id(), &[], &[], HOUR).unwrap();
    let left = svid.not_after().duration_since(SystemTime::now()).unwrap();
    assert!(left <= HOUR && left > HOUR - std::time::Duration::from_secs(60));
}
