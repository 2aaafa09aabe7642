//! The authorization endpoint: every refusal, and the interactive standalone flow (sign-in,
//! patient picker, consent) with its CSRF and session binding.

use serde_json::json;

use crate::support::browser::{Browser, hidden_value, query_of};
use crate::support::smart::*;
use crate::support::{FHIR_BASE, TestApp};

#[tokio::test]
async fn a_bad_client_or_redirect_uri_gets_a_page_and_is_never_redirected() {
    let app = smart_app().await;
    let (_, challenge) = pkce_pair();
    for overrides in [
        vec![("client_id", "")],
        vec![("client_id", "stranger")],
        vec![("redirect_uri", "")],
        vec![("redirect_uri", "https://viewer.example/callback/")],
        vec![("redirect_uri", "https://viewer.example/callback?x=1")],
        vec![("redirect_uri", "https://evil.example/callback")],
    ] {
        let reply = app.get(&authorize_path(&challenge, &overrides)).await;
        assert_eq!(reply.status, 400, "{overrides:?}");
        assert!(reply.header("location").is_none(), "{overrides:?} must not redirect");
        assert!(reply.header("content-type").is_some_and(|c| c.starts_with("text/html")));
        assert!(reply.text().contains("<h1>"), "an error page");
    }
    // repeated parameters: the redirect target cannot be trusted either
    let doubled = format!("{}&state=again", authorize_path(&challenge, &[]));
    let reply = app.get(&doubled).await;
    assert_eq!(reply.status, 400);
    assert!(reply.header("location").is_none());
}

#[tokio::test]
async fn every_other_error_redirects_with_error_state_and_iss() {
    let app = smart_app().await;
    let (_, challenge) = pkce_pair();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("response_type", "token")], "unsupported_response_type"),
        (vec![("response_type", "")], "invalid_request"),
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge_method", "")], "invalid_request"),
        (vec![("code_challenge", "too-short")], "invalid_request"),
        (vec![("aud", "")], "invalid_request"),
        (vec![("aud", "https://inferno.healthit.gov/invalid_aud")], "invalid_request"),
        (vec![("aud", ""), ("resource", "https://elsewhere.example/fhir")], "invalid_target"),
        (vec![("scope", "patient/CarePlan.zz")], "invalid_scope"),
        (vec![("scope", "system/*.rs")], "invalid_scope"),
        (vec![("scope", "user/Patient.d")], "invalid_scope"),
        (vec![("launch", "no-such-launch"), ("scope", "launch openid")], "invalid_request"),
        (vec![("request", "eyJhbGciOiJub25lIn0.e30.")], "invalid_request"),
        (vec![("response_mode", "fragment")], "invalid_request"),
        (vec![("prompt", "none login")], "invalid_request"),
        (vec![("max_age", "-1")], "invalid_request"),
        (vec![("prompt", "none")], "login_required"),
    ];
    for (overrides, code) in cases {
        let reply = app.get(&authorize_path(&challenge, &overrides)).await;
        assert_eq!(reply.status, 302, "{overrides:?}: {}", reply.text());
        assert_eq!(error_from(&reply, Some("st-123")), code, "{overrides:?}");
    }
    // state is required, and the error says so without inventing one
    let reply = app.get(&authorize_path(&challenge, &[("state", "")])).await;
    assert_eq!(error_from(&reply, None), "invalid_request");
}

#[tokio::test]
async fn a_client_without_the_code_grant_is_unauthorized() {
    let key = crate::support::keys::ClientKey::generate(carebroker::token::jose::Algorithm::ES256);
    let mut backend = crate::support::keys::backend_client("viewer", &key, "system/*.rs");
    backend.redirect_uris = vec![APP_REDIRECT.into()];
    let app = TestApp::builder().with_client(backend).build().await;
    let (_, challenge) = pkce_pair();
    let reply = app.get(&authorize_path(&challenge, &[])).await;
    assert_eq!(error_from(&reply, Some("st-123")), "unauthorized_client");
}

/// Walks sign-in, picker and consent; returns the browser and the final reply.
async fn standalone(
    app: &TestApp,
    challenge: &str,
    username: &str,
    overrides: &[(&str, &str)],
) -> (Browser, crate::support::Reply) {
    let mut browser = Browser::new();
    let reply = browser.get(app, &authorize_path(challenge, overrides)).await;
    assert_eq!(reply.status, 303, "{}", reply.text());
    assert!(reply.header("location").unwrap().starts_with("/signin?req="));
    let page = browser.follow(app, &reply).await;
    assert_eq!(page.status, 200);
    let html = page.text();
    let (csrf, req) = (hidden_value(&html, "csrf"), hidden_value(&html, "req"));
    let reply = browser
        .post(app, "/signin", &[("csrf", &csrf), ("req", &req), ("username", username), ("password", username)], &[])
        .await;
    (browser, reply)
}

