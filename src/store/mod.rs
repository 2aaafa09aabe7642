//! State behind narrow traits. Ephemeral state (codes, launches, client-assertion `jti`s, sessions)
//! lives with a TTL and is consumed by ONE atomic operation (`take`, `put_if_absent`), so two
//! concurrent redemptions never both succeed. Durable state (clients, revocations, and later
//! grants, care plans, audit) survives restarts.
//!
//! Implementations: memory + SQLite (the embedded default), Redis + PostgreSQL (scale-out). The
//! two SQL stores run the same statements (`schema.rs`).

pub mod keyspace;
pub mod memory;
pub mod postgres;
pub mod redis;
mod schema;
pub mod sqlite;

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

/// A grant: one user's authorization of one client, the family every refresh token and access
/// token it produces belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    pub id: String,
    pub client_id: String,
    pub subject: String,
    pub scope: String,
    /// The sign-in session an `online_access` grant lives and dies with.
    pub session_id: Option<String>,
    /// Identity and launch context, as JSON.
    pub data: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// What presenting a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshTokenUse {
    /// The token was live and is now used up (exactly one caller sees this).
    Fresh {
        /// The grant it belongs to, as it stood in the same transaction (`None`: gone).
        grant: Option<GrantRecord>,
        /// When the presented token would have expired.
        expires_at: i64,
        /// Whether the next refresh token was stored: only for a live grant of the presenting
        /// client. Hand it out only when this is true.
        next_stored: bool,
    },
    /// The token had been used before: a replay.
    Reused {
        grant_id: String,
    },
    /// [`Rotation::may_spend`] refused its grant: nothing was spent or stored.
    Refused,
    Unknown,
}

/// A refresh's rotation, as the store carries it out.
pub struct Rotation<'a> {
    /// Hash of the presented refresh token.
    pub presented: &'a str,
    /// Hash of the refresh token to store next.
    pub next: &'a str,
    pub client_id: &'a str,
    pub now: i64,
    /// Asked about the token's grant before the token is spent; false leaves it unspent (a
    /// public client's refresh token bound to a DPoP key, presented without that key's proof).
    pub may_spend: &'a (dyn Fn(&GrantRecord) -> bool + Send + Sync),
}

/// Grants and their rotating refresh tokens (stored hashed).
#[async_trait]
pub trait GrantStore: Send + Sync + Debug {
    /// Stores a grant and, when `refresh_token_hash` is given, its first refresh token (which
    /// expires with the grant), in one transaction.
    async fn insert_grant(&self, grant: &GrantRecord, refresh_token_hash: Option<&str>) -> Result<(), StoreError>;
    async fn get_grant(&self, id: &str) -> Result<Option<GrantRecord>, StoreError>;
    /// Marks the grant revoked; false when it was already revoked or is unknown.
    async fn revoke_grant(&self, id: &str, now: i64) -> Result<bool, StoreError>;
    /// Live grants made under a sign-in session (for logout).
    async fn grants_of_session(&self, session_id: &str) -> Result<Vec<String>, StoreError>;
    /// Rotation, in one transaction: reads the presented token's grant and asks `may_spend`;
    /// then uses the token up (atomically: of concurrent callers exactly one sees `Fresh`) and
    /// stores `next` as the grant's next refresh token if the grant is live at `now` and
    /// belongs to `client_id`.
    async fn rotate_refresh_token(&self, rotation: Rotation<'_>) -> Result<RefreshTokenUse, StoreError>;
    /// The grant a refresh token belongs to, without using it.
    async fn refresh_token_grant(&self, token_hash: &str) -> Result<Option<String>, StoreError>;
    /// The whole grant a refresh token belongs to, without using it (one statement).
    async fn grant_by_refresh_token(&self, token_hash: &str) -> Result<Option<GrantRecord>, StoreError>;
}

/// A stored FHIR resource at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResource {
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    /// Unix milliseconds.
    pub last_updated: i64,
    /// The resource JSON (without `meta`, which the API adds).
    pub data: String,
}

/// A resource to write, with the search keys it is found by (`key` = search parameter,
/// `value` = a normalised token such as `9434765919` or `system|code`).
#[derive(Debug, Clone, Copy)]
pub struct ResourceWrite<'a> {
    pub resource_type: &'a str,
    pub id: &'a str,
    pub data: &'a str,
    pub index: &'a [(String, String)],
    /// Unix milliseconds.
    pub now: i64,
}

impl ResourceWrite<'_> {
    /// The resource as stored by this write at `version`.
    pub fn stored(&self, version: i64) -> StoredResource {
        StoredResource {
            resource_type: self.resource_type.to_owned(),
            id: self.id.to_owned(),
            version,
            last_updated: self.now,
            data: self.data.to_owned(),
        }
    }
}

