//! Durable state in an embedded SQLite file: the default, with no server to run.
//!
//! Called inline. A statement on a local SQLite file is an indexed lookup or a short write that
//! takes microseconds (WAL, `synchronous = NORMAL`: a commit appends to the log and does not wait
//! for the disk), less than signing a token. Handing each one to a connection thread and back,
//! as sqlx's SQLite driver does, cost more than the statement: two thread wake-ups per statement
//! were a third of an EHR launch's CPU. So the calling task runs it itself:
//! - one writer connection behind a mutex: every write is one `BEGIN IMMEDIATE` transaction
//!   (the write lock taken up front, so a second process on the file waits its turn under the
//!   busy timeout instead of failing), and writers in this process queue on the mutex, never on
//!   SQLite's sleeping busy handler;
//! - a few reader connections (`query_only`), which in WAL mode read while the writer writes;
//! - checkpoints (copying the WAL back into the database, the one step that waits for the disk)
//!   on a thread of their own, never in a request. Each one copies what it can while writers
//!   go on, then copies the last few frames holding the writer back for that moment: a WAL is
//!   only started over (and so kept small) after a checkpoint that caught up with the last
//!   commit, which under steady writes a checkpoint running beside them never does. (The first
//!   version ran beside them only; under launch load its WAL grew past a gigabyte, and every
//!   page read searched an index of all its frames.)
//!
//! No lock is held across an `.await`: every operation is one synchronous call.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{Connection, Row, Statement, ToSql, TransactionBehavior};

use super::schema;
use super::{
    AuditDraft, AuditRecord, AuditStore, ClientStore, Criterion, GrantRecord, GrantStore, RefreshTokenUse,
    ResourceStore, ResourceWrite, RevocationStore, Rotation, StoreError, StoredResource, UpdateOutcome,
};
use crate::domain::audit::GENESIS_HASH;
use crate::domain::client::ClientMetadata;

/// Reader connections; more than the runtime's worker threads, so a reader is nearly always free.
const READERS: usize = 4;
/// How long a write waits for another process holding the file's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Often enough that the WAL between two starts stays a few megabytes under full write load.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// A WAL file grown in a burst is cut back to this size once it has been started over.
const WAL_SIZE_LIMIT: i64 = 64 << 20;
/// Prepared statements kept per connection (the fixed texts, and recent dynamic ones).
const STATEMENT_CACHE: usize = 64;
const AUDIT_APPEND_ATTEMPTS: u32 = 8;

/// The SQLite-backed durable store.
#[derive(Debug)]
pub struct SqliteStore {
    /// Shared with the checkpoint thread, which holds it for a checkpoint's last step.
    writer: Arc<Mutex<Connection>>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Dropped with the store, which ends the checkpoint thread.
    _checkpoints: mpsc::Sender<()>,
}

/// `$1` … `$999`, the parameter names the shared statement texts use.
static PARAMETER_NAMES: LazyLock<Vec<String>> = LazyLock::new(|| (1..=999).map(|i| format!("${i}")).collect());

fn store_error(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::FromSqlConversionFailure(..) | rusqlite::Error::InvalidColumnType(..) => {
            StoreError::Corrupt(format!("database row: {e}"))
        }
        e => {
            crate::telemetry::store_error("durable", "sqlite");
            StoreError::Unavailable(format!("database: {e}"))
        }
    }
}

/// Binds `params` to `$1`, `$2`, … by name, so a text may name them in any order or repeat one.
fn bind(statement: &mut Statement<'_>, params: &[&dyn ToSql]) -> rusqlite::Result<()> {
    if statement.parameter_count() != params.len() || params.len() > PARAMETER_NAMES.len() {
        return Err(rusqlite::Error::InvalidParameterCount(params.len(), statement.parameter_count()));
    }
    for (name, param) in PARAMETER_NAMES.iter().zip(params) {
        let index =
            statement.parameter_index(name)?.ok_or_else(|| rusqlite::Error::InvalidParameterName(name.clone()))?;
        statement.raw_bind_parameter(index, param)?;
    }
    Ok(())
}

/// Runs a statement that returns no rows; how many rows it changed.
fn execute(conn: &Connection, sql: &str, params: &[&dyn ToSql]) -> rusqlite::Result<usize> {
    let mut statement = conn.prepare_cached(sql)?;
    bind(&mut statement, params)?;
    statement.raw_execute()
}