#[tokio::test]
async fn standalone_launch_signs_in_picks_a_patient_and_asks_consent() {
    let app = smart_app().await;
    let (verifier, challenge) = pkce_pair();
    let weird_state = "state with spaces & ünïcode/+=";
    let (mut browser, reply) =
        standalone(&app, &challenge, "nurse", &[("state", weird_state), ("nonce", "n-42")]).await;
    assert!(reply.header("location").unwrap().starts_with("/authorize/patient?req="), "{}", reply.text());

    let page = browser.follow(&app, &reply).await;
    let html = page.text();
    assert!(html.contains("9434765919") && html.contains("9000000009"), "A9A5A patients listed");
    assert!(!html.contains("9449306621"), "another organisation's patient is not listed");
    let (csrf, req) = (hidden_value(&html, "csrf"), hidden_value(&html, "req"));
    // a patient not offered is refused and the picker shown again
    let refused = browser
        .post(&app, "/authorize/patient", &[("csrf", &csrf), ("req", &req), ("patient", "9449306621")], &[])
        .await;
    assert_eq!(refused.status, 400);
    let reply = browser
        .post(&app, "/authorize/patient", &[("csrf", &csrf), ("req", &req), ("patient", "9000000009")], &[])
        .await;
    assert!(reply.header("location").unwrap().starts_with("/authorize/consent?req="));

    let page = browser.follow(&app, &reply).await;
    let html = page.text();
    assert!(html.contains("name=\"scope\" type=\"checkbox\" value=\"patient/CarePlan.rs\""), "{html}");
    assert!(html.contains("name=\"decision\" value=\"allow\"") && html.contains("name=\"decision\" value=\"deny\""));
    assert!(page.header("content-security-policy").is_some_and(|c| c.contains("frame-ancestors 'none'")));
    // untick fhirUser: the grant is narrowed to what stayed ticked
    let reply = browser
        .post(
            &app,
            "/authorize/consent",
            &[
                ("csrf", &csrf),
                ("req", &req),
                ("scope", "launch/patient"),
                ("scope", "openid"),
                ("scope", "patient/CarePlan.rs"),
                ("scope", "offline_access"),
                ("decision", "allow"),
            ],
            &[],
        )
        .await;
    assert_eq!(reply.status, 303);
    let code = code_from(&reply, weird_state);
    let tokens = exchange(&app, &code, &verifier).await;
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    let body = tokens.json();
    assert_eq!(body["patient"], "9000000009");
    assert_eq!(body["scope"], "launch/patient openid patient/CarePlan.rs offline_access");
    assert!(body["refresh_token"].is_string() && body["id_token"].is_string());
    let (_, id) = crate::support::jwt_parts(body["id_token"].as_str().unwrap());
    assert_eq!(id["nonce"], "n-42");
    assert!(id.get("fhirUser").is_none(), "fhirUser was unticked");
}

#[tokio::test]
async fn deny_and_untick_everything_are_access_denied() {
    let app = smart_app().await;
    let (_, challenge) = pkce_pair();
    for fields in [vec![("decision", "deny"), ("scope", "openid")], vec![("decision", "allow")]] {
        let (mut browser, reply) = standalone(&app, &challenge, "patient", &[]).await;
        // a patient signing in is their own patient: no picker
        assert!(reply.header("location").unwrap().starts_with("/authorize/consent?req="), "{}", reply.text());
        let html = browser.follow(&app, &reply).await.text();
        let (csrf, req) = (hidden_value(&html, "csrf"), hidden_value(&html, "req"));
        let mut form = vec![("csrf", csrf.as_str()), ("req", req.as_str())];
        form.extend(fields.iter().copied());
        let reply = browser.post(&app, "/authorize/consent", &form, &[]).await;
        assert_eq!(error_from(&reply, Some("st-123")), "access_denied");
    }
}

