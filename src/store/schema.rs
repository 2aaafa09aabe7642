//! The durable schema and every statement the two SQL backends run, written once: the embedded
//! SQLite store (`sqlite.rs`, rusqlite) and the scale-out PostgreSQL store (`postgres.rs`, sqlx)
//! execute the same texts. Parameters are `$1`, `$2`, … (PostgreSQL's form; SQLite reads them as
//! named parameters, and `sqlite.rs` binds them by name, so their order in a text does not matter).
//! Schema changes are numbered migrations recorded in `schema_migrations`.
//!
//! A `LIMIT` is written into the text as a number, never bound: SQLite plans with a bound LIMIT's
//! value, so binding a new one makes it compile the statement again on every run (that was 17 %
//! of an audited CarePlan read). The number is an `i64` from our code, so the text stays ours.

use super::{AuditDraft, Criterion};
use crate::domain::audit::chain_hash;

/// Numbered schema migrations; never edit a released one, add the next.
pub const MIGRATIONS: &[(i64, &str)] = &[
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

pub const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)";
pub const MIGRATION_DONE: &str = "SELECT version FROM schema_migrations WHERE version = $1";
pub const RECORD_MIGRATION: &str =
    "INSERT INTO schema_migrations (version) VALUES ($1) ON CONFLICT (version) DO NOTHING";

/// The statements of a migration, one by one (PostgreSQL's extended protocol takes one at a time).
pub fn statements(migration: &str) -> impl Iterator<Item = &str> {
    migration.split(';').map(str::trim).filter(|s| !s.is_empty())
}

pub const INSERT_CLIENT: &str =
    "INSERT INTO clients (client_id, metadata, created_at) VALUES ($1, $2, $3) ON CONFLICT (client_id) DO NOTHING";
pub const GET_CLIENT: &str = "SELECT metadata FROM clients WHERE client_id = $1";

pub const REVOKE: &str = "INSERT INTO revocations (id, expires_at) VALUES ($1, $2)
     ON CONFLICT (id) DO UPDATE SET expires_at = CASE WHEN excluded.expires_at > revocations.expires_at
         THEN excluded.expires_at ELSE revocations.expires_at END";
pub const PURGE_REVOCATIONS: &str = "DELETE FROM revocations WHERE expires_at < $1";
/// At most this many ids are asked about in one statement (callers ask about two or three).
pub const REVOCATION_IDS_PER_QUERY: usize = 16;

/// `SELECT 1 … LIMIT 1` over `count` ids (1 ≤ count ≤ [`REVOCATION_IDS_PER_QUERY`]).
pub fn is_revoked(count: usize) -> String {
    let ids: Vec<String> = (1..=count).map(|i| format!("${i}")).collect();
    format!("SELECT 1 FROM revocations WHERE id IN ({}) LIMIT 1", ids.join(", "))
}

/// `SELECT` of a grant's columns, in [`super::GrantRecord`]'s field order, to be followed by a `WHERE`.
macro_rules! select_grant {
    () => {
        "SELECT id, client_id, subject, scope, session_id, data, created_at, expires_at, revoked_at FROM grants "
    };
}

pub const INSERT_GRANT: &str =
    "INSERT INTO grants (id, client_id, subject, scope, session_id, data, created_at, expires_at, revoked_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
pub const GET_GRANT: &str = concat!(select_grant!(), "WHERE id = $1");
pub const GRANT_BY_REFRESH_TOKEN: &str =
    concat!(select_grant!(), "WHERE id = (SELECT grant_id FROM refresh_tokens WHERE token_hash = $1)");
pub const REVOKE_GRANT: &str = "UPDATE grants SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";
pub const GRANTS_OF_SESSION: &str = "SELECT id FROM grants WHERE session_id = $1 AND revoked_at IS NULL";
pub const INSERT_REFRESH_TOKEN: &str =
    "INSERT INTO refresh_tokens (token_hash, grant_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";
/// The next refresh token of grant `$2`, expiring with it, stored only while the grant is live at
/// `$3` and belongs to client `$4`.
pub const INSERT_NEXT_REFRESH_TOKEN: &str = "INSERT INTO refresh_tokens (token_hash, grant_id, created_at, expires_at)
     SELECT $1, id, $3, expires_at FROM grants WHERE id = $2 AND client_id = $4 AND revoked_at IS NULL AND expires_at > $3";
/// INVARIANT: one UPDATE with the `used_at IS NULL` guard is the single atomic step that uses a
/// refresh token up; of concurrent callers exactly one gets the row back.
pub const USE_REFRESH_TOKEN: &str =
    "UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL RETURNING grant_id, expires_at";
pub const REFRESH_TOKEN_GRANT: &str = "SELECT grant_id FROM refresh_tokens WHERE token_hash = $1";

/// A resource's columns, in [`super::StoredResource`]'s field order.
macro_rules! resource_columns {
    () => {
        "resource_type, id, version, last_updated, data"
    };
}

pub const CREATE_RESOURCE: &str =
    "INSERT INTO resources (resource_type, id, version, last_updated, data) VALUES ($1, $2, 1, $3, $4)
     ON CONFLICT (resource_type, id) DO NOTHING";
