//! Introspection (RFC 7662, SMART profile) and revocation (RFC 7009).

use carebroker::token::jose::Algorithm;
use serde_json::json;

use crate::support::keys::{ClientKey, backend_client, backend_form, secret_client};
use crate::support::{FHIR_BASE, ISSUER, TestApp};

struct Setup {
    app: TestApp,
    auditor: ClientKey,
    backend: ClientKey,
    other: ClientKey,
}

async fn setup() -> Setup {
    let auditor = ClientKey::generate(Algorithm::ES256);
    let backend = ClientKey::generate(Algorithm::ES256);
    let other = ClientKey::generate(Algorithm::ES256);
    let app = TestApp::builder()
        .with_client(backend_client("auditor", &auditor, "system/*.rs __introspect"))
        .with_client(backend_client("backend", &backend, "system/*.rs"))
        .with_client(backend_client("other", &other, "system/*.rs"))
        .with_client(secret_client("web", "client_secret_post", "web-secret"))
        .build()
        .await;
    Setup { app, auditor, backend, other }
}

async fn token(app: &TestApp, key: &ClientKey, client_id: &str, scope: &str) -> String {
    let assertion = key.assertion(client_id, app.now());
    let reply = app.post_form("/token", &backend_form(&assertion, scope), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["access_token"].as_str().unwrap().to_owned()
}

async fn introspect_as(app: &TestApp, key: &ClientKey, client_id: &str, token: &str) -> serde_json::Value {
    let assertion = key.assertion(client_id, app.now());
    let reply = app
        .post_form(
            "/introspect",
            &[
                ("token", token),
                ("client_assertion_type", crate::support::keys::ASSERTION_TYPE),
                ("client_assertion", &assertion),
            ],
            &[],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    reply.json()
}

#[tokio::test]
async fn a_privileged_client_sees_every_claim_of_an_active_token() {
    let s = setup().await;
    let token = token(&s.app, &s.backend, "backend", "system/CarePlan.rs").await;
    let body = introspect_as(&s.app, &s.auditor, "auditor", &token).await;
    assert_eq!(body["active"], true);
    assert_eq!(body["client_id"], "backend");
    assert_eq!(body["scope"], "system/CarePlan.rs");
    assert_eq!(body["iss"], ISSUER);
    assert_eq!(body["aud"], FHIR_BASE);
    assert_eq!(body["exp"].as_i64().unwrap(), s.app.now() + 300);
    assert_eq!(body["token_type"], "Bearer");
}

#[tokio::test]
async fn an_ordinary_client_sees_only_its_own_tokens() {
    let s = setup().await;
    let mine = token(&s.app, &s.backend, "backend", "system/CarePlan.rs").await;
    let theirs = token(&s.app, &s.other, "other", "system/CarePlan.rs").await;
    assert_eq!(introspect_as(&s.app, &s.backend, "backend", &mine).await["active"], true);
    assert_eq!(introspect_as(&s.app, &s.backend, "backend", &theirs).await, json!({"active": false}));
}

#[tokio::test]
async fn inactive_tokens_are_exactly_active_false() {
    let s = setup().await;
    let live = token(&s.app, &s.backend, "backend", "system/CarePlan.rs").await;
    for junk in ["nonsense", "a.b.c", &live[..live.len() - 4]] {
        assert_eq!(introspect_as(&s.app, &s.auditor, "auditor", junk).await, json!({"active": false}), "{junk}");
    }
    s.app.clock.advance(301);
    assert_eq!(introspect_as(&s.app, &s.auditor, "auditor", &live).await, json!({"active": false}), "expired");
}

#[tokio::test]
async fn a_bearer_token_with_the_introspection_scope_may_introspect() {
    let s = setup().await;
    let subject = token(&s.app, &s.backend, "backend", "system/CarePlan.rs").await;
    let caller = token(&s.app, &s.auditor, "auditor", "system/Patient.rs __introspect").await;
    let auth = format!("Bearer {caller}");
    let reply = s.app.post_form("/introspect", &[("token", &subject)], &[("authorization", &auth)]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["active"], true);

    let weak = token(&s.app, &s.backend, "backend", "system/Patient.rs").await;
    let auth = format!("Bearer {weak}");
    let reply = s.app.post_form("/introspect", &[("token", &subject)], &[("authorization", &auth)]).await;
    reply.assert_error(403, "insufficient_scope");
    assert!(reply.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")));

    let reply = s.app.post_form("/introspect", &[("token", &subject)], &[("authorization", "Bearer forged")]).await;
    reply.assert_error(401, "invalid_token");
    assert!(reply.header("www-authenticate").is_some_and(|h| h.contains("invalid_token")));
}

#[tokio::test]
async fn introspection_refuses_anonymous_and_public_callers_and_needs_a_token() {
    let s = setup().await;
    s.app.post_form("/introspect", &[("token", "x")], &[]).await.assert_error(401, "invalid_client");
    let assertion = s.auditor.assertion("auditor", s.app.now());
    s.app
        .post_form(
            "/introspect",
            &[("client_assertion_type", crate::support::keys::ASSERTION_TYPE), ("client_assertion", &assertion)],
            &[],
        )
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn a_revoked_token_is_inactive_from_that_moment() {
    let s = setup().await;
    let live = token(&s.app, &s.backend, "backend", "system/CarePlan.rs").await;
    let assertion = s.backend.assertion("backend", s.app.now());
    let reply = s
        .app
        .post_form(
            "/revoke",
            &[
                ("token", &live),
                ("token_type_hint", "access_token"),
                ("client_assertion_type", crate::support::keys::ASSERTION_TYPE),
                ("client_assertion", &assertion),
            ],
            &[],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.body.is_empty());
    assert_eq!(introspect_as(&s.app, &s.auditor, "auditor", &live).await, json!({"active": false}));
}

#[tokio::test]
async fn revocation_answers_200_for_unknown_and_foreign_tokens_and_changes_nothing() {
    let s = setup().await;
    let theirs = token(&s.app, &s.other, "other", "system/CarePlan.rs").await;
    for (token, hint) in
        [("unknown", "refresh_token"), (theirs.as_str(), "access_token"), (theirs.as_str(), "made_up_hint")]
    {
        let assertion = s.backend.assertion("backend", s.app.now());
        let reply = s
            .app
            .post_form(
                "/revoke",
                &[
                    ("token", token),
                    ("token_type_hint", hint),
                    ("client_assertion_type", crate::support::keys::ASSERTION_TYPE),
                    ("client_assertion", &assertion),
                ],
                &[],
            )
            .await;
        assert_eq!(reply.status, 200);
    }
    assert_eq!(
        introspect_as(&s.app, &s.auditor, "auditor", &theirs).await["active"],
        true,
        "another client cannot revoke it"
    );
}

#[tokio::test]
async fn revocation_needs_client_authentication_and_a_token() {
    let s = setup().await;
    s.app.post_form("/revoke", &[("token", "x")], &[]).await.assert_error(401, "invalid_client");
    s.app
        .post_form("/revoke", &[("client_id", "web"), ("client_secret", "web-secret")], &[])
        .await
        .assert_error(400, "invalid_request");
    s.app
        .request(axum::http::Method::POST, "/revoke", &[("content-type", "text/plain")], b"token=x".to_vec())
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn revocations_survive_a_restart() {
    let s = setup().await;
    let live = token(&s.app, &s.backend, "backend", "system/CarePlan.rs").await;
    let assertion = s.backend.assertion("backend", s.app.now());
    s.app
        .post_form(
            "/revoke",
            &[
                ("token", &live),
                ("client_assertion_type", crate::support::keys::ASSERTION_TYPE),
                ("client_assertion", &assertion),
            ],
            &[],
        )
        .await;
    let dir = std::sync::Arc::try_unwrap(s.app.dir).unwrap_or_else(|_| panic!("sole owner of the folder"));
    let restarted = TestApp::builder()
        .with_dir(dir)
        .with_client(backend_client("auditor", &s.auditor, "system/*.rs __introspect"))
        .build()
        .await;
    assert_eq!(introspect_as(&restarted, &s.auditor, "auditor", &live).await, json!({"active": false}));
}
