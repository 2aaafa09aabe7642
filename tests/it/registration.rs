//! RFC 7591 dynamic client registration.

use carebroker::token::jose::Algorithm;
use serde_json::{Value, json};

use crate::support::keys::{ClientKey, backend_form};
use crate::support::{INITIAL_ACCESS_TOKEN, TestApp};

async fn register(app: &TestApp, auth: Option<&str>, body: &Value) -> crate::support::Reply {
    let bearer = auth.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b));
    }
    app.request(axum::http::Method::POST, "/register", &headers, body.to_string().into_bytes()).await
}

#[tokio::test]
async fn registration_is_off_without_an_initial_access_token() {
    let app = TestApp::builder().build().await;
    let reply = register(&app, Some(INITIAL_ACCESS_TOKEN), &json!({"redirect_uris": ["https://a.example/cb"]})).await;
    assert_eq!(reply.status, 404);
    let discovery = app.get("/.well-known/openid-configuration").await.json();
    assert!(discovery.get("registration_endpoint").is_none());
}

#[tokio::test]
async fn a_wrong_or_missing_initial_access_token_is_invalid_token() {
    let app = TestApp::builder().with_registration().build().await;
    for auth in [None, Some("wrong-token"), Some("")] {
        let reply = register(&app, auth, &json!({"redirect_uris": ["https://a.example/cb"]})).await;
        reply.assert_error(401, "invalid_token");
        assert!(reply.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")));
    }
}

#[tokio::test]
async fn a_symmetric_client_is_issued_a_secret_once() {
    let app = TestApp::builder().with_registration().build().await;
    let reply = register(
        &app,
        Some(INITIAL_ACCESS_TOKEN),
        &json!({"client_name": "Care home portal", "redirect_uris": ["https://portal.example/cb"], "scope": "openid fhirUser patient/*.rs system/*.cruds", "software_id": "ignored"}),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(body["grant_types"], json!(["authorization_code"]));
    assert_eq!(body["response_types"], json!(["code"]));
    assert_eq!(body["client_secret_expires_at"], 0);
    assert_eq!(
        body["scope"], "openid fhirUser patient/*.rs",
        "narrowed to the registration policy (no system/ for a user app)"
    );
    let id = body["client_id"].as_str().unwrap();
    let secret = body["client_secret"].as_str().unwrap();
    assert!(secret.len() >= 43);

    // The secret authenticates the client; only its hash is stored.
    let reply =
        app.post_form("/introspect", &[("token", "x"), ("client_id", id), ("client_secret", "wrong")], &[]).await;
    reply.assert_error(401, "invalid_client");
    use base64::Engine as _;
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")));
    let reply = app.post_form("/introspect", &[("token", "x")], &[("authorization", &basic)]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let stored = app.state.stores.durable.get_client(id).await.unwrap().unwrap();
    assert!(stored.client_secret_hash.as_deref().is_some_and(|h| !h.contains(secret)));
}

#[tokio::test]
async fn a_registered_backend_service_is_durable_and_gets_tokens() {
    let key = ClientKey::generate(Algorithm::RS384);
    let app = TestApp::builder().with_registration().build().await;
    let reply = register(
        &app,
        Some(INITIAL_ACCESS_TOKEN),
        &json!({"token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"], "response_types": [], "jwks": key.jwks(), "scope": "system/CarePlan.rs"}),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let body = reply.json();
    assert!(body.get("client_secret").is_none());
    let id = body["client_id"].as_str().unwrap().to_owned();

    let dir = std::sync::Arc::try_unwrap(app.dir).unwrap_or_else(|_| panic!("sole owner"));
    let restarted = TestApp::builder().with_dir(dir).build().await;
    let assertion = key.assertion(&id, restarted.now());
    let reply = restarted.post_form("/token", &backend_form(&assertion, "system/CarePlan.rs"), &[]).await;
    assert_eq!(reply.status, 200, "registered client survives a restart: {}", reply.text());
}

#[tokio::test]
async fn invalid_metadata_is_refused_with_the_rfc_7591_code_and_nothing_is_stored() {
    let key = ClientKey::generate(Algorithm::ES256);
    let mut private = key.key.public_jwk();
    private.other.insert("d".into(), json!("c2VjcmV0"));
    let cases = [
        (json!({"redirect_uris": ["http://evil.example/cb"]}), "invalid_redirect_uri"),
        (json!({"redirect_uris": ["https://a.example/cb#frag"]}), "invalid_redirect_uri"),
        (json!({"redirect_uris": []}), "invalid_redirect_uri"),
        (
            json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "tls_client_auth"}),
            "invalid_client_metadata",
        ),
        (
            json!({"grant_types": ["client_credentials"], "response_types": [], "token_endpoint_auth_method": "private_key_jwt"}),
            "invalid_client_metadata",
        ),
        (
            json!({"grant_types": ["client_credentials"], "response_types": [], "token_endpoint_auth_method": "client_secret_basic"}),
            "invalid_client_metadata",
        ),
        (
            json!({"grant_types": ["client_credentials"], "response_types": [], "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [private]}}),
            "invalid_client_metadata",
        ),
        (json!({"redirect_uris": ["https://a.example/cb"], "response_types": ["token"]}), "invalid_client_metadata"),
        (json!({"redirect_uris": ["https://a.example/cb"], "scope": "patient/Foo.zz"}), "invalid_client_metadata"),
        (json!({"redirect_uris": "https://a.example/cb"}), "invalid_client_metadata"),
    ];
    let app = TestApp::builder().with_registration().build().await;
    for (body, code) in cases {
        let reply = register(&app, Some(INITIAL_ACCESS_TOKEN), &body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        assert_eq!(reply.json()["error"], code, "{body}");
        assert!(reply.json().get("client_id").is_none());
    }
    let reply = app
        .request(
            axum::http::Method::POST,
            "/register",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("authorization", &format!("Bearer {INITIAL_ACCESS_TOKEN}")),
            ],
            b"redirect_uris=https://a.example/cb".to_vec(),
        )
        .await;
    reply.assert_error(400, "invalid_request");
}
