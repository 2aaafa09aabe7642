//! Two broker nodes sharing Redis and PostgreSQL (real servers) over real HTTP ports: a client
//! assertion `jti` seen by one node is a replay on the other, even under 50 concurrent requests.
//! The single-use tests run on a standalone Redis and on a 3-master Redis Cluster.

use carebroker::token::jose::Algorithm;
use tokio::net::TcpListener;

use crate::support::keys::{ClientKey, backend_client, backend_form};
use crate::support::services::Redis;
use crate::support::{StoreChoice, TestApp, form, services};

async fn node(key: &ClientKey, redis: Redis, postgres_url: &str, prefix: &str) -> String {
    let prefix = prefix.to_owned();
    let app = TestApp::builder()
        .with_client(backend_client("backend", key, "system/*.rs"))
        .with_store(redis.with_postgres(postgres_url))
        .with_config(move |c| c.store.redis_prefix = prefix)
        .build()
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = app.state.clone();
    tokio::spawn(async move {
        let _keep = app;
        carebroker::http::serve_on(state, listener, std::future::pending()).await.ok();
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_replays_across_two_nodes_yield_one_token() {
    fifty_concurrent_replays(Redis::Standalone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_replays_across_two_nodes_on_a_redis_cluster_yield_one_token() {
    fifty_concurrent_replays(Redis::Cluster).await;
}

async fn fifty_concurrent_replays(redis: Redis) {
    let postgres_url = services::fresh_postgres_database().await;
    let prefix = format!("scale-{}:", carebroker::token::random_token(6));
    let key = ClientKey::generate(Algorithm::ES384);
    let a = node(&key, redis, &postgres_url, &prefix).await;
    let b = node(&key, redis, &postgres_url, &prefix).await;

    let assertion = key.assertion("backend", crate::support::T0);
    let body = form(&backend_form(&assertion, "system/CarePlan.rs"));
    let http = reqwest::Client::new();
    let requests: Vec<_> = (0..50)
        .map(|i| {
            let url = format!("{}/token", if i % 2 == 0 { &a } else { &b });
            let request = http.post(url).header("content-type", "application/x-www-form-urlencoded").body(body.clone());
            tokio::spawn(async move {
                let response = request.send().await.expect("send");
                let status = response.status().as_u16();
                let json: serde_json::Value = response.json().await.expect("json");
                (status, json)
            })
        })
        .collect();
    let mut issued = 0;
    for r in requests {
        let (status, json) = r.await.unwrap();
        if status == 200 {
            assert!(json["access_token"].is_string());
            issued += 1;
        } else {
            assert_eq!((status, json["error"].as_str()), (401, Some("invalid_client")), "{json}");
        }
    }
    assert_eq!(issued, 1, "exactly one token across both nodes");
}

#[tokio::test]
async fn a_revocation_on_one_node_is_seen_by_the_other() {
    let redis_url = services::redis_url();
    let postgres_url = services::fresh_postgres_database().await;
    let key = ClientKey::generate(Algorithm::ES256);
    let auditor = ClientKey::generate(Algorithm::ES256);
    let build = |prefix: &'static str| {
        let (r, p) = (redis_url.clone(), postgres_url.clone());
        TestApp::builder()
            .with_client(backend_client("backend", &key, "system/*.rs"))
            .with_client(backend_client("auditor", &auditor, "system/*.rs __introspect"))
            .with_store(StoreChoice::RedisPostgres { redis_url: r, postgres_url: p })
            .with_config(move |c| c.store.redis_prefix = prefix.into())
    };
    let one = build("shared-revocation:").build().await;
    let two = build("shared-revocation:").build().await;
    let token = one
        .post_form("/token", &backend_form(&key.assertion("backend", one.now()), "system/CarePlan.rs"), &[])
        .await
        .json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let assertion = key.assertion("backend", one.now());
    let reply = one
        .post_form(
            "/revoke",
            &[
                ("token", &token),
                ("client_assertion_type", crate::support::keys::ASSERTION_TYPE),
                ("client_assertion", &assertion),
            ],
            &[],
        )
        .await;
    assert_eq!(reply.status, 200);
    let assertion = auditor.assertion("auditor", two.now());
    let reply = two
        .post_form(
            "/introspect",
            &[
                ("token", &token),
                ("client_assertion_type", crate::support::keys::ASSERTION_TYPE),
                ("client_assertion", &assertion),
            ],
            &[],
        )
        .await;
    assert_eq!(reply.json(), serde_json::json!({"active": false}));
}

/// Two nodes with the SMART app, EHR and dev users, sharing Redis and PostgreSQL.
async fn smart_pair(redis: Redis) -> (TestApp, TestApp) {
    let postgres_url = services::fresh_postgres_database().await;
    let prefix = format!("pair-{}:", carebroker::token::random_token(6));
    let build = || {
        let prefix = prefix.clone();
        TestApp::builder()
            .with_client(crate::support::smart::public_app())
            .with_client(crate::support::smart::trusted_ehr())
            .with_dev_users()
            .with_store(redis.with_postgres(&postgres_url))
            .with_config(move |c| c.store.redis_prefix = prefix)
    };
    (build().build().await, build().build().await)
}

#[tokio::test]
async fn a_launch_and_a_code_from_one_node_are_redeemed_on_the_other() {
    launch_and_code_across_nodes(Redis::Standalone).await;
}

#[tokio::test]
async fn a_launch_and_a_code_from_one_node_are_redeemed_on_the_other_through_a_redis_cluster() {
    launch_and_code_across_nodes(Redis::Cluster).await;
}

async fn launch_and_code_across_nodes(redis: Redis) {
    use crate::support::smart::*;
    let (a, b) = smart_pair(redis).await;
    let launch = register_launch(&a, launch_body()).await;
    let (verifier, challenge) = pkce_pair();
    let reply = b
        .get(&authorize_path(
            &challenge,
            &[("launch", &launch), ("scope", "launch openid patient/*.rs offline_access")],
        ))
        .await;
    let code = code_from(&reply, "st-123");
    let tokens = exchange(&a, &code, &verifier).await;
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    assert_eq!(tokens.json()["patient"], "9434765919");
    // and the refresh family lives in PostgreSQL: rotate on b, replay on a revokes it
    let r1 = tokens.json()["refresh_token"].as_str().unwrap().to_owned();
    let r2 = b.post_form("/token", &[("grant_type", "refresh_token"), ("refresh_token", &r1)], &[]).await;
    assert_eq!(r2.status, 200, "{}", r2.text());
    a.post_form("/token", &[("grant_type", "refresh_token"), ("refresh_token", &r1)], &[])
        .await
        .assert_error(400, "invalid_grant");
    let r2 = r2.json()["refresh_token"].as_str().unwrap().to_owned();
    b.post_form("/token", &[("grant_type", "refresh_token"), ("refresh_token", &r2)], &[])
        .await
        .assert_error(400, "invalid_grant");
    // the code, used on a, is spent on b too
    exchange(&b, &code, &verifier).await.assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn a_browser_session_started_on_one_node_continues_on_the_other() {
    use crate::support::browser::{Browser, hidden_value};
    use crate::support::smart::*;
    let (a, b) = smart_pair(Redis::Standalone).await;
    let (verifier, challenge) = pkce_pair();
    let mut browser = Browser::new();
    let reply = browser.get(&a, &authorize_path(&challenge, &[])).await;
    let html = browser.follow(&a, &reply).await.text();
    let (csrf, req) = (hidden_value(&html, "csrf"), hidden_value(&html, "req"));
    // sign in on b
    let reply = browser
        .post(&b, "/signin", &[("csrf", &csrf), ("req", &req), ("username", "patient"), ("password", "patient")], &[])
        .await;
    assert!(reply.header("location").unwrap().starts_with("/authorize/consent"), "{}", reply.text());
    // consent on a
    let html = browser.follow(&a, &reply).await.text();
    let csrf = hidden_value(&html, "csrf");
    let scopes = ["launch/patient", "openid", "fhirUser", "patient/CarePlan.rs", "offline_access"];
    let mut form = vec![("csrf", csrf.as_str()), ("req", req.as_str()), ("decision", "allow")];
    form.extend(scopes.iter().map(|s| ("scope", *s)));
    let reply = browser.post(&a, "/authorize/consent", &form, &[]).await;
    let code = code_from(&reply, "st-123");
    assert_eq!(exchange(&b, &code, &verifier).await.json()["patient"], "9434765919");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_proof_used_on_one_node_is_a_replay_on_the_other() {
    dpop_proof_across_nodes(Redis::Standalone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_proof_used_on_one_node_is_a_replay_on_the_other_through_a_redis_cluster() {
    dpop_proof_across_nodes(Redis::Cluster).await;
}

async fn dpop_proof_across_nodes(redis: Redis) {
    use carebroker::token::jose::SigningKey;
    let postgres_url = services::fresh_postgres_database().await;
    let prefix = format!("scale-{}:", carebroker::token::random_token(6));
    let key = ClientKey::generate(Algorithm::ES256);
    let a = node(&key, redis, &postgres_url, &prefix).await;
    let b = node(&key, redis, &postgres_url, &prefix).await;

    let dpop =
        SigningKey::from_pkcs8(Algorithm::ES256, &SigningKey::generate_pkcs8(Algorithm::ES256).unwrap()).unwrap();
    let header = serde_json::json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": dpop.public_jwk()});
    let claims =
        serde_json::json!({"jti": "once", "htm": "POST", "htu": crate::support::TOKEN_URL, "iat": crate::support::T0});
    let proof = dpop.sign_with_header(&header, &claims).unwrap();
    let http = reqwest::Client::new();
    let mut answers = Vec::new();
    for node in [&a, &b] {
        let assertion = key.assertion("backend", crate::support::T0);
        let response = http
            .post(format!("{node}/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("dpop", &proof)
            .body(form(&backend_form(&assertion, "system/CarePlan.rs")))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let json: serde_json::Value = response.json().await.unwrap();
        answers.push((status, json));
    }
    assert_eq!(answers[0].0, 200, "{}", answers[0].1);
    assert_eq!(answers[0].1["token_type"], "DPoP");
    assert_eq!((answers[1].0, answers[1].1["error"].as_str()), (400, Some("invalid_dpop_proof")), "{}", answers[1].1);
    assert!(answers[1].1.get("access_token").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_stores_and_liveness_does_not() {
    let embedded = TestApp::builder().build().await;
    assert_eq!(embedded.get("/readyz").await.status, 200);

    // a Redis of this test's own, stopped halfway
    let port = crate::support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut redis = services::own_redis(port, dir.path()).await;
    let url = format!("redis://127.0.0.1:{port}/");
    let postgres_url = services::fresh_postgres_database().await;
    let key = crate::support::keys::ClientKey::generate(carebroker::token::jose::Algorithm::ES256);
    let app = TestApp::builder()
        .with_store(StoreChoice::RedisPostgres { redis_url: url, postgres_url })
        .with_client(crate::support::keys::backend_client("backend", &key, "system/CarePlan.rs"))
        .build()
        .await;
    assert_eq!(app.get("/readyz").await.status, 200);
    redis.kill().unwrap();
    redis.wait().unwrap();
    let reply = app.get("/readyz").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.text().contains("ephemeral store"), "{}", reply.text());
    assert_eq!(reply.header("retry-after"), Some("5"));
    // a token request that needs the ephemeral store (its jti is remembered there) is a 503 in
    // OAuth's own error form, with Retry-After, and nothing is issued
    let assertion = key.assertion("backend", app.now());
    let form = crate::support::keys::backend_form(&assertion, "system/CarePlan.rs");
    let refused = app.post_form("/token", &form, &[]).await;
    refused.assert_error(503, "temporarily_unavailable");
    assert_eq!(refused.header("retry-after"), Some("5"));
    assert_eq!(app.get("/healthz").await.status, 200, "liveness does not depend on the stores");
}
