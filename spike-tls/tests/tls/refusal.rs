//! Peers refused at the handshake (SPEC §2): another trust domain, an
//! unknown CA, expired, no or two URI SANs, a server ID outside the policy.

use std::sync::Arc;
use std::time::SystemTime;

use spike_tls::{PeerPolicy, PemSource, client_config, server_config};

use crate::common::*;

fn td_policy() -> PeerPolicy {
    PeerPolicy::TrustDomains(vec![TD.into()])
}

/// A server whose clients must chain to `client_ca` (trust domain TD); it
/// presents a DevCa SVID with an IP SAN so plain clients can check it.
fn server_trusting(
    raw: &RawCa,
) -> (
    tempfile::TempDir,
    spike_tls::DevCa,
    Arc<rustls::ServerConfig>,
) {
    let (dir, ca) = dev_ca(TD);
    let svid = ca
        .mint(&nexus_id(), &[], &["127.0.0.1".parse().unwrap()], HOUR)
        .unwrap();
    let source = Arc::new(PemSource::new(svid, vec![raw.bundle(TD)]));
    let config = server_config(source, td_policy()).unwrap();
    (dir, ca, config)
}

fn root(ca: &spike_tls::DevCa) -> rustls::pki_types::CertificateDer<'static> {
    ca.bundle().roots()[0].clone()
}

#[tokio::test]
async fn control_well_formed_raw_client_is_accepted() {
    let raw = RawCa::new(TD);
    let (_d, ca, server) = server_trusting(&raw);
    let now = SystemTime::now();
    let (chain, key) = raw.leaf(&["spiffe://spike.ist/app"], now - HOUR, now + HOUR);
    connect_ok(server, raw_client(&root(&ca), chain, key)).await;
}

#[tokio::test]
async fn client_from_another_trust_domain() {
    let (_d1, ours) = dev_ca(TD);
    let (_d2, theirs) = dev_ca("other.org");
    let server = server_config(source(&ours, &nexus_id()), PeerPolicy::Any).unwrap();
    // The client trusts our bundle, so only the server can refuse it.
    let stranger = Arc::new(PemSource::new(
        theirs
            .mint(&id("spiffe://other.org/app"), &[], &[], HOUR)
            .unwrap(),
        vec![ours.bundle()],
    ));
    let client = client_config(stranger, PeerPolicy::Any).unwrap();
    assert_client_refused(
        handshake(server, client).await,
        "another trust domain",
        "no trust bundle for trust domain other.org",
    )
    .await;
}

#[tokio::test]
async fn client_from_unknown_ca_claiming_our_trust_domain() {
    let (_d1, ours) = dev_ca(TD);
    let (_d2, impostor) = dev_ca(TD);
    let server = server_config(source(&ours, &nexus_id()), td_policy()).unwrap();
    let fake = Arc::new(PemSource::new(
        impostor.mint(&pilot_id(), &[], &[], HOUR).unwrap(),
        vec![ours.bundle()],
    ));
    let client = client_config(fake, td_policy()).unwrap();
    assert_client_refused(
        handshake(server, client).await,
        "an unknown CA",
        "BadSignature|UnknownIssuer",
    )
    .await;
}

#[tokio::test]
async fn expired_client() {
    let raw = RawCa::new(TD);
    let (_d, ca, server) = server_trusting(&raw);
    let now = SystemTime::now();
    let (chain, key) = raw.leaf(&["spiffe://spike.ist/app"], now - 2 * HOUR, now - HOUR);
    let outcome = handshake(server, raw_client(&root(&ca), chain, key)).await;
    assert_client_refused(outcome, "an expired certificate", "certificate expired").await;
}

#[tokio::test]
async fn not_yet_valid_client() {
    let raw = RawCa::new(TD);
    let (_d, ca, server) = server_trusting(&raw);
    let now = SystemTime::now();
    let (chain, key) = raw.leaf(&["spiffe://spike.ist/app"], now + HOUR, now + 2 * HOUR);
    let outcome = handshake(server, raw_client(&root(&ca), chain, key)).await;
    assert_client_refused(outcome, "a not yet valid certificate", "not valid yet").await;
}

#[tokio::test]
async fn client_without_uri_san() {
    let raw = RawCa::new(TD);
    let (_d, ca, server) = server_trusting(&raw);
    let now = SystemTime::now();
    let (chain, key) = raw.leaf(&[], now - HOUR, now + HOUR);
    let outcome = handshake(server, raw_client(&root(&ca), chain, key)).await;
    assert_client_refused(outcome, "no URI SAN", "no URI SAN").await;
}