/// Every row a statement returns, each read by `read`.
fn query<T>(
    conn: &Connection,
    sql: &str,
    params: &[&dyn ToSql],
    mut read: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut statement = conn.prepare_cached(sql)?;
    bind(&mut statement, params)?;
    let mut rows = statement.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(read(row)?);
    }
    Ok(out)
}

/// The first row a statement returns, if any.
fn query_one<T>(
    conn: &Connection,
    sql: &str,
    params: &[&dyn ToSql],
    read: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    let mut statement = conn.prepare_cached(sql)?;
    bind(&mut statement, params)?;
    let mut rows = statement.raw_query();
    rows.next()?.map(read).transpose()
}

fn grant_from_row(row: &Row<'_>) -> rusqlite::Result<GrantRecord> {
    Ok(GrantRecord {
        id: row.get(0)?,
        client_id: row.get(1)?,
        subject: row.get(2)?,
        scope: row.get(3)?,
        session_id: row.get(4)?,
        data: row.get(5)?,
        created_at: row.get(6)?,
        expires_at: row.get(7)?,
        revoked_at: row.get(8)?,
    })
}

fn resource_from_row(row: &Row<'_>) -> rusqlite::Result<StoredResource> {
    Ok(StoredResource {
        resource_type: row.get(0)?,
        id: row.get(1)?,
        version: row.get(2)?,
        last_updated: row.get(3)?,
        data: row.get(4)?,
    })
}

fn audit_from_row(row: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        seq: row.get(0)?,
        time: row.get(1)?,
        patient: row.get(2)?,
        actor: row.get(3)?,
        data: row.get(4)?,
        prev_hash: row.get(5)?,
        hash: row.get(6)?,
    })
}

