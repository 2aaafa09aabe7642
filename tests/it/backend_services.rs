//! SMART Backend Services: client_credentials with private_key_jwt, and every way it is refused.

use carebroker::domain::client::ClientMetadata;
use carebroker::token::jose::{Algorithm, VerifyingKey};
use serde_json::json;

use crate::support::keys::{ASSERTION_TYPE, ClientKey, backend_client, backend_form};
use crate::support::{FHIR_BASE, ISSUER, T0, TestApp, jwt_parts};

const SCOPE: &str = "system/CarePlan.rs system/Patient.read system/Observation.rs?category=laboratory";

async fn app_with(key: &ClientKey) -> TestApp {
    TestApp::builder().with_client(backend_client("backend", key, SCOPE)).build().await
}

#[tokio::test]
async fn a_backend_service_gets_a_short_lived_es256_token() {
    let key = ClientKey::generate(Algorithm::ES384);
    let app = app_with(&key).await;
    let assertion = key.assertion("backend", app.now());
    let reply = app.post_form("/token", &backend_form(&assertion, "system/CarePlan.rs system/Patient.read"), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("pragma"), Some("no-cache"));
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "system/CarePlan.rs system/Patient.read");
    assert!(body["expires_in"].as_i64().is_some_and(|e| e > 0 && e <= 300));
    assert!(body.get("refresh_token").is_none(), "no refresh token for backend services");

    let token = body["access_token"].as_str().unwrap();
    let (header, claims) = jwt_parts(token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], FHIR_BASE);
    assert_eq!(claims["sub"], "backend");
    assert_eq!(claims["client_id"], "backend");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), body["expires_in"].as_i64().unwrap());

    // The signature verifies with the published JWKS.
    let jwks = app.get("/jwks.json").await.json();
    let kid = header["kid"].as_str().unwrap();
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid).expect("kid published");
    let jwk: carebroker::domain::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let verifying = VerifyingKey::from_jwk(&jwk, Algorithm::ES256).unwrap();
    let jws = carebroker::token::jose::decode(token, &[Algorithm::ES256]).unwrap();
    jws.verify(&verifying).expect("signature verifies with the JWKS");
}

#[tokio::test]
async fn every_client_key_algorithm_is_accepted() {
    for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::ES256, Algorithm::ES384] {
        let key = ClientKey::generate(alg);
        let app = app_with(&key).await;
        let assertion = key.assertion("backend", app.now());
        let reply = app.post_form("/token", &backend_form(&assertion, "system/CarePlan.rs"), &[]).await;
        assert_eq!(reply.status, 200, "{alg:?}: {}", reply.text());
    }
}

#[tokio::test]
async fn v1_v2_and_granular_scopes_are_narrowed_to_what_the_client_may_have() {
    let key = ClientKey::generate(Algorithm::ES384);
    let app = app_with(&key).await;
    let cases = [
        ("system/CarePlan.read", "system/CarePlan.read"),
        ("system/CarePlan.cruds", "system/CarePlan.rs"),
        ("system/Observation.rs", "system/Observation.rs?category=laboratory"),
        ("system/Observation.r?category=laboratory", "system/Observation.r?category=laboratory"),
        ("system/CarePlan.rs system/Condition.rs", "system/CarePlan.rs"),
    ];
    for (requested, granted) in cases {
        let assertion = key.assertion("backend", app.now());
        let reply = app.post_form("/token", &backend_form(&assertion, requested), &[]).await;
        assert_eq!(reply.status, 200, "{requested}: {}", reply.text());
        assert_eq!(reply.json()["scope"], granted, "{requested}");
    }
}

#[tokio::test]
async fn client_lifetime_is_capped_at_300_seconds() {
    let key = ClientKey::generate(Algorithm::ES384);
    let mut client = backend_client("backend", &key, SCOPE);
    client.access_token_lifetime_secs = Some(3600);
    let app = TestApp::builder().with_client(client).build().await;
    let assertion = key.assertion("backend", app.now());
    let reply = app.post_form("/token", &backend_form(&assertion, "system/CarePlan.rs"), &[]).await;
    assert_eq!(reply.json()["expires_in"], 300);
}

#[tokio::test]
async fn scope_errors_are_invalid_scope() {
    let key = ClientKey::generate(Algorithm::ES384);
    let app = app_with(&key).await;
    for scope in
        [None, Some("patient/CarePlan.rs"), Some("openid"), Some("system/Condition.rs"), Some("system/CarePlan.xyz")]
    {
        let assertion = key.assertion("backend", app.now());
        let mut form = backend_form(&assertion, scope.unwrap_or_default());
        if scope.is_none() {
            form.retain(|(k, _)| *k != "scope");
        }
        app.post_form("/token", &form, &[]).await.assert_error(400, "invalid_scope");
    }
}