#[tokio::test]
async fn client_with_two_uri_sans() {
    let raw = RawCa::new(TD);
    let (_d, ca, server) = server_trusting(&raw);
    let now = SystemTime::now();
    let (chain, key) = raw.leaf(
        &[
            "spiffe://spike.ist/app",
            "spiffe://spike.ist/spike/pilot/role/superuser",
        ],
        now - HOUR,
        now + HOUR,
    );
    let outcome = handshake(server, raw_client(&root(&ca), chain, key)).await;
    assert_client_refused(outcome, "two URI SANs", "2 URI SANs").await;
}

/// X.509-SVID spec §4.3: a leaf must not be able to sign certificates.
#[tokio::test]
async fn client_leaf_with_ca_powers() {
    let raw = RawCa::new(TD);
    let (_d, ca, server) = server_trusting(&raw);
    let now = SystemTime::now();
    let (chain, key) = raw.leaf_with(&["spiffe://spike.ist/app"], now - HOUR, now + HOUR, |p| {
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyCertSign,
        ];
    });
    let outcome = handshake(server.clone(), raw_client(&root(&ca), chain, key)).await;
    assert_client_refused(outcome, "keyCertSign", "keyCertSign").await;
    let (chain, key) = raw.leaf_with(&["spiffe://spike.ist/app"], now - HOUR, now + HOUR, |p| {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    });
    let outcome = handshake(server, raw_client(&root(&ca), chain, key)).await;
    assert_client_refused(outcome, "CA flag", "CA").await;
}

#[tokio::test]
async fn client_without_certificate() {
    let (_d, ca) = dev_ca(TD);
    let server = server_config(source(&ca, &nexus_id()), td_policy()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root(&ca)).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let anonymous = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let outcome = handshake(server, Arc::new(anonymous)).await;
    assert_client_refused(outcome, "no certificate", "no certificates").await;
}

#[tokio::test]
async fn client_not_in_exact_policy() {
    let (_d, ca) = dev_ca(TD);
    let server = server_config(
        source(&ca, &nexus_id()),
        PeerPolicy::Exact(vec![id("spiffe://spike.ist/spike/keeper")]),
    )
    .unwrap();
    let client = client_config(source(&ca, &pilot_id()), td_policy()).unwrap();
    assert_client_refused(
        handshake(server, client).await,
        "an ID outside Exact",
        "PeerNotAllowed",
    )
    .await;
}

#[tokio::test]
async fn server_not_in_exact_policy() {
    let (_d, ca) = dev_ca(TD);
    let server = server_config(source(&ca, &nexus_id()), td_policy()).unwrap();
    let client = client_config(
        source(&ca, &pilot_id()),
        PeerPolicy::Exact(vec![id("spiffe://spike.ist/spike/keeper")]),
    )
    .unwrap();
    let outcome = handshake(server, client).await;
    let Err(err) = outcome.client else {
        panic!("client accepted a server outside its policy");
    };
    assert!(err.to_string().contains("PeerNotAllowed"), "{err}");
    assert!(outcome.server.is_err());
}

#[tokio::test]
async fn server_from_another_trust_domain() {
    let (_d1, ours) = dev_ca(TD);
    let (_d2, theirs) = dev_ca("other.org");
    let server_source = Arc::new(PemSource::new(
        theirs
            .mint(&id("spiffe://other.org/spike/nexus"), &[], &[], HOUR)
            .unwrap(),
        vec![ours.bundle()],
    ));
    let server = server_config(server_source, PeerPolicy::Any).unwrap();
    let client = client_config(source(&ours, &pilot_id()), PeerPolicy::Any).unwrap();
    assert!(handshake(server, client).await.client.is_err());
}

#[tokio::test]
async fn svid_new_refuses_non_svids_and_foreign_keys() {
    let raw = RawCa::new(TD);
    let now = SystemTime::now();
    let (chain, _) = raw.leaf(&[], now - HOUR, now + HOUR);
    let (_, other_key) = raw.leaf(&["spiffe://spike.ist/a"], now - HOUR, now + HOUR);
    assert!(spike_tls::Svid::new(chain, other_key).is_err());
    let (chain, key) = raw.leaf(
        &["spiffe://spike.ist/a", "spiffe://spike.ist/b"],
        now - HOUR,
        now + HOUR,
    );
    assert!(spike_tls::Svid::new(chain, key).is_err());
    let (chain, _) = raw.leaf(&["spiffe://spike.ist/a"], now - HOUR, now + HOUR);
    let (_, other_key) = raw.leaf(&["spiffe://spike.ist/a"], now - HOUR, now + HOUR);
    let err = spike_tls::Svid::new(chain, other_key).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    // Minting outside the CA's trust domain is refused.
    let (_d, ca) = dev_ca(TD);
    assert!(
        ca.mint(&id("spiffe://other.org/x"), &[], &[], HOUR)
            .is_err()
    );
}
