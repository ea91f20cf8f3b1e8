//! Test support (cargo feature `testing`, never in a release build): a fake
//! SPIFFE Workload API.
//!
//! [`FakeWorkloadApi`] is a tonic server on a Unix socket that answers
//! `FetchX509SVID` with one SVID and its trust bundle, on one open stream,
//! and pushes a new SVID down every open stream when told to
//! [`rotate`](FakeWorkloadApi::rotate) — what a SPIRE agent does when it
//! renews an SVID. Point a [`WorkloadApiSource`](crate::WorkloadApiSource)
//! (or a whole process, through `SPIFFE_ENDPOINT_SOCKET`) at
//! [`endpoint`](FakeWorkloadApi::endpoint).
//!
//! ```no_run
//! # async fn demo(ca: &spike_tls::DevCa, svid: &spike_tls::Svid) -> std::io::Result<()> {
//! use spike_tls::testing::FakeWorkloadApi;
//! let dir = tempfile::tempdir()?;
//! let agent = FakeWorkloadApi::start(&dir.path().join("agent.sock"), svid, &ca.bundle())?;
//! // SPIFFE_ENDPOINT_SOCKET=<agent.endpoint()> for the process under test…
//! # let renewed = svid;
//! agent.rotate(renewed, &ca.bundle());
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::pin::Pin;

use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{UnixListenerStream, WatchStream};
use tokio_stream::{Stream, StreamExt as _};
use tonic::codegen::http;

use crate::{Svid, TrustBundle};

/// `X509SVIDRequest` of `workload.proto` (hand-written: no protoc).
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidRequest {}

/// `X509SVIDResponse` of `workload.proto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidResponse {
    /// The workload's SVIDs, the first one being the default.
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<X509Svid>,
    /// Certificate revocation lists (unused).
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub crl: Vec<Vec<u8>>,
    /// Bundles of federated trust domains, by SPIFFE ID of the domain.
    #[prost(map = "string, bytes", tag = "3")]
    pub federated_bundles: HashMap<String, Vec<u8>>,
}

/// `X509SVID` of `workload.proto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509Svid {
    /// The SPIFFE ID.
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// Concatenated DER chain, leaf first.
    #[prost(bytes = "vec", tag = "2")]
    pub x509_svid: Vec<u8>,
    /// PKCS#8 DER private key.
    #[prost(bytes = "vec", tag = "3")]
    pub x509_svid_key: Vec<u8>,
    /// Concatenated DER CA certificates of the SVID's trust domain.
    #[prost(bytes = "vec", tag = "4")]
    pub bundle: Vec<u8>,
    /// Operator hint (unused).
    #[prost(string, tag = "5")]
    pub hint: String,
}

impl X509SvidResponse {
    /// The response carrying `svid` and `bundle`.
    pub fn new(svid: &Svid, bundle: &TrustBundle) -> Self {
        let key_pem = svid.to_pem().1;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map(|k| k.secret_der().to_vec())
            .unwrap_or_default();
        X509SvidResponse {
            svids: vec![X509Svid {
                spiffe_id: svid.id().to_string(),
                x509_svid: svid.chain().iter().flat_map(|c| c.to_vec()).collect(),
                x509_svid_key: key,
                bundle: bundle.roots().iter().flat_map(|c| c.to_vec()).collect(),
                hint: String::new(),
            }],
            ..Default::default()
        }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<X509SvidResponse, tonic::Status>> + Send>>;

/// A fake SPIFFE Workload API on a Unix socket; stops when dropped.
#[derive(Debug)]
pub struct FakeWorkloadApi {
    endpoint: String,
    updates: watch::Sender<X509SvidResponse>,
    task: JoinHandle<()>,
}

impl FakeWorkloadApi {
    /// Binds `socket` and serves `svid` with `bundle`. Must be called from
    /// within a tokio runtime.
    pub fn start(socket: &Path, svid: &Svid, bundle: &TrustBundle) -> std::io::Result<Self> {
        let listener = tokio::net::UnixListener::bind(socket)?;
        let (updates, rx) = watch::channel(X509SvidResponse::new(svid, bundle));
        let svc = tower::service_fn(move |req: http::Request<tonic::body::Body>| {
            let rx = rx.clone();
            async move {
                if req.uri().path() != "/SpiffeWorkloadAPI/FetchX509SVID" {
                    return Ok::<_, Infallible>(tonic::Status::unimplemented("fake").into_http());
                }
                let handler = tower::service_fn(move |req: tonic::Request<X509SvidRequest>| {
                    let rx = rx.clone();
                    async move {
                        // SPIFFE Workload API spec: refuse calls without the
                        // security header.
                        let header = req.metadata().get("workload.spiffe.io");
                        if header.and_then(|v| v.to_str().ok()) != Some("true") {
                            return Err(tonic::Status::invalid_argument("security header missing"));
                        }
                        let stream: ResponseStream = Box::pin(WatchStream::new(rx).map(Ok));
                        Ok(tonic::Response::new(stream))
                    }
                });
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.server_streaming(handler, req).await)
            }
        });
        let task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .serve_with_incoming(svc, UnixListenerStream::new(listener))
                .await;
            if let Err(e) = served {
                eprintln!("fake Workload API stopped: {e}");
            }
        });
        Ok(Self {
            endpoint: format!("unix://{}", socket.display()),
            updates,
            task,
        })
    }

    /// `unix:///…`: the value for `SPIFFE_ENDPOINT_SOCKET`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Pushes `svid` and `bundle` to every open stream (and later calls).
    pub fn rotate(&self, svid: &Svid, bundle: &TrustBundle) {
        self.updates
            .send_replace(X509SvidResponse::new(svid, bundle));
    }
}

impl Drop for FakeWorkloadApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}
