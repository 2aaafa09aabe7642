//! Every OAuth error code `/openapi.json` documents for an endpoint is reached by a real request
//! here, with the documented status; a code documented without a request that reaches it fails
//! the test, as does a request that answers anything else. (Schemathesis checks the other
//! direction: nothing is answered that the document does not list.)

use std::collections::BTreeSet;

use axum::http::Method;
use carebroker::token::jose::{Algorithm, SigningKey};
use serde_json::{Value, json};

use crate::support::fhir::{system_claims, token as mint, user_claims};
use crate::support::keys::{ClientKey, backend_client, backend_form, secret_client};
use crate::support::smart::{APP, APP_REDIRECT, EHR, EHR_SECRET, basic, launch_body, public_app, trusted_ehr};
use crate::support::{FHIR_BASE, INITIAL_ACCESS_TOKEN, Reply, TOKEN_URL, TestApp, services};

const SECRET: &str = "confidential-secret-0123456789abcdef";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";

async fn broker(stores: Option<crate::support::StoreChoice>) -> (TestApp, ClientKey) {
    let key = ClientKey::generate(Algorithm::ES256);
    let mut confidential = secret_client("confidential", "client_secret_post", SECRET);
    confidential.grant_types = vec![EXCHANGE.into(), "authorization_code".into()];
    confidential.redirect_uris = vec!["https://confidential.example/cb".into()];
    confidential.scope = "patient/*.rs user/*.rs".into();
    confidential.token_exchange_subject_token_types = vec![ACCESS.into()];
    let mut no_code = secret_client("no-code", "client_secret_post", SECRET);
    no_code.grant_types = vec![EXCHANGE.into()];
    no_code.token_exchange_subject_token_types = vec![ACCESS.into()];
    no_code.redirect_uris = vec!["https://no-code.example/cb".into()];
    no_code.scope = "patient/*.rs".into();
    let mut builder = TestApp::builder()
        .with_client(backend_client("backend", &key, "system/CarePlan.rs"))
        .with_client(confidential)
        .with_client(secret_client("not-an-ehr", "client_secret_basic", SECRET))
        .with_client(no_code)
        .with_client(public_app())
        .with_client(trusted_ehr())
        .with_dev_users()
        .with_registration()
        .with_config(|c| c.tokens.dpop_require_nonce = true);
    if let Some(stores) = stores {
        builder = builder.with_store(stores);
    }
    (builder.build().await, key)
}

async fn json_post(app: &TestApp, path: &str, body: &Value, auth: Option<&str>) -> Reply {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(auth) = auth {
        headers.push(("authorization", auth));
    }
    app.request(Method::POST, path, &headers, body.to_string().into_bytes()).await
}

fn dpop_proof(now: i64) -> String {
    let key = SigningKey::from_pkcs8(Algorithm::ES256, &SigningKey::generate_pkcs8(Algorithm::ES256).unwrap()).unwrap();
    let header = json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": key.public_jwk()});
    let claims = json!({"jti": carebroker::token::random_token(12), "htm": "POST", "htu": TOKEN_URL, "iat": now});
    key.sign_with_header(&header, &claims).unwrap()
}

