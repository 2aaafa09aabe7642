//! `POST /launch` with the user presented as a credential instead of asserted: a CIS2 (or other
//! configured OIDC) ID token the EHR holds, verified against that provider; or a legacy CIS
//! smartcard session's SSO token, checked at the Spine Security Broker (a double under
//! `support/`). Each refusal is a clear OAuth error, registers no launch and is audited.

use serde_json::{Value, json};

use crate::support::fake_idp::{CLIENT_ID, FakeIdp};
use crate::support::smart::*;
use crate::support::ssb_double::{Answer, Session, SsbDouble, example_session};
use crate::support::{FHIR_BASE, T0, TestApp, free_port};

const CIS2: &str = "cis2-test";

/// An app with `idp` accepting presented tokens and, given its URL, a Spine Security Broker.
async fn app_with(
    idp: &FakeIdp,
    ssb_url: Option<String>,
    tweak: impl FnOnce(&mut carebroker::config::idps::IdpConfig),
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = idp.config(CIS2, dir.path());
    config.accept_presented_tokens = true;
    tweak(&mut config);
    TestApp::builder()
        .with_client(public_app())
        .with_client(trusted_ehr())
        .with_idp(config)
        .with_config(move |c| {
            if let Some(url) = ssb_url {
                c.federation.cis_sso.enabled = true;
                c.federation.cis_sso.role_assertion_url = url;
            }
        })
        .with_dir(dir)
        .build()
        .await
}

