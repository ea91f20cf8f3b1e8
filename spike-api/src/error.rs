//! The error body and its stable codes.

use serde::{Deserialize, Serialize};

/// The stable error codes of the SPIKE v1 API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400: the request is malformed or not acceptable; nothing changed.
    #[serde(rename = "api_bad_request")]
    BadRequest,
    /// 401: the caller may not do this.
    #[serde(rename = "access_unauthorized")]
    Unauthorized,
    /// 404: no such secret, version or policy.
    #[serde(rename = "api_not_found")]
    NotFound,
    /// 500: a fault on the server's side.
    #[serde(rename = "api_internal_error")]
    Internal,
    /// 503: Nexus is not unsealed (or its store is unavailable).
    #[serde(rename = "state_not_ready")]
    NotReady,
}

impl ErrorCode {
    /// The wire code, e.g. `api_bad_request`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "api_bad_request",
            ErrorCode::Unauthorized => "access_unauthorized",
            ErrorCode::NotFound => "api_not_found",
            ErrorCode::Internal => "api_internal_error",
            ErrorCode::NotReady => "state_not_ready",
        }
    }

    /// The HTTP status that carries it.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::Internal => 500,
            ErrorCode::NotReady => 503,
        }
    }

    /// The code for a wire string, if known.
    pub fn parse(s: &str) -> Option<Self> {
        [
            ErrorCode::BadRequest,
            ErrorCode::Unauthorized,
            ErrorCode::NotFound,
            ErrorCode::Internal,
            ErrorCode::NotReady,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// `{"err":"<code>"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error code.
    pub err: ErrorCode,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_is_exact() {
        let body = serde_json::to_string(&ErrorResponse {
            err: ErrorCode::NotReady,
        })
        .unwrap();
        assert_eq!(body, r#"{"err":"state_not_ready"}"#);
        for code in [
            "api_bad_request",
            "access_unauthorized",
            "api_not_found",
            "api_internal_error",
        ] {
            let c = ErrorCode::parse(code).unwrap();
            assert_eq!(c.as_str(), code);
            assert!(c.status() >= 400);
        }
        assert_eq!(ErrorCode::parse("nope"), None);
    }
}
