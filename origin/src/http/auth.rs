//! Bearer-token checks: the API routes (the edge, and direct callers, present the same token) and the
//! admin routes (operators, with a token of their own).
//!
//! Who asked for a write ([`actor`]): the edge names its verified client in `x-aside-caller`. The
//! header is believed only on a request that presented an origin token (only the edge and operators
//! hold one); without configured tokens it is removed before any handler sees it.

use std::sync::Arc;

use aside_shared::ApiError;
use aside_shared::headers::X_ASIDE_CALLER;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;

use super::{AppState, Error};
use crate::secret::Secret;

/// Lets the request through when no token is configured, or when `Authorization: Bearer <t>` matches
/// one of the configured tokens (several during a rotation).
pub async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if state.tokens.is_empty() {
        let mut request = request;
        request.headers_mut().remove(X_ASIDE_CALLER);
        return next.run(request).await;
    }
    guarded(&state.tokens, request, next).await
}

/// The longest `x-aside-caller` recorded; a longer one is cut (at a character boundary).
const MAX_ACTOR_BYTES: usize = 256;

/// The actor of a write, for the audit column of the outbox: the edge's client (`x-aside-caller`) on
/// a request that passed [`require_token`] with a token, `origin-token` for such a request without
/// the header (a direct caller), `None` when the origin has no tokens (nobody is authenticated).
pub fn actor(state: &AppState, headers: &HeaderMap) -> Option<String> {
    if state.tokens.is_empty() {
        return None;
    }
    let caller = headers
        .get(X_ASIDE_CALLER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    Some(match caller {
        Some(caller) => {
            let mut end = caller.len().min(MAX_ACTOR_BYTES);
            while !caller.is_char_boundary(end) {
                end -= 1;
            }
            caller[..end].to_string()
        }
        None => "origin-token".to_string(),
    })
}

/// The admin routes: the request must carry one of the admin tokens. (Without admin tokens the admin
/// routes are not mounted at all, so there is no "open" case here.)
pub async fn require_admin_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    guarded(&state.admin_tokens, request, next).await
}

/// Runs the request if its bearer token is one of `tokens`, else answers 401. Every comparison is
/// constant-time and all tokens are compared, so timing tells nothing about which token or how much of
/// it matched. An empty list admits nobody.
async fn guarded(tokens: &[Secret], request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let mut matched = subtle::Choice::from(0);
    for token in tokens {
        matched |= token.expose().as_bytes().ct_eq(presented.as_bytes());
    }
    if bool::from(matched) && !presented.is_empty() {
        next.run(request).await
    } else {
        let mut response = Error(ApiError::unauthorized()).into_response();
        response.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        response
    }
}
