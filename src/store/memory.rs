//! In-process ephemeral store: sharded maps with expiry read from the [`Clock`], so tests can
//! expire entries by moving time. One process only; scale-out uses Redis.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{EphemeralStore, StoreError};
use crate::clock::Clock;

const SHARDS: usize = 16;
const SWEEP_EVERY: u64 = 4096;

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires_at_ms: i64,
}

/// Memory-backed [`EphemeralStore`].
#[derive(Debug)]
pub struct MemoryStore {
    shards: Vec<Mutex<HashMap<String, Entry>>>,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
    writes: AtomicU64,
}

impl MemoryStore {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            clock,
            writes: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &str) -> &Mutex<HashMap<String, Entry>> {
        // INVARIANT: the modulo keeps the index in range.
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    fn expiry(&self, ttl: Duration) -> i64 {
        self.clock.now_millis().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
    }

    /// Drops expired entries now and then, so abandoned codes do not pile up.
    fn after_write(&self) {
        if self.writes.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let now = self.clock.now_millis();
            for shard in &self.shards {
                shard.lock().retain(|_, e| e.expires_at_ms > now);
            }
        }
    }
}

#[async_trait]
impl EphemeralStore for MemoryStore {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        crate::telemetry::store_operation("ephemeral", "memory", "put");
        let entry = Entry { value: value.to_vec(), expires_at_ms: self.expiry(ttl) };
        self.shard(key).lock().insert(key.to_owned(), entry);
        self.after_write();
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        crate::telemetry::store_operation("ephemeral", "memory", "put_if_absent");
        let now = self.clock.now_millis();
        let stored = {
            let mut shard = self.shard(key).lock();
            match shard.get(key) {
                Some(existing) if existing.expires_at_ms > now => false,
                _ => {
                    shard.insert(key.to_owned(), Entry { value: value.to_vec(), expires_at_ms: self.expiry(ttl) });
                    true
                }
            }
        };
        self.after_write();
        Ok(stored)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        crate::telemetry::store_operation("ephemeral", "memory", "get");
        let now = self.clock.now_millis();
        Ok(self.shard(key).lock().get(key).filter(|e| e.expires_at_ms > now).map(|e| e.value.clone()))
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        crate::telemetry::store_operation("ephemeral", "memory", "take");
        let now = self.clock.now_millis();
        Ok(self.shard(key).lock().remove(key).filter(|e| e.expires_at_ms > now).map(|e| e.value))
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        crate::telemetry::store_operation("ephemeral", "memory", "delete");
        let now = self.clock.now_millis();
        Ok(self.shard(key).lock().remove(key).is_some_and(|e| e.expires_at_ms > now))
    }
}
