//! `authorization_code` and `refresh_token` at the token endpoint: binding, single use under
//! concurrency, rotation with family revocation, scope narrowing, online/offline access, OpenID
//! Connect (ID token, userinfo, logout) and CORS for public clients.

use serde_json::Value;

use crate::support::browser::Browser;
use crate::support::smart::*;
use crate::support::{ISSUER, TestApp, jwt_parts};

/// An EHR launch through to a code, for the app, with `scope`.
async fn code_for(app: &TestApp, scope: &str) -> (String, String) {
    let launch = register_launch(app, launch_body()).await;
    let (verifier, challenge) = pkce_pair();
    let reply = app.get(&authorize_path(&challenge, &[("launch", &launch), ("scope", scope), ("nonce", "abc")])).await;
    (code_from(&reply, "st-123"), verifier)
}

async fn tokens_for(app: &TestApp, scope: &str) -> Value {
    let (code, verifier) = code_for(app, scope).await;
    let reply = exchange(app, &code, &verifier).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

async fn refresh(app: &TestApp, token: &str, extra: &[(&str, &str)]) -> crate::support::Reply {
    let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", token)];
    form.extend_from_slice(extra);
    app.post_form("/token", &form, &[]).await
}

/// Whether the broker still treats `token` as active (signature, expiry and revocation).
async fn introspect_active(app: &TestApp, token: &str) -> bool {
    app.state.check_access_token(token, None).await.is_ok()
}

#[tokio::test]
async fn code_exchange_refuses_every_mismatch() {
    let app = smart_app().await;
    let (code, verifier) = code_for(&app, "launch openid patient/*.rs").await;
    let wrong_verifier = pkce_pair().0;
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("redirect_uri", "https://viewer.example/other")],
        vec![("redirect_uri", "")],
        vec![("code_verifier", "")],
        vec![("code_verifier", wrong_verifier.as_str())],
        vec![("code_verifier", "short")],
    ];
    for overrides in cases {
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", APP_REDIRECT),
            ("code_verifier", &verifier),
            ("client_id", APP),
        ];
        for (k, v) in &overrides {
            form.retain(|(name, _)| name != k);
            if !v.is_empty() {
                form.push((k, v));
            }
        }
        // each attempt uses the code up, so get a fresh one per case
        let (fresh, fresh_verifier) = code_for(&app, "launch openid patient/*.rs").await;
        for pair in &mut form {
            if pair.0 == "code" {
                pair.1 = &fresh;
            }
            if pair.0 == "code_verifier" && pair.1 == verifier {
                pair.1 = &fresh_verifier;
            }
        }
        app.post_form("/token", &form, &[]).await.assert_error(400, "invalid_grant");
    }
    app.post_form(
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", "made-up"),
            ("redirect_uri", APP_REDIRECT),
            ("code_verifier", &verifier),
            ("client_id", APP),
        ],
        &[],
    )
    .await
    .assert_error(400, "invalid_grant");
    let _ = (code, verifier);
}

