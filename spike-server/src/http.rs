//! Shared HTTP plumbing: the caller and body extractors, JSON answers, the
//! [`App`] that wraps a server's routes in the middleware stack (timeout,
//! `Cache-Control`, metrics, audit) and the health routes.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use spike_core::{Caller, ErrorCode, Nexus, SpiffeId, track_audit};
use tower::Service;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// How long a request may take, body upload included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client may take to send a request's body. Shorter than
/// [`REQUEST_TIMEOUT`], so that a client that stalls its upload gets a 4xx
/// (its fault), not the 500 of a request that timed out.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a request body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// More than [`spike_api::MAX_BODY_BYTES`], announced or sent; or the
    /// upload failed.
    TooLarge,
    /// Not sent within [`BODY_READ_TIMEOUT`].
    TimedOut,
}

/// Reads a request body of at most [`spike_api::MAX_BODY_BYTES`]. A
/// `Content-Length` above the limit is refused before any byte is read (a
/// client announcing 10 GiB and sending nothing must not hold the request
/// until [`REQUEST_TIMEOUT`]).
pub(crate) async fn read_body(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Bytes, BodyError> {
    let announced = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > spike_api::MAX_BODY_BYTES as u64) {
        return Err(BodyError::TooLarge);
    }
    match tokio::time::timeout(
        BODY_READ_TIMEOUT,
        axum::body::to_bytes(body, spike_api::MAX_BODY_BYTES),
    )
    .await
    {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "request body refused");
            Err(BodyError::TooLarge)
        }
        Err(_) => {
            tracing::debug!("request body not sent in time");
            Err(BodyError::TimedOut)
        }
    }
}

/// The verified SPIFFE ID of the connection's peer. The TLS layer
/// ([`crate::serve`]) inserts it into every request's extensions; a request
/// without it is answered 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity(pub SpiffeId);

/// The connection's remote address, inserted next to [`PeerIdentity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The caller of a SPIKE v1 request, for spike-core.
pub(crate) struct ApiCaller(pub(crate) Caller);

impl<S: Send + Sync> FromRequestParts<S> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let id = parts
            .extensions
            .get::<PeerIdentity>()
            .ok_or_else(ApiError::unauthorized)?
            .0
            .clone();
        let caller = match parts.extensions.get::<PeerAddr>() {
            Some(addr) => Caller::remote(id, addr.0, "spike/v1"),
            None => Caller {
                remote_addr: None,
                api: "spike/v1",
                ..Caller::new(id)
            },
        };
        Ok(ApiCaller(caller))
    }
}

/// The `?action=` of a request (`None` when absent or empty).
pub(crate) struct Action(pub(crate) Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Action {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let action = parts.uri.query().and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.strip_prefix("action="))
                .next_back()
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
        });
        Ok(Action(action))
    }
}

/// The raw request body, at most [`spike_api::MAX_BODY_BYTES`]. Any failure
/// to read it (too large, aborted) is 400 `api_bad_request`: axum's own
/// rejection text never reaches the client.
pub(crate) struct Body(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        read_body(&parts.headers, body)
            .await
            .map(Body)
            .map_err(|_| ApiError::bad_request())
    }
}

impl Body {
    /// Parses the body as `T`. An empty body reads as `{}`. Malformed JSON
    /// or wrong types are 400 `api_bad_request`.
    pub(crate) fn parse<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let bytes: &[u8] = if self.0.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &self.0
        };
        serde_json::from_slice(bytes).map_err(|e| {
            // serde_json errors name the position and the expected type,
            // never the input's content.
            tracing::debug!(error = %e, "malformed request body");
            ApiError::bad_request()
        })
    }
}

/// A JSON answer with `status`.
pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    // Most answers are a few hundred bytes: one allocation, not a series.
    let mut bytes = Vec::with_capacity(512);
    json_answer(
        status,
        serde_json::to_writer(&mut bytes, body).map(|()| bytes),
    )
}

/// A JSON answer with `status` from already serialised `bytes`, or 500
/// `api_internal_error` if serialising failed.
pub(crate) fn json_answer(status: StatusCode, bytes: serde_json::Result<Vec<u8>>) -> Response {
    match bytes {
        Ok(bytes) => (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "response does not serialise");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                r#"{"err":"api_internal_error"}"#,
            )
                .into_response()
        }
    }
}

/// 200 with `body`.
pub(crate) fn ok<T: Serialize>(body: &T) -> Response {
    json_response(StatusCode::OK, body)
}

/// The fallback: 404 `api_not_found`.
pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found()
}

/// `GET /healthz`: always 200 while the process serves.
pub(crate) async fn healthz() -> Response {
    ok(&serde_json::json!({"status": "ok"}))
}

/// A server's HTTP application: its routes inside the one middleware
/// stack every server uses (timeout, 405 bodies, `Cache-Control:
/// no-store`, metrics, tracing and, for Nexus, an audit line for every
/// request that no store call audited). Body limits are the extractors'
/// own ([`read_body`]).
///
/// A tower [`Service`](tower::Service) for requests with any body type
/// that hyper or a test hands it. The stack wraps the router as a whole,
/// not each of its routes: one boxed future per request instead of a
/// boxed service clone and a boxed future at every layer of every route
/// (`axum::middleware::from_fn` and `Router::layer`), which profiling
/// showed on every read.
#[derive(Clone)]
pub struct App {
    prefixes: Arc<PrefixRoutes>,
    routes: Router,
    stack: Arc<Stack>,
}

