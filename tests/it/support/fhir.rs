//! FHIR test helpers: access tokens minted with the app's own keys (as the authorization server
//! would issue them), care plans, and requests.

use axum::http::Method;
use carebroker::token::access::{AccessTokenClaims, mint};
use serde_json::{Value, json};

use super::{Reply, TestApp};

/// A token for a user (nurse at A9A5A) with `scope`, patient in context `patient`.
pub fn user_claims(app: &TestApp, scope: &str, patient: Option<&str>) -> AccessTokenClaims {
    AccessTokenClaims {
        iss: app.state.issuer().into(),
        sub: "dev:nurse".into(),
        aud: app.state.fhir_base().into(),
        exp: app.now() + 300,
        iat: app.now(),
        jti: carebroker::token::random_token(12),
        client_id: "viewer".into(),
        scope: scope.into(),
        grant_id: Some(carebroker::token::random_token(12)),
        fhir_user: Some("Practitioner/pr-nurse-1".into()),
        patient: patient.map(str::to_owned),
        roles: vec!["R8001".into()],
        org: Some("A9A5A".into()),
        ..Default::default()
    }
}

/// A token for the patient `nhs_number` themselves (NHS login), with `scope`.
pub fn patient_token(app: &TestApp, nhs_number: &str, scope: &str) -> String {
    let mut claims = user_claims(app, scope, Some(nhs_number));
    claims.sub = format!("nhs_login:{nhs_number}");
    claims.fhir_user = Some(format!("Patient/{nhs_number}"));
    claims.roles = vec!["patient".into()];
    claims.org = None;
    token(app, &claims)
}

/// A backend-services token.
pub fn system_claims(app: &TestApp, scope: &str) -> AccessTokenClaims {
    AccessTokenClaims {
        iss: app.state.issuer().into(),
        sub: "nhs111".into(),
        aud: app.state.fhir_base().into(),
        exp: app.now() + 300,
        iat: app.now(),
        jti: carebroker::token::random_token(12),
        client_id: "nhs111".into(),
        scope: scope.into(),
        ..Default::default()
    }
}

pub fn token(app: &TestApp, claims: &AccessTokenClaims) -> String {
    mint(&app.state.keys.ring(), claims).expect("mint")
}

pub async fn get(app: &TestApp, token: &str, path: &str) -> Reply {
    let auth = format!("Bearer {token}");
    app.request(Method::GET, path, &[("authorization", &auth)], Vec::new()).await
}

pub async fn send(
    app: &TestApp,
    method: Method,
    token: &str,
    path: &str,
    body: &Value,
    if_match: Option<&str>,
) -> Reply {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("authorization", auth.as_str()), ("content-type", "application/fhir+json")];
    if let Some(m) = if_match {
        headers.push(("if-match", m));
    }
    app.request(method, path, &headers, body.to_string().into_bytes()).await
}

pub const CRISIS: (&str, &str) = ("http://snomed.info/sct", "736373009");
pub const ADVANCE: (&str, &str) = ("http://snomed.info/sct", "734163000");

pub fn care_plan(patient: &str, category: (&str, &str), start: &str) -> Value {
    json!({
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "title": "Urgent care plan",
        "subject": {"reference": format!("Patient/{patient}")},
        "category": [{"coding": [{"system": category.0, "code": category.1}]}],
        "period": {"start": start},
        "activity": [{"detail": {"status": "scheduled", "description": "Call the community matron first"}}]
    })
}

/// A plan-maintaining system's token (the role the shipped policy gives `backend-demo`).
pub fn writer_token(app: &TestApp) -> String {
    let mut claims = system_claims(app, "system/CarePlan.cruds system/Patient.rs");
    claims.roles = vec!["plan-maintainer".into()];
    token(app, &claims)
}

/// Creates a plan as a system writer and returns its id.
pub async fn create_plan(app: &TestApp, plan: &Value) -> String {
    let writer = writer_token(app);
    let reply = send(app, Method::POST, &writer, "/fhir/CarePlan", plan, None).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()["id"].as_str().expect("id").to_owned()
}

/// An app with the dev seeds (Patients 9434765919, 9000000009 at A9A5A; 9449306621, 9960308243 at VNC12).
pub async fn fhir_app() -> TestApp {
    TestApp::builder().with_dev_users().build().await
}

/// Stores `resource` (with its `resourceType` and `id`) directly, as seeding does.
pub async fn put_resource(app: &TestApp, resource: &Value) {
    let kind = resource["resourceType"].as_str().expect("resourceType");
    let id = resource["id"].as_str().expect("id");
    let data = resource.to_string();
    let index = carebroker::fhir::resources::index_of(kind, resource);
    let write =
        carebroker::store::ResourceWrite { resource_type: kind, id, data: &data, index: &index, now: app.now() * 1000 };
    assert!(app.state.stores.durable.create_resource_if_absent(write).await.expect("store"), "{kind}/{id} exists");
}

/// The sequence number of the newest audit record (0 when none).
pub async fn audit_head(app: &TestApp) -> i64 {
    let mut after = 0;
    loop {
        let page = app.state.stores.durable.audit_records(after, 1000).await.expect("audit");
        match page.last() {
            Some(last) => after = last.seq,
            None => return after,
        }
    }
}

/// Audit records after `seq`, as (patient column, the event JSON).
pub async fn audit_after(app: &TestApp, seq: i64) -> Vec<(Option<String>, Value)> {
    let records = app.state.stores.durable.audit_records(seq, 10_000).await.expect("audit");
    records.into_iter().map(|r| (r.patient.clone(), serde_json::from_str(&r.data).expect("event json"))).collect()
}