/// A request that reaches `code` at `path` on a running app, when we know one.
async fn reach(app: &TestApp, key: &ClientKey, path: &str, code: &str) -> Option<Reply> {
    let now = app.now();
    let assertion = key.assertion("backend", now);
    let wrong_key = ClientKey::generate(Algorithm::ES256).assertion("backend", now);
    let user_token = mint(app, &user_claims(app, "patient/*.rs", Some("9434765919")));
    let public = [("client_id", APP), ("response_type", "code"), ("redirect_uri", APP_REDIRECT), ("state", "st-1")];
    let pkce = [("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"), ("code_challenge_method", "S256")];
    let with = |base: &[(&'static str, &'static str)], more: &[(&'static str, &'static str)]| {
        let mut all = base.to_vec();
        all.extend_from_slice(more);
        all
    };
    let reply = match (path, code) {
        ("/token", "invalid_request") => {
            app.post_form("/token", &[("grant_type", "client_credentials"), ("grant_type", "client_credentials")], &[])
                .await
        }
        ("/token", "invalid_client") => {
            app.post_form("/token", &backend_form(&wrong_key, "system/CarePlan.rs"), &[]).await
        }
        ("/token", "invalid_grant") => {
            let form = [
                ("grant_type", "authorization_code"),
                ("client_id", APP),
                ("code", "no-such-code"),
                ("redirect_uri", APP_REDIRECT),
                ("code_verifier", "a-verifier-a-verifier-a-verifier-a-verifier-0123"),
            ];
            app.post_form("/token", &form, &[]).await
        }
        ("/token", "unauthorized_client") => {
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", "confidential"),
                ("client_secret", SECRET),
                ("scope", "system/CarePlan.rs"),
            ];
            app.post_form("/token", &form, &[]).await
        }
        ("/token", "unsupported_grant_type") => {
            let mut form = backend_form(&assertion, "system/CarePlan.rs");
            form[0] = ("grant_type", "password");
            app.post_form("/token", &form, &[]).await
        }
        ("/token", "invalid_scope") => {
            app.post_form("/token", &backend_form(&assertion, "system/Observation.rs"), &[]).await
        }
        ("/token", "invalid_target") => {
            let form = [
                ("grant_type", EXCHANGE),
                ("client_id", "confidential"),
                ("client_secret", SECRET),
                ("subject_token", user_token.as_str()),
                ("subject_token_type", ACCESS),
                ("resource", "https://unknown.example/api"),
            ];
            app.post_form("/token", &form, &[]).await
        }
        ("/token", "invalid_dpop_proof") => {
            app.post_form("/token", &backend_form(&assertion, "system/CarePlan.rs"), &[("dpop", "not-a-proof")]).await
        }
        ("/token", "use_dpop_nonce") => {
            let proof = dpop_proof(now);
            app.post_form("/token", &backend_form(&assertion, "system/CarePlan.rs"), &[("dpop", &proof)]).await
        }
        ("/token", "temporarily_unavailable") => {
            app.post_form("/token", &backend_form(&assertion, "system/CarePlan.rs"), &[]).await
        }
        ("/par", "invalid_request") => app.post_form("/par", &with(&public, &[("scope", "patient/*.rs")]), &[]).await,
        ("/par", "invalid_client") => {
            app.post_form(
                "/par",
                &[("client_id", "confidential"), ("client_secret", "wrong"), ("response_type", "code")],
                &[],
            )
            .await
        }
        ("/par", "unauthorized_client") => {
            let form = [
                ("client_id", "no-code"),
                ("client_secret", SECRET),
                ("response_type", "code"),
                ("redirect_uri", "https://no-code.example/cb"),
                ("state", "st-1"),
                ("scope", "patient/*.rs"),
                ("aud", FHIR_BASE),
            ];
            app.post_form("/par", &[&form[..], &pkce[..]].concat(), &[]).await
        }
        ("/par", "invalid_scope") => {
            let form = with(&with(&public, &pkce), &[("scope", "system/Everything.rs"), ("aud", FHIR_BASE)]);
            app.post_form("/par", &form, &[]).await
        }
        ("/par", "invalid_target") => {
            let form =
                with(&with(&public, &pkce), &[("scope", "patient/*.rs"), ("resource", "https://unknown.example/fhir")]);
            app.post_form("/par", &form, &[]).await
        }
        ("/par", "temporarily_unavailable") => {
            let form = with(&with(&public, &pkce), &[("scope", "patient/*.rs"), ("aud", FHIR_BASE)]);
            app.post_form("/par", &form, &[]).await
        }
        ("/introspect", "invalid_request") => {
            app.post_form("/introspect", &[("client_id", "confidential"), ("client_secret", SECRET)], &[]).await
        }
        ("/introspect", "invalid_client") => {
            let form = [("token", user_token.as_str()), ("client_id", "confidential"), ("client_secret", "wrong")];
            app.post_form("/introspect", &form, &[]).await
        }
        ("/introspect", "invalid_token") => {
            app.post_form("/introspect", &[("token", user_token.as_str())], &[("authorization", "Bearer forged")]).await
        }
        ("/introspect", "insufficient_scope") => {
            let weak = format!("Bearer {}", mint(app, &system_claims(app, "system/Patient.rs")));
            app.post_form("/introspect", &[("token", user_token.as_str())], &[("authorization", &weak)]).await
        }
        ("/introspect", "temporarily_unavailable") => {
            let auditor = format!("Bearer {}", mint(app, &system_claims(app, "system/Patient.rs __introspect")));
            app.post_form("/introspect", &[("token", user_token.as_str())], &[("authorization", &auditor)]).await
        }
        ("/revoke", "invalid_request") => {
            app.post_form("/revoke", &[("client_id", "confidential"), ("client_secret", SECRET)], &[]).await
        }
        ("/revoke", "invalid_client") => {
            let form = [("token", user_token.as_str()), ("client_id", "confidential"), ("client_secret", "wrong")];
            app.post_form("/revoke", &form, &[]).await
        }
        ("/revoke", "temporarily_unavailable") => {
            let form = [("token", "some-refresh-token"), ("client_id", APP)];
            app.post_form("/revoke", &form, &[]).await
        }
        ("/register", "invalid_token") => {
            json_post(app, "/register", &json!({"redirect_uris": ["https://a.example/cb"]}), Some("Bearer wrong")).await
        }
        ("/register", "invalid_redirect_uri") => {
            let auth = format!("Bearer {INITIAL_ACCESS_TOKEN}");
            json_post(app, "/register", &json!({"redirect_uris": ["http://a.example/cb"]}), Some(&auth)).await
        }
        ("/register", "invalid_client_metadata") => {
            let auth = format!("Bearer {INITIAL_ACCESS_TOKEN}");
            let body = json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["password"]});
            json_post(app, "/register", &body, Some(&auth)).await
        }
        ("/register", "not_found") => {
            let closed = TestApp::builder().build().await;
            let auth = format!("Bearer {INITIAL_ACCESS_TOKEN}");
            json_post(&closed, "/register", &json!({"redirect_uris": ["https://a.example/cb"]}), Some(&auth)).await
        }
        ("/register", "temporarily_unavailable") => {
            let auth = format!("Bearer {INITIAL_ACCESS_TOKEN}");
            json_post(app, "/register", &json!({"redirect_uris": ["https://a.example/cb"]}), Some(&auth)).await
        }
        ("/launch", "invalid_request") => {
            json_post(app, "/launch", &json!({"client_id": APP}), Some(&basic(EHR, EHR_SECRET))).await
        }
        ("/launch", "invalid_client") => json_post(app, "/launch", &launch_body(), Some(&basic(EHR, "wrong"))).await,
        ("/launch", "unauthorized_client") => {
            json_post(app, "/launch", &launch_body(), Some(&basic("not-an-ehr", SECRET))).await
        }
        ("/launch", "access_denied") => {
            let mut body = launch_body();
            body["user"]["role_codes"] = json!(["R8004"]);
            json_post(app, "/launch", &body, Some(&basic(EHR, EHR_SECRET))).await
        }
        ("/launch", "temporarily_unavailable") => {
            json_post(app, "/launch", &launch_body(), Some(&basic(EHR, EHR_SECRET))).await
        }
        _ => return None,
    };
    Some(reply)
}

