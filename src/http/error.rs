//! The one mapping from protocol errors to HTTP responses: RFC 6749 §5.2 JSON bodies, 401 with
//! `WWW-Authenticate` where RFC 6749/6750 require it, and no internal detail in a 5xx.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::oauth::error::{Challenge, ErrorCode, OAuthError};

/// `DPoP-Nonce` (RFC 9449 §8).
pub const DPOP_NONCE: header::HeaderName = header::HeaderName::from_static("dpop-nonce");

/// An [`OAuthError`] on its way out.
#[derive(Debug)]
pub struct ErrorResponse(pub OAuthError);

impl From<OAuthError> for ErrorResponse {
    fn from(err: OAuthError) -> Self {
        Self(err)
    }
}

/// The HTTP status of an error code.
pub fn status_of(err: &OAuthError) -> StatusCode {
    if let Some(status) = err.status.and_then(|s| StatusCode::from_u16(s).ok()) {
        return status;
    }
    match err.code {
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
        ErrorCode::InsufficientScope | ErrorCode::AccessDenied => StatusCode::FORBIDDEN,
        ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn quoted(text: &str) -> String {
    text.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).collect()
}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        let err = self.0;
        let status = status_of(&err);
        crate::telemetry::oauth_refusal(err.code.as_str());
        let mut response =
            (status, Json(json!({"error": err.code.as_str(), "error_description": err.description}))).into_response();
        // RFC 9110 §15.5.2: every 401 carries a challenge. A client that sent no credentials is
        // told it may use HTTP Basic (RFC 6749 §5.2).
        let challenge = match err.challenge.or((status == StatusCode::UNAUTHORIZED).then_some(Challenge::Basic)) {
            Some(Challenge::Basic) => Some(format!("Basic realm=\"carebroker\", error=\"{}\"", err.code.as_str())),
            Some(Challenge::Bearer) => Some(format!(
                "Bearer realm=\"carebroker\", error=\"{}\", error_description=\"{}\"",
                err.code.as_str(),
                quoted(&err.description)
            )),
            Some(Challenge::Dpop) => Some(format!(
                "DPoP algs=\"{}\", error=\"{}\", error_description=\"{}\"",
                crate::token::dpop::ALGORITHMS.map(|a| a.as_str()).join(" "),
                err.code.as_str(),
                quoted(&err.description)
            )),
            None => None,
        };
        if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        if let Some(value) = err.dpop_nonce.as_deref().and_then(|n| HeaderValue::from_str(n).ok()) {
            response.headers_mut().insert(DPOP_NONCE, value);
        }
        response
    }
}
