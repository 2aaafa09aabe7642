//! Durable state in PostgreSQL (scale-out: every node shares it), through sqlx's pooled async
//! driver. The statement texts are shared with the embedded SQLite store (`schema.rs`).

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row as _, Transaction};

use super::schema;
use super::{
    AuditDraft, AuditRecord, AuditStore, ClientStore, Criterion, GrantRecord, GrantStore, RefreshTokenUse,
    ResourceStore, ResourceWrite, RevocationStore, Rotation, StoreError, StoredResource, UpdateOutcome,
};
use crate::domain::audit::GENESIS_HASH;
use crate::domain::client::ClientMetadata;

fn unavailable(e: sqlx::Error) -> StoreError {
    crate::telemetry::store_error("durable", "postgres");
    StoreError::Unavailable(format!("database: {e}"))
}

fn corrupt(what: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| StoreError::Corrupt(format!("{what} row: {e}"))
}

/// The PostgreSQL-backed durable store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Appends from this process go one at a time: they would only collide on the chain's tail.
    audit_append: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// How long a request waits for a database connection before the store counts as unavailable.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The PostgreSQL advisory-lock key that serialises audit appends across nodes ("cbaudit").
const AUDIT_APPEND_LOCK: i64 = 0x0063_6261_7564_6974;
const AUDIT_APPEND_ATTEMPTS: usize = 8;

impl PostgresStore {
    /// Connects to `postgres://…` and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // a database that is down (a failover) refuses quickly, as a 503, instead of holding
            // the request for sqlx's default 30 s; a pooled connection is checked before use, so
            // connections that died with the old primary are replaced, never handed out
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(true)
            .connect(url)
            .await
            .map_err(unavailable)?;
        let store = Self { pool, audit_append: Default::default() };
        store.migrate().await?;
        Ok(store)
    }

    /// Counts one store operation for `/metrics` (by backend and operation, never by key).
    fn count(&self, operation: &'static str) {
        crate::telemetry::store_operation("durable", "postgres", operation);
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query(schema::CREATE_MIGRATIONS_TABLE).execute(&self.pool).await.map_err(unavailable)?;
        for (version, sql) in schema::MIGRATIONS {
            let mut tx = self.pool.begin().await.map_err(unavailable)?;
            let done = sqlx::query(schema::MIGRATION_DONE)
                .bind(*version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
            if done.is_some() {
                continue;
            }
            for statement in schema::statements(sql) {
                sqlx::query(statement).execute(&mut *tx).await.map_err(unavailable)?;
            }
            sqlx::query(schema::RECORD_MIGRATION).bind(*version).execute(&mut *tx).await.map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
        }
        Ok(())
    }
}

#[async_trait]
impl ClientStore for PostgresStore {
    async fn insert_client(&self, metadata: &ClientMetadata, now: i64) -> Result<bool, StoreError> {
        self.count("insert_client");
        let json = serde_json::to_string(metadata).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let done = sqlx::query(schema::INSERT_CLIENT)
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
        let row =
            sqlx::query(schema::GET_CLIENT).bind(client_id).fetch_optional(&self.pool).await.map_err(unavailable)?;
        match row {
            None => Ok(None),
            Some(row) => {
                let json: String = row.try_get(0).map_err(corrupt("client"))?;
                serde_json::from_str(&json)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt(format!("client `{client_id}`: {e}")))
            }
        }
    }
}

#[async_trait]
impl RevocationStore for PostgresStore {
    async fn revoke(&self, id: &str, expires_at: i64) -> Result<(), StoreError> {
        self.count("revoke");
        sqlx::query(schema::REVOKE).bind(id).bind(expires_at).execute(&self.pool).await.map_err(unavailable)?;
        Ok(())
    }

