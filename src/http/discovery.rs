//! Discovery and JWKS routes: public, cacheable, CORS `*` (SMART App Launch 2.2 conformance).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::oauth::discovery;

fn cacheable(mut response: Response, max_age: u32) -> Response {
    if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

pub async fn smart_configuration(State(state): State<AppState>) -> Response {
    cacheable(Json(discovery::smart_configuration(&state)).into_response(), 300)
}

pub async fn openid_configuration(State(state): State<AppState>) -> Response {
    cacheable(Json(discovery::openid_configuration(&state)).into_response(), 300)
}

pub async fn authorization_server_metadata(State(state): State<AppState>) -> Response {
    cacheable(Json(discovery::authorization_server_metadata(&state)).into_response(), 300)
}

/// The public JWK Set. Cached briefly so a rotated-in key is seen well before it signs.
pub async fn jwks(State(state): State<AppState>) -> Response {
    let body = state.keys.ring().jwks_json();
    let mut response = body.to_string().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    cacheable(response, 300)
}
