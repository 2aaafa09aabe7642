//! One contract for every store implementation: memory, SQLite, Redis, PostgreSQL (real servers).

use std::sync::Arc;
use std::time::Duration;

use carebroker::clock::{Clock, FixedClock};
use carebroker::domain::client::ClientMetadata;
use carebroker::store::memory::MemoryStore;
use carebroker::store::postgres::PostgresStore;
use carebroker::store::redis::RedisStore;
use carebroker::store::sqlite::SqliteStore;
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

    grant_contract(store.clone()).await;
    resource_contract(store.as_ref()).await;
    audit_contract(store.as_ref()).await;
}

/// A rotation that may spend any grant's token.
fn rotation<'a>(presented: &'a str, next: &'a str, client_id: &'a str, now: i64) -> carebroker::store::Rotation<'a> {
    fn any_grant(_: &carebroker::store::GrantRecord) -> bool {
        true
    }
    carebroker::store::Rotation { presented, next, client_id, now, may_spend: &any_grant }
}

async fn grant_contract(store: Arc<dyn DurableStore>) {
    use carebroker::store::{GrantRecord, RefreshTokenUse};
    let id = format!("g-{}", carebroker::token::random_token(6));
    let grant = GrantRecord {
        id: id.clone(),
        client_id: "viewer".into(),
        subject: "dev:nurse".into(),
        scope: "patient/*.rs offline_access".into(),
        session_id: Some(format!("s-{id}")),
        data: "{\"dpop_jkt\":null}".into(),
        created_at: 100,
        expires_at: 10_000,
        revoked_at: None,
    };
    let hash = format!("h-{id}");
    store.insert_grant(&grant, Some(&hash)).await.unwrap();
    // a grant `may_spend` refuses: nothing is spent or stored, and it is asked about this grant
    let asked = std::sync::Mutex::new(None);
    let refuse = |g: &GrantRecord| {
        *asked.lock().unwrap() = Some(g.clone());
        false
    };
    let refused = carebroker::store::Rotation { may_spend: &refuse, ..rotation(&hash, "n-refused", "viewer", 150) };
    assert_eq!(store.rotate_refresh_token(refused).await.unwrap(), RefreshTokenUse::Refused);
    assert_eq!(asked.lock().unwrap().as_ref(), Some(&grant));
    assert_eq!(store.refresh_token_grant("n-refused").await.unwrap(), None, "nothing stored");
    assert_eq!(store.get_grant(&id).await.unwrap(), Some(grant.clone()));
    assert_eq!(store.grant_by_refresh_token(&hash).await.unwrap(), Some(grant.clone()), "peeking spends nothing");
    assert_eq!(store.refresh_token_grant(&hash).await.unwrap(), Some(id.clone()));
    assert_eq!(store.grant_by_refresh_token("unknown").await.unwrap(), None);
    assert_eq!(store.grants_of_session(&format!("s-{id}")).await.unwrap(), vec![id.clone()]);

    // of concurrent rotations of one refresh token exactly one is fresh and stores its next
    // token; the rest are replays and store nothing
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (store, hash, next) = (store.clone(), hash.clone(), format!("n{i}-{id}"));
            tokio::spawn(async move {
                (store.rotate_refresh_token(rotation(&hash, &next, "viewer", 200)).await.unwrap(), next)
            })
        })
        .collect();
    let (mut fresh, mut nexts) = (Vec::new(), Vec::new());
    for t in tasks {
        let (outcome, next) = t.await.unwrap();
        match outcome {
            RefreshTokenUse::Fresh { grant: found, expires_at, next_stored } => {
                assert_eq!((found.as_ref(), expires_at, next_stored), (Some(&grant), 10_000, true));
                fresh.push(next);
            }
            RefreshTokenUse::Reused { grant_id } => {
                assert_eq!(grant_id, id);
                nexts.push(next);
            }
            RefreshTokenUse::Unknown | RefreshTokenUse::Refused => panic!("the token is known and may be spent"),
        }
    }
    assert_eq!(fresh.len(), 1, "exactly one concurrent use of a refresh token wins");
    assert_eq!(store.refresh_token_grant(&fresh[0]).await.unwrap(), Some(id.clone()), "the winner's next token");
    for lost in &nexts {
        assert_eq!(store.refresh_token_grant(lost).await.unwrap(), None, "a replay stores no next token");
    }
    let unknown = store.rotate_refresh_token(rotation("unknown", "n-unknown", "viewer", 200)).await.unwrap();
    assert_eq!(unknown, RefreshTokenUse::Unknown);
    assert_eq!(store.refresh_token_grant("n-unknown").await.unwrap(), None);
    // presented by another client: spent, and no next token stored
    let other_next = format!("n-other-{id}");
    let other = store.rotate_refresh_token(rotation(&fresh[0], &other_next, "intruder", 250)).await.unwrap();
    assert!(matches!(other, RefreshTokenUse::Fresh { next_stored: false, .. }), "{other:?}");
    assert_eq!(store.refresh_token_grant(&format!("n-other-{id}")).await.unwrap(), None);
    // a revoked or expired grant gets no next token either
    for (n, revoked, expires_at) in [(1, true, 10_000), (2, false, 150)] {
        let (gid, token) = (format!("{id}-{n}"), format!("h{n}-{id}"));
        let g = GrantRecord { id: gid.clone(), session_id: None, expires_at, ..grant.clone() };
        store.insert_grant(&g, Some(&token)).await.unwrap();
        if revoked {
            assert!(store.revoke_grant(&gid, 180).await.unwrap());
        }
        let next = format!("n-{n}-{id}");
        let outcome = store.rotate_refresh_token(rotation(&token, &next, "viewer", 200)).await.unwrap();
        assert!(matches!(outcome, RefreshTokenUse::Fresh { next_stored: false, .. }), "{outcome:?}");
        assert_eq!(store.refresh_token_grant(&next).await.unwrap(), None);
    }
    // a grant without a refresh token
    let bare = GrantRecord { id: format!("{id}-bare"), session_id: None, ..grant.clone() };
    store.insert_grant(&bare, None).await.unwrap();
    assert_eq!(store.get_grant(&bare.id).await.unwrap(), Some(bare));
    assert!(store.revoke_grant(&id, 300).await.unwrap());
    assert!(!store.revoke_grant(&id, 301).await.unwrap(), "already revoked");
    assert_eq!(store.get_grant(&id).await.unwrap().unwrap().revoked_at, Some(300));
}

