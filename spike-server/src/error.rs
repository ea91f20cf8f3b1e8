//! The one error type of the HTTP APIs: it logs what went wrong and
//! answers with a stable code only (`{"err":"<code>"}`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use spike_api::{ErrorCode, ErrorResponse};

use crate::http::json_response;

/// An API failure, answered as `{"err":"<code>"}` with the code's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiError {
    code: ErrorCode,
    status: StatusCode,
}

impl ApiError {
    /// A failure answered with `code` and its usual status.
    pub fn new(code: ErrorCode) -> Self {
        Self {
            code,
            status: StatusCode::from_u16(code.status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    /// 400 `api_bad_request`.
    pub fn bad_request() -> Self {
        Self::new(ErrorCode::BadRequest)
    }

    /// 401 `access_unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized)
    }

    /// 404 `api_not_found`.
    pub fn not_found() -> Self {
        Self::new(ErrorCode::NotFound)
    }

    /// 500 `api_internal_error`.
    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal)
    }

    /// 503 `state_not_ready`.
    pub fn not_ready() -> Self {
        Self::new(ErrorCode::NotReady)
    }

    /// 405 with `api_bad_request`: the SPIKE API is POST only.
    pub fn method_not_allowed() -> Self {
        Self {
            code: ErrorCode::BadRequest,
            status: StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The wire code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<spike_core::Error> for ApiError {
    fn from(e: spike_core::Error) -> Self {
        use spike_core::ErrorCode as C;
        let code = match e.code() {
            C::Denied => ErrorCode::Unauthorized,
            C::NotReady | C::Unavailable => ErrorCode::NotReady,
            C::NotFound => ErrorCode::NotFound,
            C::CasMismatch | C::Conflict | C::WrongKey | C::BadRequest => ErrorCode::BadRequest,
            C::Internal => ErrorCode::Internal,
            // A class added to spike-core later: a fault until mapped.
            _ => ErrorCode::Internal,
        };
        match code {
            ErrorCode::Internal => tracing::error!(error = %e, "request failed"),
            ErrorCode::NotReady => tracing::warn!(error = %e, "request failed"),
            _ => tracing::debug!(error = %e, "request refused"),
        }
        Self::new(code)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &ErrorResponse { err: self.code })
    }
}