/// Routes claimed by path prefix, ahead of a server's router (the Vault
/// API's mounts, whose paths are open-ended): a route takes every method
/// on a path that starts with its prefix and goes on after it.
#[derive(Default)]
pub(crate) struct PrefixRoutes(Vec<(&'static str, PrefixHandler)>);

type PrefixHandler = Box<dyn Fn(Request) -> PrefixFuture + Send + Sync>;
type PrefixFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

impl PrefixRoutes {
    /// Adds `handler` for the paths under `prefix` (which ends with `/`).
    pub(crate) fn route<F>(
        mut self,
        prefix: &'static str,
        handler: impl Fn(Request) -> F + Send + Sync + 'static,
    ) -> Self
    where
        F: Future<Output = Response> + Send + 'static,
    {
        self.0
            .push((prefix, Box::new(move |req| Box::pin(handler(req)))));
        self
    }

    /// The handler whose prefix claims `path`.
    fn claim(&self, path: &str) -> Option<&PrefixHandler> {
        self.0
            .iter()
            .find(|(prefix, _)| {
                path.strip_prefix(prefix)
                    .is_some_and(|tail| !tail.is_empty())
            })
            .map(|(_, handler)| handler)
    }
}

struct Stack {
    metrics: Arc<Metrics>,
    /// Where requests refused before reaching the store are audited.
    audit: Option<Nexus>,
}

impl App {
    /// `prefixes`, then `routes` (with a 404 `api_not_found` fallback), in
    /// the stack.
    pub(crate) fn new(
        routes: Router,
        prefixes: PrefixRoutes,
        metrics: Arc<Metrics>,
        audit: Option<Nexus>,
    ) -> Self {
        Self {
            prefixes: Arc::new(prefixes),
            routes: routes.fallback(not_found),
            stack: Arc::new(Stack { metrics, audit }),
        }
    }
}

type AppFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<B> Service<axum::http::Request<B>> for App
where
    B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AppFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::http::Request<B>) -> AppFuture {
        let started = Instant::now();
        let stack = Arc::clone(&self.stack);
        let metrics = &stack.metrics;
        let route = metrics.route_label(req.uri().path());
        let action = metrics.action_label(req.uri().query());
        let method = req.method().clone();
        let caller = stack.audit.as_ref().and_then(|_| {
            let id = req.extensions().get::<PeerIdentity>()?.0.clone();
            let addr = req.extensions().get::<PeerAddr>()?.0;
            Some(Caller::remote(id, addr, "http"))
        });
        let uri = stack.audit.as_ref().map(|_| req.uri().clone());
        let req = req.map(axum::body::Body::new);
        let answer = match self.prefixes.claim(req.uri().path()) {
            Some(handler) => Ok(handler(req)),
            // The router is always ready, and its future does not borrow it.
            None => Err(self.routes.call(req)),
        };
        Box::pin(async move {
            let answer = async {
                match answer {
                    Ok(prefixed) => prefixed.await,
                    Err(routed) => routed.await.unwrap_or_else(|never| match never {}),
                }
            };
            let (answer, audited) =
                track_audit(tokio::time::timeout(REQUEST_TIMEOUT, answer)).await;
            let mut res = match answer {
                Ok(res) => res,
                Err(_) => {
                    tracing::warn!(route, "request timed out");
                    ApiError::internal().into_response()
                }
            };
            if res.status() == StatusCode::METHOD_NOT_ALLOWED
                && res.headers().get(CONTENT_TYPE).is_none()
            {
                let allow = res.headers().get(axum::http::header::ALLOW).cloned();
                res = ApiError::method_not_allowed().into_response();
                if let Some(allow) = allow {
                    res.headers_mut().insert(axum::http::header::ALLOW, allow);
                }
            }
            if let (Some(nexus), false) = (&stack.audit, audited) {
                nexus.audit_request(
                    caller.as_ref(),
                    "http.request",
                    uri.as_ref().map(|u| u.path()),
                    refusal(res.status()),
                    started,
                );
            }
            res.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            let elapsed = started.elapsed();
            stack
                .metrics
                .observe(route, action, res.status().as_u16(), elapsed);
            tracing::debug!(
                %method,
                route,
                action,
                status = res.status().as_u16(),
                micros = elapsed.as_micros() as u64,
                "request"
            );
            Ok(res)
        })
    }
}

/// The error class of an answer's status, as audit lines name it (`None`
/// for an answer that is not an error).
fn refusal(status: StatusCode) -> Option<ErrorCode> {
    Some(match status.as_u16() {
        100..=399 => return None,
        401 | 403 => ErrorCode::Denied,
        404 => ErrorCode::NotFound,
        409 => ErrorCode::Conflict,
        503 => ErrorCode::NotReady,
        400..=499 => ErrorCode::BadRequest,
        _ => ErrorCode::Internal,
    })
}
