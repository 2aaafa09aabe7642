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
use crate::app::App;
use crate::fhir::guard::{Caller, Presented};
use crate::fhir::outcome::FhirError;
use crate::fhir::refusal::RequestLine;
use crate::fhir::{FhirResponse, capability};

const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// What a FHIR request presents to the guard: its credentials, its peer address and its
/// request line (for auditing a refusal against what it was aimed at).
pub struct GuardInput {
    authorization: Option<String>,
    break_glass: Option<String>,
    ip: Option<String>,
    method: String,
    path: String,
    query: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for GuardInput {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Self {
            authorization: header(header::AUTHORIZATION.as_str()),
            break_glass: header("x-break-glass-reason"),
            ip: parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()),
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
        })
    }
}

fn http_date(millis: i64) -> Option<String> {
    let at = time::OffsetDateTime::from_unix_timestamp(millis.div_euclid(1000)).ok()?;
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    at.format(&format).ok()
}

fn fhir_response(result: Result<FhirResponse, FhirError>) -> Response {
    match result {
        Ok(ok) => {
            let status = StatusCode::from_u16(ok.status).unwrap_or(StatusCode::OK);
            let mut response = (status, Json(ok.body)).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
            if let Some(v) = ok.version.and_then(|v| HeaderValue::from_str(&format!("W/\"{v}\"")).ok()) {
                headers.insert(header::ETAG, v);
            }
            if let Some(v) = ok.last_modified.and_then(http_date).and_then(|d| HeaderValue::from_str(&d).ok()) {
                headers.insert(header::LAST_MODIFIED, v);
            }
            if let Some(v) = ok.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
                headers.insert(header::LOCATION, v);
            }
            response
        }
        Err(err) => fhir_error(&err),
    }
}

/// An OperationOutcome response, with the RFC 6750 challenge where one belongs.
pub fn fhir_error(err: &FhirError) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, Json(err.outcome())).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    let challenge = match err {
        FhirError::NoToken => Some("Bearer realm=\"carebroker\"".to_owned()),
        FhirError::InvalidToken(why) => Some(format!(
            "Bearer realm=\"carebroker\", error=\"invalid_token\", error_description=\"{}\"",
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

async fn caller(api: &App, input: &GuardInput) -> Result<Caller, Response> {
    let presented = Presented {
        authorization: input.authorization.as_deref(),
        break_glass: input.break_glass.as_deref(),
        ip: input.ip.as_deref(),
        line: RequestLine { method: &input.method, path: &input.path, query: input.query.as_deref() },
    };
    api.authenticate(presented).await.map_err(|e| fhir_error(&e))
}

fn fhir_body(headers: &HeaderMap) -> Result<(), Box<Response>> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|m| {
            matches!(m.trim().to_ascii_lowercase().as_str(), "application/fhir+json" | "application/json")
        });
    if ok { Ok(()) } else { Err(Box::new(fhir_error(&FhirError::UnsupportedMediaType))) }
}

macro_rules! guarded {
    ($state:ident, $input:ident, |$api:ident, $caller:ident| $call:expr) => {{
        let $api = &$state;
        match caller($api, &$input).await {
            Ok($caller) => fhir_response($call.await),
            Err(response) => response,
        }
    }};
}

pub async fn metadata(State(state): State<AppState>) -> Response {
    let mut response = Json(capability::capability_statement(&state.config)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}

pub async fn careplan_read(State(state): State<AppState>, input: GuardInput, Path(id): Path<String>) -> Response {
    guarded!(state, input, |api, c| api.read_careplan(&c, &id))
}

pub async fn careplan_vread(
    State(state): State<AppState>,
    input: GuardInput,
    Path((id, vid)): Path<(String, String)>,
) -> Response {
    guarded!(state, input, |api, c| api.vread_careplan(&c, &id, &vid))
}

pub async fn careplan_history(State(state): State<AppState>, input: GuardInput, Path(id): Path<String>) -> Response {
    guarded!(state, input, |api, c| api.history_careplan(&c, &id))
}

pub async fn careplan_search(State(state): State<AppState>, input: GuardInput, RawQuery(q): RawQuery) -> Response {
    guarded!(state, input, |api, c| api.search_careplans(&c, q.as_deref()))
}

pub async fn careplan_create(
    State(state): State<AppState>,
    headers: HeaderMap,
    input: GuardInput,
    body: Bytes,
) -> Response {
    if let Err(response) = fhir_body(&headers) {
        return *response;
    }
    guarded!(state, input, |api, c| api.create_careplan(&c, &body))
}

pub async fn careplan_update(
    State(state): State<AppState>,
    headers: HeaderMap,
    input: GuardInput,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(response) = fhir_body(&headers) {
        return *response;
    }
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::to_owned);
    guarded!(state, input, |api, c| api.update_careplan(&c, &id, if_match.as_deref(), &body))
}

pub async fn patient_read(State(state): State<AppState>, input: GuardInput, Path(id): Path<String>) -> Response {
    guarded!(state, input, |api, c| api.read_patient(&c, &id))
}

pub async fn patient_search(State(state): State<AppState>, input: GuardInput, RawQuery(q): RawQuery) -> Response {
    guarded!(state, input, |api, c| api.search_patients(&c, q.as_deref()))
}

pub async fn practitioner_read(State(state): State<AppState>, input: GuardInput, Path(id): Path<String>) -> Response {
    guarded!(state, input, |api, c| api.read_person(&c, "Practitioner", &id))
}

pub async fn related_person_read(State(state): State<AppState>, input: GuardInput, Path(id): Path<String>) -> Response {
    guarded!(state, input, |api, c| api.read_person(&c, "RelatedPerson", &id))
}

pub async fn audit_search(State(state): State<AppState>, input: GuardInput, RawQuery(q): RawQuery) -> Response {
    guarded!(state, input, |api, c| api.search_audit_events(&c, q.as_deref()))
}

pub async fn availability(State(state): State<AppState>, input: GuardInput, RawQuery(q): RawQuery) -> Response {
    let mut response = guarded!(state, input, |api, c| api.availability(&c, q.as_deref()));
    if response.status().is_success() {
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    response
}

pub async fn unsupported() -> Response {
    fhir_error(&FhirError::NotFound)
}
