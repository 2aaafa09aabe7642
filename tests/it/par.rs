//! Pushed authorization requests (RFC 9126): push, redeem once, and every refusal.

use crate::support::browser::query_of;
use crate::support::smart::{
    APP, authorize_path, code_from, error_from, exchange, launch_body, pkce_pair, public_app, register_launch,
    smart_app, trusted_ehr,
};
use crate::support::{Reply, TestApp};

/// The form of an authorization request `authorize_path` would send, with `overrides`.
fn request_form(challenge: &str, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
    let path = authorize_path(challenge, overrides);
    query_of(&format!("https://x{path}")).into_iter().collect()
}

async fn push(app: &TestApp, form: &[(String, String)]) -> Reply {
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    app.post_form("/par", &pairs, &[]).await
}

fn redeem_path(client_id: &str, request_uri: &str) -> String {
    let encoded: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", client_id)
        .append_pair("request_uri", request_uri)
        .finish();
    format!("/authorize?{encoded}")
}

#[tokio::test]
async fn a_pushed_request_is_redeemed_once_for_a_code_and_tokens() {
    let app = smart_app().await;
    let launch = register_launch(&app, launch_body()).await;
    let (verifier, challenge) = pkce_pair();
    let scope = "launch openid patient/*.rs";
    let pushed = push(&app, &request_form(&challenge, &[("launch", &launch), ("scope", scope)])).await;
    assert_eq!(pushed.status, 201, "{}", pushed.text());
    assert_eq!(pushed.header("cache-control"), Some("no-store"));
    let body = pushed.json();
    assert_eq!(body["expires_in"], 60);
    let request_uri = body["request_uri"].as_str().unwrap().to_owned();
    assert!(request_uri.starts_with("urn:ietf:params:oauth:request_uri:"));

    let reply = app.get(&redeem_path(APP, &request_uri)).await;
    let code = code_from(&reply, "st-123");
    let tokens = exchange(&app, &code, &verifier).await;
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    assert_eq!(tokens.json()["patient"], "9434765919");

    // a second redemption is refused on a page, never redirected
    let again = app.get(&redeem_path(APP, &request_uri)).await;
    assert_eq!(again.status, 400, "{}", again.text());
    assert!(again.header("location").is_none());
}

#[tokio::test]
async fn a_request_uri_is_only_for_the_client_that_pushed_it_and_only_ours() {
    let mut other = public_app();
    other.client_id = "other-viewer".into();
    let app = TestApp::builder().with_client(public_app()).with_client(other).with_client(trusted_ehr()).build().await;
    let (_, challenge) = pkce_pair();
    let pushed = push(&app, &request_form(&challenge, &[])).await.json();
    let request_uri = pushed["request_uri"].as_str().unwrap();
    for (client, uri) in [
        ("other-viewer", request_uri),
        (APP, "urn:ietf:params:oauth:request_uri:made-up"),
        (APP, "https://evil.example/request.jwt"),
    ] {
        let reply = app.get(&redeem_path(client, uri)).await;
        assert_eq!(reply.status, 400, "{client} {uri}: {}", reply.text());
        assert!(reply.header("location").is_none());
    }
    // another client naming it did not spend it
    let mine = app.get(&redeem_path(APP, request_uri)).await;
    assert!(mine.header("location").is_some_and(|l| l.starts_with("/signin?req=")), "{} {}", mine.status, mine.text());
}

#[tokio::test]
async fn a_push_is_checked_as_authorize_would_and_refusals_store_nothing() {
    let app = smart_app().await;
    let (_, challenge) = pkce_pair();
    for (overrides, code) in [
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("redirect_uri", "https://evil.example/cb")], "invalid_request"),
        (vec![("response_type", "token")], "unsupported_response_type"),
        (vec![("scope", "system/*.rs")], "invalid_scope"),
        (vec![("aud", "https://other.example/fhir")], "invalid_request"),
        (vec![("launch", "no-such-launch"), ("scope", "launch openid")], "invalid_request"),
        (vec![("request_uri", "urn:ietf:params:oauth:request_uri:x")], "invalid_request"),
        (vec![("state", "s".repeat(4096).as_str())], "invalid_request"),
    ] {
        let reply = push(&app, &request_form(&challenge, &overrides)).await;
        reply.assert_error(400, code);
        assert!(reply.json().get("request_uri").is_none(), "{overrides:?}");
    }
    // a client that does not identify itself, or names another client
    let mut anonymous = request_form(&challenge, &[]);
    anonymous.retain(|(k, _)| k != "client_id");
    push(&app, &anonymous).await.assert_error(401, "invalid_client");
    // the trusted EHR authenticates, but has no redirect URIs and no code grant: refused as
    // /authorize would refuse it
    let mut as_ehr = request_form(&challenge, &[]);
    as_ehr.retain(|(k, _)| k != "client_id");
    let pairs: Vec<(&str, &str)> = as_ehr.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let basic = crate::support::smart::ehr_basic();
    app.post_form("/par", &pairs, &[("authorization", &basic)]).await.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn a_client_that_must_push_cannot_authorize_directly() {
    let mut strict = public_app();
    strict.require_pushed_authorization_requests = true;
    let app = TestApp::builder().with_client(strict).with_client(trusted_ehr()).with_dev_users().build().await;
    let (_, challenge) = pkce_pair();
    let direct = app.get(&authorize_path(&challenge, &[])).await;
    assert_eq!(error_from(&direct, Some("st-123")), "invalid_request");
    let pushed = push(&app, &request_form(&challenge, &[])).await;
    assert_eq!(pushed.status, 201, "{}", pushed.text());
    let reply = app.get(&redeem_path(APP, pushed.json()["request_uri"].as_str().unwrap())).await;
    let location = reply.header("location").unwrap_or_default();
    assert!(location.starts_with("/signin?req="), "the pushed request goes on to sign-in: {location}");
}

#[tokio::test]
async fn discovery_lists_the_par_endpoint() {
    let app = smart_app().await;
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/fhir/.well-known/smart-configuration",
    ] {
        let doc = app.get(path).await.json();
        assert_eq!(doc["pushed_authorization_request_endpoint"], "http://127.0.0.1:8080/par", "{path}");
        assert_eq!(doc["require_pushed_authorization_requests"], false, "{path}");
    }
}

#[tokio::test]
async fn a_client_starting_too_many_authorizations_is_slowed_down() {
    let app = TestApp::builder()
        .with_client(public_app())
        .with_config(|c| c.launch.max_authorizations_per_client_per_minute = 3)
        .build()
        .await;
    let (_, challenge) = pkce_pair();
    for _ in 0..3 {
        assert_eq!(push(&app, &request_form(&challenge, &[])).await.status, 201);
    }
    push(&app, &request_form(&challenge, &[])).await.assert_error(429, "temporarily_unavailable");
    let direct = app.get(&authorize_path(&challenge, &[])).await;
    assert_eq!(error_from(&direct, Some("st-123")), "temporarily_unavailable");
    // an overlong request as a whole is refused before it counts
    let long: Vec<(&str, String)> =
        (0..6).map(|i| (["state", "nonce", "idp_hint", "prompt", "max_age", "launch"][i], "x".repeat(1500))).collect();
    let overrides: Vec<(&str, &str)> = long.iter().map(|(k, v)| (*k, v.as_str())).collect();
    push(&app, &request_form(&challenge, &overrides)).await.assert_error(400, "invalid_request");
}
