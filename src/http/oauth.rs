//! Handlers for the OAuth endpoints: extract -> call the protocol -> respond.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ErrorResponse;
use super::forms::OAuthForm;
use crate::oauth::error::OAuthError;
use crate::oauth::introspect::introspect;
use crate::oauth::register::{RegistrationError, register};
use crate::oauth::revoke::revoke;
use crate::oauth::token_endpoint::exchange_token;

fn respond<T: serde::Serialize>(status: StatusCode, result: Result<T, OAuthError>) -> Response {
    match result {
        Ok(body) => (status, Json(body)).into_response(),
        Err(err) => ErrorResponse(err).into_response(),
    }
}

pub async fn token(State(app): State<AppState>, form: OAuthForm) -> Response {
    let result = exchange_token(&app, form.request()).await;
    let nonce = result.as_ref().ok().and_then(|r| r.dpop_nonce.clone());
    let mut response = respond(StatusCode::OK, result);
    if let Some(value) = nonce.and_then(|n| axum::http::HeaderValue::from_str(&n).ok()) {
        response.headers_mut().insert(super::error::DPOP_NONCE, value);
    }
    response
}

pub async fn introspection(State(app): State<AppState>, form: OAuthForm) -> Response {
    respond(StatusCode::OK, introspect(&app, form.request()).await)
}

pub async fn revocation(State(app): State<AppState>, form: OAuthForm) -> Response {
    match revoke(&app, form.request()).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(err) => ErrorResponse(err).into_response(),
    }
}

pub async fn registration(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name| headers.get(name).and_then(|v: &axum::http::HeaderValue| v.to_str().ok());
    let result = register(&app, header(header::AUTHORIZATION), header(header::CONTENT_TYPE), &body).await;
    let result = result.map_err(|e| match e {
        RegistrationError::Disabled => {
            OAuthError::new(crate::oauth::error::ErrorCode::NotFound, "dynamic registration is disabled")
        }
        RegistrationError::Unauthorized(err) | RegistrationError::Rejected(err) => err,
    });
    respond(StatusCode::CREATED, result)
}

/// `POST /par` (RFC 9126).
pub async fn pushed_authorization_request(State(app): State<AppState>, form: OAuthForm) -> Response {
    respond(StatusCode::CREATED, app.push_authorization_request(form.request()).await)
}

/// `POST /launch`: an EHR registers a launch in context.
pub async fn launch(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name| headers.get(name).and_then(|v: &axum::http::HeaderValue| v.to_str().ok());
    respond(
        StatusCode::CREATED,
        app.launch_request(header(header::AUTHORIZATION), header(header::CONTENT_TYPE), &body).await,
    )
}
