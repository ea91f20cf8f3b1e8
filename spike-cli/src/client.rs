//! The SPIKE v1 API client: one method per route, spike-api types in and
//! out, `{"err":code}` answers mapped to [`ClientError::Api`].

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use serde::Serialize;
use serde::de::DeserializeOwned;
use spike_api::{
    CipherDecryptRequest, CipherDecryptResponse, CipherEncryptRequest, CipherEncryptResponse,
    Empty, ErrorCode, ErrorResponse, PolicyGetRequest, PolicyListRequest, PolicyListResponse,
    PolicyPutRequest, PolicyPutResponse, PolicyView, RecoverResponse, RestoreRequest,
    RestoreResponse, SecretDeleteRequest, SecretGetRequest, SecretGetResponse, SecretListResponse,
    SecretMetadataResponse, SecretPutRequest, routes,
};

/// Time allowed to open a connection (TCP and TLS handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer body read (twice the largest request body).
const MAX_RESPONSE_BYTES: usize = 2 * spike_api::MAX_BODY_BYTES;

/// What went wrong talking to Nexus. Never carries secret values: bodies
/// are not echoed, and request bodies are not part of any message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nexus answered with a SPIKE error code.
    #[error("Nexus answered {status} `{}`", code.as_str())]
    Api {
        /// HTTP status.
        status: u16,
        /// The SPIKE error code.
        code: ErrorCode,
    },
    /// Nexus answered an error status without a known SPIKE error code.
    #[error("Nexus answered HTTP {status}{}", code.as_ref().map(|c| format!(" with unknown code `{c}`")).unwrap_or_default())]
    Status {
        /// HTTP status.
        status: u16,
        /// The unknown `err` code, if the body had one.
        code: Option<String>,
    },
    /// The TLS handshake failed (certificates, trust bundle, Nexus's ID).
    #[error("TLS handshake with {url} failed: {reason}")]
    Tls {
        /// The Nexus URL.
        url: String,
        /// What rustls reported.
        reason: String,
    },
    /// No connection (refused, unreachable, DNS).
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The Nexus URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// No answer in time.
    #[error("no answer from {url} in time (connect {}s, request {}s)", CONNECT_TIMEOUT.as_secs(), REQUEST_TIMEOUT.as_secs())]
    Timeout {
        /// The Nexus URL.
        url: String,
    },
    /// Another transport failure.
    #[error("request to {url} failed: {reason}")]
    Transport {
        /// The Nexus URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A success answer that is not the expected JSON.
    #[error("unexpected answer from Nexus: {0}")]
    Decode(String),
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
}