fn connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch("PRAGMA synchronous = NORMAL")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Runs `f` in one `BEGIN IMMEDIATE` transaction (the write lock taken up front), committed when
/// it returns `Ok` and rolled back otherwise.
fn in_transaction<T>(conn: &mut Connection, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.execute_batch(schema::CREATE_MIGRATIONS_TABLE)?;
    for (version, sql) in schema::MIGRATIONS {
        in_transaction(conn, |tx| {
            if query_one(tx, schema::MIGRATION_DONE, &[version], |_| Ok(()))?.is_none() {
                tx.execute_batch(sql)?;
                execute(tx, schema::RECORD_MIGRATION, &[version])?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Writes resource `write`'s version `version` to its history and replaces its search keys.
fn write_history_and_index(conn: &Connection, write: &ResourceWrite<'_>, version: i64) -> rusqlite::Result<()> {
    execute(conn, schema::INSERT_HISTORY, &[&write.resource_type, &write.id, &version, &write.now, &write.data])?;
    execute(conn, schema::DELETE_INDEX, &[&write.resource_type, &write.id])?;
    for (key, value) in write.index {
        execute(conn, schema::INSERT_INDEX, &[&write.resource_type, &write.id, key, value])?;
    }
    Ok(())
}

/// Why an audit append failed: worth another go (the file was busy, or another process took the
/// sequence number), or not.
fn retriable(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(
            rusqlite::ErrorCode::DatabaseBusy
                | rusqlite::ErrorCode::DatabaseLocked
                | rusqlite::ErrorCode::ConstraintViolation
        )
    )
}

/// One checkpoint: copy the WAL's frames into the database beside the writers, then copy what
/// they committed meanwhile with the writer held back, so the checkpoint catches up with the
/// last commit and the next write starts the WAL over.
fn checkpoint(checkpointer: &Connection, writer: &Weak<Mutex<Connection>>) -> rusqlite::Result<()> {
    let passive = |conn: &Connection| {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
    };
    // (what a checkpoint reports is as of its start: writers may have committed since)
    let (frames, _) = passive(checkpointer)?;
    if frames > 0 {
        if let Some(writer) = writer.upgrade() {
            passive(&writer.lock())?;
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating) the database file at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut writer = connection(path).map_err(store_error)?;
        writer.query_row("PRAGMA journal_mode = WAL", [], |row| row.get::<_, String>(0)).map_err(store_error)?;
        // checkpoints run on their own thread (below), never inside a request's commit
        writer.execute_batch("PRAGMA wal_autocheckpoint = 0").map_err(store_error)?;
        writer
            .query_row(&format!("PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}"), [], |_| Ok(()))
            .map_err(store_error)?;
        migrate(&mut writer).map_err(store_error)?;
        let writer = Arc::new(Mutex::new(writer));
        let readers = (0..READERS)
            .map(|_| {
                let conn = connection(path)?;
                conn.execute_batch("PRAGMA query_only = 1")?;
                Ok(Mutex::new(conn))
            })
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(store_error)?;
        let checkpointer = connection(path).map_err(store_error)?;
        let (checkpoints, stop) = mpsc::channel::<()>();
        let writer_of_thread = Arc::downgrade(&writer);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
                    if let Err(e) = checkpoint(&checkpointer, &writer_of_thread) {
                        tracing::warn!(error = %e, "SQLite checkpoint failed; will try again");
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the SQLite checkpoint thread: {e}")))?;
        Ok(Self { writer, readers, next_reader: AtomicUsize::new(0), _checkpoints: checkpoints })
    }

    /// Runs `f` in one write transaction on the writer connection.
    fn write<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        count(operation);
        in_transaction(&mut self.writer.lock(), f).map_err(store_error)
    }

    /// Runs `f` on a free reader connection.
    fn read<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        count(operation);
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let free = (0..READERS).find_map(|i| self.readers[(start + i) % READERS].try_lock());
        let conn = free.unwrap_or_else(|| self.readers[start % READERS].lock());
        f(&conn).map_err(store_error)
    }
}

/// Counts one store operation for `/metrics` (by backend and operation, never by key).
fn count(operation: &'static str) {
    crate::telemetry::store_operation("durable", "sqlite", operation);
}

#[async_trait]
impl ClientStore for SqliteStore {
    async fn insert_client(&self, metadata: &ClientMetadata, now: i64) -> Result<bool, StoreError> {
        let json = serde_json::to_string(metadata).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let inserted =
            self.write("insert_client", |c| execute(c, schema::INSERT_CLIENT, &[&metadata.client_id, &json, &now]))?;
        Ok(inserted == 1)
    }

    async fn get_client(&self, client_id: &str) -> Result<Option<ClientMetadata>, StoreError> {
        let json =
            self.read("get_client", |c| query_one(c, schema::GET_CLIENT, &[&client_id], |r| r.get::<_, String>(0)))?;
        json.map(|json| {
            serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("client `{client_id}`: {e}")))
        })
        .transpose()
    }
}

#[async_trait]
impl RevocationStore for SqliteStore {
    async fn revoke(&self, id: &str, expires_at: i64) -> Result<(), StoreError> {
        self.write("revoke", |c| execute(c, schema::REVOKE, &[&id, &expires_at]))?;
        Ok(())
    }

    async fn is_revoked(&self, ids: &[&str]) -> Result<bool, StoreError> {
        self.read("is_revoked", |c| {
            for chunk in ids.chunks(schema::REVOCATION_IDS_PER_QUERY) {
                let params: Vec<&dyn ToSql> = chunk.iter().map(|id| id as &dyn ToSql).collect();
                if query_one(c, &schema::is_revoked(chunk.len()), &params, |_| Ok(()))?.is_some() {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        let purged = self.write("purge_expired", |c| execute(c, schema::PURGE_REVOCATIONS, &[&now]))?;
        Ok(purged as u64)
    }
}

#[async_trait]
impl GrantStore for SqliteStore {
    async fn insert_grant(&self, g: &GrantRecord, refresh_token_hash: Option<&str>) -> Result<(), StoreError> {
        self.write("insert_grant", |c| {
            let columns: [&dyn ToSql; 9] = [
                &g.id,
                &g.client_id,
                &g.subject,
                &g.scope,
                &g.session_id,
                &g.data,
                &g.created_at,
                &g.expires_at,
                &g.revoked_at,
            ];
            execute(c, schema::INSERT_GRANT, &columns)?;
            if let Some(hash) = refresh_token_hash {
                execute(c, schema::INSERT_REFRESH_TOKEN, &[&hash, &g.id, &g.created_at, &g.expires_at])?;
            }
            Ok(())
        })
    }

    async fn get_grant(&self, id: &str) -> Result<Option<GrantRecord>, StoreError> {
        self.read("get_grant", |c| query_one(c, schema::GET_GRANT, &[&id], grant_from_row))
    }

    async fn revoke_grant(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        Ok(self.write("revoke_grant", |c| execute(c, schema::REVOKE_GRANT, &[&id, &now]))? == 1)
    }

    async fn grants_of_session(&self, session_id: &str) -> Result<Vec<String>, StoreError> {
        self.read("grants_of_session", |c| query(c, schema::GRANTS_OF_SESSION, &[&session_id], |r| r.get(0)))
    }

    async fn rotate_refresh_token(&self, r: Rotation<'_>) -> Result<RefreshTokenUse, StoreError> {
        self.write("rotate_refresh_token", |c| {
            let grant = query_one(c, schema::GRANT_BY_REFRESH_TOKEN, &[&r.presented], grant_from_row)?;
            if grant.as_ref().is_some_and(|grant| !(r.may_spend)(grant)) {
                return Ok(RefreshTokenUse::Refused);
            }
            let won = query_one(c, schema::USE_REFRESH_TOKEN, &[&r.presented, &r.now], |row| {
                Ok((row.get::<_, String>(0)?, row.get(1)?))
            })?;
            if let Some((grant_id, expires_at)) = won {
                let next_stored =
                    execute(c, schema::INSERT_NEXT_REFRESH_TOKEN, &[&r.next, &grant_id, &r.now, &r.client_id])? == 1;
                return Ok(RefreshTokenUse::Fresh { grant, expires_at, next_stored });
            }
            Ok(match query_one(c, schema::REFRESH_TOKEN_GRANT, &[&r.presented], |row| row.get(0))? {
                Some(grant_id) => RefreshTokenUse::Reused { grant_id },
                None => RefreshTokenUse::Unknown,
            })
        })
    }

    async fn refresh_token_grant(&self, token_hash: &str) -> Result<Option<String>, StoreError> {
        self.read("refresh_token_grant", |c| query_one(c, schema::REFRESH_TOKEN_GRANT, &[&token_hash], |r| r.get(0)))
    }

    async fn grant_by_refresh_token(&self, token_hash: &str) -> Result<Option<GrantRecord>, StoreError> {
        self.read("grant_by_refresh_token", |c| {
            query_one(c, schema::GRANT_BY_REFRESH_TOKEN, &[&token_hash], grant_from_row)
        })
    }
}

#[async_trait]
impl ResourceStore for SqliteStore {
    async fn create_resource_if_absent(&self, write: ResourceWrite<'_>) -> Result<bool, StoreError> {
        self.write("create_resource_if_absent", |c| {
            let created =
                execute(c, schema::CREATE_RESOURCE, &[&write.resource_type, &write.id, &write.now, &write.data])? == 1;
            if created {
                write_history_and_index(c, &write, 1)?;
            }
            Ok(created)
        })
    }

    async fn update_resource(
        &self,
        write: ResourceWrite<'_>,
        expected_version: i64,
    ) -> Result<UpdateOutcome, StoreError> {
        self.write("update_resource", |c| {
            let params: [&dyn ToSql; 5] = [&write.resource_type, &write.id, &write.now, &write.data, &expected_version];
            if execute(c, schema::UPDATE_RESOURCE, &params)? == 0 {
                let current = query_one(c, schema::RESOURCE_VERSION, &[&write.resource_type, &write.id], |r| r.get(0))?;
                return Ok(match current {
                    Some(current) => UpdateOutcome::VersionConflict { current },
                    None => UpdateOutcome::NotFound,
                });
            }
            let version = expected_version + 1;
            write_history_and_index(c, &write, version)?;
            Ok(UpdateOutcome::Updated(write.stored(version)))
        })
    }

    async fn read_resource(&self, resource_type: &str, id: &str) -> Result<Option<StoredResource>, StoreError> {
        self.read("read_resource", |c| query_one(c, schema::READ_RESOURCE, &[&resource_type, &id], resource_from_row))
    }

    async fn read_resource_version(
        &self,
        resource_type: &str,
        id: &str,
        version: i64,
    ) -> Result<Option<StoredResource>, StoreError> {
        self.read("read_resource_version", |c| {
            query_one(c, schema::READ_RESOURCE_VERSION, &[&resource_type, &id, &version], resource_from_row)
        })
    }

    async fn resource_history(&self, resource_type: &str, id: &str) -> Result<Vec<StoredResource>, StoreError> {
        self.read("resource_history", |c| query(c, schema::RESOURCE_HISTORY, &[&resource_type, &id], resource_from_row))
    }

    async fn search_resources(
        &self,
        resource_type: &str,
        criteria: &[Criterion],
        limit: i64,
    ) -> Result<Vec<StoredResource>, StoreError> {
        if criteria.iter().any(|c| c.values.is_empty()) {
            count("search_resources");
            return Ok(Vec::new());
        }
        let mut params: Vec<&dyn ToSql> = vec![&resource_type];
        for criterion in criteria {
            params.push(&criterion.key);
            params.extend(criterion.values.iter().map(|v| v as &dyn ToSql));
        }
        self.read("search_resources", |c| {
            query(c, &schema::search_resources(criteria, limit), &params, resource_from_row)
        })
    }

    async fn list_resources(&self, resource_type: &str, limit: i64) -> Result<Vec<StoredResource>, StoreError> {
        self.read("list_resources", |c| query(c, &schema::list_resources(limit), &[&resource_type], resource_from_row))
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, drafts: &[AuditDraft]) -> Result<Vec<i64>, StoreError> {
        // The write transaction takes the file's write lock up front, so this process's appends
        // extend the tail one at a time. Only another process on the same file can get in the
        // way (busy past the timeout, or it took the sequence number): worth another go, after
        // a pause that does not hold a worker thread.
        let mut attempt = 1;
        loop {
            match self.try_append_audit(drafts) {
                Err(e) if retriable(&e) && attempt < AUDIT_APPEND_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                    attempt += 1;
                }
                done => return done.map_err(store_error),
            }
        }
    }

    async fn audit_records(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        self.read("audit_records", |c| query(c, &schema::audit_records(limit), &[&after], audit_from_row))
    }

    async fn audit_hashes(&self, after: i64, limit: i64) -> Result<Vec<(i64, String)>, StoreError> {
        self.read("audit_hashes", |c| query(c, &schema::audit_hashes(limit), &[&after], |r| Ok((r.get(0)?, r.get(1)?))))
    }

    async fn search_audit(
        &self,
        patient: Option<&str>,
        actor: Option<&str>,
        since: Option<i64>,
        until: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.read("search_audit", |c| {
            query(c, &schema::search_audit(limit), &[&patient, &actor, &since, &until], audit_from_row)
        })
    }
}

impl SqliteStore {
    fn try_append_audit(&self, drafts: &[AuditDraft]) -> rusqlite::Result<Vec<i64>> {
        count("append_audit");
        in_transaction(&mut self.writer.lock(), |tx| {
            let tail = query_one(tx, schema::AUDIT_TAIL, &[], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
            let (seq, prev) = tail.unwrap_or_else(|| (0, GENESIS_HASH.to_owned()));
            let chained = schema::chain(seq, prev, drafts);
            for chunk in chained.chunks(schema::AUDIT_ROWS_PER_INSERT) {
                let mut params: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 7);
                for record in chunk {
                    let d = record.draft;
                    params.extend([
                        &record.seq as &dyn ToSql,
                        &d.time,
                        &d.patient,
                        &d.actor,
                        &d.data,
                        &record.prev_hash,
                        &record.hash,
                    ]);
                }
                execute(tx, &schema::insert_audit(chunk.len()), &params)?;
            }
            Ok(chained.iter().map(|record| record.seq).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_bound_by_name_whatever_their_order_in_the_text() {
        let conn = Connection::open_in_memory().unwrap();
        let row = query_one(&conn, "SELECT $2, $1, $2", &[&"first", &"second"], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
        })
        .unwrap();
        assert_eq!(row, Some(("second".into(), "first".into(), "second".into())));
    }

    #[test]
    fn a_wrong_number_of_parameters_is_refused_not_bound_short() {
        let conn = Connection::open_in_memory().unwrap();
        let err = query_one(&conn, "SELECT $1, $2", &[&"only one"], |_| Ok(())).unwrap_err();
        assert!(matches!(err, rusqlite::Error::InvalidParameterCount(1, 2)), "{err:?}");
        let err = query_one(&conn, "SELECT $1, $3", &[&1, &2, &3], |_| Ok(())).unwrap_err();
        assert!(
            matches!(err, rusqlite::Error::InvalidParameterCount(3, 2) | rusqlite::Error::InvalidParameterName(_)),
            "{err:?}"
        );
    }

    /// The WAL's header counts the times it was started over (its checkpoint sequence number).
    fn wal_restarts(db: &Path) -> u32 {
        let header = std::fs::read(format!("{}-wal", db.display())).unwrap_or_default();
        header.get(12..16).map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap()))
    }

    #[test]
    fn under_steady_writes_the_wal_is_still_started_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path).unwrap();
        let before = wal_restarts(&path);
        // write without pause (and read beside) for six checkpoint intervals
        let until = std::time::Instant::now() + CHECKPOINT_EVERY * 6;
        let mut writes = 0_i64;
        while std::time::Instant::now() < until {
            let id = format!("jti-{writes}");
            store.write("test", |c| execute(c, schema::REVOKE, &[&id, &writes])).unwrap();
            store.read("test", |c| query_one(c, &schema::is_revoked(1), &[&id], |_| Ok(()))).unwrap().unwrap();
            writes += 1;
        }
        let restarts = wal_restarts(&path).wrapping_sub(before);
        assert!(restarts >= 2, "the WAL was started over {restarts} times in {writes} writes");
    }

    #[test]
    fn every_shared_statement_prepares_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let conn = store.writer.lock();
        for sql in [
            schema::INSERT_CLIENT,
            schema::GET_CLIENT,
            schema::REVOKE,
            schema::PURGE_REVOCATIONS,
            schema::INSERT_GRANT,
            schema::GET_GRANT,
            schema::GRANT_BY_REFRESH_TOKEN,
            schema::REVOKE_GRANT,
            schema::GRANTS_OF_SESSION,
            schema::INSERT_REFRESH_TOKEN,
            schema::USE_REFRESH_TOKEN,
            schema::REFRESH_TOKEN_GRANT,
            schema::CREATE_RESOURCE,
            schema::UPDATE_RESOURCE,
            schema::RESOURCE_VERSION,
            schema::INSERT_HISTORY,
            schema::DELETE_INDEX,
            schema::INSERT_INDEX,
            schema::READ_RESOURCE,
            schema::READ_RESOURCE_VERSION,
            schema::RESOURCE_HISTORY,
            schema::AUDIT_TAIL,
        ] {
            conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        conn.prepare(&schema::is_revoked(schema::REVOCATION_IDS_PER_QUERY)).unwrap();
        conn.prepare(&schema::insert_audit(schema::AUDIT_ROWS_PER_INSERT)).unwrap();
    }

    /// A statement SQLite has to compile again when a parameter changes costs more than running
    /// it (a bound LIMIT did that: 17 % of an audited read).
    #[test]
    fn the_read_statements_are_compiled_once_whatever_is_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let conn = store.readers[0].lock();
        let criteria = [
            Criterion { key: "patient".into(), values: vec!["9434765919".into()] },
            Criterion { key: "status".into(), values: vec!["active".into(), "draft".into()] },
        ];
        let statements: [(String, usize); 8] = [
            (schema::search_resources(&criteria, 20), 6),
            (schema::list_resources(20), 1),
            (schema::audit_records(20), 1),
            (schema::audit_hashes(20), 1),
            (schema::search_audit(20), 4),
            (schema::READ_RESOURCE.into(), 2),
            (schema::GRANT_BY_REFRESH_TOKEN.into(), 1),
            (schema::is_revoked(2), 2),
        ];
        for (sql, arity) in statements {
            let mut statement = conn.prepare_cached(&sql).unwrap();
            for run in 0..4_i64 {
                let values: Vec<String> = (0..arity).map(|i| format!("{run}-{i}")).collect();
                let params: Vec<&dyn ToSql> = values.iter().map(|v| v as &dyn ToSql).collect();
                bind(&mut statement, &params).unwrap();
                let mut rows = statement.raw_query();
                while rows.next().unwrap().is_some() {}
            }
            assert_eq!(statement.get_status(rusqlite::StatementStatus::RePrepare), 0, "{sql}");
        }
    }
}