async fn resource_contract(store: &dyn DurableStore) {
    use carebroker::store::{Criterion, ResourceWrite, UpdateOutcome};
    let id = format!("r{}", carebroker::token::random_token(6).replace(['-', '_'], "x"));
    let index = vec![("patient".to_owned(), "9434765919".to_owned()), ("status".to_owned(), "active".to_owned())];
    let write =
        |data: &'static str, now: i64| ResourceWrite { resource_type: "CarePlan", id: &id, data, index: &index, now };
    assert!(store.create_resource_if_absent(write("{\"v\":1}", 10)).await.unwrap());
    assert!(!store.create_resource_if_absent(write("{\"v\":9}", 11)).await.unwrap(), "ids are unique");
    assert!(matches!(
        store.update_resource(write("{\"v\":2}", 20), 5).await.unwrap(),
        UpdateOutcome::VersionConflict { current: 1 }
    ));
    let UpdateOutcome::Updated(v2) = store.update_resource(write("{\"v\":2}", 20), 1).await.unwrap() else {
        panic!("update")
    };
    assert_eq!((v2.version, v2.last_updated), (2, 20));
    assert!(matches!(
        store.update_resource(write("{\"v\":3}", 30), 1).await.unwrap(),
        UpdateOutcome::VersionConflict { current: 2 }
    ));
    let missing = ResourceWrite { resource_type: "CarePlan", id: "nope", data: "{}", index: &[], now: 1 };
    assert_eq!(store.update_resource(missing, 1).await.unwrap(), UpdateOutcome::NotFound);
    assert_eq!(store.read_resource("CarePlan", &id).await.unwrap().unwrap().data, "{\"v\":2}");
    assert_eq!(store.read_resource_version("CarePlan", &id, 1).await.unwrap().unwrap().data, "{\"v\":1}");
    let history = store.resource_history("CarePlan", &id).await.unwrap();
    assert_eq!(history.iter().map(|r| r.version).collect::<Vec<_>>(), vec![2, 1]);
    let by = |key: &str, values: &[&str]| Criterion {
        key: key.into(),
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    };
    let found = store
        .search_resources("CarePlan", &[by("patient", &["9434765919"]), by("status", &["draft", "active"])], 10)
        .await
        .unwrap();
    assert!(found.iter().any(|r| r.id == id));
    assert!(
        store
            .search_resources("CarePlan", &[by("status", &["completed"])], 10)
            .await
            .unwrap()
            .iter()
            .all(|r| r.id != id)
    );
    assert!(store.search_resources("CarePlan", &[by("status", &[])], 10).await.unwrap().is_empty());
}

