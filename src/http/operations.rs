//! What operators and their tools ask of a node: readiness, the OpenAPI document, metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;

/// `GET /readyz`: 200 once the keys, the policy and both stores are ready, else 503 naming what
/// is not (`/healthz` is the liveness probe).
pub async fn readyz(State(app): State<AppState>) -> Response {
    match app.readiness().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(what) => {
            tracing::warn!(not_ready = %what, "readiness probe failed");
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {what}")).into_response()
        }
    }
}

/// `GET /openapi.json`: the OpenAPI 3.1 document of carebroker's own endpoints.
pub async fn openapi_document(State(app): State<AppState>) -> Response {
    axum::Json(super::openapi::document(app.issuer())).into_response()
}

/// `GET /metrics`: Prometheus text format (`telemetry` lists what is exported).
pub async fn metrics(State(app): State<AppState>) -> Response {
    let since = app.keys.ring().signers_since();
    match crate::telemetry::render(since, app.clock.now()) {
        Some(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "metrics are reported to another recorder").into_response(),
    }
}