#[tokio::test]
async fn wrong_passwords_forms_without_csrf_and_foreign_origins_are_refused() {
    let app = smart_app().await;
    let (_, challenge) = pkce_pair();
    let mut browser = Browser::new();
    let reply = browser.get(&app, &authorize_path(&challenge, &[])).await;
    let html = browser.follow(&app, &reply).await.text();
    let (csrf, req) = (hidden_value(&html, "csrf"), hidden_value(&html, "req"));

    let wrong = browser
        .post(&app, "/signin", &[("csrf", &csrf), ("req", &req), ("username", "nurse"), ("password", "guess")], &[])
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.text().contains("There is a problem") && wrong.header("location").is_none());

    let no_csrf =
        browser.post(&app, "/signin", &[("req", &req), ("username", "nurse"), ("password", "nurse")], &[]).await;
    assert_eq!(no_csrf.status, 403);
    let forged = browser
        .post(&app, "/signin", &[("csrf", "forged"), ("req", &req), ("username", "nurse"), ("password", "nurse")], &[])
        .await;
    assert_eq!(forged.status, 403);
    let cross_site = browser
        .post(
            &app,
            "/signin",
            &[("csrf", &csrf), ("req", &req), ("username", "nurse"), ("password", "nurse")],
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(cross_site.status, 403);

    // another browser cannot continue this authorization, even with the right fields
    let mut other = Browser::new();
    let stolen = other
        .post(&app, "/signin", &[("csrf", &csrf), ("req", &req), ("username", "nurse"), ("password", "nurse")], &[])
        .await;
    assert!(stolen.status == 403 || stolen.status == 400, "{}", stolen.status);
    assert!(stolen.header("location").is_none());
    let page = other.get(&app, &format!("/signin?req={req}")).await;
    assert_eq!(page.status, 400, "a pending authorization belongs to the browser that started it");
}

#[tokio::test]
async fn a_signed_in_session_is_reused_and_prompt_and_max_age_are_honoured() {
    let app = smart_app().await;
    let (_, challenge) = pkce_pair();
    let (mut browser, reply) = standalone(&app, &challenge, "patient", &[]).await;
    assert!(reply.header("location").unwrap().starts_with("/authorize/consent"));

    // signed in: a new authorization goes straight to consent
    let again = browser.get(&app, &authorize_path(&challenge, &[])).await;
    assert!(again.header("location").unwrap().starts_with("/authorize/consent"), "{:?}", again.header("location"));
    // prompt=none needs consent it cannot ask for
    let none = browser.get(&app, &authorize_path(&challenge, &[("prompt", "none")])).await;
    assert_eq!(error_from(&none, Some("st-123")), "consent_required");
    // prompt=login forces the sign-in page
    let login = browser.get(&app, &authorize_path(&challenge, &[("prompt", "login")])).await;
    assert!(login.header("location").unwrap().starts_with("/signin"));
    // max_age: older sign-ins must sign in again
    app.clock.advance(120);
    let fresh_enough = browser.get(&app, &authorize_path(&challenge, &[("max_age", "600")])).await;
    assert!(fresh_enough.header("location").unwrap().starts_with("/authorize/consent"));
    let too_old = browser.get(&app, &authorize_path(&challenge, &[("max_age", "60")])).await;
    assert!(too_old.header("location").unwrap().starts_with("/signin"));
    let too_old_silent = browser.get(&app, &authorize_path(&challenge, &[("max_age", "60"), ("prompt", "none")])).await;
    assert_eq!(error_from(&too_old_silent, Some("st-123")), "login_required");
}

#[tokio::test]
async fn prompt_none_with_a_picker_needed_is_interaction_required() {
    let app = smart_app().await;
    let (_, challenge) = pkce_pair();
    let (mut browser, _) = standalone(&app, &challenge, "nurse", &[]).await;
    let reply = browser.get(&app, &authorize_path(&challenge, &[("prompt", "none")])).await;
    assert_eq!(error_from(&reply, Some("st-123")), "interaction_required");
}

#[tokio::test]
async fn authorize_accepts_post_and_resource_as_a_synonym_of_aud() {
    let app = smart_app().await;
    let (_, challenge) = pkce_pair();
    let path = authorize_path(&challenge, &[("aud", ""), ("resource", FHIR_BASE)]);
    let query = path.trim_start_matches("/authorize?");
    let reply = app
        .request(
            axum::http::Method::POST,
            "/authorize",
            &[("content-type", "application/x-www-form-urlencoded")],
            query.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(reply.status, 303, "{}", reply.text());
    assert!(reply.header("location").unwrap().starts_with("/signin?req="));
    let q = query_of(&format!("http://x{}", reply.header("location").unwrap()));
    assert!(q.contains_key("req"));
    let _ = json!({});
}

#[tokio::test]
async fn resource_may_repeat_when_every_value_names_our_fhir_api() {
    let app = smart_app().await;
    let (_, challenge) = pkce_pair();
    let base = authorize_path(&challenge, &[("aud", ""), ("resource", FHIR_BASE)]);
    let encoded: String = form_urlencoded::byte_serialize(FHIR_BASE.as_bytes()).collect();
    let reply = app.get(&format!("{base}&resource={encoded}")).await;
    assert_eq!(reply.status, 303, "{}", reply.text());
    let elsewhere = app.get(&format!("{base}&resource=https%3A%2F%2Felsewhere.example%2Ffhir")).await;
    assert_eq!(error_from(&elsewhere, Some("st-123")), "invalid_target");
    // `aud` itself may not repeat
    let doubled = app.get(&format!("{}&aud={encoded}", authorize_path(&challenge, &[]))).await;
    assert_eq!(doubled.status, 400, "{}", doubled.text());
}
