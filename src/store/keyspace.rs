//! Typed namespaces of the ephemeral store. A [`Keyspace<T>`] is a key prefix and the type of
//! its values (JSON); every namespace carebroker uses is named once, in [`crate::keyspaces`], so
//! no two features can share a prefix by accident and no caller encodes or decodes by hand.

use std::marker::PhantomData;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{EphemeralStore, StoreError};

/// A namespace of the ephemeral store holding values of type `T` under `{prefix}:{id}`.
#[derive(Debug)]
pub struct Keyspace<T> {
    prefix: &'static str,
    value: PhantomData<fn() -> T>,
}

impl<T> Clone for Keyspace<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Keyspace<T> {}

impl<T: Serialize + DeserializeOwned> Keyspace<T> {
    pub const fn new(prefix: &'static str) -> Self {
        Self { prefix, value: PhantomData }
    }

    /// The namespace's prefix.
    pub const fn prefix(&self) -> &'static str {
        self.prefix
    }

    /// The store key of `id`.
    pub fn key(&self, id: &str) -> String {
        format!("{}:{id}", self.prefix)
    }

    fn encode(&self, value: &T) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(format!("{}: {e}", self.prefix)))
    }

    fn decode(&self, bytes: Option<Vec<u8>>) -> Result<Option<T>, StoreError> {
        bytes
            .map(|b| serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt(format!("{}: {e}", self.prefix))))
            .transpose()
    }

    /// Stores `value` under `id` for `ttl`, replacing what was there.
    pub async fn put(&self, store: &dyn EphemeralStore, id: &str, value: &T, ttl: Duration) -> Result<(), StoreError> {
        store.put(&self.key(id), &self.encode(value)?, ttl).await
    }

    /// Stores `value` only if `id` holds nothing live; true when this call stored it. Atomic.
    pub async fn put_if_absent(
        &self,
        store: &dyn EphemeralStore,
        id: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        store.put_if_absent(&self.key(id), &self.encode(value)?, ttl).await
    }

    /// Reads without consuming.
    pub async fn get(&self, store: &dyn EphemeralStore, id: &str) -> Result<Option<T>, StoreError> {
        self.decode(store.get(&self.key(id)).await?)
    }

    /// Reads and removes in one atomic step: of concurrent callers, exactly one gets the value.
    pub async fn take(&self, store: &dyn EphemeralStore, id: &str) -> Result<Option<T>, StoreError> {
        self.decode(store.take(&self.key(id)).await?)
    }

    /// Removes; true when something live was removed.
    pub async fn delete(&self, store: &dyn EphemeralStore, id: &str) -> Result<bool, StoreError> {
        store.delete(&self.key(id)).await
    }
}

impl Keyspace<()> {
    /// A replay cache: true the first time `id` is seen within `ttl`, false on every later use,
    /// across every node sharing the store.
    pub async fn first_use(&self, store: &dyn EphemeralStore, id: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.put_if_absent(store, id, &(), ttl).await
    }

    /// Marks `id` as present (a flag such as "this sign-in session is alive").
    pub async fn mark(&self, store: &dyn EphemeralStore, id: &str, ttl: Duration) -> Result<(), StoreError> {
        self.put(store, id, &(), ttl).await
    }

    /// Whether `id` is marked.
    pub async fn contains(&self, store: &dyn EphemeralStore, id: &str) -> Result<bool, StoreError> {
        Ok(store.get(&self.key(id)).await?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::FixedClock;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn values_round_trip_take_is_once_and_replays_are_caught() {
        let store = MemoryStore::new(Arc::new(FixedClock::at(1_000)));
        let numbers: Keyspace<Vec<u32>> = Keyspace::new("numbers");
        let ttl = Duration::from_secs(60);
        numbers.put(&store, "a", &vec![1, 2], ttl).await.unwrap();
        assert_eq!(numbers.get(&store, "a").await.unwrap(), Some(vec![1, 2]));
        assert_eq!(numbers.take(&store, "a").await.unwrap(), Some(vec![1, 2]));
        assert_eq!(numbers.take(&store, "a").await.unwrap(), None);

        let seen: Keyspace<()> = Keyspace::new("seen");
        assert!(seen.first_use(&store, "jti-1", ttl).await.unwrap());
        assert!(!seen.first_use(&store, "jti-1", ttl).await.unwrap());
        assert!(seen.first_use(&store, "jti-2", ttl).await.unwrap());
    }

    #[tokio::test]
    async fn a_value_of_another_shape_is_corrupt_not_a_panic() {
        let store = MemoryStore::new(Arc::new(FixedClock::at(1_000)));
        store.put("numbers:a", b"not json", Duration::from_secs(60)).await.unwrap();
        let numbers: Keyspace<Vec<u32>> = Keyspace::new("numbers");
        assert!(matches!(numbers.get(&store, "a").await, Err(StoreError::Corrupt(_))));
    }
}
