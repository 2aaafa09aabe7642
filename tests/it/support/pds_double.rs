//! A test double of the NHS PDS FHIR API, following the documented responses
//! (`reference/nhs-identity.md` §4): `GET /Patient/{nhs}` with a required `X-Request-ID` UUID that
//! is echoed back; normal, restricted (`meta.security` R, no address/telecom/GP), superseded (the
//! answer's `id` differs), not found and invalidated (Spine error codes), and an outage switch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use parking_lot::Mutex;
use serde_json::{Value, json};

pub const NORMAL: &str = "9000000009";
pub const DEV_PATIENT: &str = "9434765919";
pub const RESTRICTED: &str = "9000000025";
pub const NOT_FOUND: &str = "9111231130";
pub const INVALIDATED: &str = "9912003071";
/// Superseded by [`NORMAL`].
pub const SUPERSEDED: &str = "9482807146";

#[derive(Clone, Default)]
pub struct PdsDouble {
    pub hits: Arc<AtomicUsize>,
    pub down: Arc<AtomicBool>,
    pub request_ids: Arc<Mutex<Vec<String>>>,
}

fn error(status: StatusCode, code: &str) -> Response {
    let body = json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "value",
        "details": {"coding": [{"system": "https://fhir.nhs.uk/R4/CodeSystem/Spine-ErrorOrWarningCode", "code": code}]}}]});
    (status, [("content-type", "application/fhir+json")], body.to_string()).into_response()
}

fn patient(id: &str, security: &str, given: &str, family: &str) -> Value {
    let mut p = json!({
        "resourceType": "Patient", "id": id,
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": id}],
        "meta": {"versionId": "2", "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": security}]},
        "name": [{"use": "usual", "given": [given], "family": family}], "gender": "female", "birthDate": "2010-10-22",
    });
    if security == "U" {
        p["address"] = json!([{"line": ["1 Trevelyan Square"], "postalCode": "LS1 6AE"}]);
        p["telecom"] = json!([{"system": "phone", "value": "01632960587"}]);
        p["generalPractitioner"] = json!([{"type": "Organization", "identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "Y12345"}}]);
    }
    p
}

fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text
            .chars()
            .enumerate()
            .all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
}

async fn read(State(double): State<PdsDouble>, headers: HeaderMap, Path(nhs): Path<String>) -> Response {
    double.hits.fetch_add(1, Ordering::SeqCst);
    let Some(request_id) = headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned) else {
        return error(StatusCode::BAD_REQUEST, "MISSING_VALUE");
    };
    if !is_uuid(&request_id) {
        return error(StatusCode::BAD_REQUEST, "INVALID_VALUE");
    }
    double.request_ids.lock().push(request_id.clone());
    if double.down.load(Ordering::SeqCst) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "UNABLE_TO_CALL_SERVICE");
    }
    let body = match nhs.as_str() {
        NORMAL | SUPERSEDED => patient(NORMAL, "U", "Jane", "Smith"),
        DEV_PATIENT => patient(DEV_PATIENT, "U", "Peter", "Patient"),
        RESTRICTED => patient(RESTRICTED, "R", "Janet", "Smythe"),
        INVALIDATED => return error(StatusCode::NOT_FOUND, "INVALIDATED_RESOURCE"),
        _ => return error(StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND"),
    };
    let mut response =
        (StatusCode::OK, [("content-type", "application/fhir+json"), ("etag", "W/\"2\"")], body.to_string())
            .into_response();
    response.headers_mut().insert("x-request-id", request_id.parse().expect("header"));
    response
}

impl PdsDouble {
    /// Serves the double on a free loopback port; returns its base URL.
    pub async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}/personal-demographics/FHIR/R4", listener.local_addr().expect("addr"));
        let app =
            Router::new().route("/personal-demographics/FHIR/R4/Patient/{nhs}", get(read)).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        base
    }
}