#[tokio::test]
async fn a_code_expires_after_sixty_seconds_and_belongs_to_its_client() {
    let app = TestApp::builder()
        .with_client(public_app())
        .with_client(trusted_ehr())
        .with_client({
            let mut other = public_app();
            other.client_id = "other-app".into();
            other
        })
        .build()
        .await;
    let (code, verifier) = code_for(&app, "launch patient/*.rs").await;
    app.clock.advance(61);
    exchange(&app, &code, &verifier).await.assert_error(400, "invalid_grant");

    let (code, verifier) = code_for(&app, "launch patient/*.rs").await;
    app.post_form(
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", APP_REDIRECT),
            ("code_verifier", &verifier),
            ("client_id", "other-app"),
        ],
        &[],
    )
    .await
    .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn a_reused_code_fails_and_revokes_what_it_issued() {
    let app = smart_app().await;
    let (code, verifier) = code_for(&app, "launch openid patient/*.rs offline_access").await;
    let first = exchange(&app, &code, &verifier).await.json();
    let access = first["access_token"].as_str().unwrap();
    assert!(introspect_active(&app, access).await);
    exchange(&app, &code, &verifier).await.assert_error(400, "invalid_grant");
    assert!(!introspect_active(&app, access).await, "the first access token is revoked");
    refresh(&app, first["refresh_token"].as_str().unwrap(), &[]).await.assert_error(400, "invalid_grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_redemptions_of_one_code_yield_one_token() {
    let app = std::sync::Arc::new(smart_app().await);
    let (code, verifier) = code_for(&app, "launch patient/*.rs").await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (app, code, verifier) = (app.clone(), code.clone(), verifier.clone());
            tokio::spawn(async move { exchange(&app, &code, &verifier).await.status.as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 400));
}

#[tokio::test]
async fn refresh_rotates_keeps_context_and_narrows_but_never_widens() {
    let app = smart_app().await;
    let first = tokens_for(&app, "launch openid fhirUser patient/*.rs offline_access").await;
    let r1 = first["refresh_token"].as_str().unwrap();

    // public client, no client_id (SMART's JS client sends none)
    let second = refresh(&app, r1, &[]).await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.header("cache-control"), Some("no-store"));
    assert_eq!(second.header("pragma"), Some("no-cache"));
    let second = second.json();
    let r2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(r1, r2, "rotated");
    assert_eq!(second["patient"], "9434765919", "launch context kept");
    assert_eq!(second["fhirContext"], first["fhirContext"]);
    assert_eq!(second["scope"], first["scope"]);
    assert!(second["expires_in"].as_i64().unwrap() > 0);

    let narrower = refresh(&app, r2, &[("scope", "patient/CarePlan.rs offline_access"), ("client_id", APP)]).await;
    assert_eq!(narrower.status, 200, "{}", narrower.text());
    let narrower = narrower.json();
    assert_eq!(narrower["scope"], "patient/CarePlan.rs offline_access");
    let r3 = narrower["refresh_token"].as_str().unwrap();
    refresh(&app, r3, &[("scope", "patient/*.cruds offline_access")]).await.assert_error(400, "invalid_scope");
}

#[tokio::test]
async fn a_superseded_refresh_token_revokes_the_whole_family() {
    let app = smart_app().await;
    let first = tokens_for(&app, "launch patient/*.rs offline_access").await;
    let r1 = first["refresh_token"].as_str().unwrap();
    let second = refresh(&app, r1, &[]).await.json();
    let r2 = second["refresh_token"].as_str().unwrap();
    let access2 = second["access_token"].as_str().unwrap();
    assert!(introspect_active(&app, access2).await);

    refresh(&app, r1, &[]).await.assert_error(400, "invalid_grant");
    refresh(&app, r2, &[]).await.assert_error(400, "invalid_grant");
    assert!(!introspect_active(&app, access2).await, "access tokens of the family are revoked too");
    refresh(&app, "never-issued", &[("client_id", APP)]).await.assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn refresh_tokens_are_only_issued_for_offline_or_online_access() {
    let app = smart_app().await;
    let t = tokens_for(&app, "launch patient/*.rs").await;
    assert!(t.get("refresh_token").is_none());
}

#[tokio::test]
async fn online_access_ends_with_the_sign_in_session() {
    let app = smart_app().await;
    let (verifier, challenge) = pkce_pair();
    // a standalone patient sign-in with online_access
    let mut browser = Browser::new();
    let reply = browser
        .get(&app, &authorize_path(&challenge, &[("scope", "openid fhirUser patient/*.rs online_access")]))
        .await;
    let html = browser.follow(&app, &reply).await.text();
    let (csrf, req) =
        (crate::support::browser::hidden_value(&html, "csrf"), crate::support::browser::hidden_value(&html, "req"));
    let reply = browser
        .post(&app, "/signin", &[("csrf", &csrf), ("req", &req), ("username", "patient"), ("password", "patient")], &[])
        .await;
    let html = browser.follow(&app, &reply).await.text();
    let csrf = crate::support::browser::hidden_value(&html, "csrf");
    let scopes = ["openid", "fhirUser", "patient/*.rs", "online_access"];
    let mut form = vec![("csrf", csrf.as_str()), ("req", req.as_str()), ("decision", "allow")];
    form.extend(scopes.iter().map(|s| ("scope", *s)));
    let reply = browser.post(&app, "/authorize/consent", &form, &[]).await;
    let code = code_from(&reply, "st-123");
    let t = exchange(&app, &code, &verifier).await.json();
    assert_eq!(t["patient"], "9434765919", "a patient is their own patient in context");
    let refreshed = refresh(&app, t["refresh_token"].as_str().unwrap(), &[]).await;
    assert_eq!(refreshed.status, 200);
    let r2 = refreshed.json()["refresh_token"].as_str().unwrap().to_owned();

    // RP-initiated logout with the ID token ends the session and its online grants
    let hint = t["id_token"].as_str().unwrap();
    let logout = browser
        .get(
            &app,
            &format!(
                "/logout?id_token_hint={hint}&post_logout_redirect_uri=https%3A%2F%2Fviewer.example%2Fbye&state=s1"
            ),
        )
        .await;
    assert_eq!(logout.status, 302, "{}", logout.text());
    assert_eq!(logout.header("location"), Some("https://viewer.example/bye?state=s1"));
    refresh(&app, &r2, &[]).await.assert_error(400, "invalid_grant");
    // and the browser is signed out
    let again = browser.get(&app, &authorize_path(&challenge, &[])).await;
    assert!(again.header("location").unwrap().starts_with("/signin"));
}

#[tokio::test]
async fn logout_without_a_hint_asks_first_and_refuses_unregistered_targets() {
    let app = smart_app().await;
    let mut browser = Browser::new();
    let page = browser.get(&app, "/logout?post_logout_redirect_uri=https%3A%2F%2Fevil.example%2F").await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("Sign out?") && page.header("location").is_none());
    let t = tokens_for(&app, "launch openid patient/*.rs").await;
    let hint = t["id_token"].as_str().unwrap();
    let reply = browser
        .get(&app, &format!("/logout?id_token_hint={hint}&post_logout_redirect_uri=https%3A%2F%2Fevil.example%2F"))
        .await;
    assert_eq!(reply.status, 400);
    assert!(reply.header("location").is_none());
}