/// What an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    Updated(StoredResource),
    /// The resource is at another version than the caller expected (`If-Match`).
    VersionConflict {
        current: i64,
    },
    NotFound,
}

/// One search criterion: the resource has `key` with any of `values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Criterion {
    pub key: String,
    pub values: Vec<String>,
}

/// FHIR resources with versions, history and indexed search keys.
#[async_trait]
pub trait ResourceStore: Send + Sync + Debug {
    /// Stores version 1 unless the resource exists; true when it was created.
    async fn create_resource_if_absent(&self, write: ResourceWrite<'_>) -> Result<bool, StoreError>;
    /// Stores the next version if the current one is `expected_version`.
    async fn update_resource(
        &self,
        write: ResourceWrite<'_>,
        expected_version: i64,
    ) -> Result<UpdateOutcome, StoreError>;
    async fn read_resource(&self, resource_type: &str, id: &str) -> Result<Option<StoredResource>, StoreError>;
    async fn read_resource_version(
        &self,
        resource_type: &str,
        id: &str,
        version: i64,
    ) -> Result<Option<StoredResource>, StoreError>;
    /// Every version, newest first.
    async fn resource_history(&self, resource_type: &str, id: &str) -> Result<Vec<StoredResource>, StoreError>;
    /// Resources matching every criterion, most recently updated first, at most `limit`.
    async fn search_resources(
        &self,
        resource_type: &str,
        criteria: &[Criterion],
        limit: i64,
    ) -> Result<Vec<StoredResource>, StoreError>;
    /// Up to `limit` resources of a type, by id.
    async fn list_resources(&self, resource_type: &str, limit: i64) -> Result<Vec<StoredResource>, StoreError>;
}

/// A stored audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    /// Unix milliseconds.
    pub time: i64,
    pub patient: Option<String>,
    pub actor: Option<String>,
    /// The event as JSON.
    pub data: String,
    pub prev_hash: String,
    pub hash: String,
}

/// An audit record before it is chained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditDraft {
    pub time: i64,
    pub patient: Option<String>,
    pub actor: Option<String>,
    pub data: String,
}

/// The append-only, hash-chained audit log.
#[async_trait]
pub trait AuditStore: Send + Sync + Debug {
    /// Appends in order, chaining each to the last record; returns the sequence numbers.
    /// Concurrent appenders (other nodes) are resolved by retrying on the next sequence number.
    async fn append_audit(&self, drafts: &[AuditDraft]) -> Result<Vec<i64>, StoreError>;
    /// Records with `seq > after`, in order, at most `limit`.
    async fn audit_records(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError>;
    /// `(seq, hash)` of the records with `seq > after`, in order, at most `limit`: all the
    /// Merkle tree needs, without reading each record's content.
    async fn audit_hashes(&self, after: i64, limit: i64) -> Result<Vec<(i64, String)>, StoreError>;
    /// Records about `patient` and/or by `actor`, within `[since, until)` (ms), newest first.
    async fn search_audit(
        &self,
        patient: Option<&str>,
        actor: Option<&str>,
        since: Option<i64>,
        until: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError>;
}

/// Everything durable.
pub trait DurableStore: ClientStore + RevocationStore + GrantStore + ResourceStore + AuditStore {}
impl<T: ClientStore + RevocationStore + GrantStore + ResourceStore + AuditStore> DurableStore for T {}

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
            if let Some(parent) = config.sqlite_path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| StoreError::Unavailable(format!("cannot create `{}`: {e}", parent.display())))?;
            }
            Ok(Stores {
                ephemeral: Arc::new(memory::MemoryStore::new(clock)),
                durable: Arc::new(sqlite::SqliteStore::open(&config.sqlite_path)?),
            })
        }
        StoreKind::RedisPostgres => {
            let redis_url = config.redis_url.as_ref().map(|s| s.expose()).unwrap_or_default();
            let postgres_url = config.postgres_url.as_ref().map(|s| s.expose()).unwrap_or_default();
            let ephemeral = if config.redis_cluster {
                let seeds: Vec<&str> = redis_url.split(',').map(str::trim).collect();
                redis::RedisStore::connect_cluster(&seeds, &config.redis_prefix).await?
            } else {
                redis::RedisStore::connect(redis_url, &config.redis_prefix).await?
            };
            Ok(Stores {
                ephemeral: Arc::new(ephemeral),
                durable: Arc::new(postgres::PostgresStore::connect(postgres_url).await?),
            })
        }
    }
}
