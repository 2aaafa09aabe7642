//! The FHIR stack of `scripts/bench-fhir`, served in one of three shapes so the benchmark can say
//! what the audit, its Merkle tree and the policy cost on the same request, same run. The
//! switches live here, in the benchmark, never in the product:
//! - `full`: as shipped: every read audited (durable, hash-chained, before it is served), the
//!   audit checkpointer extending the Merkle tree every second, the compiled policy deciding;
//! - `no-tree`: the same, with no checkpointer running (no tree is kept);
//! - `bare`: no audit record (the durable store drops appends) and no policy (scopes and the
//!   patient compartment alone, `ScopeOnly`); token verification and the store read remain.
//!
//! `cargo bench --bench fhir_stack -- <full|no-tree|bare> <config.toml>` serves on the file's
//! `server.listen` until killed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use carebroker::app::App;
use carebroker::clock::{Clock, SystemClock};
use carebroker::domain::client::ClientMetadata;
use carebroker::store::*;

/// A durable store that drops audit appends (numbering them as if stored) and delegates the rest.
#[derive(Debug)]
struct NoAudit {
    inner: Arc<dyn DurableStore>,
    next: std::sync::atomic::AtomicI64,
}

#[async_trait]
impl AuditStore for NoAudit {
    async fn append_audit(&self, drafts: &[AuditDraft]) -> Result<Vec<i64>, StoreError> {
        let first = self.next.fetch_add(drafts.len() as i64, std::sync::atomic::Ordering::Relaxed);
        Ok((first..first + drafts.len() as i64).collect())
    }
    async fn audit_records(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.audit_records(after, limit).await
    }
    async fn audit_hashes(&self, after: i64, limit: i64) -> Result<Vec<(i64, String)>, StoreError> {
        self.inner.audit_hashes(after, limit).await
    }
    async fn search_audit(
        &self,
        patient: Option<&str>,
        actor: Option<&str>,
        since: Option<i64>,
        until: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.search_audit(patient, actor, since, until, limit).await
    }
}

#[async_trait]
impl ClientStore for NoAudit {
    async fn insert_client(&self, metadata: &ClientMetadata, now: i64) -> Result<bool, StoreError> {
        self.inner.insert_client(metadata, now).await
    }
    async fn get_client(&self, client_id: &str) -> Result<Option<ClientMetadata>, StoreError> {
        self.inner.get_client(client_id).await
    }
}

#[async_trait]
impl RevocationStore for NoAudit {
    async fn revoke(&self, id: &str, expires_at: i64) -> Result<(), StoreError> {
        self.inner.revoke(id, expires_at).await
    }
    async fn is_revoked(&self, ids: &[&str]) -> Result<bool, StoreError> {
        self.inner.is_revoked(ids).await
    }
    async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        self.inner.purge_expired(now).await
    }
}

#[async_trait]
impl GrantStore for NoAudit {
    async fn insert_grant(&self, grant: &GrantRecord, refresh_token_hash: Option<&str>) -> Result<(), StoreError> {
        self.inner.insert_grant(grant, refresh_token_hash).await
    }
    async fn get_grant(&self, id: &str) -> Result<Option<GrantRecord>, StoreError> {
        self.inner.get_grant(id).await
    }
    async fn revoke_grant(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        self.inner.revoke_grant(id, now).await
    }
    async fn grants_of_session(&self, session_id: &str) -> Result<Vec<String>, StoreError> {
        self.inner.grants_of_session(session_id).await
    }
    async fn rotate_refresh_token(&self, rotation: Rotation<'_>) -> Result<RefreshTokenUse, StoreError> {
        self.inner.rotate_refresh_token(rotation).await
    }
    async fn refresh_token_grant(&self, token_hash: &str) -> Result<Option<String>, StoreError> {
        self.inner.refresh_token_grant(token_hash).await
    }
    async fn grant_by_refresh_token(&self, token_hash: &str) -> Result<Option<GrantRecord>, StoreError> {
        self.inner.grant_by_refresh_token(token_hash).await
    }
}

#[async_trait]
impl ResourceStore for NoAudit {
    async fn create_resource_if_absent(&self, write: ResourceWrite<'_>) -> Result<bool, StoreError> {
        self.inner.create_resource_if_absent(write).await
    }
    async fn update_resource(&self, write: ResourceWrite<'_>, expected: i64) -> Result<UpdateOutcome, StoreError> {
        self.inner.update_resource(write, expected).await
    }
    async fn read_resource(&self, kind: &str, id: &str) -> Result<Option<StoredResource>, StoreError> {
        self.inner.read_resource(kind, id).await
    }
    async fn read_resource_version(&self, kind: &str, id: &str, v: i64) -> Result<Option<StoredResource>, StoreError> {
        self.inner.read_resource_version(kind, id, v).await
    }
    async fn resource_history(&self, kind: &str, id: &str) -> Result<Vec<StoredResource>, StoreError> {
        self.inner.resource_history(kind, id).await
    }
    async fn search_resources(
        &self,
        kind: &str,
        c: &[Criterion],
        limit: i64,
    ) -> Result<Vec<StoredResource>, StoreError> {
        self.inner.search_resources(kind, c, limit).await
    }
    async fn list_resources(&self, kind: &str, limit: i64) -> Result<Vec<StoredResource>, StoreError> {
        self.inner.list_resources(kind, limit).await
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let [shape, config] = args.as_slice() else {
        eprintln!("usage: fhir_stack <full|no-tree|bare> <config.toml>");
        std::process::exit(2);
    };
    let loaded = carebroker::config::load(Some(std::path::Path::new(config)), std::env::vars()).unwrap_or_else(|p| {
        eprintln!("config: {p:?}");
        std::process::exit(2)
    });
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut app = App::build(loaded, clock.clone()).await.expect("the stack builds");
    if shape == "bare" {
        let silent: Arc<dyn DurableStore> =
            Arc::new(NoAudit { inner: app.stores.durable.clone(), next: std::sync::atomic::AtomicI64::new(1) });
        app.audit = carebroker::audit::AuditLog::start(silent, clock.clone());
        app.policy = carebroker::policy::handle(Box::new(carebroker::policy::ScopeOnly));
    }
    let app = Arc::new(app);
    if shape == "full" {
        let app = app.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            loop {
                ticker.tick().await;
                let (now, now_ms) = (app.clock.now(), app.clock.now_millis());
                if let Err(e) = app.checkpoints.tick(app.stores.durable.as_ref(), now, now_ms, false).await {
                    eprintln!("checkpoint: {e}");
                }
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(&app.config.server.listen).await.expect("listen");
    let router = carebroker::http::app(app).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, router).await.expect("serve");
}
