//! Durable state in SQL through sqlx's `Any` driver: the same statements run on SQLite (embedded
//! default, a file under `data/`) and PostgreSQL (scale-out). Schema changes are numbered
//! migrations recorded in `schema_migrations`.

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row as _};

use super::{ClientStore, RevocationStore, StoreError};
use crate::domain::client::ClientMetadata;

/// Numbered schema migrations; never edit a released one, add the next.
const MIGRATIONS: &[(i64, &str)] = &[(
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
)];

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("database: {e}"))
}

/// SQLite- or PostgreSQL-backed durable store.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
}

impl SqlStore {
    /// Connects to `sqlite://…` or `postgres://…` and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 16 })
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
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
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
        let row = sqlx::query("SELECT metadata FROM clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        match row {
            None => Ok(None),
            Some(row) => {
                let json: String = row.try_get(0).map_err(unavailable)?;
                serde_json::from_str(&json).map(Some).map_err(|e| StoreError::Corrupt(format!("client `{client_id}`: {e}")))
            }
        }
    }
}

#[async_trait]
impl RevocationStore for SqlStore {
    async fn revoke(&self, id: &str, expires_at: i64) -> Result<(), StoreError> {
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
        let done = sqlx::query("DELETE FROM revocations WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected())
    }
}
