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
            Self::Cluster => {
                crate::support::StoreChoice::RedisClusterPostgres { seeds: redis_cluster_urls(), postgres_url }
            }
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

/// A PostgreSQL server of a test's own, in `dir`, that the test can stop and start again (a
/// failover as the pool sees it: every connection drops, then the server answers again).
pub struct OwnPostgres {
    bin: std::path::PathBuf,
    data: std::path::PathBuf,
    port: u16,
    socket_dir: std::path::PathBuf,
}

impl OwnPostgres {
    /// Creates a cluster in `dir` and starts it on `port`.
    pub fn start_new(port: u16, dir: &std::path::Path) -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("Debian's postgresql is installed")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .max()
            .expect("a PostgreSQL version");
        let me = Self { bin, data: dir.join("data"), port, socket_dir: dir.to_path_buf() };
        if is_root() {
            std::process::Command::new("chown").arg("postgres").arg(dir).status().expect("chown");
        }
        assert!(me.run("initdb", &["-A", "trust", "-U", "carebroker", "--no-sync", "-D"]), "initdb");
        me.start();
        me
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://carebroker@127.0.0.1:{}/postgres", self.port)
    }

    pub fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off",
            self.port,
            self.socket_dir.display()
        );
        assert!(self.run("pg_ctl", &["-w", "-o", &options, "-l", "/dev/null", "start", "-D"]), "pg_ctl start");
    }

    /// Stops it the way a failing primary goes: every session is cut (`-m fast`).
    pub fn stop(&self) {
        assert!(self.run("pg_ctl", &["-w", "-m", "fast", "stop", "-D"]), "pg_ctl stop");
    }

    fn run(&self, tool: &str, args: &[&str]) -> bool {
        let mut command = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
            c
        } else {
            std::process::Command::new(self.bin.join(tool))
        };
        let stdio = || std::process::Stdio::null();
        command.args(args).arg(&self.data).stdout(stdio()).stderr(stdio()).status().is_ok_and(|s| s.success())
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.run("pg_ctl", &["-m", "immediate", "stop", "-D"]);
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
