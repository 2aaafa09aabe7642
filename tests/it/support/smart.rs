//! SMART app helpers: a public app and a trusted EHR, PKCE pairs, authorize URLs, code exchange.

use carebroker::domain::client::{ClientMetadata, EhrLaunchTrust};
use carebroker::domain::pkce;
use serde_json::{Value, json};

use super::browser::query_of;
use super::{FHIR_BASE, Reply, TestApp};

pub const APP: &str = "viewer";
pub const APP_REDIRECT: &str = "https://viewer.example/callback";
pub const EHR: &str = "ehr";
pub const EHR_SECRET: &str = "ehr-secret-ehr-secret-ehr-secret";

pub fn public_app() -> ClientMetadata {
    ClientMetadata {
        client_id: APP.into(),
        client_name: Some("Care plan viewer".into()),
        token_endpoint_auth_method: "none".into(),
        redirect_uris: vec![APP_REDIRECT.into()],
        launch_uri: Some("https://viewer.example/launch".into()),
        post_logout_redirect_uris: vec!["https://viewer.example/bye".into()],
        grant_types: vec!["authorization_code".into(), "refresh_token".into()],
        scope: "launch launch/patient openid fhirUser profile offline_access online_access patient/*.cruds user/*.rs"
            .into(),
        ..Default::default()
    }
}

pub fn trusted_ehr() -> ClientMetadata {
    ClientMetadata {
        client_id: EHR.into(),
        token_endpoint_auth_method: "client_secret_basic".into(),
        client_secret_hash: Some(carebroker::domain::secret::hash_secret(EHR_SECRET)),
        ehr_launch: Some(EhrLaunchTrust {
            apps: vec![APP.into()],
            orgs: vec!["A9A5A".into()],
            role_codes: vec!["R8000".into(), "R8001".into()],
            subjects: vec!["*".into()],
            skip_consent: true,
            assurance: 2,
        }),
        ..Default::default()
    }
}

pub fn ehr_basic() -> String {
    basic(EHR, EHR_SECRET)
}

/// An HTTP Basic `Authorization` value.
pub fn basic(user: &str, secret: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}")))
}

/// A PKCE verifier and its S256 challenge.
pub fn pkce_pair() -> (String, String) {
    let verifier = carebroker::token::random_token(48);
    let challenge = pkce::s256(&verifier);
    (verifier, challenge)
}

/// `/authorize?...` for the app with sensible defaults; `overrides` replace or (with "") remove.
pub fn authorize_path(challenge: &str, overrides: &[(&str, &str)]) -> String {
    let mut params: Vec<(String, String)> = vec![
        ("response_type".into(), "code".into()),
        ("client_id".into(), APP.into()),
        ("redirect_uri".into(), APP_REDIRECT.into()),
        ("scope".into(), "launch/patient openid fhirUser patient/CarePlan.rs offline_access".into()),
        ("state".into(), "st-123".into()),
        ("aud".into(), FHIR_BASE.into()),
        ("code_challenge".into(), challenge.into()),
        ("code_challenge_method".into(), "S256".into()),
    ];
    for (k, v) in overrides {
        params.retain(|(name, _)| name != k);
        if !v.is_empty() {
            params.push(((*k).into(), (*v).into()));
        }
    }
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &params {
        s.append_pair(k, v);
    }
    format!("/authorize?{}", s.finish())
}

/// Registers an EHR launch and returns the launch id.
pub async fn register_launch(app: &TestApp, body: Value) -> String {
    let reply = post_launch(app, &body).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()["launch"].as_str().unwrap().to_owned()
}

pub async fn post_launch(app: &TestApp, body: &Value) -> Reply {
    let auth = ehr_basic();
    app.request(
        axum::http::Method::POST,
        "/launch",
        &[("content-type", "application/json"), ("authorization", &auth)],
        body.to_string().into_bytes(),
    )
    .await
}

pub fn launch_body() -> Value {
    json!({
        "client_id": APP,
        "patient": "9434765919",
        "encounter": "enc-1",
        "fhir_context": [{"reference": "CarePlan/cp-1"}, {"reference": "Questionnaire/q1", "role": "https://example.org/role/form"}],
        "intent": "reconcile-plan",
        "need_patient_banner": false,
        "smart_style_url": "https://ehr.example/style.json",
        "tenant": "A9A5A",
        "user": {"sub": "u-555", "name": "Nadia Nurse", "fhir_user": "Practitioner/pr-nurse-1", "role_codes": ["R8001"], "org": "A9A5A"}
    })
}

/// The code from a successful redirect, checking `state` and `iss`.
pub fn code_from(reply: &Reply, state: &str) -> String {
    let location = reply.header("location").unwrap_or_else(|| panic!("no redirect: {} {}", reply.status, reply.text()));
    let q = query_of(location);
    assert!(location.starts_with(APP_REDIRECT), "{location}");
    assert_eq!(q.get("state").map(String::as_str), Some(state), "{location}");
    assert_eq!(q.get("iss").map(String::as_str), Some(super::ISSUER), "{location}");
    q.get("code").unwrap_or_else(|| panic!("no code: {location}")).clone()
}

/// The error of an error redirect (asserting `state`, `iss`, no `code`).
pub fn error_from(reply: &Reply, state: Option<&str>) -> String {
    let location = reply.header("location").unwrap_or_else(|| panic!("no redirect: {} {}", reply.status, reply.text()));
    let q = query_of(location);
    assert!(!q.contains_key("code"), "an error redirect carries no code: {location}");
    assert_eq!(q.get("state").map(String::as_str), state, "{location}");
    assert_eq!(q.get("iss").map(String::as_str), Some(super::ISSUER));
    assert!(q.contains_key("error_description"));
    q["error"].clone()
}

pub async fn exchange(app: &TestApp, code: &str, verifier: &str) -> Reply {
    app.post_form(
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", APP_REDIRECT),
            ("code_verifier", verifier),
            ("client_id", APP),
        ],
        &[],
    )
    .await
}

pub async fn smart_app() -> TestApp {
    TestApp::builder().with_client(public_app()).with_client(trusted_ehr()).with_dev_users().build().await
}
