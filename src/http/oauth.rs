//! Handlers for the OAuth endpoints: extract -> call the protocol -> respond.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::ErrorResponse;
use crate::oauth::error::OAuthError;
use crate::oauth::introspect::{IntrospectionRequest, introspect};
use crate::oauth::register::{RegistrationError, register};
use crate::oauth::revoke::{RevocationRequest, revoke};
use crate::oauth::token_endpoint::{TokenRequest, exchange_token};

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn respond<T: serde::Serialize>(result: Result<T, OAuthError>) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(err) => ErrorResponse(err).into_response(),
    }
}

pub async fn token(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let request = TokenRequest {
        content_type: header_str(&headers, header::CONTENT_TYPE),
        authorization: header_str(&headers, header::AUTHORIZATION),
        body: &body,
    };
    respond(exchange_token(&state, request).await)
}

pub async fn introspection(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let request = IntrospectionRequest {
        content_type: header_str(&headers, header::CONTENT_TYPE),
        authorization: header_str(&headers, header::AUTHORIZATION),
        body: &body,
    };
    respond(introspect(&state, request).await)
}

pub async fn revocation(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let request = RevocationRequest {
        content_type: header_str(&headers, header::CONTENT_TYPE),
        authorization: header_str(&headers, header::AUTHORIZATION),
        body: &body,
    };
    match revoke(&state, request).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(err) => ErrorResponse(err).into_response(),
    }
}

pub async fn registration(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let result = register(
        &state,
        header_str(&headers, header::AUTHORIZATION),
        header_str(&headers, header::CONTENT_TYPE),
        &body,
    )
    .await;
    match result {
        Ok(created) => (StatusCode::CREATED, Json(created)).into_response(),
        Err(RegistrationError::Disabled) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "not_found", "error_description": "dynamic registration is disabled"})),
        )
            .into_response(),
        Err(RegistrationError::Unauthorized(err) | RegistrationError::Rejected(err)) => {
            ErrorResponse(err).into_response()
        }
    }
}