/// INVARIANT: the version guard in the WHERE clause makes the compare-and-set atomic.
pub const UPDATE_RESOURCE: &str = "UPDATE resources SET version = version + 1, last_updated = $3, data = $4
     WHERE resource_type = $1 AND id = $2 AND version = $5";
pub const RESOURCE_VERSION: &str = "SELECT version FROM resources WHERE resource_type = $1 AND id = $2";
pub const INSERT_HISTORY: &str =
    "INSERT INTO resource_history (resource_type, id, version, last_updated, data) VALUES ($1, $2, $3, $4, $5)";
pub const DELETE_INDEX: &str = "DELETE FROM resource_index WHERE resource_type = $1 AND id = $2";
pub const INSERT_INDEX: &str = "INSERT INTO resource_index (resource_type, id, key, value) VALUES ($1, $2, $3, $4)
     ON CONFLICT (resource_type, id, key, value) DO NOTHING";
pub const READ_RESOURCE: &str =
    concat!("SELECT ", resource_columns!(), " FROM resources WHERE resource_type = $1 AND id = $2");
pub const READ_RESOURCE_VERSION: &str = concat!(
    "SELECT ",
    resource_columns!(),
    " FROM resource_history WHERE resource_type = $1 AND id = $2 AND version = $3"
);
pub const RESOURCE_HISTORY: &str = concat!(
    "SELECT ",
    resource_columns!(),
    " FROM resource_history WHERE resource_type = $1 AND id = $2 ORDER BY version DESC"
);
/// Up to `limit` resources of type `$1`, by id.
pub fn list_resources(limit: i64) -> String {
    format!(
        concat!("SELECT ", resource_columns!(), " FROM resources WHERE resource_type = $1 ORDER BY id LIMIT {}"),
        limit
    )
}

/// A search over resources of type `$1`, at most `limit`: each criterion is `$k` (its key)
/// followed by one parameter per value. Bind in that order.
pub fn search_resources(criteria: &[Criterion], limit: i64) -> String {
    let mut sql = concat!("SELECT ", resource_columns!(), " FROM resources r WHERE r.resource_type = $1").to_owned();
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
    sql.push_str(&format!(" ORDER BY r.last_updated DESC, r.id LIMIT {limit}"));
    sql
}

/// An audit record's columns, in [`super::AuditRecord`]'s field order.
macro_rules! audit_columns {
    () => {
        "seq, time, patient, actor, data, prev_hash, hash"
    };
}

pub const AUDIT_TAIL: &str = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1";
/// Up to `limit` records after sequence number `$1`, in order.
pub fn audit_records(limit: i64) -> String {
    format!(concat!("SELECT ", audit_columns!(), " FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT {}"), limit)
}

/// The sequence number and chain hash of up to `limit` records after `$1`, in order.
pub fn audit_hashes(limit: i64) -> String {
    format!("SELECT seq, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT {limit}")
}

/// Up to `limit` records about patient `$1` and/or by actor `$2` (each ignored when null), in
/// `[$3, $4)` (ms), newest first.
pub fn search_audit(limit: i64) -> String {
    format!(
        concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_log
     WHERE ($1 IS NULL OR patient = $1) AND ($2 IS NULL OR actor = $2)
       AND ($3 IS NULL OR time >= $3) AND ($4 IS NULL OR time < $4)
     ORDER BY seq DESC LIMIT {}"
        ),
        limit
    )
}
/// Records per INSERT statement (7 parameters each: well under SQLite's and PostgreSQL's limits).
pub const AUDIT_ROWS_PER_INSERT: usize = 64;

/// One multi-row INSERT of `rows` audit records (1 ≤ rows ≤ [`AUDIT_ROWS_PER_INSERT`]); bind each
/// record's seven columns in [`super::AuditRecord`]'s field order.
///
/// INVARIANT: `seq` is the primary key, so even appenders no lock covers (two processes on one
/// SQLite file) cannot both commit on one tail: the loser's insert fails and it retries.
pub fn insert_audit(rows: usize) -> String {
    let placeholders: Vec<String> = (0..rows)
        .map(|i| {
            let p: Vec<String> = (1..=7).map(|c| format!("${}", i * 7 + c)).collect();
            format!("({})", p.join(", "))
        })
        .collect();
    format!("INSERT INTO audit_log ({}) VALUES {}", audit_columns!(), placeholders.join(", "))
}

/// A draft chained onto the log: its sequence number, the hash before it, and its own hash.
pub struct Chained<'a> {
    pub seq: i64,
    pub draft: &'a AuditDraft,
    pub prev_hash: String,
    pub hash: String,
}

/// Chains `drafts` in order after the record `(seq, hash)` at the log's tail.
pub fn chain(mut seq: i64, mut prev: String, drafts: &[AuditDraft]) -> Vec<Chained<'_>> {
    drafts
        .iter()
        .map(|draft| {
            seq += 1;
            let hash = chain_hash(&prev, seq, draft.time, &draft.data);
            Chained { seq, draft, prev_hash: std::mem::replace(&mut prev, hash.clone()), hash }
        })
        .collect()
}
