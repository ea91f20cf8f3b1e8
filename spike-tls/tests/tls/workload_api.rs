//! The Workload API source against a fake SPIFFE Workload API
//! (`spike_tls::testing`: a tonic server on a Unix socket streaming
//! `FetchX509SVID`), which rotates the SVID mid-test.

use std::sync::Arc;
use std::time::Duration;

use spike_tls::testing::FakeWorkloadApi;
use spike_tls::{
    DevCa, IdentitySource, PeerPolicy, Svid, WorkloadApiSource, client_config, peer_id,
    server_config,
};

use crate::common::*;

fn serial(svid: &Svid) -> Vec<u8> {
    use x509_parser::prelude::{FromDer as _, X509Certificate};
    let (_, cert) = X509Certificate::from_der(svid.chain()[0].as_ref()).unwrap();
    cert.raw_serial().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_source_serves_and_rotates_without_restart() {
    let (_ca_dir, ca) = dev_ca(TD);
    let first = ca.mint(&nexus_id(), &[], &[], HOUR).unwrap();
    let sock_dir = tempfile::tempdir().unwrap();
    let agent =
        FakeWorkloadApi::start(&sock_dir.path().join("agent.sock"), &first, &ca.bundle()).unwrap();
    let source = Arc::new(
        WorkloadApiSource::connect(Some(agent.endpoint()), Duration::from_secs(5))
            .await
            .unwrap(),
    );
    let got = source.svid().unwrap();
    assert_eq!(got.id(), &nexus_id());
    assert_eq!(got.chain(), first.chain());
    assert_eq!(source.bundle(TD), Some(ca.bundle()));
    assert_eq!(source.bundle("other.org"), None);
    // Unchanged material is converted once.
    assert!(Arc::ptr_eq(&got, &source.svid().unwrap()));

    let policy = PeerPolicy::TrustDomains(vec![TD.into()]);
    let server = server_config(source.clone(), policy.clone()).unwrap();
    let client = client_config(self::source_for_pilot(&ca), policy).unwrap();
    let (s, c) = connect_ok(server.clone(), client.clone()).await;
    assert_eq!(peer_id(s.get_ref().1.peer_certificates()), Some(pilot_id()));
    let presented = c.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(presented, first.chain()[0]);

    // Rotate: a new SVID (new key, serial and expiry) on the open stream.
    let second = ca.mint(&nexus_id(), &[], &[], 2 * HOUR).unwrap();
    assert_ne!(serial(&first), serial(&second));
    agent.rotate(&second, &ca.bundle());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while source.svid().unwrap().chain() != second.chain() {
        assert!(tokio::time::Instant::now() < deadline, "rotation not seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Same server config, next handshake: the rotated certificate.
    let (_s, c) = connect_ok(server, client).await;
    let presented = c.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(presented, second.chain()[0]);
    let rotated = source.svid().unwrap();
    assert_eq!(serial(&rotated), serial(&second));
    assert!(rotated.not_after() > first.not_after());
    source.shutdown().await;
}

#[tokio::test]
async fn workload_api_source_times_out_without_agent() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("unix://{}", dir.path().join("none.sock").display());
    let started = std::time::Instant::now();
    let err = WorkloadApiSource::connect(Some(&endpoint), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "{err}");
}

fn source_for_pilot(ca: &DevCa) -> Arc<dyn IdentitySource> {
    source(ca, &pilot_id())
}
