//! A test double of the Validated Relationships Service FHIR API (`docs/proxy-access.md`):
//! `GET /Consent?performer:identifier=…&patient:identifier=…&status=…` answering a searchset
//! Bundle of proxy roles (FHIR `Consent`: the patient, the proxy as `performer`, the legal basis in
//! `policyRule`, `provision.period`), with the documented error codes, a required `X-Request-ID`,
//! and switches to end a role or take the service down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use parking_lot::Mutex;
use serde_json::{Value, json};

const NHS: &str = "https://fhir.nhs.uk/Id/nhs-number";

#[derive(Clone, Default)]
pub struct VrsDouble {
    pub roles: Arc<Mutex<Vec<Value>>>,
    pub hits: Arc<AtomicUsize>,
    pub down: Arc<AtomicBool>,
}

fn error(status: StatusCode, code: &str, diagnostics: &str) -> Response {
    let body = json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid",
        "details": {"coding": [{"system": "https://fhir.nhs.uk/R4/CodeSystem/ValidatedRelationships-ErrorOrWarningCode",
            "version": "1", "code": code}]}, "diagnostics": diagnostics}]});
    (status, [("content-type", "application/fhir+json")], body.to_string()).into_response()
}

/// `system|value` or a bare value, as an NHS number of ten digits.
fn nhs_number(param: &str) -> Option<String> {
    let value = param.strip_prefix(&format!("{NHS}|")).unwrap_or(param);
    (value.len() == 10 && value.bytes().all(|b| b.is_ascii_digit())).then(|| value.to_owned())
}

async fn search(State(vrs): State<VrsDouble>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    vrs.hits.fetch_add(1, Ordering::SeqCst);
    if vrs.down.load(Ordering::SeqCst) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "DOWNSTREAM_SERVICE_ERROR", "the service is unavailable");
    }
    if headers.get("x-request-id").is_none() {
        return error(StatusCode::BAD_REQUEST, "MISSING_HEADER", "X-Request-ID is required");
    }
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let (performer, patient) = (get("performer:identifier"), get("patient:identifier"));
    if performer.is_none() && patient.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "MISSING_IDENTIFIER_VALUE",
            "give performer:identifier or patient:identifier",
        );
    }
    let (performer, patient) = (performer.map(nhs_number), patient.map(nhs_number));
    if matches!(performer, Some(None)) || matches!(patient, Some(None)) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_IDENTIFIER_VALUE", "Not a valid NHS Number");
    }
    let statuses: Vec<&str> = get("status").map(|s| s.split(',').collect()).unwrap_or_default();
    let matches: Vec<Value> = vrs
        .roles
        .lock()
        .iter()
        .filter(|c| performer.clone().flatten().is_none_or(|p| c["performer"][0]["identifier"]["value"] == p.as_str()))
        .filter(|c| patient.clone().flatten().is_none_or(|p| c["patient"]["identifier"]["value"] == p.as_str()))
        .filter(|c| statuses.is_empty() || statuses.iter().any(|s| c["status"] == *s))
        .cloned()
        .collect();
    let entries: Vec<Value> = matches
        .iter()
        .map(|c| json!({"fullUrl": format!("https://vrs.test/Consent/{}", c["id"].as_str().unwrap_or_default()), "resource": c, "search": {"mode": "match"}}))
        .collect();
    let mut bundle = json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len()});
    if !entries.is_empty() {
        bundle["entry"] = Value::Array(entries);
    }
    (StatusCode::OK, [("content-type", "application/fhir+json")], bundle.to_string()).into_response()
}

impl VrsDouble {
    /// Serves the double on a free loopback port; returns its base URL.
    pub async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}/validated-relationships/FHIR/R4", listener.local_addr().expect("addr"));
        let app = Router::new().route("/validated-relationships/FHIR/R4/Consent", get(search)).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        base
    }

    /// Adds an active proxy role of `proxy` for `patient` (a lasting power of attorney).
    pub fn grant(&self, id: &str, proxy: &str, patient: &str) {
        self.roles.lock().push(json!({
            "resourceType": "Consent", "id": id, "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "INFA"}]}],
            "patient": {"identifier": {"system": NHS, "value": patient}},
            "performer": [{"identifier": {"system": NHS, "value": proxy}}],
            "policyRule": {"coding": [{"system": "https://fhir.nhs.uk/England/CodeSystem/England-NHSProxyLegalBasis",
                "code": "health-and-welfare-lasting-power-of-attorney"}]},
            "provision": {"type": "permit", "period": {"start": "2025-01-01"}}
        }));
    }

    /// Ends role `id` (VRS marks it inactive with a status reason).
    pub fn end(&self, id: &str) {
        for role in self.roles.lock().iter_mut().filter(|r| r["id"] == id) {
            role["status"] = json!("inactive");
        }
    }
}
