//! The TLS accept loop: rustls (aws-lc-rs) handshakes, the peer's SPIFFE
//! ID into every request, HTTP/1.1 and HTTP/2 by hyper-util, graceful
//! shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::http::{App, PeerAddr, PeerIdentity};

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers (HTTP/1.1).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` over TLS with `tls` until `shutdown`
/// resolves, then lets open connections finish their requests (up to
/// [`SHUTDOWN_GRACE`]).
///
/// After each handshake the peer's SPIFFE ID (the one URI SAN of its
/// verified leaf) and address go into every request on that connection as
/// [`PeerIdentity`] and [`PeerAddr`]. A peer without a SPIFFE ID (only
/// possible if `tls` does not require client certificates) is served
/// without [`PeerIdentity`], so the APIs answer it 401. Handshake failures
/// are logged at debug level.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: App,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            if let Some(conn) = handshake(&acceptor, tcp, addr).await {
                let (io, peer) = conn;
                let service = with_peer(app, peer, addr);
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT);
                let conn = builder.serve_connection(TokioIo::new(io), service);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(%addr, error = %e, "connection ended with an error");
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::debug!("all connections closed"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("connections still open after the grace period"),
    }
    Ok(())
}

type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// The TLS handshake, bounded by [`HANDSHAKE_TIMEOUT`]; the stream and the
/// peer's SPIFFE ID.
async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    addr: SocketAddr,
) -> Option<(TlsStream, Option<PeerIdentity>)> {
    let _ = tcp.set_nodelay(true);
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%addr, "TLS handshake timed out");
            return None;
        }
    };
    let peer = spike_tls::peer_id(stream.get_ref().1.peer_certificates()).map(PeerIdentity);
    if peer.is_none() {
        tracing::debug!(%addr, "peer presented no X.509-SVID");
    }
    Some((stream, peer))
}

/// `app` with the connection's peer inserted into every request.
fn with_peer(
    app: App,
    peer: Option<PeerIdentity>,
    addr: SocketAddr,
) -> TowerToHyperService<
    impl tower::Service<
        Request<Incoming>,
        Response = axum::response::Response,
        Error = Infallible,
        Future = impl Future + Send,
    > + Clone
    + Send,
> {
    let service = app.map_request(move |mut req: Request<Incoming>| {
        if let Some(peer) = &peer {
            req.extensions_mut().insert(peer.clone());
        }
        req.extensions_mut().insert(PeerAddr(addr));
        req
    });
    TowerToHyperService::new(service)
}