impl ClientError {
    /// The SPIKE error code, if Nexus sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    fn from_reqwest(url: &Url, err: &reqwest::Error) -> Self {
        let url = base_of(url);
        if err.is_timeout() {
            return ClientError::Timeout { url };
        }
        // Find the deepest cause; a rustls error anywhere means TLS.
        let mut reason = None;
        let mut tls = None;
        let mut cause: Option<&(dyn std::error::Error + 'static)> = err.source();
        while let Some(c) = cause {
            // `io::Error::source` skips the error it wraps: look inside,
            // through io::Errors wrapping io::Errors.
            let mut inner: Option<&(dyn std::error::Error + 'static)> = Some(c);
            while let Some(e) = inner {
                if let Some(r) = e.downcast_ref::<rustls::Error>() {
                    tls = Some(describe_tls(r));
                    break;
                }
                inner = e
                    .downcast_ref::<std::io::Error>()
                    .and_then(std::io::Error::get_ref)
                    .map(|e| e as &(dyn std::error::Error + 'static));
            }
            reason = Some(c.to_string());
            cause = c.source();
        }
        if let Some(reason) = tls {
            return ClientError::Tls { url, reason };
        }
        let reason = reason.unwrap_or_else(|| err.to_string());
        if err.is_connect() {
            ClientError::Connect { url, reason }
        } else {
            ClientError::Transport { url, reason }
        }
    }
}

/// A rustls error in words: our verifier's own message when it refused
/// the certificate (e.g. "peer not allowed: spiffe://…").
fn describe_tls(err: &rustls::Error) -> String {
    use rustls::{CertificateError, Error};
    match err {
        Error::InvalidCertificate(CertificateError::Other(other)) => {
            format!("Nexus's certificate was refused: {}", other.0)
        }
        Error::InvalidCertificate(e) => format!("Nexus's certificate was refused: {e:?}"),
        Error::AlertReceived(alert) => format!(
            "Nexus refused our certificate (alert {alert:?}): is this Pilot's SVID from a trust \
             domain Nexus trusts, and unexpired?"
        ),
        e => e.to_string(),
    }
}

/// `scheme://host:port` of a URL, for messages.
fn base_of(url: &Url) -> String {
    let mut base = url.clone();
    base.set_path("");
    base.set_query(None);
    base.to_string().trim_end_matches('/').to_owned()
}

/// A SPIKE v1 API client over SPIFFE mTLS.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
}

impl Client {
    /// A client for Nexus at `base` (`https://host:port`), speaking TLS with
    /// `tls` (from `spike_tls::client_config`: our SVID, Nexus verified by
    /// SPIFFE ID).
    ///
    /// # Errors
    ///
    /// [`ClientError::Setup`] if `base` is not https or reqwest refuses the
    /// configuration.
    pub fn new(base: Url, tls: Arc<rustls::ClientConfig>) -> Result<Client, ClientError> {
        if base.scheme() != "https" {
            return Err(ClientError::Setup(format!(
                "the Nexus URL must be https://, not {}://",
                base.scheme()
            )));
        }
        // One request per invocation: HTTP/1.1 is enough (reqwest is built
        // without HTTP/2), so offer only it.
        let mut tls = Arc::unwrap_or_clone(tls);
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .https_only(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("spike-rs-pilot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(Client { http, base })
    }

    /// The Nexus base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    async fn call<Req, Resp>(
        &self,
        route: &str,
        action: Option<&str>,
        request: &Req,
    ) -> Result<Resp, ClientError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let mut url = self.base.clone();
        url.set_path(route);
        url.set_query(action.map(|a| format!("action={a}")).as_deref());
        // The body may hold secret values: kept in a zeroizing buffer until
        // handed to reqwest.
        let body = zeroize::Zeroizing::new(
            serde_json::to_vec(request).map_err(|e| ClientError::Setup(e.to_string()))?,
        );
        let response = self
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| ClientError::from_reqwest(&url, &e))?;
        let status = response.status();
        let bytes = zeroize::Zeroizing::new(
            response
                .bytes()
                .await
                .map_err(|e| ClientError::from_reqwest(&url, &e))?
                .to_vec(),
        );
        if bytes.len() > MAX_RESPONSE_BYTES {
            return Err(ClientError::Decode(format!(
                "answer larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        if !status.is_success() {
            return Err(error_from_body(status.as_u16(), &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            // serde_json's message may quote the offending value (a secret):
            // keep only its category and position.
            ClientError::Decode(format!(
                "{:?} error at line {} column {} of the {route} answer",
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }

    /// `/v1/store/secrets`: writes a new version.
    pub async fn put_secret(&self, request: &SecretPutRequest) -> Result<(), ClientError> {
        let _: Empty = self.call(routes::SECRETS, None, request).await?;
        Ok(())
    }

    /// `/v1/store/secrets?action=get`: a version's values (`None` or 0 =
    /// current).
    pub async fn get_secret(
        &self,
        path: &str,
        version: Option<u64>,
    ) -> Result<SecretGetResponse, ClientError> {
        let request = SecretGetRequest {
            path: path.to_owned(),
            version,
        };
        self.call(routes::SECRETS, Some(routes::ACTION_GET), &request)
            .await
    }

    /// `/v1/store/secrets?action=list`: paths the caller may list.
    pub async fn list_secrets(&self) -> Result<SecretListResponse, ClientError> {
        self.call(routes::SECRETS, Some(routes::ACTION_LIST), &Empty {})
            .await
    }

    /// `/v1/store/secrets?action=delete`: soft-deletes versions (empty =
    /// current).
    pub async fn delete_secret(&self, path: &str, versions: &[u64]) -> Result<(), ClientError> {
        self.versions_call(routes::ACTION_DELETE, path, versions)
            .await
    }

    /// `/v1/store/secrets?action=undelete`: undoes soft deletes.
    pub async fn undelete_secret(&self, path: &str, versions: &[u64]) -> Result<(), ClientError> {
        self.versions_call(routes::ACTION_UNDELETE, path, versions)
            .await
    }

    /// `/v1/store/secrets?action=destroy` (spike-rs extension): wipes
    /// versions' data for good.
    pub async fn destroy_secret(&self, path: &str, versions: &[u64]) -> Result<(), ClientError> {
        self.versions_call(routes::ACTION_DESTROY, path, versions)
            .await
    }

    async fn versions_call(
        &self,
        action: &str,
        path: &str,
        versions: &[u64],
    ) -> Result<(), ClientError> {
        let request = SecretDeleteRequest {
            path: path.to_owned(),
            versions: versions.to_vec(),
        };
        let _: Empty = self.call(routes::SECRETS, Some(action), &request).await?;
        Ok(())
    }

    /// `/v1/store/secrets/metadata?action=get`.
    pub async fn secret_metadata(
        &self,
        path: &str,
        version: Option<u64>,
    ) -> Result<SecretMetadataResponse, ClientError> {
        let request = SecretGetRequest {
            path: path.to_owned(),
            version,
        };
        self.call(routes::SECRETS_METADATA, Some(routes::ACTION_GET), &request)
            .await
    }

    /// `/v1/acl/policy`: creates or replaces a policy.
    pub async fn put_policy(
        &self,
        request: &PolicyPutRequest,
    ) -> Result<PolicyPutResponse, ClientError> {
        self.call(routes::POLICY, None, request).await
    }

    /// `/v1/acl/policy?action=get`.
    pub async fn get_policy(&self, name: &str) -> Result<PolicyView, ClientError> {
        let request = PolicyGetRequest {
            id: name.to_owned(),
        };
        self.call(routes::POLICY, Some(routes::ACTION_GET), &request)
            .await
    }

    /// `/v1/acl/policy?action=delete`.
    pub async fn delete_policy(&self, name: &str) -> Result<(), ClientError> {
        let request = PolicyGetRequest {
            id: name.to_owned(),
        };
        let _: Empty = self
            .call(routes::POLICY, Some(routes::ACTION_DELETE), &request)
            .await?;
        Ok(())
    }

    /// `/v1/acl/policy?action=list`.
    pub async fn list_policies(
        &self,
        filter: &PolicyListRequest,
    ) -> Result<PolicyListResponse, ClientError> {
        self.call(routes::POLICY, Some(routes::ACTION_LIST), filter)
            .await
    }

    /// `/v1/operator/recover`: every share (recover role).
    pub async fn recover(&self) -> Result<RecoverResponse, ClientError> {
        self.call(routes::OPERATOR_RECOVER, None, &Empty {}).await
    }

    /// `/v1/operator/restore`: hands over one share (restore role).
    pub async fn restore(&self, request: &RestoreRequest) -> Result<RestoreResponse, ClientError> {
        self.call(routes::OPERATOR_RESTORE, None, request).await
    }

    /// `/v1/cipher/encrypt`: base64 plaintext in, base64 ciphertext out.
    pub async fn encrypt(
        &self,
        request: &CipherEncryptRequest,
    ) -> Result<CipherEncryptResponse, ClientError> {
        self.call(routes::CIPHER_ENCRYPT, None, request).await
    }

    /// `/v1/cipher/decrypt`: base64 ciphertext in, base64 plaintext out.
    pub async fn decrypt(
        &self,
        request: &CipherDecryptRequest,
    ) -> Result<CipherDecryptResponse, ClientError> {
        self.call(routes::CIPHER_DECRYPT, None, request).await
    }
}

/// Maps an error answer: `{"err":"<code>"}` when Nexus sent one.
fn error_from_body(status: u16, body: &[u8]) -> ClientError {
    #[derive(serde::Deserialize)]
    struct AnyCode {
        err: String,
    }
    if let Ok(ErrorResponse { err }) = serde_json::from_slice::<ErrorResponse>(body) {
        return ClientError::Api { status, code: err };
    }
    let code = serde_json::from_slice::<AnyCode>(body)
        .ok()
        .map(|c| c.err)
        // Codes are short identifiers; anything else is not shown.
        .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    ClientError::Status { status, code }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_error_bodies() {
        let e = error_from_body(503, br#"{"err":"state_not_ready"}"#);
        assert_eq!(e.code(), Some(ErrorCode::NotReady));
        let e = error_from_body(418, br#"{"err":"teapot"}"#);
        assert!(
            matches!(e, ClientError::Status { status: 418, code: Some(ref c) } if c == "teapot")
        );
        let e = error_from_body(502, b"<html>bad gateway</html>");
        assert!(matches!(
            e,
            ClientError::Status {
                status: 502,
                code: None
            }
        ));
        let e = error_from_body(500, br#"{"err":"hunter2 is a secret value"}"#);
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn base_drops_path() -> Result<(), Box<dyn std::error::Error>> {
        let url: Url = "https://127.0.0.1:8553/v1/store/secrets?action=get".parse()?;
        assert_eq!(base_of(&url), "https://127.0.0.1:8553");
        Ok(())
    }
}
