//! FHIR routes under `/fhir` and the availability check: extract -> guard -> call -> respond
//! with `application/fhir+json`, ETag, Last-Modified and Location; errors as OperationOutcome
//! with RFC 6750 `WWW-Authenticate` on 401/403.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::fhir::guard::{Caller, Presented};
use crate::fhir::outcome::FhirError;
use crate::fhir::refusal::RequestLine;
use crate::fhir::{FhirResponse, capability};

const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// The caller of a FHIR route, authenticated: the bearer token, the peer address and the
/// break-glass header go to the guard ([`crate::app::App::authenticate`]), which verifies the token with
/// [`crate::app::App::check_access_token`] and audits a refusal against the request line it was aimed at.
impl FromRequestParts<AppState> for Caller {
    type Rejection = FhirError;
    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
        let method = parts.method.to_string();
        let dpop = super::forms::Dpop::of(&parts.headers);
        let url = app.config.endpoint(parts.uri.path());
        let presented = Presented {
            authorization: header(header::AUTHORIZATION.as_str()),
            break_glass: header("x-break-glass-reason"),
            ip: ip.as_deref(),
            dpop: dpop.header(),
            url: &url,
            line: RequestLine { method: &method, path: parts.uri.path(), query: parts.uri.query() },
        };
        app.authenticate(presented).await
    }
}

/// A FHIR request body must be FHIR JSON (or plain JSON); checked before the caller is.
pub struct FhirJson;

impl<S: Send + Sync> FromRequestParts<S> for FhirJson {
    type Rejection = FhirError;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ok = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|ct| ct.split(';').next())
            .is_some_and(|m| {
                matches!(m.trim().to_ascii_lowercase().as_str(), "application/fhir+json" | "application/json")
            });
        if ok { Ok(Self) } else { Err(FhirError::UnsupportedMediaType) }
    }
}

/// What every FHIR handler returns.
pub type FhirResult = Result<FhirResponse, FhirError>;

fn http_date(millis: i64) -> Option<String> {
    let at = time::OffsetDateTime::from_unix_timestamp(millis.div_euclid(1000)).ok()?;
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    at.format(&format).ok()
}

impl IntoResponse for FhirResponse {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let mut response = (status, Json(self.body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        if let Some(v) = self.version.and_then(|v| HeaderValue::from_str(&format!("W/\"{v}\"")).ok()) {
            headers.insert(header::ETAG, v);
        }
        if let Some(v) = self.last_modified.and_then(http_date).and_then(|d| HeaderValue::from_str(&d).ok()) {
            headers.insert(header::LAST_MODIFIED, v);
        }
        if let Some(v) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            headers.insert(header::LOCATION, v);
        }
        response
    }
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        fhir_error(&self)
    }
}

/// An OperationOutcome response, with the RFC 6750 challenge where one belongs.
pub fn fhir_error(err: &FhirError) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST);
    crate::telemetry::fhir_refusal(status.as_u16());
    let mut response = (status, Json(err.outcome())).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    let challenge = match err {
        FhirError::NoToken => Some("Bearer realm=\"carebroker\"".to_owned()),
        FhirError::InvalidToken(why) => Some(format!(
            "Bearer realm=\"carebroker\", error=\"invalid_token\", error_description=\"{}\"",
            why.replace('"', "'")
        )),
        FhirError::InvalidDpop { code, why } => Some(format!(
            "DPoP algs=\"{}\", error=\"{code}\", error_description=\"{}\"",
            crate::token::dpop::ALGORITHMS.map(|a| a.as_str()).join(" "),
            why.replace('"', "'")
        )),
        FhirError::InsufficientScope(why) => Some(format!(
            "Bearer realm=\"carebroker\", error=\"insufficient_scope\", error_description=\"{}\"",
            why.replace('"', "'")
        )),
        _ => None,
    };
    if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

pub async fn metadata(State(app): State<AppState>) -> Response {
    let mut response = Json(capability::capability_statement(&app.config)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}

/// The `If-Match` header of an update.
fn if_match(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok())
}

pub async fn careplan_read(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> FhirResult {
    app.read_careplan(&caller, &id).await
}

pub async fn careplan_vread(
    State(app): State<AppState>,
    caller: Caller,
    Path((id, vid)): Path<(String, String)>,
) -> FhirResult {
    app.vread_careplan(&caller, &id, &vid).await
}

pub async fn careplan_history(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> FhirResult {
    app.history_careplan(&caller, &id).await
}

pub async fn careplan_search(State(app): State<AppState>, caller: Caller, RawQuery(q): RawQuery) -> FhirResult {
    app.search_careplans(&caller, q.as_deref()).await
}

pub async fn careplan_create(State(app): State<AppState>, _: FhirJson, caller: Caller, body: Bytes) -> FhirResult {
    app.create_careplan(&caller, &body).await
}

pub async fn careplan_update(
    State(app): State<AppState>,
    _: FhirJson,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult {
    app.update_careplan(&caller, &id, if_match(&headers), &body).await
}

pub async fn consent_search(State(app): State<AppState>, caller: Caller, RawQuery(q): RawQuery) -> FhirResult {
    app.search_consents(&caller, q.as_deref()).await
}

pub async fn consent_create(State(app): State<AppState>, _: FhirJson, caller: Caller, body: Bytes) -> FhirResult {
    app.create_consent(&caller, &body).await
}

pub async fn consent_read(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> FhirResult {
    app.read_consent(&caller, &id).await
}

pub async fn consent_update(
    State(app): State<AppState>,
    _: FhirJson,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult {
    app.update_consent(&caller, &id, if_match(&headers), &body).await
}

pub async fn patient_read(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> FhirResult {
    app.read_patient(&caller, &id).await
}

pub async fn patient_search(State(app): State<AppState>, caller: Caller, RawQuery(q): RawQuery) -> FhirResult {
    app.search_patients(&caller, q.as_deref()).await
}

pub async fn practitioner_read(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> FhirResult {
    app.read_person(&caller, "Practitioner", &id).await
}

pub async fn related_person_read(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> FhirResult {
    app.read_person(&caller, "RelatedPerson", &id).await
}

pub async fn audit_search(State(app): State<AppState>, caller: Caller, RawQuery(q): RawQuery) -> FhirResult {
    app.search_audit_events(&caller, q.as_deref()).await
}

/// The availability check answers plain JSON, not a FHIR resource.
pub async fn availability(State(app): State<AppState>, caller: Caller, RawQuery(q): RawQuery) -> Response {
    let mut response = app.availability(&caller, q.as_deref()).await.into_response();
    if response.status().is_success() {
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    response
}

pub async fn unsupported() -> FhirError {
    FhirError::NotFound
}