/// A draft as the audit writer makes it: the event as JSON, filed under its patient and actor.
fn audit_draft(n: i64, patient: Option<&str>, actor: Option<&str>) -> carebroker::store::AuditDraft {
    use carebroker::audit::{Actor, AuditEvent, AuditKind, AuditOutcome};
    let event = AuditEvent::new(
        AuditKind::FhirRead,
        AuditOutcome::Success,
        Actor { subject: actor.map(str::to_owned), ..Actor::default() },
    )
    .patient(patient)
    .detail(format!("n {n}"));
    carebroker::store::AuditDraft {
        time: n,
        patient: patient.map(str::to_owned),
        actor: actor.map(str::to_owned),
        data: serde_json::to_string(&event).unwrap(),
    }
}

async fn audit_contract(store: &dyn DurableStore) {
    let draft = |n: i64| audit_draft(n, Some("9434765919"), Some(&format!("a{n}")));
    let seqs = store.append_audit(&[draft(1), draft(2)]).await.unwrap();
    let more = store.append_audit(&[draft(3)]).await.unwrap();
    assert_eq!(more[0], seqs[1] + 1);
    let records = store.audit_records(0, 10).await.unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(records[1].prev_hash, records[0].hash);
    let hashes = store.audit_hashes(0, 10).await.unwrap();
    let expected: Vec<(i64, String)> = records.iter().map(|r| (r.seq, r.hash.clone())).collect();
    assert_eq!(hashes, expected, "the tree's view of the log is the records' own");
    assert_eq!(store.audit_hashes(records[0].seq, 1).await.unwrap(), expected[1..2], "after, and at most limit");
    assert_eq!(store.search_audit(Some("9434765919"), Some("a2"), None, None, 10).await.unwrap().len(), 1);
    assert_eq!(store.search_audit(None, None, Some(2), Some(3), 10).await.unwrap().len(), 1);
    assert!(matches!(
        carebroker::audit::verify(store).await.unwrap(),
        carebroker::audit::Verification::Intact { records: 3, .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_appending_audit_to_postgres_keep_one_chain() {
    let url = services::fresh_postgres_database().await;
    let a = Arc::new(PostgresStore::connect(&url).await.expect("postgres"));
    let b = Arc::new(PostgresStore::connect(&url).await.expect("postgres"));
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let draft = audit_draft(i, None, None);
                carebroker::store::AuditStore::append_audit(store.as_ref(), &[draft]).await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    let verdict = carebroker::audit::verify(a.as_ref()).await.unwrap();
    assert!(
        matches!(verdict, carebroker::audit::Verification::Intact { records, .. } if records == ok),
        "{verdict:?} after {ok} appends"
    );
    assert_eq!(ok, 40, "no append is lost to contention between nodes");

    // both nodes see one tree: checkpoints they sign of the same size agree, and a different
    // root at a size already signed is refused as a fork
    use carebroker::audit::checkpoint::{self, Signer};
    let keys = tempfile::tempdir().unwrap();
    let signer = Signer::load_or_create(keys.path(), "carebroker.test/audit").unwrap();
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    checkpoint::extend_leaves(a.as_ref(), &mut from_a, |_| {}).await.unwrap();
    checkpoint::extend_leaves(b.as_ref(), &mut from_b, |_| {}).await.unwrap();
    assert_eq!(from_a, from_b);
    let root = carebroker::domain::merkle::root(&from_a);
    let size = from_a.len() as u64;
    assert!(checkpoint::store(a.as_ref(), &signer.sign(size, root, 1), 1000).await.unwrap());
    assert!(!checkpoint::store(b.as_ref(), &signer.sign(size, root, 2), 2000).await.unwrap(), "the same tree");
    let forked = signer.sign(size, carebroker::domain::merkle::leaf_hash(b"other"), 3);
    assert!(checkpoint::store(b.as_ref(), &forked, 3000).await.unwrap_err().to_string().contains("FORK"));
}

/// Two stores on one SQLite file stand for two processes: the audit append takes SQLite's write
/// lock up front, so a write by the other side between its read and its insert cannot fail it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_on_one_sqlite_file_lose_no_audit_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let a = Arc::new(SqliteStore::open(&path).unwrap());
    let b = Arc::new(SqliteStore::open(&path).unwrap());
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let draft = audit_draft(i, Some("9434765919"), None);
                carebroker::store::AuditStore::append_audit(store.as_ref(), &[draft.clone(), draft]).await.is_ok()
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    assert_eq!(ok, 60, "every append lands");
    let verdict = carebroker::audit::verify(a.as_ref()).await.unwrap();
    assert!(matches!(verdict, carebroker::audit::Verification::Intact { records: 120, .. }), "{verdict:?}");
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
    let path = dir.path().join("t.db");
    durable_contract(Arc::new(SqliteStore::open(&path).unwrap())).await;
    // reopening applies no migration twice and keeps the data
    let again = SqliteStore::open(&path).unwrap();
    assert!(carebroker::store::RevocationStore::purge_expired(&again, 0).await.is_ok());
}

#[tokio::test]
async fn redis_store_meets_the_contract() {
    let store = Arc::new(RedisStore::connect(&services::redis_url(), "contract:").await.expect("redis"));
    ephemeral_contract(store, async || tokio::time::sleep(Duration::from_millis(700)).await).await;
}

/// The same contract on a 3-master Redis Cluster; and the keys the contract made are spread over
/// more than one master, so the cluster (not one node of it) is what was tested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_store_meets_the_contract() {
    let seeds = services::redis_cluster_urls();
    let seeds: Vec<&str> = seeds.split(',').collect();
    assert_eq!(seeds.len(), 3);
    let prefix = format!("cluster-{}:", carebroker::token::random_token(6));
    let store = Arc::new(RedisStore::connect_cluster(&seeds, &prefix).await.expect("redis cluster"));
    ephemeral_contract(store.clone(), async || tokio::time::sleep(Duration::from_millis(700)).await).await;
    for i in 0..30 {
        store.put(&format!("spread-{i}"), b"1", Duration::from_secs(60)).await.unwrap();
    }
    let mut masters_holding_keys = 0;
    for seed in &seeds {
        let mut c = redis::Client::open(*seed).unwrap().get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut c).await.unwrap();
        masters_holding_keys += usize::from(!keys.is_empty());
    }
    assert!(masters_holding_keys >= 2, "keys on {masters_holding_keys} master(s)");
    // a store with one seed learns the whole cluster, wherever a key lives
    let one_seed = RedisStore::connect_cluster(&seeds[..1], &prefix).await.expect("one seed");
    for i in 0..30 {
        assert_eq!(one_seed.take(&format!("spread-{i}")).await.unwrap().as_deref(), Some(&b"1"[..]));
    }
}

#[tokio::test]
async fn postgres_store_meets_the_contract() {
    let url = services::fresh_postgres_database().await;
    durable_contract(Arc::new(PostgresStore::connect(&url).await.expect("postgres"))).await;
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
