//! State behind narrow traits. Ephemeral state (codes, launches, client-assertion `jti`s, sessions)
//! lives with a TTL and is consumed by ONE atomic operation (`take`, `put_if_absent`), so two
//! concurrent redemptions never both succeed. Durable state (clients, revocations, and later
//! grants, care plans, audit) survives restarts.
//!
//! Implementations: memory + SQLite (the embedded default), Redis + PostgreSQL (scale-out).

pub mod memory;
pub mod redis;
pub mod sql;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::clock::Clock;
use crate::config::{StoreConfig, StoreKind};
use crate::domain::client::ClientMetadata;

/// A store could not do what was asked. Never the client's fault: surfaces as `server_error` /
/// `temporarily_unavailable`, with the cause in the log only.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state store is unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
}

/// Short-lived state with a time to live.
#[async_trait]
pub trait EphemeralStore: Send + Sync + Debug {
    /// Stores `value` under `key` for `ttl`, replacing what was there.
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError>;
    /// Stores `value` only if `key` holds nothing live; true when this call stored it. Atomic.
    async fn put_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError>;
    /// Reads without consuming.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Reads and removes in one atomic step: of concurrent callers, exactly one gets the value.
    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Removes; true when something live was removed.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;
}

/// Dynamically registered clients.
#[async_trait]
pub trait ClientStore: Send + Sync + Debug {
    /// Stores a new client; false when the id is taken.
    async fn insert_client(&self, metadata: &ClientMetadata, now: i64) -> Result<bool, StoreError>;
    async fn get_client(&self, client_id: &str) -> Result<Option<ClientMetadata>, StoreError>;
}

/// Revoked token ids (`jti`) and grant ids, remembered until the tokens they name have expired.
#[async_trait]
pub trait RevocationStore: Send + Sync + Debug {
    /// Records `id` as revoked until `expires_at` (keeps the later expiry when already revoked).
    async fn revoke(&self, id: &str, expires_at: i64) -> Result<(), StoreError>;
    /// True when any of `ids` is revoked.
    async fn is_revoked(&self, ids: &[&str]) -> Result<bool, StoreError>;
    /// Forgets revocations whose tokens have all expired; returns how many.
    async fn purge_expired(&self, now: i64) -> Result<u64, StoreError>;
}

/// Everything durable.
pub trait DurableStore: ClientStore + RevocationStore {}
impl<T: ClientStore + RevocationStore> DurableStore for T {}

/// The stores a running broker uses.
#[derive(Debug, Clone)]
pub struct Stores {
    pub ephemeral: Arc<dyn EphemeralStore>,
    pub durable: Arc<dyn DurableStore>,
}

/// Opens the stores the configuration selects.
pub async fn open(config: &StoreConfig, clock: Arc<dyn Clock>) -> Result<Stores, StoreError> {
    match config.kind {
        StoreKind::Embedded => {
            let url = format!("sqlite://{}?mode=rwc", config.sqlite_path.display());
            if let Some(parent) = config.sqlite_path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| StoreError::Unavailable(format!("cannot create `{}`: {e}", parent.display())))?;
            }
            Ok(Stores {
                ephemeral: Arc::new(memory::MemoryStore::new(clock)),
                durable: Arc::new(sql::SqlStore::connect(&url).await?),
            })
        }
        StoreKind::RedisPostgres => {
            let redis_url = config.redis_url.as_ref().map(|s| s.expose()).unwrap_or_default();
            let postgres_url = config.postgres_url.as_ref().map(|s| s.expose()).unwrap_or_default();
            Ok(Stores {
                ephemeral: Arc::new(redis::RedisStore::connect(redis_url, &config.redis_prefix).await?),
                durable: Arc::new(sql::SqlStore::connect(postgres_url).await?),
            })
        }
    }
}
