//! tower-sessions storage on our own ephemeral store: memory in the embedded default, Redis when
//! scaled out, so a browser session started on one node continues on another.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use crate::keyspaces::BROWSER_SESSIONS;
use crate::store::EphemeralStore;

/// A [`SessionStore`] over an [`EphemeralStore`].
#[derive(Debug, Clone)]
pub struct EphemeralSessionStore {
    store: Arc<dyn EphemeralStore>,
}

impl EphemeralSessionStore {
    pub fn new(store: Arc<dyn EphemeralStore>) -> Self {
        Self { store }
    }
}

fn ttl(record: &Record) -> Duration {
    let left = record.expiry_date - time::OffsetDateTime::now_utc();
    Duration::from_secs(left.whole_seconds().max(1).unsigned_abs())
}

fn backend(e: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

#[async_trait]
impl SessionStore for EphemeralSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        // A fresh random id; on the (astronomically unlikely) collision, draw again.
        let store = self.store.as_ref();
        while !BROWSER_SESSIONS
            .put_if_absent(store, &record.id.to_string(), record, ttl(record))
            .await
            .map_err(backend)?
        {
            record.id = Id::default();
        }
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        BROWSER_SESSIONS.put(self.store.as_ref(), &record.id.to_string(), record, ttl(record)).await.map_err(backend)
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        BROWSER_SESSIONS.get(self.store.as_ref(), &id.to_string()).await.map_err(backend)
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        BROWSER_SESSIONS.delete(self.store.as_ref(), &id.to_string()).await.map(|_| ()).map_err(backend)
    }
}
