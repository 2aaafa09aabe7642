//! Durable state in SQL through sqlx's `Any` driver: the same statements run on SQLite (embedded
//! default, a file under `data/`) and PostgreSQL (scale-out). Schema changes are numbered
//! migrations recorded in `schema_migrations`.

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row as _};

use super::{
    AuditDraft, AuditRecord, AuditStore, ClientStore, Criterion, GrantRecord, GrantStore, RefreshTokenUse,
    ResourceStore, ResourceWrite, RevocationStore, StoreError, StoredResource, UpdateOutcome,
};
use crate::domain::audit::{GENESIS_HASH, chain_hash};
use crate::domain::client::ClientMetadata;

/// Numbered schema migrations; never edit a released one, add the next.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE IF NOT EXISTS clients (
        client_id TEXT PRIMARY KEY,
        metadata TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS revocations (
        id TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS revocations_expires_at ON revocations (expires_at);",
    ),
    (
        2,
        "CREATE TABLE IF NOT EXISTS grants (
        id TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        subject TEXT NOT NULL,
        scope TEXT NOT NULL,
        session_id TEXT,
        data TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        revoked_at BIGINT
    );
    CREATE INDEX IF NOT EXISTS grants_session ON grants (session_id);
    CREATE TABLE IF NOT EXISTS refresh_tokens (
        token_hash TEXT PRIMARY KEY,
        grant_id TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        used_at BIGINT
    );
    CREATE INDEX IF NOT EXISTS refresh_tokens_grant ON refresh_tokens (grant_id);
    CREATE TABLE IF NOT EXISTS resources (
        resource_type TEXT NOT NULL,
        id TEXT NOT NULL,
        version BIGINT NOT NULL,
        last_updated BIGINT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (resource_type, id)
    );
    CREATE TABLE IF NOT EXISTS resource_history (
        resource_type TEXT NOT NULL,
        id TEXT NOT NULL,
        version BIGINT NOT NULL,
        last_updated BIGINT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (resource_type, id, version)
    )",
    ),
    (
        3,
        "CREATE TABLE IF NOT EXISTS resource_index (
        resource_type TEXT NOT NULL,
        id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (resource_type, id, key, value)
    );
    CREATE INDEX IF NOT EXISTS resource_index_lookup ON resource_index (resource_type, key, value);
    CREATE TABLE IF NOT EXISTS audit_log (
        seq BIGINT PRIMARY KEY,
        time BIGINT NOT NULL,
        patient TEXT,
        actor TEXT,
        data TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS audit_log_patient ON audit_log (patient, time);
    CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log (actor, time)",
    ),
];

fn unavailable(e: sqlx::Error) -> StoreError {
    crate::telemetry::store_error("durable", "sql");
    StoreError::Unavailable(format!("database: {e}"))
}

/// SQLite- or PostgreSQL-backed durable store.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    postgres: bool,
    /// Appends from this process go one at a time: they would only collide on the chain's tail.
    audit_append: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// How long a request waits for a database connection before the store counts as unavailable.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The PostgreSQL advisory-lock key that serialises audit appends across nodes ("cbaudit").
const AUDIT_APPEND_LOCK: i64 = 0x0063_6261_7564_6974;

impl SqlStore {
    /// Connects to `sqlite://…` or `postgres://…` and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 16 })
            // a database that is down (a failover) refuses quickly, as a 503, instead of holding
            // the request for sqlx's default 30 s; a pooled PostgreSQL connection is checked
            // before use, so connections that died with the old primary are replaced, never
            // handed out. A SQLite file does not drop connections, and the check would be one
            // more round trip to the connection's thread on every statement.
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(!sqlite)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout = 5000").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(unavailable)?;
        let store = Self { pool, postgres: !sqlite, audit_append: Default::default() };
        store.migrate().await?;
        Ok(store)
    }

    /// Counts one store operation for `/metrics` (by backend and operation, never by key).
    fn count(&self, operation: &'static str) {
        crate::telemetry::store_operation("durable", if self.postgres { "postgres" } else { "sqlite" }, operation);
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        for (version, sql) in MIGRATIONS {
            let mut tx = self.pool.begin().await.map_err(unavailable)?;
            let done = sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(*version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
            if done.is_some() {
                continue;
            }
            for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                sqlx::query(statement).execute(&mut *tx).await.map_err(unavailable)?;
            }
            sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1) ON CONFLICT (version) DO NOTHING")
                .bind(*version)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
        }
        Ok(())
    }
}

