//! One contract for every store implementation: memory, SQLite, Redis, PostgreSQL (real servers).

use std::sync::Arc;
use std::time::Duration;

use carebroker::clock::{Clock, FixedClock};
use carebroker::domain::client::ClientMetadata;
use carebroker::store::memory::MemoryStore;
use carebroker::store::redis::RedisStore;
use carebroker::store::sql::SqlStore;
use carebroker::store::{DurableStore, EphemeralStore};

use crate::support::services;

async fn ephemeral_contract(store: Arc<dyn EphemeralStore>, expire: impl AsyncFnOnce()) {
    let k = format!("k-{}", carebroker::token::random_token(6));
    assert_eq!(store.get(&k).await.unwrap(), None);
    store.put(&k, b"one", Duration::from_secs(60)).await.unwrap();
    assert_eq!(store.get(&k).await.unwrap().as_deref(), Some(&b"one"[..]));
    assert!(!store.put_if_absent(&k, b"two", Duration::from_secs(60)).await.unwrap(), "present");
    assert_eq!(store.take(&k).await.unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(store.take(&k).await.unwrap(), None, "take consumes");
    assert!(store.put_if_absent(&k, b"three", Duration::from_secs(60)).await.unwrap(), "absent again");
    assert!(store.delete(&k).await.unwrap());
    assert!(!store.delete(&k).await.unwrap());

    // concurrent take: exactly one winner
    let race = format!("race-{}", carebroker::token::random_token(6));
    store.put(&race, b"code", Duration::from_secs(60)).await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            let race = race.clone();
            tokio::spawn(async move { store.take(&race).await.unwrap().is_some() })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1, "exactly one concurrent take succeeds");

    // concurrent put_if_absent: exactly one winner
    let jti = format!("jti-{}", carebroker::token::random_token(6));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            let jti = jti.clone();
            tokio::spawn(async move { store.put_if_absent(&jti, b"1", Duration::from_secs(60)).await.unwrap() })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1, "exactly one concurrent put_if_absent succeeds");

    // expiry
    let short = format!("short-{}", carebroker::token::random_token(6));
    store.put(&short, b"x", Duration::from_millis(300)).await.unwrap();
    expire().await;
    assert_eq!(store.get(&short).await.unwrap(), None, "expired entries are gone");
    assert_eq!(store.take(&short).await.unwrap(), None);
    assert!(store.put_if_absent(&short, b"y", Duration::from_secs(5)).await.unwrap(), "an expired key is absent");
}

async fn durable_contract(store: Arc<dyn DurableStore>) {
    let id = format!("c-{}", carebroker::token::random_token(6));
    let meta = ClientMetadata {
        client_id: id.clone(),
        token_endpoint_auth_method: "none".into(),
        redirect_uris: vec!["https://a.example/cb".into()],
        grant_types: vec!["authorization_code".into()],
        ..Default::default()
    };
    assert!(store.get_client(&id).await.unwrap().is_none());
    assert!(store.insert_client(&meta, 100).await.unwrap());
    assert!(!store.insert_client(&meta, 101).await.unwrap(), "ids are unique");
    assert_eq!(store.get_client(&id).await.unwrap(), Some(meta));

    let jti = format!("j-{}", carebroker::token::random_token(6));
    assert!(!store.is_revoked(&[&jti]).await.unwrap());
    store.revoke(&jti, 1000).await.unwrap();
    store.revoke(&jti, 500).await.unwrap();
    assert!(store.is_revoked(&["other", &jti]).await.unwrap());
    store.purge_expired(900).await.unwrap();
    assert!(store.is_revoked(&[&jti]).await.unwrap(), "the later expiry is kept");
    assert!(store.purge_expired(1001).await.unwrap() >= 1);
    assert!(!store.is_revoked(&[&jti]).await.unwrap());
}

#[tokio::test]
async fn memory_store_meets_the_contract() {
    let clock = Arc::new(FixedClock::at(1000));
    let store = Arc::new(MemoryStore::new(clock.clone()));
    ephemeral_contract(store, async || clock.advance(1)).await;
}

#[tokio::test]
async fn sqlite_store_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    durable_contract(Arc::new(SqlStore::connect(&url).await.unwrap())).await;
    // reopening applies no migration twice and keeps the data
    let again = SqlStore::connect(&url).await.unwrap();
    assert!(carebroker::store::RevocationStore::purge_expired(&again, 0).await.is_ok());
}

#[tokio::test]
async fn redis_store_meets_the_contract() {
    let store = Arc::new(RedisStore::connect(&services::redis_url(), "contract:").await.expect("redis"));
    ephemeral_contract(store, async || tokio::time::sleep(Duration::from_millis(700)).await).await;
}

#[tokio::test]
async fn postgres_store_meets_the_contract() {
    let url = services::fresh_postgres_database().await;
    durable_contract(Arc::new(SqlStore::connect(&url).await.expect("postgres"))).await;
}

#[tokio::test]
async fn memory_store_uses_the_clock_for_expiry() {
    let clock = Arc::new(FixedClock::at(0));
    let store = MemoryStore::new(clock.clone());
    store.put("a", b"1", Duration::from_secs(60)).await.unwrap();
    clock.advance(59);
    assert!(store.get("a").await.unwrap().is_some());
    clock.advance(1);
    assert!(store.get("a").await.unwrap().is_none());
    assert_eq!(clock.now(), 60);
}
