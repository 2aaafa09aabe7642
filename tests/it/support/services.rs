//! The real Redis and PostgreSQL servers of the test run. `scripts/test.sh` starts them on free
//! loopback ports and exports their URLs; a test that needs one fails (never skips) without it.

use sqlx::Connection as _;

/// `redis://127.0.0.1:PORT/` of the suite's Redis.
pub fn redis_url() -> String {
    std::env::var("CAREBROKER_TEST_REDIS_URL")
        .expect("CAREBROKER_TEST_REDIS_URL is not set: run the suite with scripts/test.sh, which starts redis-server")
}

/// The comma-separated seed URLs of the suite's 3-master Redis Cluster.
pub fn redis_cluster_urls() -> String {
    std::env::var("CAREBROKER_TEST_REDIS_CLUSTER_URLS").expect(
        "CAREBROKER_TEST_REDIS_CLUSTER_URLS is not set: run the suite with scripts/test.sh, which starts a Redis Cluster",
    )
}

/// Which Redis the shared ephemeral state of a scale-out test lives in.
#[derive(Debug, Clone, Copy)]
pub enum Redis {
    Standalone,
    Cluster,
}

impl Redis {
    /// The store choice for this Redis and `postgres_url`.
    pub fn with_postgres(self, postgres_url: &str) -> crate::support::StoreChoice {
        let postgres_url = postgres_url.to_owned();
        match self {
            Self::Standalone => crate::support::StoreChoice::RedisPostgres { redis_url: redis_url(), postgres_url },
            Self::Cluster => crate::support::StoreChoice::RedisClusterPostgres { seeds: redis_cluster_urls(), postgres_url },
        }
    }
}

/// A fresh, empty PostgreSQL database for one test (so migrations never race).
pub async fn fresh_postgres_database() -> String {
    let admin = std::env::var("CAREBROKER_TEST_POSTGRES_URL")
        .expect("CAREBROKER_TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh, which starts PostgreSQL");
    let name = format!("t_{}", carebroker::token::random_token(9).to_lowercase().replace(['-', '_'], "x"));
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect to the test PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create database");
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(admin);
    format!("{base}/{name}")
}

/// A Redis server of a test's own on `port`, keeping its data in `dir` with every write synced
/// to the append-only file, as a deployment that must not forget a used code or `jti` runs it.
pub async fn own_redis(port: u16, dir: &std::path::Path) -> std::process::Child {
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server runs");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    child
}