    async fn is_revoked(&self, ids: &[&str]) -> Result<bool, StoreError> {
        self.count("is_revoked");
        for chunk in ids.chunks(schema::REVOCATION_IDS_PER_QUERY) {
            let sql = schema::is_revoked(chunk.len());
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            if query.fetch_optional(&self.pool).await.map_err(unavailable)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        self.count("purge_expired");
        let done = sqlx::query(schema::PURGE_REVOCATIONS).bind(now).execute(&self.pool).await.map_err(unavailable)?;
        Ok(done.rows_affected())
    }
}

fn grant_from_row(row: &PgRow) -> Result<GrantRecord, StoreError> {
    let get = corrupt("grant");
    Ok(GrantRecord {
        id: row.try_get(0).map_err(&get)?,
        client_id: row.try_get(1).map_err(&get)?,
        subject: row.try_get(2).map_err(&get)?,
        scope: row.try_get(3).map_err(&get)?,
        session_id: row.try_get(4).map_err(&get)?,
        data: row.try_get(5).map_err(&get)?,
        created_at: row.try_get(6).map_err(&get)?,
        expires_at: row.try_get(7).map_err(&get)?,
        revoked_at: row.try_get(8).map_err(&get)?,
    })
}

#[async_trait]
impl GrantStore for PostgresStore {
    async fn insert_grant(&self, grant: &GrantRecord, refresh_token_hash: Option<&str>) -> Result<(), StoreError> {
        self.count("insert_grant");
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query(schema::INSERT_GRANT)
            .bind(&grant.id)
            .bind(&grant.client_id)
            .bind(&grant.subject)
            .bind(&grant.scope)
            .bind(&grant.session_id)
            .bind(&grant.data)
            .bind(grant.created_at)
            .bind(grant.expires_at)
            .bind(grant.revoked_at)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        if let Some(hash) = refresh_token_hash {
            sqlx::query(schema::INSERT_REFRESH_TOKEN)
                .bind(hash)
                .bind(&grant.id)
                .bind(grant.created_at)
                .bind(grant.expires_at)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn get_grant(&self, id: &str) -> Result<Option<GrantRecord>, StoreError> {
        self.count("get_grant");
        let row = sqlx::query(schema::GET_GRANT).bind(id).fetch_optional(&self.pool).await.map_err(unavailable)?;
        row.as_ref().map(grant_from_row).transpose()
    }

    async fn revoke_grant(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        self.count("revoke_grant");
        let done =
            sqlx::query(schema::REVOKE_GRANT).bind(id).bind(now).execute(&self.pool).await.map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn grants_of_session(&self, session_id: &str) -> Result<Vec<String>, StoreError> {
        self.count("grants_of_session");
        let rows =
            sqlx::query(schema::GRANTS_OF_SESSION).bind(session_id).fetch_all(&self.pool).await.map_err(unavailable)?;
        rows.iter().map(|r| r.try_get::<String, _>(0).map_err(corrupt("grant"))).collect()
    }

    async fn rotate_refresh_token(&self, r: Rotation<'_>) -> Result<RefreshTokenUse, StoreError> {
        self.count("rotate_refresh_token");
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let grant = sqlx::query(schema::GRANT_BY_REFRESH_TOKEN)
            .bind(r.presented)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        let grant = grant.as_ref().map(grant_from_row).transpose()?;
        if grant.as_ref().is_some_and(|grant| !(r.may_spend)(grant)) {
            tx.rollback().await.map_err(unavailable)?;
            return Ok(RefreshTokenUse::Refused);
        }
        let won = sqlx::query(schema::USE_REFRESH_TOKEN)
            .bind(r.presented)
            .bind(r.now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        let Some(row) = won else {
            // a replay or an unknown token: told apart in the same transaction
            let known = sqlx::query(schema::REFRESH_TOKEN_GRANT)
                .bind(r.presented)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
            tx.rollback().await.map_err(unavailable)?;
            return Ok(match known {
                Some(row) => RefreshTokenUse::Reused { grant_id: row.try_get(0).map_err(corrupt("refresh token"))? },
                None => RefreshTokenUse::Unknown,
            });
        };
        let get = corrupt("refresh token");
        let grant_id: String = row.try_get(0).map_err(&get)?;
        let expires_at: i64 = row.try_get(1).map_err(&get)?;
        let next_stored = sqlx::query(schema::INSERT_NEXT_REFRESH_TOKEN)
            .bind(r.next)
            .bind(&grant_id)
            .bind(r.now)
            .bind(r.client_id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?
            .rows_affected()
            == 1;
        tx.commit().await.map_err(unavailable)?;
        Ok(RefreshTokenUse::Fresh { grant, expires_at, next_stored })
    }

    async fn grant_by_refresh_token(&self, token_hash: &str) -> Result<Option<GrantRecord>, StoreError> {
        self.count("grant_by_refresh_token");
        let row = sqlx::query(schema::GRANT_BY_REFRESH_TOKEN)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(grant_from_row).transpose()
    }

    async fn refresh_token_grant(&self, token_hash: &str) -> Result<Option<String>, StoreError> {
        self.count("refresh_token_grant");
        let row = sqlx::query(schema::REFRESH_TOKEN_GRANT)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.map(|r| r.try_get::<String, _>(0).map_err(corrupt("refresh token"))).transpose()
    }
}

fn resource_from_row(row: &PgRow) -> Result<StoredResource, StoreError> {
    let get = corrupt("resource");
    Ok(StoredResource {
        resource_type: row.try_get(0).map_err(&get)?,
        id: row.try_get(1).map_err(&get)?,
        version: row.try_get(2).map_err(&get)?,
        last_updated: row.try_get(3).map_err(&get)?,
        data: row.try_get(4).map_err(&get)?,
    })
}

/// Writes resource `write`'s version `version` to its history and replaces its search keys.
async fn write_history_and_index(
    tx: &mut Transaction<'_, Postgres>,
    write: &ResourceWrite<'_>,
    version: i64,
) -> Result<(), StoreError> {
    sqlx::query(schema::INSERT_HISTORY)
        .bind(write.resource_type)
        .bind(write.id)
        .bind(version)
        .bind(write.now)
        .bind(write.data)
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    sqlx::query(schema::DELETE_INDEX)
        .bind(write.resource_type)
        .bind(write.id)
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    for (key, value) in write.index {
        sqlx::query(schema::INSERT_INDEX)
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

#[async_trait]
impl ResourceStore for PostgresStore {
    async fn create_resource_if_absent(&self, write: ResourceWrite<'_>) -> Result<bool, StoreError> {
        self.count("create_resource_if_absent");
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let created = sqlx::query(schema::CREATE_RESOURCE)
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
            write_history_and_index(&mut tx, &write, 1).await?;
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
        let updated = sqlx::query(schema::UPDATE_RESOURCE)
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
            let current = sqlx::query(schema::RESOURCE_VERSION)
                .bind(write.resource_type)
                .bind(write.id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
            tx.rollback().await.map_err(unavailable)?;
            return Ok(match current {
                Some(row) => UpdateOutcome::VersionConflict { current: row.try_get(0).map_err(corrupt("resource"))? },
                None => UpdateOutcome::NotFound,
            });
        }
        let version = expected_version + 1;
        write_history_and_index(&mut tx, &write, version).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(UpdateOutcome::Updated(write.stored(version)))
    }

    async fn read_resource(&self, resource_type: &str, id: &str) -> Result<Option<StoredResource>, StoreError> {
        self.count("read_resource");
        let row = sqlx::query(schema::READ_RESOURCE)
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
        let row = sqlx::query(schema::READ_RESOURCE_VERSION)
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
        let rows = sqlx::query(schema::RESOURCE_HISTORY)
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
        let sql = schema::search_resources(criteria, limit);
        let mut query = sqlx::query(&sql).bind(resource_type);
        for criterion in criteria {
            query = query.bind(&criterion.key);
            for value in &criterion.values {
                query = query.bind(value);
            }
        }
        let rows = query.fetch_all(&self.pool).await.map_err(unavailable)?;
        rows.iter().map(resource_from_row).collect()
    }

    async fn list_resources(&self, resource_type: &str, limit: i64) -> Result<Vec<StoredResource>, StoreError> {
        self.count("list_resources");
        let rows = sqlx::query(&schema::list_resources(limit))
            .bind(resource_type)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(resource_from_row).collect()
    }
}

fn audit_from_row(row: &PgRow) -> Result<AuditRecord, StoreError> {
    let get = corrupt("audit");
    Ok(AuditRecord {
        seq: row.try_get(0).map_err(&get)?,
        time: row.try_get(1).map_err(&get)?,
        patient: row.try_get(2).map_err(&get)?,
        actor: row.try_get(3).map_err(&get)?,
        data: row.try_get(4).map_err(&get)?,
        prev_hash: row.try_get(5).map_err(&get)?,
        hash: row.try_get(6).map_err(&get)?,
    })
}

impl PostgresStore {
    async fn try_append_audit(&self, drafts: &[AuditDraft]) -> Result<Vec<i64>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // Every node appends behind one transaction-scoped lock, so the chain's tail is read and
        // extended by one appender at a time and no append is lost to contention.
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(AUDIT_APPEND_LOCK).execute(&mut *tx).await?;
        let tail = sqlx::query(schema::AUDIT_TAIL).fetch_optional(&mut *tx).await?;
        let (seq, prev) = match tail {
            Some(row) => (row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?),
            None => (0, GENESIS_HASH.to_owned()),
        };
        // chain every record first, then write them with one multi-row INSERT per chunk: a
        // statement is a round trip to the server, so a batch of n records costs a handful
        let chained = schema::chain(seq, prev, drafts);
        for chunk in chained.chunks(schema::AUDIT_ROWS_PER_INSERT) {
            let sql = schema::insert_audit(chunk.len());
            let mut query = sqlx::query(&sql);
            for record in chunk {
                let draft = record.draft;
                query = query
                    .bind(record.seq)
                    .bind(draft.time)
                    .bind(&draft.patient)
                    .bind(&draft.actor)
                    .bind(&draft.data)
                    .bind(&record.prev_hash)
                    .bind(&record.hash);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(chained.iter().map(|record| record.seq).collect())
    }
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn append_audit(&self, drafts: &[AuditDraft]) -> Result<Vec<i64>, StoreError> {
        self.count("append_audit");
        // Only the database refusing the write (another process took the sequence number) is
        // worth another go; a pool or I/O failure is reported at once.
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
        let rows =
            sqlx::query(&schema::audit_records(limit)).bind(after).fetch_all(&self.pool).await.map_err(unavailable)?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn audit_hashes(&self, after: i64, limit: i64) -> Result<Vec<(i64, String)>, StoreError> {
        self.count("audit_hashes");
        let rows =
            sqlx::query(&schema::audit_hashes(limit)).bind(after).fetch_all(&self.pool).await.map_err(unavailable)?;
        let get = corrupt("audit");
        rows.iter().map(|row| Ok((row.try_get(0).map_err(&get)?, row.try_get(1).map_err(&get)?))).collect()
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
        let rows = sqlx::query(&schema::search_audit(limit))
            .bind(patient)
            .bind(actor)
            .bind(since)
            .bind(until)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(audit_from_row).collect()
    }
}