#[tokio::test]
async fn the_id_token_is_rs256_from_the_discovery_issuer_and_userinfo_agrees() {
    let app = smart_app().await;
    let t = tokens_for(&app, "launch openid fhirUser profile patient/*.rs").await;
    let (header, id) = jwt_parts(t["id_token"].as_str().unwrap());
    assert_eq!(header["alg"], "RS256");
    let discovery = app.get("/.well-known/openid-configuration").await.json();
    assert_eq!(id["iss"], discovery["issuer"]);
    assert_eq!(id["iss"], ISSUER);
    assert_eq!(id["aud"], APP);
    assert_eq!(id["nonce"], "abc");
    assert_eq!(id["name"], "Nadia Nurse");
    assert!(id["auth_time"].is_i64() && id["exp"].as_i64() > id["iat"].as_i64());
    assert!(id["at_hash"].is_string());
    // verify the signature with the published JWKS
    let jwks = app.get("/jwks.json").await.json();
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == header["kid"]).unwrap();
    let jwk: carebroker::domain::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let key = carebroker::token::jose::VerifyingKey::from_jwk(&jwk, carebroker::token::jose::Algorithm::RS256).unwrap();
    carebroker::token::jose::decode(t["id_token"].as_str().unwrap(), &[carebroker::token::jose::Algorithm::RS256])
        .unwrap()
        .verify(&key)
        .unwrap();

    let bearer = format!("Bearer {}", t["access_token"].as_str().unwrap());
    let info = app.request(axum::http::Method::GET, "/userinfo", &[("authorization", &bearer)], Vec::new()).await;
    assert_eq!(info.status, 200, "{}", info.text());
    assert_eq!(info.json()["sub"], id["sub"]);
    assert_eq!(info.json()["fhirUser"], id["fhirUser"]);

    let no_openid = tokens_for(&app, "launch patient/*.rs").await;
    let bearer = format!("Bearer {}", no_openid["access_token"].as_str().unwrap());
    app.request(axum::http::Method::GET, "/userinfo", &[("authorization", &bearer)], Vec::new())
        .await
        .assert_error(403, "insufficient_scope");
    app.request(axum::http::Method::GET, "/userinfo", &[("authorization", "Bearer junk")], Vec::new())
        .await
        .assert_error(401, "invalid_token");
}

#[tokio::test]
async fn the_token_endpoint_answers_cors_for_public_client_origins_only() {
    let app = smart_app().await;
    let (code, verifier) = code_for(&app, "launch patient/*.rs").await;
    let body = crate::support::form(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", APP_REDIRECT),
        ("code_verifier", &verifier),
        ("client_id", APP),
    ]);
    let reply = app
        .request(
            axum::http::Method::POST,
            "/token",
            &[("content-type", "application/x-www-form-urlencoded"), ("origin", "https://viewer.example")],
            body.into_bytes(),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("access-control-allow-origin"), Some("https://viewer.example"));
    let preflight = app
        .request(
            axum::http::Method::OPTIONS,
            "/token",
            &[("origin", "https://evil.example"), ("access-control-request-method", "POST")],
            Vec::new(),
        )
        .await;
    assert_eq!(preflight.header("access-control-allow-origin"), None);
}
