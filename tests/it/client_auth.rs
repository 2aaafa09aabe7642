//! Client authentication by secret (Basic and post) and by public clients, seen through the
//! endpoints that use it. Successful secret authentication is observed at introspection (the
//! token endpoint has no secret-client grant until authorization_code lands).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use carebroker::token::jose::Algorithm;

use crate::support::TestApp;
use crate::support::keys::{ClientKey, backend_client, backend_form, secret_client};

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

async fn app() -> TestApp {
    let public = carebroker::domain::client::ClientMetadata {
        client_id: "public-app".into(),
        token_endpoint_auth_method: "none".into(),
        grant_types: vec!["authorization_code".into()],
        redirect_uris: vec!["https://app.example/cb".into()],
        scope: "patient/*.rs".into(),
        ..Default::default()
    };
    TestApp::builder()
        .with_client(secret_client("basic-app", "client_secret_basic", "basic-secret"))
        .with_client(secret_client("post-app", "client_secret_post", "post-secret"))
        .with_client(public)
        .build()
        .await
}

#[tokio::test]
async fn basic_and_post_secrets_authenticate() {
    let app = app().await;
    let auth = basic("basic-app", "basic-secret");
    let reply = app.post_form("/introspect", &[("token", "x")], &[("authorization", &auth)]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), serde_json::json!({"active": false}));

    let reply = app
        .post_form("/introspect", &[("token", "x"), ("client_id", "post-app"), ("client_secret", "post-secret")], &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn a_wrong_basic_secret_is_401_with_a_basic_challenge() {
    let app = app().await;
    for auth in [
        basic("basic-app", "wrong"),
        basic("nobody", "basic-secret"),
        "Basic !!!".to_owned(),
        basic("post-app", "post-secret"),
    ] {
        let reply = app.post_form("/token", &[("grant_type", "client_credentials")], &[("authorization", &auth)]).await;
        reply.assert_error(401, "invalid_client");
        assert!(reply.header("www-authenticate").is_some_and(|h| h.starts_with("Basic")), "{auth}");
    }
}

#[tokio::test]
async fn a_wrong_post_secret_or_method_is_invalid_client() {
    let app = app().await;
    for (id, secret) in [("post-app", "wrong"), ("basic-app", "basic-secret"), ("nobody", "x")] {
        let reply =
            app.post_form("/introspect", &[("token", "x"), ("client_id", id), ("client_secret", secret)], &[]).await;
        reply.assert_error(401, "invalid_client");
        // RFC 9110 §15.5.2: every 401 carries a challenge, naming a scheme the client may use
        assert!(reply.header("www-authenticate").is_some_and(|h| h.starts_with("Basic realm=")), "{id}");
    }
}

#[tokio::test]
async fn basic_client_id_must_match_the_form() {
    let app = app().await;
    let auth = basic("basic-app", "basic-secret");
    app.post_form("/introspect", &[("token", "x"), ("client_id", "post-app")], &[("authorization", &auth)])
        .await
        .assert_error(401, "invalid_client");
}

#[tokio::test]
async fn confidential_clients_must_authenticate_and_unknown_clients_are_refused() {
    let app = app().await;
    app.post_form("/revoke", &[("token", "x"), ("client_id", "basic-app")], &[])
        .await
        .assert_error(401, "invalid_client");
    app.post_form("/revoke", &[("token", "x"), ("client_id", "who")], &[]).await.assert_error(401, "invalid_client");
    app.post_form("/revoke", &[("token", "x")], &[]).await.assert_error(401, "invalid_client");
    // a public client may revoke (its own tokens) by naming itself
    let reply = app.post_form("/revoke", &[("token", "x"), ("client_id", "public-app")], &[]).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn a_private_key_jwt_client_cannot_use_a_secret() {
    let key = ClientKey::generate(Algorithm::ES256);
    let app = TestApp::builder().with_client(backend_client("backend", &key, "system/*.rs")).build().await;
    let auth = basic("backend", "anything");
    app.post_form(
        "/token",
        &[("grant_type", "client_credentials"), ("scope", "system/CarePlan.rs")],
        &[("authorization", &auth)],
    )
    .await
    .assert_error(401, "invalid_client");
    // but its assertion works
    let assertion = key.assertion("backend", app.now());
    assert_eq!(app.post_form("/token", &backend_form(&assertion, "system/CarePlan.rs"), &[]).await.status, 200);
}
