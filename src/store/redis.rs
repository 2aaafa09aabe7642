//! Redis-backed ephemeral store for scale-out: every broker node sees the same codes, launches and
//! `jti`s. `SET NX PX` for put-if-absent and `GETDEL` for take are single atomic commands.
//!
//! Standalone Redis or a Redis Cluster. Every operation the broker makes is ONE command on ONE
//! key, so its atomicity does not depend on where the cluster puts the key: there is no
//! multi-key operation and no script that a slot boundary could split. Should one ever be needed,
//! its keys must share a hash tag (`{…}`) so they live in one slot.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;

use super::{EphemeralStore, StoreError};

/// How long one command may wait for an answer before the store counts as unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
enum Connection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Redis-backed [`EphemeralStore`] (Redis 6.2 or later, for GETDEL).
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    prefix: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.connection {
            Connection::Standalone(_) => "standalone",
            Connection::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore").field("mode", &mode).field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    crate::telemetry::store_error("ephemeral", "redis");
    StoreError::Unavailable(format!("redis: {e}"))
}

fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisStore {
    /// Connects to one server at `url` (`redis://host:port/db`); keys are prefixed with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            // reconnect soon after a restart: short, few back-offs (each request that meets a
            // broken connection is a 503 meanwhile, never a hang)
            .set_number_of_retries(3)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(250));
        let connection = ConnectionManager::new_with_config(client, config).await.map_err(unavailable)?;
        Ok(Self { connection: Connection::Standalone(connection), prefix: prefix.to_owned() })
    }

    /// Connects to a Redis Cluster through any of its `seeds` (the client learns the slot map and
    /// follows MOVED/ASK redirections); keys are prefixed with `prefix`.
    pub async fn connect_cluster(seeds: &[&str], prefix: &str) -> Result<Self, StoreError> {
        let client = redis::cluster::ClusterClient::builder(seeds.iter().copied())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(2)
            .min_retry_wait(50)
            .max_retry_wait(500)
            .build()
            .map_err(unavailable)?;
        let connection = client.get_async_connection().await.map_err(unavailable)?;
        Ok(Self { connection: Connection::Cluster(connection), prefix: prefix.to_owned() })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        operation: &'static str,
        command: &redis::Cmd,
    ) -> Result<T, StoreError> {
        crate::telemetry::store_operation("ephemeral", "redis", operation);
        match &self.connection {
            Connection::Standalone(c) => command.query_async(&mut c.clone()).await,
            Connection::Cluster(c) => command.query_async(&mut c.clone()).await,
        }
        .map_err(unavailable)
    }
}

#[async_trait]
impl EphemeralStore for RedisStore {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.query("put", redis::cmd("SET").arg(self.key(key)).arg(value).arg("PX").arg(ttl_millis(ttl))).await
    }

    async fn put_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        let reply: Option<String> = self
            .query(
                "put_if_absent",
                redis::cmd("SET").arg(self.key(key)).arg(value).arg("NX").arg("PX").arg(ttl_millis(ttl)),
            )
            .await?;
        Ok(reply.is_some())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.query("get", redis::cmd("GET").arg(self.key(key))).await
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.query("take", redis::cmd("GETDEL").arg(self.key(key))).await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let removed: i64 = self.query("delete", redis::cmd("DEL").arg(self.key(key))).await?;
        Ok(removed > 0)
    }
}
