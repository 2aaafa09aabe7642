//! The trimmed fault run (`scripts/fault` is the whole one: two nodes, mixed load, Redis, PostgreSQL
//! and a node broken in turn; this holds the same correctness properties for one fault): Redis is killed with SIGKILL while backend services ask for tokens,
//! then started again on its own data. No request gets a 500; every refusal during the outage is
//! a 503 in OAuth's own error form with `Retry-After` and issues nothing; every token answered 200
//! before the fault is still active after it; no client-assertion `jti` is accepted twice across
//! the fault; the audit chain verifies and holds a record of every token request answered.
//! And the PostgreSQL pool through a failover: the server stops (every connection cut) and
//! starts again; refusals meanwhile are 503s, and the pool serves again without a restart.
//! Assertions are on correctness only, never on time.

use carebroker::token::jose::Algorithm;

use crate::support::keys::{ClientKey, backend_client, backend_form};
use crate::support::services;
use crate::support::{StoreChoice, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_killed_under_load_loses_nothing_and_leaks_no_500() {
    let port = crate::support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut redis = services::own_redis(port, dir.path()).await;
    let key = ClientKey::generate(Algorithm::ES256);
    let app = TestApp::builder()
        .with_store(StoreChoice::RedisPostgres {
            redis_url: format!("redis://127.0.0.1:{port}/"),
            postgres_url: services::fresh_postgres_database().await,
        })
        .with_client(backend_client("backend", &key, "system/CarePlan.rs"))
        .build()
        .await;
    let ask = |assertion: String| {
        let app = &app;
        async move { app.post_form("/token", &backend_form(&assertion, "system/CarePlan.rs"), &[]).await }
    };

    // before: every request answered
    let mut issued = Vec::new();
    let mut used = Vec::new();
    for _ in 0..20 {
        let assertion = key.assertion("backend", app.now());
        let reply = ask(assertion.clone()).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        issued.push(reply.json()["access_token"].as_str().unwrap().to_owned());
        used.push(assertion);
    }

    // the fault: SIGKILL
    redis.kill().unwrap();
    redis.wait().unwrap();
    let mut refused = 0;
    for _ in 0..5 {
        let reply = ask(key.assertion("backend", app.now())).await;
        assert_ne!(reply.status.as_u16(), 500, "{}", reply.text());
        reply.assert_error(503, "temporarily_unavailable");
        assert_eq!(reply.header("retry-after"), Some("5"));
        refused += 1;
    }

    // recovery: the same Redis on its own data; requests are answered again
    let mut redis = services::own_redis(port, dir.path()).await;
    let mut recovered_after = None;
    for attempt in 1..=50 {
        let reply = ask(key.assertion("backend", app.now())).await;
        assert!(matches!(reply.status.as_u16(), 200 | 503), "{} {}", reply.status, reply.text());
        if reply.status == 200 {
            recovered_after = Some(attempt);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let recovered_after = recovered_after.expect("requests are answered again once Redis is back");

    // nothing answered 200 was lost, nothing used was forgotten
    for token in &issued {
        assert!(app.state.check_access_token(token, None).await.is_ok(), "a token issued before the fault is active");
    }
    for assertion in &used {
        let replay = ask(assertion.clone()).await;
        replay.assert_error(401, "invalid_client");
    }

    // the audit holds every token request that was answered, and verifies
    let records = app.state.stores.durable.audit_records(0, 10_000).await.unwrap();
    let answered = records.iter().filter(|r| r.data.contains("token-issue") && r.data.contains("\"success\"")).count();
    assert_eq!(answered, issued.len() + 1, "every 200 has its record");
    assert!(matches!(
        carebroker::audit::verify(app.state.stores.durable.as_ref()).await.unwrap(),
        carebroker::audit::Verification::Intact { .. }
    ));
    println!("fault run: {refused} refused during the outage, answered again after {recovered_after} attempt(s)");
    redis.kill().ok();
    redis.wait().ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_pool_recovers_from_a_failover_and_refuses_with_503_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let pg = services::OwnPostgres::start_new(crate::support::free_port(), dir.path());
    let key = ClientKey::generate(Algorithm::ES256);
    let app = TestApp::builder()
        .with_store(services::Redis::Standalone.with_postgres(&pg.url()))
        .with_client(backend_client("backend", &key, "system/CarePlan.rs"))
        .build()
        .await;
    let ask = || async {
        app.post_form("/token", &backend_form(&key.assertion("backend", app.now()), "system/CarePlan.rs"), &[]).await
    };
    let mut issued = Vec::new();
    for _ in 0..10 {
        let reply = ask().await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        issued.push(reply.json()["access_token"].as_str().unwrap().to_owned());
    }

    pg.stop();
    for _ in 0..3 {
        let reply = ask().await;
        reply.assert_error(503, "temporarily_unavailable");
        assert_eq!(reply.header("retry-after"), Some("5"));
    }
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(ready.text().contains("durable store"), "{}", ready.text());

    pg.start();
    let mut answered_again = false;
    for _ in 0..50 {
        let reply = ask().await;
        assert!(matches!(reply.status.as_u16(), 200 | 503), "{} {}", reply.status, reply.text());
        if reply.status == 200 {
            issued.push(reply.json()["access_token"].as_str().unwrap().to_owned());
            answered_again = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(answered_again, "the pool serves again once PostgreSQL is back, without a restart");
    assert_eq!(app.get("/readyz").await.status, 200);
    for token in &issued {
        assert!(app.state.check_access_token(token, None).await.is_ok(), "issued tokens stay active");
    }
    let records = app.state.stores.durable.audit_records(0, 10_000).await.unwrap();
    let answered = records.iter().filter(|r| r.data.contains("token-issue") && r.data.contains("\"success\"")).count();
    assert_eq!(answered, issued.len(), "every 200 has its record, and nothing refused has one");
    assert!(matches!(
        carebroker::audit::verify(app.state.stores.durable.as_ref()).await.unwrap(),
        carebroker::audit::Verification::Intact { .. }
    ));
}
