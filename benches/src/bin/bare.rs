//! The bare-stack baseline (SPEC §11): Nexus's TLS + HTTP stack with
//! nothing behind it — the ceiling a Nexus read can reach.
//!
//! The same pieces as `spike-server`'s accept loop (`serve.rs`):
//! `spike_tls::server_config` (aws-lc-rs, client SVID required, resumption
//! off) with an SVID minted by a [`DevCa`], a tokio-rustls handshake with a
//! timeout and `TCP_NODELAY`, the peer's SPIFFE ID read from its chain, and
//! a hyper-util `auto` builder per connection (HTTP/1.1 with a header-read
//! timeout, or HTTP/2). Every request is read to its end and answered 200
//! with one fixed JSON body: no router, no store, no policy, no audit.
//!
//! ```text
//! bare --addr 127.0.0.1:9553 --dir /tmp/bare --body-file read.json
//! ```
//!
//! `--dir` holds the CA (`ca/`) and the client SVID for the load generator
//! (`client/svid.pem`, `client/svid.key`, `client/bundle.pem`).

use std::convert::Infallible;
use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use spike_core::SpiffeId;
use spike_tls::{DevCa, IdentitySource, PeerPolicy, PemSource};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

type Error = Box<dyn StdError + Send + Sync>;

/// As `spike_server::serve::HANDSHAKE_TIMEOUT`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// As `spike_server::serve::HEADER_READ_TIMEOUT`.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(about = "Bare mTLS + HTTP baseline: Nexus's stack serving a fixed body")]
struct Args {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:9553")]
    addr: SocketAddr,
    /// CA and client SVID directory (created).
    #[arg(long)]
    dir: PathBuf,
    /// The body to serve (e.g. a saved Nexus KV v2 read response).
    #[arg(long, conflicts_with = "body_size")]
    body_file: Option<PathBuf>,
    /// Or a JSON body of this many bytes.
    #[arg(long, default_value_t = 400)]
    body_size: usize,
    /// Trust domain of the CA.
    #[arg(long, default_value = "spike.ist")]
    trust_domain: String,
}

async fn run(args: Args) -> Result<(), Error> {
    let body = match &args.body_file {
        Some(path) => Bytes::from(std::fs::read(path)?),
        None => {
            let pad = args.body_size.saturating_sub(r#"{"data":""}"#.len());
            Bytes::from(format!(r#"{{"data":"{}"}}"#, "x".repeat(pad)))
        }
    };
    let td = &args.trust_domain;
    let ca = DevCa::load_or_create(&args.dir.join("ca"), td)?;
    let validity = Duration::from_secs(24 * 3600);
    let server = ca.mint(
        &SpiffeId::parse(&format!("spiffe://{td}/bench/bare"))?,
        &["localhost"],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        validity,
    )?;
    let client = ca.mint(
        &SpiffeId::parse(&format!("spiffe://{td}/bench/loadgen"))?,
        &[],
        &[],
        validity,
    )?;
    ca.write_pem(&client, &args.dir.join("client"))?;
    let source: Arc<dyn IdentitySource> = Arc::new(PemSource::new(server, vec![ca.bundle()]));
    let tls = spike_tls::server_config(source, PeerPolicy::TrustDomains(vec![td.clone()]))?;
    let acceptor = TlsAcceptor::from(tls);

    let listener = TcpListener::bind(args.addr).await?;
    println!(
        "bare listening on {} ({} B body)",
        listener.local_addr()?,
        body.len()
    );
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let body = body.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                _ => return,
            };
            // As Nexus: the peer's ID, into every request on the connection.
            let peer = spike_tls::peer_id(stream.get_ref().1.peer_certificates()).map(Arc::new);
            let service = service_fn(move |mut req: Request<Incoming>| {
                let body = body.clone();
                if let Some(peer) = &peer {
                    req.extensions_mut().insert(Arc::clone(peer));
                }
                req.extensions_mut().insert(addr);
                async move {
                    // Read the request to its end, as a handler would.
                    let _ = req.into_body().collect().await;
                    let mut resp = Response::new(Full::new(body));
                    resp.headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    Ok::<_, Infallible>(resp)
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::from)
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
