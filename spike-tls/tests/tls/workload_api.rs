//! The Workload API source against a fake SPIFFE Workload API: a tonic
//! server on a Unix socket streaming `FetchX509SVID`, which rotates the
//! SVID mid-test.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject as _;
use spike_tls::{
    DevCa, IdentitySource, PeerPolicy, Svid, WorkloadApiSource, client_config, peer_id,
    server_config,
};
use tokio::sync::watch;
use tokio_stream::wrappers::{UnixListenerStream, WatchStream};
use tokio_stream::{Stream, StreamExt as _};
use tonic::codegen::http;

use crate::common::*;

/// `workload.proto` messages, hand-written (no protoc).
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidResponse {
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<X509Svid>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub crl: Vec<Vec<u8>>,
    #[prost(map = "string, bytes", tag = "3")]
    pub federated_bundles: HashMap<String, Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct X509Svid {
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// Concatenated DER chain, leaf first.
    #[prost(bytes = "vec", tag = "2")]
    pub x509_svid: Vec<u8>,
    /// PKCS#8 DER.
    #[prost(bytes = "vec", tag = "3")]
    pub x509_svid_key: Vec<u8>,
    /// Concatenated DER CA certificates.
    #[prost(bytes = "vec", tag = "4")]
    pub bundle: Vec<u8>,
    #[prost(string, tag = "5")]
    pub hint: String,
}

fn response(svid: &Svid, ca: &DevCa) -> X509SvidResponse {
    let key = PrivateKeyDer::from_pem_slice(svid.to_pem().1.as_bytes()).unwrap();
    X509SvidResponse {
        svids: vec![X509Svid {
            spiffe_id: svid.id().to_string(),
            x509_svid: svid.chain().iter().flat_map(|c| c.to_vec()).collect(),
            x509_svid_key: key.secret_der().to_vec(),
            bundle: ca
                .bundle()
                .roots()
                .iter()
                .flat_map(|c| c.to_vec())
                .collect(),
            hint: String::new(),
        }],
        ..Default::default()
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<X509SvidResponse, tonic::Status>> + Send>>;

/// Serves `FetchX509SVID` on `socket`: the current value of `updates`, then
/// every change, on one open stream.
fn serve(socket: &std::path::Path, updates: watch::Receiver<X509SvidResponse>) {
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    let svc = tower::service_fn(move |req: http::Request<tonic::body::Body>| {
        let updates = updates.clone();
        async move {
            if req.uri().path() != "/SpiffeWorkloadAPI/FetchX509SVID" {
                return Ok::<_, Infallible>(tonic::Status::unimplemented("fake").into_http());
            }
            let handler = tower::service_fn(move |req: tonic::Request<X509SvidRequest>| {
                let updates = updates.clone();
                async move {
                    // SPIFFE Workload API spec: refuse calls without the
                    // security header.
                    let header = req.metadata().get("workload.spiffe.io");
                    if header.and_then(|v| v.to_str().ok()) != Some("true") {
                        return Err(tonic::Status::invalid_argument("security header missing"));
                    }
                    let stream: ResponseStream = Box::pin(WatchStream::new(updates).map(Ok));
                    Ok(tonic::Response::new(stream))
                }
            });
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.server_streaming(handler, req).await)
        }
    });
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .serve_with_incoming(svc, UnixListenerStream::new(listener))
            .await
            .unwrap();
    });
}

fn serial(svid: &Svid) -> Vec<u8> {
    use x509_parser::prelude::{FromDer as _, X509Certificate};
    let (_, cert) = X509Certificate::from_der(svid.chain()[0].as_ref()).unwrap();
    cert.raw_serial().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_source_serves_and_rotates_without_restart() {
    let (_ca_dir, ca) = dev_ca(TD);
    let first = ca.mint(&nexus_id(), &[], &[], HOUR).unwrap();
    let (tx, rx) = watch::channel(response(&first, &ca));
    let sock_dir = tempfile::tempdir().unwrap();
    let socket = sock_dir.path().join("agent.sock");
    serve(&socket, rx);

    let endpoint = format!("unix://{}", socket.display());
    let source = Arc::new(
        WorkloadApiSource::connect(Some(&endpoint), Duration::from_secs(5))
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
    tx.send(response(&second, &ca)).unwrap();
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
