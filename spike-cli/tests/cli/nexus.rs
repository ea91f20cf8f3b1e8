//! A stand-in Nexus for tests: SPIFFE mTLS (spike-tls, a dev CA) in front
//! of canned SPIKE v1 answers, on loopback, in its own thread.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use spike_cli::{Client, Config, Identity};
use spike_core::SpiffeId;
use spike_tls::{DevCa, PeerPolicy, PemSource, server_config};
use tempfile::TempDir;

pub const TD: &str = "spike.ist";
pub const NEXUS_ID: &str = "spiffe://spike.ist/spike/nexus";
pub const PILOT_ID: &str = "spiffe://spike.ist/spike/pilot/role/superuser";

/// One request the stand-in saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Path and query, e.g. `/v1/store/secrets?action=get`.
    pub target: String,
    /// The JSON body.
    pub body: serde_json::Value,
    /// The client's SPIFFE ID from its verified certificate.
    pub peer: Option<SpiffeId>,
}

/// A running stand-in Nexus.
pub struct TestNexus {
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    answers: Arc<Mutex<HashMap<String, (u16, String)>>>,
}

impl TestNexus {
    /// Starts a stand-in with `answers`: `(path?query, status, body)`.
    /// Unknown targets get 404 `{"err":"api_not_found"}`.
    pub fn start(answers: &[(&str, u16, &str)]) -> TestNexus {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::load_or_create(&dir.path().join("ca"), TD).unwrap();
        let nexus_svid = ca
            .mint(
                &SpiffeId::parse(NEXUS_ID).unwrap(),
                &["localhost"],
                &[],
                Duration::from_secs(3600),
            )
            .unwrap();
        let pilot = ca
            .mint(
                &SpiffeId::parse(PILOT_ID).unwrap(),
                &[],
                &[],
                Duration::from_secs(3600),
            )
            .unwrap();
        ca.write_pem(&pilot, &dir.path().join("pilot")).unwrap();

        let source = Arc::new(PemSource::new(nexus_svid, vec![ca.bundle()]));
        let tls = server_config(source, PeerPolicy::TrustDomains(vec![TD.into()])).unwrap();
        let mut tls = Arc::unwrap_or_clone(tls);
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answers: HashMap<String, (u16, String)> = answers
            .iter()
            .map(|(t, s, b)| ((*t).to_owned(), (*s, (*b).to_owned())))
            .collect();
        let answers = Arc::new(Mutex::new(answers));
        let (state_seen, state_answers) = (Arc::clone(&seen), Arc::clone(&answers));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    let seen = Arc::clone(&state_seen);
                    let answers = Arc::clone(&state_answers);
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let peer = spike_tls::peer_id(tls.get_ref().1.peer_certificates());
                        let service = hyper::service::service_fn(move |req| {
                            answer(req, peer.clone(), Arc::clone(&seen), Arc::clone(&answers))
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
        });
        TestNexus {
            addr,
            dir,
            seen,
            answers,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The pilot's PEM files: (cert, key, bundle).
    pub fn pilot_files(&self) -> (PathBuf, PathBuf, PathBuf) {
        let d = self.dir.path().join("pilot");
        (d.join("svid.pem"), d.join("svid.key"), d.join("bundle.pem"))
    }

    /// Replaces or adds an answer.
    pub fn set(&self, target: &str, status: u16, body: &str) {
        self.answers
            .lock()
            .unwrap()
            .insert(target.to_owned(), (status, body.to_owned()));
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The last request seen.
    pub fn last(&self) -> Seen {
        self.seen().pop().unwrap()
    }

    /// The validated pilot config, expecting Nexus's standard ID.
    pub fn config(&self) -> Config {
        let (cert, key, ca) = self.pilot_files();
        Config {
            nexus: self.url().parse().unwrap(),
            identity: Identity::Pem { cert, key, ca },
            nexus_ids: vec![SpiffeId::parse(NEXUS_ID).unwrap()],
        }
    }

    /// A connected client (and our SPIFFE ID).
    pub async fn client(&self) -> (Client, SpiffeId) {
        self.config().connect().await.unwrap()
    }
}

async fn answer(
    req: Request<Incoming>,
    peer: Option<SpiffeId>,
    seen: Arc<Mutex<Vec<Seen>>>,
    answers: Arc<Mutex<HashMap<String, (u16, String)>>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let is_post = req.method() == hyper::Method::POST;
    let bytes = req.into_body().collect().await?.to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    seen.lock().unwrap().push(Seen {
        target: target.clone(),
        body,
        peer,
    });
    let (status, body) = if is_post {
        answers
            .lock()
            .unwrap()
            .get(&target)
            .cloned()
            .unwrap_or((404, r#"{"err":"api_not_found"}"#.to_owned()))
    } else {
        (400, r#"{"err":"api_bad_request"}"#.to_owned())
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}
