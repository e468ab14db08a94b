//! The JSON error body both services return: `{"error": {"code": "...", "message": "..."}}`.
//!
//! Codes are stable identifiers clients may match on; messages are for people and may change.
//! A message never contains a secret, a connection string or a backend's raw error text.

use serde::{Deserialize, Serialize};

use crate::domain::ValidationError;

/// Every error a client can receive, with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the path id is not a valid user id.
    InvalidId,
    /// 400: a query parameter is unknown or malformed.
    InvalidQuery,
    /// 400: the body is not well-formed JSON of the expected shape.
    MalformedBody,
    /// 401: missing or wrong bearer token (the origin's token; at the edge: no client token at all).
    Unauthorized,
    /// 401: the edge could not accept the client's token (malformed, expired, not yet valid, wrong
    /// issuer or audience, unknown key, bad signature); the message says which.
    InvalidToken,
    /// 403: the token is valid but its scopes or subject do not allow this request.
    InsufficientScope,
    /// 404: no such user, or no such route.
    NotFound,
    /// 405: the route exists but not for this method.
    MethodNotAllowed,
    /// 409: the write conflicts with another row (duplicate username or email).
    Conflict,
    /// 413: the body is larger than the limit.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 422: a field fails validation; the message names it.
    ValidationFailed,
    /// 429: the caller sent too many writes; retry after `Retry-After` seconds.
    RateLimited,
    /// 503: a backend needed to answer is down or too slow; retry after `Retry-After` seconds.
    Unavailable,
    /// 500: a bug. Never caused by input.
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidId | ErrorCode::InvalidQuery | ErrorCode::MalformedBody => 400,
            ErrorCode::Unauthorized | ErrorCode::InvalidToken => 401,
            ErrorCode::InsufficientScope => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::ValidationFailed => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidId => "invalid_id",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::MalformedBody => "malformed_body",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// An error as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// For 503 and 429: seconds the client should wait before retrying (`Retry-After`).
    pub retry_after_secs: Option<u32>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn invalid_id(e: ValidationError) -> Self {
        Self::new(
            ErrorCode::InvalidId,
            format!("invalid user id: {}", e.message),
        )
    }

    pub fn invalid_query(e: ValidationError) -> Self {
        Self::new(ErrorCode::InvalidQuery, e.to_string())
    }

    pub fn validation(e: ValidationError) -> Self {
        Self::new(ErrorCode::ValidationFailed, e.to_string())
    }

    /// 400: the body is not a JSON object of the expected shape.
    pub fn malformed_body(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::MalformedBody, message)
    }

    /// 415: writes take `application/json` only.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            ErrorCode::UnsupportedMediaType,
            "the body must be JSON: send content-type: application/json",
        )
    }

    /// 413, naming the limit.
    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than {limit_bytes} bytes"),
        )
    }

    /// 409: another user already has this `field` (`username` or `email`). The message names the field,
    /// never the other user.
    pub fn conflict(field: &str) -> Self {
        Self::new(
            ErrorCode::Conflict,
            format!("{field}: another user already has this {field}"),
        )
    }

    pub fn user_not_found(id: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::NotFound, format!("no user with id {id}"))
    }

    pub fn route_not_found() -> Self {
        Self::new(ErrorCode::NotFound, "no such route")
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            ErrorCode::MethodNotAllowed,
            "method not allowed on this route",
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "missing or invalid bearer token")
    }

    /// 429: too many writes from one caller; retry after `retry_after_secs`.
    pub fn rate_limited(retry_after_secs: u32) -> Self {
        Self {
            code: ErrorCode::RateLimited,
            message: "too many writes from this caller, retry later".to_string(),
            retry_after_secs: Some(retry_after_secs),
        }
    }

    /// 503 naming the backend in plain words (`"PostgreSQL"`), never its address.
    pub fn unavailable(what: &str, retry_after_secs: u32) -> Self {
        Self {
            code: ErrorCode::Unavailable,
            message: format!("{what} is unavailable, retry later"),
            retry_after_secs: Some(retry_after_secs),
        }
    }

    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error")
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
            },
        }
    }

    /// The serialised body, ready to send.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.body()).expect("error bodies serialise")
    }
}

/// Every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"error": {"code": "not_found", "message": "no user with id 9"}})))]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable: clients may match on it.
    pub code: ErrorCode,
    /// For people; may change. Never holds a secret or a backend's raw error.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_documented_shape() {
        let e = ApiError::user_not_found(9);
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"code": "not_found", "message": "no user with id 9"}})
        );
        assert_eq!(e.status(), 404);
    }

    #[test]
    fn codes_serialise_as_their_stable_names() {
        for code in [
            ErrorCode::InvalidId,
            ErrorCode::InvalidQuery,
            ErrorCode::MalformedBody,
            ErrorCode::Unauthorized,
            ErrorCode::InvalidToken,
            ErrorCode::InsufficientScope,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::Conflict,
            ErrorCode::PayloadTooLarge,
            ErrorCode::UnsupportedMediaType,
            ErrorCode::ValidationFailed,
            ErrorCode::RateLimited,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert!((400..=503).contains(&code.status()));
        }
    }

    #[test]
    fn validation_errors_name_the_field() {
        let e = ApiError::validation(ValidationError::new("email", "must contain '@'"));
        assert_eq!(e.status(), 422);
        assert!(e.message.starts_with("email:"));
    }

    #[test]
    fn unavailable_carries_retry_after() {
        let e = ApiError::unavailable("PostgreSQL", 2);
        assert_eq!(e.status(), 503);
        assert_eq!(e.retry_after_secs, Some(2));
    }
}
