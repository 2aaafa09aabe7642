//! A client whose keys live at its `jwks_uri`: fetched over real HTTP, cached no longer than its
//! Cache-Control allows, refetched once for an unknown `kid`, and `jku` honoured only when it is
//! the registered URI.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use carebroker::domain::client::ClientMetadata;
use carebroker::domain::jwk::JwkSet;
use carebroker::token::jose::Algorithm;
use parking_lot::Mutex;
use serde_json::json;

use crate::support::TestApp;
use crate::support::keys::{ClientKey, backend_form};

#[derive(Clone)]
struct Served {
    jwks: Arc<Mutex<JwkSet>>,
    cache_control: Arc<Mutex<Option<&'static str>>>,
    hits: Arc<AtomicUsize>,
}

async fn serve_jwks(State(s): State<Served>) -> impl IntoResponse {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let body = serde_json::to_string(&*s.jwks.lock()).unwrap();
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(cc) = *s.cache_control.lock() {
        response.headers_mut().insert(header::CACHE_CONTROL, cc.parse().unwrap());
    }
    response
}

async fn start(served: Served) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let app = Router::new().route("/jwks.json", get(serve_jwks)).with_state(served);
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    url
}

async fn setup(cache_control: Option<&'static str>) -> (TestApp, Served, ClientKey, String) {
    let key = ClientKey::generate(Algorithm::ES384);
    let served = Served {
        jwks: Arc::new(Mutex::new(key.jwks())),
        cache_control: Arc::new(Mutex::new(cache_control)),
        hits: Arc::new(AtomicUsize::new(0)),
    };
    let url = start(served.clone()).await;
    let client = ClientMetadata {
        client_id: "remote".into(),
        token_endpoint_auth_method: "private_key_jwt".into(),
        jwks_uri: Some(url.clone()),
        grant_types: vec!["client_credentials".into()],
        scope: "system/*.rs".into(),
        ..Default::default()
    };
    let app = TestApp::builder().with_client(client).build().await;
    (app, served, key, url)
}

async fn token_status(app: &TestApp, assertion: &str) -> u16 {
    app.post_form("/token", &backend_form(assertion, "system/CarePlan.rs"), &[]).await.status.as_u16()
}

#[tokio::test]
async fn keys_are_fetched_and_cached_for_max_age() {
    let (app, served, key, _) = setup(Some("max-age=60")).await;
    assert_eq!(token_status(&app, &key.assertion("remote", app.now())).await, 200);
    assert_eq!(token_status(&app, &key.assertion("remote", app.now())).await, 200);
    assert_eq!(served.hits.load(Ordering::SeqCst), 1, "cached within max-age");
    app.clock.advance(61);
    assert_eq!(token_status(&app, &key.assertion("remote", app.now())).await, 200);
    assert_eq!(served.hits.load(Ordering::SeqCst), 2, "refetched after max-age");
}

#[tokio::test]
async fn no_store_is_never_cached() {
    let (app, served, key, _) = setup(Some("no-store")).await;
    for _ in 0..3 {
        assert_eq!(token_status(&app, &key.assertion("remote", app.now())).await, 200);
    }
    assert_eq!(served.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_rotated_client_key_is_found_by_one_refetch() {
    let (app, served, key, _) = setup(Some("max-age=3600")).await;
    assert_eq!(token_status(&app, &key.assertion("remote", app.now())).await, 200);
    let rotated = ClientKey::generate(Algorithm::ES384);
    *served.jwks.lock() = rotated.jwks();
    app.clock.advance(11);
    assert_eq!(token_status(&app, &rotated.assertion("remote", app.now())).await, 200, "unknown kid refetches");
    assert_eq!(served.hits.load(Ordering::SeqCst), 2);
    // an unknown kid right after a fetch does not hammer the client's server
    let stranger = ClientKey::generate(Algorithm::ES384);
    assert_eq!(token_status(&app, &stranger.assertion("remote", app.now())).await, 401);
    assert_eq!(served.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn jku_must_be_the_registered_jwks_uri() {
    let (app, _served, key, url) = setup(None).await;
    let now = app.now();
    let good = key.sign_with_header(
        &json!({"alg": "ES384", "kid": key.kid(), "typ": "JWT", "jku": url}),
        &ClientKey::claims("remote", now),
    );
    assert_eq!(token_status(&app, &good).await, 200);
    let bad = key.sign_with_header(
        &json!({"alg": "ES384", "kid": key.kid(), "typ": "JWT", "jku": format!("{url}?x=1")}),
        &ClientKey::claims("remote", now),
    );
    app.post_form("/token", &backend_form(&bad, "system/CarePlan.rs"), &[]).await.assert_error(401, "invalid_client");
}

#[tokio::test]
async fn an_unreachable_jwks_uri_is_invalid_client_not_a_server_error() {
    let key = ClientKey::generate(Algorithm::ES384);
    let client = ClientMetadata {
        client_id: "remote".into(),
        token_endpoint_auth_method: "private_key_jwt".into(),
        jwks_uri: Some("http://127.0.0.1:9/jwks.json".into()),
        grant_types: vec!["client_credentials".into()],
        scope: "system/*.rs".into(),
        ..Default::default()
    };
    let app = TestApp::builder().with_client(client).build().await;
    app.post_form("/token", &backend_form(&key.assertion("remote", app.now()), "system/CarePlan.rs"), &[])
        .await
        .assert_error(401, "invalid_client");
}