#[async_trait]
impl ClientStore for SqlStore {
    async fn insert_client(&self, metadata: &ClientMetadata, now: i64) -> Result<bool, StoreError> {
        self.count("insert_client");
        let json = serde_json::to_string(metadata).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let done = sqlx::query(
            "INSERT INTO clients (client_id, metadata, created_at) VALUES ($1, $2, $3) ON CONFLICT (client_id) DO NOTHING",
        )
        .bind(&metadata.client_id)
        .bind(json)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_client(&self, client_id: &str) -> Result<Option<ClientMetadata>, StoreError> {
        self.count("get_client");
        let row = sqlx::query("SELECT metadata FROM clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        match row {
            None => Ok(None),
            Some(row) => {
                let json: String = row.try_get(0).map_err(unavailable)?;
                serde_json::from_str(&json)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt(format!("client `{client_id}`: {e}")))
            }
        }
    }
}

#[async_trait]
impl RevocationStore for SqlStore {
    async fn revoke(&self, id: &str, expires_at: i64) -> Result<(), StoreError> {
        self.count("revoke");
        sqlx::query(
            "INSERT INTO revocations (id, expires_at) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET expires_at = CASE WHEN excluded.expires_at > revocations.expires_at
                 THEN excluded.expires_at ELSE revocations.expires_at END",
        )
        .bind(id)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn is_revoked(&self, ids: &[&str]) -> Result<bool, StoreError> {
        self.count("is_revoked");
        for id in ids {
            let row = sqlx::query("SELECT 1 FROM revocations WHERE id = $1")
                .bind(*id)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
            if row.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        self.count("purge_expired");
        let done = sqlx::query("DELETE FROM revocations WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected())
    }
}

/// `SELECT` of a grant's columns (in [`grant_from_row`]'s order), to be followed by a `WHERE`.
macro_rules! select_grant {
    () => {
        "SELECT id, client_id, subject, scope, session_id, data, created_at, expires_at, revoked_at FROM grants "
    };
}

fn grant_from_row(row: &sqlx::any::AnyRow) -> Result<GrantRecord, StoreError> {
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("grant row: {e}"));
    Ok(GrantRecord {
        id: row.try_get(0).map_err(get)?,
        client_id: row.try_get(1).map_err(get)?,
        subject: row.try_get(2).map_err(get)?,
        scope: row.try_get(3).map_err(get)?,
        session_id: row.try_get(4).map_err(get)?,
        data: row.try_get(5).map_err(get)?,
        created_at: row.try_get(6).map_err(get)?,
        expires_at: row.try_get(7).map_err(get)?,
        revoked_at: row.try_get(8).map_err(get)?,
    })
}

#[async_trait]
impl GrantStore for SqlStore {
    async fn insert_grant(&self, grant: &GrantRecord) -> Result<(), StoreError> {
        self.count("insert_grant");
        sqlx::query(
            "INSERT INTO grants (id, client_id, subject, scope, session_id, data, created_at, expires_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&grant.id)
        .bind(&grant.client_id)
        .bind(&grant.subject)
        .bind(&grant.scope)
        .bind(&grant.session_id)
        .bind(&grant.data)
        .bind(grant.created_at)
        .bind(grant.expires_at)
        .bind(grant.revoked_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn get_grant(&self, id: &str) -> Result<Option<GrantRecord>, StoreError> {
        self.count("get_grant");
        let row = sqlx::query(concat!(select_grant!(), "WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(grant_from_row).transpose()
    }

    async fn revoke_grant(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        self.count("revoke_grant");
        let done = sqlx::query("UPDATE grants SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn grants_of_session(&self, session_id: &str) -> Result<Vec<String>, StoreError> {
        self.count("grants_of_session");
        let rows = sqlx::query("SELECT id FROM grants WHERE session_id = $1 AND revoked_at IS NULL")
            .bind(session_id)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(|r| r.try_get::<String, _>(0).map_err(unavailable)).collect()
    }

    async fn insert_refresh_token(
        &self,
        token_hash: &str,
        grant_id: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        self.count("insert_refresh_token");
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, grant_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(grant_id)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn use_refresh_token(&self, token_hash: &str, now: i64) -> Result<RefreshTokenUse, StoreError> {
        self.count("use_refresh_token");
        // INVARIANT: one UPDATE with the `used_at IS NULL` guard is the single atomic step; of
        // concurrent callers exactly one gets the row back.
        let won = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL RETURNING grant_id, expires_at",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        if let Some(row) = won {
            return Ok(RefreshTokenUse::Fresh {
                grant_id: row.try_get(0).map_err(unavailable)?,
                expires_at: row.try_get(1).map_err(unavailable)?,
            });
        }
        Ok(match self.refresh_token_grant(token_hash).await? {
            Some(grant_id) => RefreshTokenUse::Reused { grant_id },
            None => RefreshTokenUse::Unknown,
        })
    }

    async fn grant_by_refresh_token(&self, token_hash: &str) -> Result<Option<GrantRecord>, StoreError> {
        self.count("grant_by_refresh_token");
        let row = sqlx::query(concat!(
            select_grant!(),
            "WHERE id = (SELECT grant_id FROM refresh_tokens WHERE token_hash = $1)"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.as_ref().map(grant_from_row).transpose()
    }

    async fn refresh_token_grant(&self, token_hash: &str) -> Result<Option<String>, StoreError> {
        self.count("refresh_token_grant");
        let row = sqlx::query("SELECT grant_id FROM refresh_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.map(|r| r.try_get::<String, _>(0).map_err(unavailable)).transpose()
    }
}

fn resource_from_row(row: &sqlx::any::AnyRow) -> Result<StoredResource, StoreError> {
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("resource row: {e}"));
    Ok(StoredResource {
        resource_type: row.try_get(0).map_err(get)?,
        id: row.try_get(1).map_err(get)?,
        version: row.try_get(2).map_err(get)?,
        last_updated: row.try_get(3).map_err(get)?,
        data: row.try_get(4).map_err(get)?,
    })
}

const RESOURCE_COLUMNS: &str = "resource_type, id, version, last_updated, data";

async fn write_index(tx: &mut sqlx::Transaction<'_, sqlx::Any>, write: &ResourceWrite<'_>) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM resource_index WHERE resource_type = $1 AND id = $2")
        .bind(write.resource_type)
        .bind(write.id)
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    for (key, value) in write.index {
        sqlx::query(
            "INSERT INTO resource_index (resource_type, id, key, value) VALUES ($1, $2, $3, $4)
             ON CONFLICT (resource_type, id, key, value) DO NOTHING",
        )
        .bind(write.resource_type)
        .bind(write.id)
        .bind(key)
        .bind(value)
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    }
    Ok(())
}

async fn write_history(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    write: &ResourceWrite<'_>,
    version: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO resource_history (resource_type, id, version, last_updated, data) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(write.resource_type)
    .bind(write.id)
    .bind(version)
    .bind(write.now)
    .bind(write.data)
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?;
    Ok(())
}

#[async_trait]
impl ResourceStore for SqlStore {
    async fn create_resource_if_absent(&self, write: ResourceWrite<'_>) -> Result<bool, StoreError> {
        self.count("create_resource_if_absent");
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let created = sqlx::query(
            "INSERT INTO resources (resource_type, id, version, last_updated, data) VALUES ($1, $2, 1, $3, $4)
             ON CONFLICT (resource_type, id) DO NOTHING",
        )
        .bind(write.resource_type)
        .bind(write.id)
        .bind(write.now)
        .bind(write.data)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected()
            == 1;
        if created {
            write_history(&mut tx, &write, 1).await?;
            write_index(&mut tx, &write).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(created)
    }

    async fn update_resource(
        &self,
        write: ResourceWrite<'_>,
        expected_version: i64,
    ) -> Result<UpdateOutcome, StoreError> {
        self.count("update_resource");
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // INVARIANT: the version guard in the WHERE clause makes the compare-and-set atomic.
        let updated = sqlx::query(
            "UPDATE resources SET version = version + 1, last_updated = $3, data = $4
             WHERE resource_type = $1 AND id = $2 AND version = $5",
        )
        .bind(write.resource_type)
        .bind(write.id)
        .bind(write.now)
        .bind(write.data)
        .bind(expected_version)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected()
            == 1;
        if !updated {
            let current = sqlx::query("SELECT version FROM resources WHERE resource_type = $1 AND id = $2")
                .bind(write.resource_type)
                .bind(write.id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
            tx.rollback().await.map_err(unavailable)?;
            return Ok(match current {
                Some(row) => UpdateOutcome::VersionConflict { current: row.try_get(0).map_err(unavailable)? },
                None => UpdateOutcome::NotFound,
            });
        }
        let version = expected_version + 1;
        write_history(&mut tx, &write, version).await?;
        write_index(&mut tx, &write).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(UpdateOutcome::Updated(StoredResource {
            resource_type: write.resource_type.to_owned(),
            id: write.id.to_owned(),
            version,
            last_updated: write.now,
            data: write.data.to_owned(),
        }))
    }

    async fn read_resource(&self, resource_type: &str, id: &str) -> Result<Option<StoredResource>, StoreError> {
        self.count("read_resource");
        let row =
            sqlx::query(&format!("SELECT {RESOURCE_COLUMNS} FROM resources WHERE resource_type = $1 AND id = $2"))
                .bind(resource_type)
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        row.as_ref().map(resource_from_row).transpose()
    }

    async fn read_resource_version(
        &self,
        resource_type: &str,
        id: &str,
        version: i64,
    ) -> Result<Option<StoredResource>, StoreError> {
        self.count("read_resource_version");
        let row = sqlx::query(&format!(
            "SELECT {RESOURCE_COLUMNS} FROM resource_history WHERE resource_type = $1 AND id = $2 AND version = $3"
        ))
        .bind(resource_type)
        .bind(id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.as_ref().map(resource_from_row).transpose()
    }

    async fn resource_history(&self, resource_type: &str, id: &str) -> Result<Vec<StoredResource>, StoreError> {
        self.count("resource_history");
        let rows = sqlx::query(&format!(
            "SELECT {RESOURCE_COLUMNS} FROM resource_history WHERE resource_type = $1 AND id = $2 ORDER BY version DESC"
        ))
        .bind(resource_type)
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(resource_from_row).collect()
    }

    async fn search_resources(
        &self,
        resource_type: &str,
        criteria: &[Criterion],
        limit: i64,
    ) -> Result<Vec<StoredResource>, StoreError> {
        self.count("search_resources");
        if criteria.iter().any(|c| c.values.is_empty()) {
            return Ok(Vec::new());
        }
        let mut sql = format!("SELECT {RESOURCE_COLUMNS} FROM resources r WHERE r.resource_type = $1");
        let mut next = 2;
        for criterion in criteria {
            let key_param = next;
            let values: Vec<String> = (0..criterion.values.len()).map(|i| format!("${}", next + 1 + i)).collect();
            next += 1 + criterion.values.len();
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM resource_index i WHERE i.resource_type = r.resource_type AND i.id = r.id \
                 AND i.key = ${key_param} AND i.value IN ({}))",
                values.join(", ")
            ));
        }
        sql.push_str(&format!(" ORDER BY r.last_updated DESC, r.id LIMIT ${next}"));
        let mut query = sqlx::query(&sql).bind(resource_type);
        for criterion in criteria {
            query = query.bind(&criterion.key);
            for value in &criterion.values {
                query = query.bind(value);
            }
        }
        let rows = query.bind(limit).fetch_all(&self.pool).await.map_err(unavailable)?;
        rows.iter().map(resource_from_row).collect()
    }

    async fn list_resources(&self, resource_type: &str, limit: i64) -> Result<Vec<StoredResource>, StoreError> {
        self.count("list_resources");
        let rows = sqlx::query(&format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources WHERE resource_type = $1 ORDER BY id LIMIT $2"
        ))
        .bind(resource_type)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(resource_from_row).collect()
    }
}

fn audit_from_row(row: &sqlx::any::AnyRow) -> Result<AuditRecord, StoreError> {
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("audit row: {e}"));
    Ok(AuditRecord {
        seq: row.try_get(0).map_err(get)?,
        time: row.try_get(1).map_err(get)?,
        patient: row.try_get(2).map_err(get)?,
        actor: row.try_get(3).map_err(get)?,
        data: row.try_get(4).map_err(get)?,
        prev_hash: row.try_get(5).map_err(get)?,
        hash: row.try_get(6).map_err(get)?,
    })
}

const AUDIT_COLUMNS: &str = "seq, time, patient, actor, data, prev_hash, hash";
const AUDIT_APPEND_ATTEMPTS: usize = 8;
/// Records per INSERT statement (7 parameters each: well under SQLite's and PostgreSQL's limits).
const AUDIT_ROWS_PER_INSERT: usize = 64;

impl SqlStore {
    async fn try_append_audit(&self, drafts: &[AuditDraft]) -> Result<Vec<i64>, sqlx::Error> {
        // SQLite: take the write lock up front. A deferred transaction that reads the tail and
        // then writes fails at once ("database is locked", no busy wait) when another connection
        // wrote in between; an immediate one waits its turn under the busy timeout.
        let mut tx =
            if self.postgres { self.pool.begin().await? } else { self.pool.begin_with("BEGIN IMMEDIATE").await? };
        if self.postgres {
            // Every node appends behind one transaction-scoped lock, so the chain's tail is read
            // and extended by one appender at a time and no append is lost to contention.
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(AUDIT_APPEND_LOCK).execute(&mut *tx).await?;
        }
        let last =
            sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetch_optional(&mut *tx).await?;
        let (mut seq, mut prev) = match last {
            Some(row) => (row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?),
            None => (0, GENESIS_HASH.to_owned()),
        };
        // chain every record first, then write them with one multi-row INSERT per chunk: a
        // statement is a round trip to the connection's thread, so a batch of n records costs
        // a handful of them instead of n
        let mut rows = Vec::with_capacity(drafts.len());
        for draft in drafts {
            seq += 1;
            let hash = chain_hash(&prev, seq, draft.time, &draft.data);
            rows.push((seq, draft, std::mem::replace(&mut prev, hash.clone()), hash));
        }
        for chunk in rows.chunks(AUDIT_ROWS_PER_INSERT) {
            let placeholders: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let p: Vec<String> = (1..=7).map(|c| format!("${}", i * 7 + c)).collect();
                    format!("({})", p.join(", "))
                })
                .collect();
            // INVARIANT: `seq` is the primary key, so even appenders the locks do not cover (two
            // processes on one SQLite file) cannot both commit on one tail: the loser retries.
            let sql = format!("INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES {}", placeholders.join(", "));
            let mut query = sqlx::query(&sql);
            for (seq, draft, prev, hash) in chunk {
                query = query
                    .bind(*seq)
                    .bind(draft.time)
                    .bind(&draft.patient)
                    .bind(&draft.actor)
                    .bind(&draft.data)
                    .bind(prev)
                    .bind(hash);
            }
            query.execute(&mut *tx).await?;
        }
        let out = rows.iter().map(|(seq, ..)| *seq).collect();
        tx.commit().await?;
        Ok(out)
    }
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn append_audit(&self, drafts: &[AuditDraft]) -> Result<Vec<i64>, StoreError> {
        self.count("append_audit");
        // Only the database refusing the write (SQLite busy, another process took the sequence
        // number) is worth another go; a pool or I/O failure is reported at once.
        let _one_at_a_time = self.audit_append.lock().await;
        let mut attempt = 1;
        loop {
            match self.try_append_audit(drafts).await {
                Ok(seqs) => return Ok(seqs),
                Err(e) if e.as_database_error().is_some() && attempt < AUDIT_APPEND_ATTEMPTS => {
                    tokio::time::sleep(std::time::Duration::from_millis(5 << attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    async fn audit_records(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        self.count("audit_records");
        let rows = sqlx::query(&format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"))
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn search_audit(
        &self,
        patient: Option<&str>,
        actor: Option<&str>,
        since: Option<i64>,
        until: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.count("search_audit");
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log
             WHERE ($1 IS NULL OR patient = $1) AND ($2 IS NULL OR actor = $2)
               AND ($3 IS NULL OR time >= $3) AND ($4 IS NULL OR time < $4)
             ORDER BY seq DESC LIMIT $5"
        ))
        .bind(patient)
        .bind(actor)
        .bind(since)
        .bind(until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(audit_from_row).collect()
    }
}
