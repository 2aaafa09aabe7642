//! The authorization server, without HTTP types: client authentication, the token endpoint
//! pipeline and its grants, introspection, revocation, dynamic registration and discovery. Each
//! function takes plain inputs and returns a typed result or an [`error::OAuthError`].

pub mod authorize;
pub mod client_auth;
pub mod client_keys;
pub mod clients;
pub mod discovery;
pub mod error;
pub mod grants;
pub mod introspect;
pub mod issue;
pub mod oidc;
pub mod params;

pub mod register;
pub mod revoke;
pub mod scope_policy;
pub mod token_endpoint;

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::domain::client::Client;
use crate::store::Stores;
use crate::token::KeyManager;

/// Everything the authorization server needs, built once at start-up.
#[derive(Debug)]
pub struct Authority {
    pub config: Arc<Config>,
    pub clock: Arc<dyn Clock>,
    pub stores: Stores,
    pub keys: Arc<KeyManager>,
    pub clients: clients::ClientRegistry,
    pub client_keys: client_keys::ClientKeys,
    pub audit: Arc<crate::audit::AuditLog>,
    pub policy: crate::policy::PolicyHandle,
    token_endpoint: String,
    fhir_base: String,
}

/// Start-up failures of the authority.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

impl Authority {
    pub fn new(
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
        stores: Stores,
        keys: Arc<KeyManager>,
        audit: Arc<crate::audit::AuditLog>,
        policy: crate::policy::PolicyHandle,
        configured_clients: Vec<Client>,
    ) -> Result<Self, AuthorityError> {
        let client_keys = client_keys::ClientKeys::new(&config.clients, clock.clone())?;
        let clients = clients::ClientRegistry::new(configured_clients, stores.durable.clone());
        Ok(Self {
            token_endpoint: config.endpoint("/token"),
            fhir_base: config.fhir_base(),
            config,
            clock,
            stores,
            keys,
            clients,
            client_keys,
            audit,
            policy,
        })
    }

    /// The issuer identifier.
    pub fn issuer(&self) -> &str {
        self.config.issuer()
    }

    /// The token endpoint URL: the audience of client assertions.
    pub fn token_endpoint(&self) -> &str {
        &self.token_endpoint
    }

    /// The FHIR base URL: the audience of access tokens.
    pub fn fhir_base(&self) -> &str {
        &self.fhir_base
    }

    /// Whether dynamic client registration is enabled.
    pub fn registration_enabled(&self) -> bool {
        self.config.registration.initial_access_token.is_some()
    }
}