#[tokio::test]
async fn malformed_requests_are_invalid_request() {
    let key = ClientKey::generate(Algorithm::ES384);
    let app = app_with(&key).await;
    let assertion = key.assertion("backend", app.now());
    let body = crate::support::form(&backend_form(&assertion, "system/CarePlan.rs"));

    // not a form body
    let reply = app
        .request(axum::http::Method::POST, "/token", &[("content-type", "application/json")], body.clone().into_bytes())
        .await;
    reply.assert_error(400, "invalid_request");
    assert_eq!(reply.header("cache-control"), Some("no-store"), "errors are no-store too");
    // a repeated parameter
    let doubled = format!("{body}&scope=system/Patient.rs");
    app.request(
        axum::http::Method::POST,
        "/token",
        &[("content-type", "application/x-www-form-urlencoded")],
        doubled.into_bytes(),
    )
    .await
    .assert_error(400, "invalid_request");
    // no grant_type
    let assertion = key.assertion("backend", app.now());
    let mut form = backend_form(&assertion, "system/CarePlan.rs");
    form.retain(|(k, _)| *k != "grant_type");
    app.post_form("/token", &form, &[]).await.assert_error(400, "invalid_request");
    // two client authentication methods at once
    let assertion = key.assertion("backend", app.now());
    let mut form = backend_form(&assertion, "system/CarePlan.rs");
    form.push(("client_secret", "x"));
    app.post_form("/token", &form, &[]).await.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn unknown_and_unallowed_grants() {
    let key = ClientKey::generate(Algorithm::ES384);
    let user_app = ClientMetadata {
        client_id: "user-app".into(),
        token_endpoint_auth_method: "private_key_jwt".into(),
        jwks: Some(key.jwks()),
        grant_types: vec!["authorization_code".into()],
        redirect_uris: vec!["https://app.example/cb".into()],
        scope: "patient/*.rs".into(),
        ..Default::default()
    };
    let app =
        TestApp::builder().with_client(backend_client("backend", &key, SCOPE)).with_client(user_app).build().await;

    let assertion = key.assertion("backend", app.now());
    let mut form = backend_form(&assertion, "system/CarePlan.rs");
    form[0] = ("grant_type", "password");
    app.post_form("/token", &form, &[]).await.assert_error(400, "unsupported_grant_type");

    let assertion = key.assertion("user-app", app.now());
    app.post_form("/token", &backend_form(&assertion, "system/CarePlan.rs"), &[])
        .await
        .assert_error(400, "unauthorized_client");
}

/// Each case mutates a valid assertion; all must fail with `invalid_client` and issue nothing.
#[tokio::test]
async fn every_bad_assertion_is_invalid_client() {
    let key = ClientKey::generate(Algorithm::ES384);
    let other = ClientKey::generate(Algorithm::ES384);
    let app = app_with(&key).await;
    let now = app.now();
    let claims = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = ClientKey::claims("backend", now);
        f(&mut c);
        c
    };
    let kid = key.kid();
    let unsigned = |header: serde_json::Value, claims: serde_json::Value| {
        use base64::Engine as _;
        let e = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", e(&header), e(&claims))
    };
    let cases: Vec<(&str, String)> = vec![
        ("alg none", unsigned(json!({"alg": "none", "kid": kid, "typ": "JWT"}), ClientKey::claims("backend", now))),
        ("alg HS256", unsigned(json!({"alg": "HS256", "kid": kid, "typ": "JWT"}), ClientKey::claims("backend", now))),
        ("no kid", key.sign_with_header(&json!({"alg": "ES384", "typ": "JWT"}), &ClientKey::claims("backend", now))),
        (
            "unknown kid",
            key.sign_with_header(
                &json!({"alg": "ES384", "kid": "nope", "typ": "JWT"}),
                &ClientKey::claims("backend", now),
            ),
        ),
        ("no typ", key.sign_with_header(&json!({"alg": "ES384", "kid": kid}), &ClientKey::claims("backend", now))),
        (
            "wrong typ",
            key.sign_with_header(
                &json!({"alg": "ES384", "kid": kid, "typ": "at+jwt"}),
                &ClientKey::claims("backend", now),
            ),
        ),
        (
            "signed by another key",
            other.sign_with_header(
                &json!({"alg": "ES384", "kid": kid, "typ": "JWT"}),
                &ClientKey::claims("backend", now),
            ),
        ),
        ("iss differs from sub", key.sign(&claims(&|c| c["sub"] = json!("someone-else")))),
        (
            "unknown client",
            key.sign(&claims(&|c| {
                c["iss"] = json!("stranger");
                c["sub"] = json!("stranger");
            })),
        ),
        ("wrong audience", key.sign(&claims(&|c| c["aud"] = json!("https://elsewhere.example/token")))),
        ("issuer as audience", key.sign(&claims(&|c| c["aud"] = json!(ISSUER)))),
        ("expired", key.sign(&claims(&|c| c["exp"] = json!(now - 31)))),
        ("exp too far ahead", key.sign(&claims(&|c| c["exp"] = json!(now + 301)))),
        (
            "no exp",
            key.sign(&claims(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            })),
        ),
        ("not yet valid", key.sign(&claims(&|c| c["nbf"] = json!(now + 120)))),
        ("issued in the future", key.sign(&claims(&|c| c["iat"] = json!(now + 120)))),
        (
            "no jti",
            key.sign(&claims(&|c| {
                c.as_object_mut().unwrap().remove("jti");
            })),
        ),
        (
            "jku not registered",
            key.sign_with_header(
                &json!({"alg": "ES384", "kid": kid, "typ": "JWT", "jku": "https://evil.example/jwks"}),
                &ClientKey::claims("backend", now),
            ),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (name, assertion) in cases {
        let reply = app.post_form("/token", &backend_form(&assertion, "system/CarePlan.rs"), &[]).await;
        assert_eq!(reply.status, 401, "{name}: {}", reply.text());
        reply.assert_error(401, "invalid_client");
    }

    // wrong assertion type
    let assertion = key.assertion("backend", now);
    let mut form = backend_form(&assertion, "system/CarePlan.rs");
    form[2] = ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer");
    app.post_form("/token", &form, &[]).await.assert_error(401, "invalid_client");
    assert_ne!(ASSERTION_TYPE, form[2].1);
}

#[tokio::test]
async fn the_assertion_lifetime_boundary_is_exact() {
    let key = ClientKey::generate(Algorithm::ES384);
    let app = app_with(&key).await;
    let now = app.now();
    let mut at_limit = ClientKey::claims("backend", now);
    at_limit["exp"] = json!(now + 300);
    let reply = app.post_form("/token", &backend_form(&key.sign(&at_limit), "system/CarePlan.rs"), &[]).await;
    assert_eq!(reply.status, 200, "exp = now + 300 is accepted: {}", reply.text());
    let mut over = ClientKey::claims("backend", now);
    over["exp"] = json!(now + 301);
    app.post_form("/token", &backend_form(&key.sign(&over), "system/CarePlan.rs"), &[])
        .await
        .assert_error(401, "invalid_client");
}

#[tokio::test]
async fn a_jti_is_accepted_once_and_a_rejected_assertion_does_not_burn_it() {
    let key = ClientKey::generate(Algorithm::ES384);
    let other = ClientKey::generate(Algorithm::ES384);
    let app = app_with(&key).await;
    let claims = ClientKey::claims("backend", app.now());

    // a forged assertion carrying the jti is refused and does not consume it
    let forged = other.sign_with_header(&json!({"alg": "ES384", "kid": key.kid(), "typ": "JWT"}), &claims);
    app.post_form("/token", &backend_form(&forged, "system/CarePlan.rs"), &[])
        .await
        .assert_error(401, "invalid_client");

    let assertion = key.sign(&claims);
    let first = app.post_form("/token", &backend_form(&assertion, "system/CarePlan.rs"), &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let replay = app.post_form("/token", &backend_form(&assertion, "system/CarePlan.rs"), &[]).await;
    replay.assert_error(401, "invalid_client");
    assert!(replay.json()["error_description"].as_str().unwrap().contains("jti"));
}

#[tokio::test]
async fn a_kid_shared_by_two_keys_is_ambiguous() {
    let key = ClientKey::generate(Algorithm::ES384);
    let twin = ClientKey::generate(Algorithm::ES384);
    let mut jwks = key.jwks();
    let mut second = twin.key.public_jwk();
    second.kid = Some(key.kid());
    jwks.keys.push(second);
    let mut client = backend_client("backend", &key, SCOPE);
    client.jwks = Some(jwks);
    let app = TestApp::builder().with_client(client).build().await;
    let reply =
        app.post_form("/token", &backend_form(&key.assertion("backend", app.now()), "system/CarePlan.rs"), &[]).await;
    reply.assert_error(401, "invalid_client");
    assert!(reply.json()["error_description"].as_str().unwrap().contains("more than one"));
}

#[tokio::test]
async fn a_moved_clock_expires_nothing_it_should_not() {
    // The assertion's exp is checked against the server clock, not the client's idea of time.
    let key = ClientKey::generate(Algorithm::ES384);
    let app = TestApp::builder().with_client(backend_client("backend", &key, SCOPE)).with_clock(T0).build().await;
    let assertion = key.assertion("backend", T0);
    app.clock.advance(400);
    app.post_form("/token", &backend_form(&assertion, "system/CarePlan.rs"), &[])
        .await
        .assert_error(401, "invalid_client");
}
