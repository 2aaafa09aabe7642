//! The client registry: clients from config files, and dynamically registered clients from the
//! durable store (cached in-process once found; a miss is never cached, so a client registered on
//! another node is found at once).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::domain::client::{Client, ClientMetadata, FieldProblem};
use crate::store::{DurableStore, StoreError};

const CACHE_LIMIT: usize = 10_000;

/// Looks clients up by id.
#[derive(Debug)]
pub struct ClientRegistry {
    configured: HashMap<String, Arc<Client>>,
    store: Arc<dyn DurableStore>,
    registered: Mutex<HashMap<String, Arc<Client>>>,
}

/// Why a registration could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum RegisterClientError {
    #[error("client metadata is not valid")]
    Invalid(Vec<FieldProblem>),
    #[error("client id `{0}` is already taken")]
    Taken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ClientRegistry {
    pub fn new(configured: Vec<Client>, store: Arc<dyn DurableStore>) -> Self {
        let configured = configured.into_iter().map(|c| (c.id.clone(), Arc::new(c))).collect();
        Self { configured, store, registered: Mutex::new(HashMap::new()) }
    }

    /// The client with this id, if any.
    pub async fn get(&self, client_id: &str) -> Result<Option<Arc<Client>>, StoreError> {
        if let Some(client) = self.configured.get(client_id) {
            return Ok(Some(client.clone()));
        }
        if let Some(client) = self.registered.lock().get(client_id) {
            return Ok(Some(client.clone()));
        }
        let Some(metadata) = self.store.get_client(client_id).await? else { return Ok(None) };
        let client = Arc::new(
            metadata
                .validate()
                .map_err(|p| StoreError::Corrupt(format!("stored client `{client_id}` no longer validates: {p:?}")))?,
        );
        self.remember(client.clone());
        Ok(Some(client))
    }

    fn remember(&self, client: Arc<Client>) {
        let mut cache = self.registered.lock();
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(client.id.clone(), client);
    }

    /// Validates and durably stores a new client.
    pub async fn register(&self, metadata: ClientMetadata, now: i64) -> Result<Arc<Client>, RegisterClientError> {
        let client = Arc::new(metadata.validate().map_err(RegisterClientError::Invalid)?);
        if self.configured.contains_key(&client.id) || !self.store.insert_client(&client.metadata, now).await? {
            return Err(RegisterClientError::Taken(client.id.clone()));
        }
        self.remember(client.clone());
        Ok(client)
    }

    /// True when `origin` is the web origin of a public (browser) client's redirect URI: the token
    /// endpoint answers CORS requests from those (SMART App Launch 2.2 §CORS).
    pub fn is_public_client_origin(&self, origin: &str) -> bool {
        let matches = |c: &Arc<Client>| c.is_public() && c.origins.iter().any(|o| o == origin);
        self.configured.values().any(matches) || self.registered.lock().values().any(matches)
    }

    /// Clients from configuration files.
    pub fn configured(&self) -> impl Iterator<Item = &Arc<Client>> {
        self.configured.values()
    }
}