/// The (path, code) pairs the served document lists, with the status each is documented under.
async fn documented(app: &TestApp) -> Vec<(String, String, BTreeSet<u16>)> {
    let doc = app.get("/openapi.json").await.json();
    let mut pairs = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(operation) = item.as_object().and_then(|o| o.values().next()) else { continue };
        let mut by_code: std::collections::BTreeMap<String, BTreeSet<u16>> = Default::default();
        for (status, response) in operation["responses"].as_object().unwrap() {
            let schema = &response["content"]["application/json"]["schema"];
            let Some(parts) = schema["allOf"].as_array() else { continue };
            for code in parts.iter().filter_map(|p| p["properties"]["error"]["enum"].as_array()).flatten() {
                by_code.entry(code.as_str().unwrap().to_owned()).or_default().insert(status.parse().unwrap());
            }
        }
        pairs.extend(by_code.into_iter().map(|(code, statuses)| (path.clone(), code, statuses)));
    }
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_error_code_is_reached_with_a_documented_status() {
    let (app, key) = broker(None).await;
    let pairs = documented(&app).await;
    assert!(pairs.len() >= 30, "the document lists error codes per endpoint: {pairs:?}");

    // the store outage: a Redis and a PostgreSQL of this test's own, both stopped
    let dir = tempfile::tempdir().unwrap();
    let redis_port = crate::support::free_port();
    let mut redis = services::own_redis(redis_port, dir.path()).await;
    let pg_dir = tempfile::tempdir().unwrap();
    let pg = services::OwnPostgres::start_new(crate::support::free_port(), pg_dir.path());
    let stores = crate::support::StoreChoice::RedisPostgres {
        redis_url: format!("redis://127.0.0.1:{redis_port}/"),
        postgres_url: pg.url(),
    };
    let (down, down_key) = broker(Some(stores)).await;
    redis.kill().unwrap();
    redis.wait().unwrap();
    pg.stop();

    let mut unreached = Vec::new();
    for (path, code, statuses) in &pairs {
        let (target, key) = if code == "temporarily_unavailable" { (&down, &down_key) } else { (&app, &key) };
        let Some(reply) = reach(target, key, path, code).await else {
            unreached.push(format!("{path} {code}: no request here reaches it"));
            continue;
        };
        let status = reply.status.as_u16();
        let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        if body["error"] != code.as_str() || !statuses.contains(&status) {
            unreached.push(format!("{path} {code} (documented {statuses:?}): answered {status} {body}"));
        }
        if status == 503 {
            assert_eq!(reply.header("retry-after"), Some("5"), "{path}: a 503 says when to retry");
        }
    }
    assert!(unreached.is_empty(), "documented but not reached:\n  {}", unreached.join("\n  "));
}