fn presenting(fields: Value) -> Value {
    let mut body = launch_body();
    body.as_object_mut().unwrap().remove("user");
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// Runs the launch through `/authorize` and the code exchange; returns the token response.
async fn open_app(app: &TestApp, launch: &str) -> Value {
    let (verifier, challenge) = pkce_pair();
    let reply = app
        .get(&authorize_path(&challenge, &[("launch", launch), ("scope", "launch openid fhirUser patient/*.rs")]))
        .await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    let code = code_from(&reply, "st-123");
    let tokens = exchange(app, &code, &verifier).await;
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    tokens.json()
}

async fn launch_audits(app: &TestApp, outcomes: &[&str]) -> usize {
    let records = app.state.stores.durable.audit_records(0, 1000).await.unwrap();
    records
        .iter()
        .filter_map(|r| serde_json::from_str::<Value>(&r.data).ok())
        .filter(|event| event["kind"] == "launch" && outcomes.iter().any(|o| event["outcome"] == *o))
        .count()
}

/// A refused launch: the status and error, no launch in the answer, one more refusal audited
/// (failed: the credential; denied: the EHR may not launch this user).
async fn refused(app: &TestApp, body: &Value, status: u16, error: &str, says: &str) {
    let refused = ["failed", "denied"];
    let before = launch_audits(app, &refused).await;
    let reply = post_launch(app, body).await;
    assert_eq!(reply.status, status, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(answer["error"], error, "{answer}");
    assert!(answer.get("launch").is_none());
    let description = answer["error_description"].as_str().unwrap_or_default();
    assert!(description.contains(says), "`{description}` should say `{says}`");
    if status != 400 {
        assert_eq!(launch_audits(app, &refused).await, before + 1, "the refusal is audited");
    }
    assert_eq!(launch_audits(app, &["success"]).await, 0, "no launch was registered");
}

#[tokio::test]
async fn an_ehr_presents_the_cis2_id_token_it_holds_and_the_app_opens_as_that_user() {
    let idp = FakeIdp::start("cis2").await;
    let app = app_with(&idp, None, |_| {}).await;
    // signed in at the EHR an hour ago: older than an interactive sign-in may be, within a shift
    let token = idp.held_id_token(T0, |c| {
        c.insert("auth_time".into(), json!(T0 - 3600));
    });
    let launch = register_launch(&app, presenting(json!({"id_token": token, "access_token": "at-cis2"}))).await;
    let tokens = open_app(&app, &launch).await;
    let (_, id) = crate::support::jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(id["sub"], format!("{CIS2}:555057896106"));
    assert_eq!(id["fhirUser"], format!("{FHIR_BASE}/Practitioner/555057896106"));
    let (_, access) = crate::support::jwt_parts(tokens["access_token"].as_str().unwrap());
    assert_eq!(access["org"], "A9A5A", "the selected role's organisation, from userinfo");
    assert_eq!(access["roles"], json!(["R8001"]));
    assert_eq!(access["patient"], "9434765919");
}

#[tokio::test]
async fn a_token_for_another_of_our_client_ids_is_accepted_only_when_configured() {
    let idp = FakeIdp::start("oidc").await;
    let body = || {
        presenting(json!({"id_token": idp.held_id_token(T0, |c| { c.insert("aud".into(), json!("ehr-desktop")); })}))
    };
    let app = app_with(&idp, None, |_| {}).await;
    refused(&app, &body(), 403, "access_denied", "aud").await;
    let app = app_with(&idp, None, |c| c.presented_audiences = vec!["ehr-desktop".into()]).await;
    let tokens = open_app(&app, &register_launch(&app, body()).await).await;
    let (_, access) = crate::support::jwt_parts(tokens["access_token"].as_str().unwrap());
    assert_eq!(access["roles"], json!(["R8000"]));
}

#[tokio::test]
async fn presented_id_tokens_that_fail_a_check_are_refused() {
    let idp = FakeIdp::start("cis2").await;
    let app = app_with(&idp, None, |_| {}).await;
    // claims changed in the token the EHR holds (`null` removes one), and what the refusal says
    let with = |changes: Value| {
        let token = idp.held_id_token(T0, |c| c.extend(changes.as_object().unwrap().clone()));
        presenting(json!({"id_token": token, "access_token": "at-cis2"}))
    };
    for (changes, says) in [
        (json!({"iss": "https://elsewhere.example"}), "not a configured identity provider"),
        (json!({"aud": "someone-else"}), "aud"),
        (json!({"aud": [CLIENT_ID, "someone-else"], "azp": "someone-else"}), "aud"),
        (json!({"exp": T0 - 120}), "expired"),
        (json!({"exp": null}), "exp"),
        (json!({"authentication_assurance_level": "1", "acr": null}), "AAL1"),
        (json!({"auth_time": T0 - 50_000}), "ago"),
        // the selected role is at AB12, an organisation this EHR does not serve
        (json!({"selected_roleid": "555254242199"}), "AB12"),
        (json!({"selected_roleid": "999"}), "not one of the user's roles"),
    ] {
        refused(&app, &with(changes), 403, "access_denied", says).await;
    }
    idp.set(|k| k.foreign_key = true);
    refused(&app, &with(json!({})), 403, "access_denied", "").await;
    idp.set(|k| {
        k.foreign_key = false;
        k.alg_none = true;
    });
    refused(&app, &with(json!({})), 403, "access_denied", "").await;
    idp.set(|k| k.alg_none = false);
    // malformed requests
    refused(&app, &presenting(json!({"id_token": "not-a-jwt"})), 400, "invalid_request", "JWT").await;
    let mut both = presenting(json!({"id_token": idp.held_id_token(T0, |_| {})}));
    both["user"] = launch_body()["user"].clone();
    refused(&app, &both, 400, "invalid_request", "only one").await;
    refused(&app, &presenting(json!({"access_token": "at-cis2"})), 400, "invalid_request", "access_token").await;
    refused(&app, &presenting(json!({})), 400, "invalid_request", "name the user").await;
}

#[tokio::test]
async fn a_provider_that_does_not_accept_presented_tokens_refuses_them() {
    let idp = FakeIdp::start("cis2").await;
    let app = app_with(&idp, None, |c| c.accept_presented_tokens = false).await;
    let body = presenting(json!({"id_token": idp.held_id_token(T0, |_| {}), "access_token": "at-cis2"}));
    refused(&app, &body, 403, "access_denied", "not accepted from EHRs").await;
}

#[tokio::test]
async fn a_legacy_smartcard_session_opens_the_app_with_its_selected_role() {
    let idp = FakeIdp::start("cis2").await;
    let ssb = SsbDouble::start().await;
    let token = "AQIC5wM2LY4Sfcy73z2zeTRzPNXOdr5U6mC2NyUVxy0BffY=@AAJTSQACMDE=#";
    ssb.answer(token, Answer::Active(example_session(T0)));
    let app = app_with(&idp, Some(ssb.url.clone()), |_| {}).await;
    let launch = register_launch(&app, presenting(json!({"sso_token": token}))).await;
    assert_eq!(ssb.calls.lock().as_slice(), [token], "the token reached the SSB intact (URL-encoded on the way)");
    let tokens = open_app(&app, &launch).await;
    let (_, id) = crate::support::jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(id["sub"], "cis-sso:232871648514");
    assert_eq!(id["fhirUser"], format!("{FHIR_BASE}/Practitioner/232871648514"));
    let (_, access) = crate::support::jwt_parts(tokens["access_token"].as_str().unwrap());
    assert_eq!(access["roles"], json!(["R8003"]), "the session's role profile, not the first one");
    assert_eq!(access["org"], "A9A5A");
}

#[tokio::test]
async fn legacy_smartcard_sessions_that_are_not_good_are_refused() {
    let session = |change: fn(&mut Session)| {
        let mut s = example_session(T0);
        change(&mut s);
        Answer::Active(s)
    };
    let idp = FakeIdp::start("cis2").await;
    let ssb = SsbDouble::start().await;
    let app = app_with(&idp, Some(ssb.url.clone()), |_| {}).await;
    let body = |token: &str| presenting(json!({"sso_token": token}));
    refused(&app, &body("unknown-token"), 403, "access_denied", "samlp:Requester").await;
    ssb.answer("stale", Answer::Active(example_session(T0 - 3600)));
    refused(&app, &body("stale"), 403, "access_denied", "not valid now").await;
    ssb.answer("training", session(|s| s.ssb_mode = "1"));
    refused(&app, &body("training"), 403, "access_denied", "training mode").await;
    ssb.answer("orphan-role", session(|s| s.session_role = "111111111111"));
    refused(&app, &body("orphan-role"), 403, "access_denied", "not one of the user's role profiles").await;
    ssb.answer("other-org", session(|s| s.session_role = "780609380500"));
    refused(&app, &body("other-org"), 403, "access_denied", "RQZ").await;
    ssb.answer("gone", Answer::Raw(404, String::new()));
    refused(&app, &body("gone"), 403, "access_denied", "HTTP 404").await;
    // the broker misbehaving is not the EHR's fault: unavailable, still nothing registered
    ssb.answer("down", Answer::Raw(502, String::new()));
    refused(&app, &body("down"), 503, "temporarily_unavailable", "HTTP 502").await;
    let xxe = r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:1.0:protocol">&x;</samlp:Response>"#;
    ssb.answer("xxe", Answer::Raw(200, xxe.into()));
    refused(&app, &body("xxe"), 503, "temporarily_unavailable", "document type").await;
    ssb.answer("garbage", Answer::Raw(200, "<samlp:Response".into()));
    refused(&app, &body("garbage"), 503, "temporarily_unavailable", "not well-formed").await;
    refused(&app, &body(""), 403, "access_denied", "malformed").await;
}

#[tokio::test]
async fn smartcard_sessions_are_refused_when_the_broker_is_not_configured_or_unreachable() {
    let idp = FakeIdp::start("cis2").await;
    let app = app_with(&idp, None, |_| {}).await;
    refused(&app, &presenting(json!({"sso_token": "tok"})), 403, "access_denied", "not accepted here").await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    let app = app_with(&idp, Some(closed), |_| {}).await;
    let reply = post_launch(&app, &presenting(json!({"sso_token": "secret-sso-token-1"}))).await;
    assert_eq!(reply.status, 503);
    assert!(!reply.text().contains("secret-sso-token-1"), "the token never appears in an answer: {}", reply.text());
    refused(&app, &presenting(json!({"sso_token": "tok"})), 503, "temporarily_unavailable", "could not be reached")
        .await;
}
