//! The application core: one [`App`] holding everything a request needs (configuration, clock,
//! stores, signing keys, audit log, access policy, clients, PDS, upstream identity providers),
//! built once at start-up, and what runs beside requests: policy reload and housekeeping.
//!
//! The protocol modules add their behaviour to `App` in their own files (`oauth/` the
//! authorization server, `fhir/` the care-plan API, `launch/`, `federation/` sign-in); `http/`
//! only turns requests into calls on it and results into responses.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::AuditLog;
use crate::audit::limiter::RefusalLimiter;
use crate::clock::Clock;
use crate::config::{Config, Loaded};
use crate::federation::Registry;
use crate::oauth::client_keys::ClientKeys;
use crate::oauth::clients::ClientRegistry;
use crate::pds::PdsClient;
use crate::policy::PolicyHandle;
use crate::store::{self, Stores};
use crate::token::KeyManager;
use crate::token::access::{AccessTokenClaims, CheckError, check_active};
use crate::token::keys::KeyError;

/// Everything carebroker's protocols need, built once at start-up and shared by every request.
#[derive(Debug)]
pub struct App {
    pub config: Arc<Config>,
    pub clock: Arc<dyn Clock>,
    pub stores: Stores,
    pub keys: Arc<KeyManager>,
    pub audit: Arc<AuditLog>,
    pub policy: PolicyHandle,
    pub clients: ClientRegistry,
    pub client_keys: ClientKeys,
    /// The Personal Demographics Service, when patients are verified there.
    pub pds: Option<PdsClient>,
    /// Signs checkpoints of the audit log's Merkle tree.
    pub checkpoints: crate::audit::checkpoint::Checkpointer,
    /// The Validated Relationships Service, when proxies may sign in.
    pub vrs: Option<crate::vrs::VrsClient>,
    /// The upstream identity providers.
    pub federation: Registry,
    /// Partners whose own JWTs may be exchanged, with their public keys.
    pub partners: Vec<(crate::config::TrustedIssuer, crate::domain::jwk::JwkSet)>,
    /// Rate limit of the audit records of requests refused for their token.
    pub refusals: RefusalLimiter,
    /// Authorization requests started per client (each is stored until it ends).
    pub authorizations: crate::oauth::rate::RateLimit,
    /// The DPoP server nonce this node hands out, and when it was made.
    pub(crate) dpop_nonce: parking_lot::Mutex<Option<(String, i64)>>,
    token_endpoint: String,
    fhir_base: String,
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("cannot build an HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Seed(#[from] crate::fhir::seed::SeedError),
    #[error(transparent)]
    Federation(#[from] crate::federation::FederationError),
    #[error("exchange.issuers: {0}")]
    Partner(String),
    #[error("audit checkpoints: {0}")]
    Checkpoint(crate::audit::checkpoint::CheckpointError),
    #[error("the policy files have {} problem(s):\n  {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  "))]
    Policy(Vec<crate::policy::PolicyError>),
    #[error("cannot listen on `{addr}`: {source}")]
    Listen { addr: String, source: std::io::Error },
}

/// How long a retired signing key stays published: the longest token lifetime plus clock skew.
pub fn key_retention_secs(config: &Config) -> i64 {
    i64::from(crate::domain::client::MAX_ACCESS_TOKEN_LIFETIME_SECS) + config.tokens.clock_skew_secs + 60
}

impl App {
    /// Opens stores and keys, seeds the FHIR store, loads the policy and builds the providers.
    pub async fn build(loaded: Loaded, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let config = Arc::new(loaded.config);
        let stores = store::open(&config.store, clock.clone()).await?;
        let keys = Arc::new(KeyManager::open(config.keys.dir.clone(), clock.now(), key_retention_secs(&config))?);
        if let Some(dir) = &config.fhir.seed_dir {
            let created = crate::fhir::seed::seed_folder(stores.durable.as_ref(), dir, clock.now_millis()).await?;
            tracing::info!(created, folder = %dir.display(), "FHIR seed resources loaded");
        }
        crate::telemetry::install();
        let audit = AuditLog::start(stores.durable.clone(), clock.clone());
        let policy: Box<dyn crate::policy::AccessPolicy> = match &config.policy.dir {
            Some(dir) => Box::new(crate::policy::load_dir(dir).map_err(StartError::Policy)?),
            None => {
                tracing::warn!("no policy.dir: scopes and the patient compartment alone decide access");
                Box::new(crate::policy::ScopeOnly)
            }
        };
        let pds = if config.pds.enabled { Some(PdsClient::new(&config.pds, stores.ephemeral.clone())?) } else { None };
        let checkpoints = crate::audit::checkpoint::Checkpointer::new(&config).map_err(StartError::Checkpoint)?;
        let vrs = if config.vrs.enabled { Some(crate::vrs::VrsClient::new(&config.vrs)?) } else { None };
        let federation = Registry::build(&loaded.idps, &config, clock.clone())?;
        let client_keys = ClientKeys::new(&config.clients, clock.clone())?;
        let authorizations =
            crate::oauth::rate::RateLimit::new(config.launch.max_authorizations_per_client_per_minute, 60_000);
        let partners = config
            .exchange
            .issuers
            .iter()
            .map(|p| crate::config::partner_keys(&p.jwks_file).map(|keys| (p.clone(), keys)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StartError::Partner)?;
        let clients = ClientRegistry::new(loaded.clients, stores.durable.clone());
        Ok(Self {
            token_endpoint: config.endpoint("/token"),
            fhir_base: config.fhir_base(),
            policy: crate::policy::handle(policy),
            config,
            clock,
            stores,
            keys,
            audit,
            clients,
            client_keys,
            pds,
            checkpoints,
            vrs,
            federation,
            partners,
            refusals: RefusalLimiter::default(),
            dpop_nonce: parking_lot::Mutex::new(None),
            authorizations,
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

    /// Whether `value` (an `aud`, `resource` or `audience` parameter) names our FHIR API.
    pub fn names_fhir_base(&self, value: &str) -> bool {
        value == self.fhir_base || value.strip_suffix('/') == Some(self.fhir_base.as_str())
    }

    /// Whether dynamic client registration is enabled.
    pub fn registration_enabled(&self) -> bool {
        self.config.registration.initial_access_token.is_some()
    }

    /// Checks an access token of ours is active now: [`crate::token::access::check_active`]
    /// against the live keys and revocation list, for `audience` when given.
    pub async fn check_access_token(
        &self,
        token: &str,
        audience: Option<&str>,
    ) -> Result<AccessTokenClaims, CheckError> {
        let revocations: &dyn crate::store::RevocationStore = self.stores.durable.as_ref();
        check_active(&self.keys.ring(), revocations, token, self.issuer(), audience, self.clock.now()).await
    }

    /// Readiness: both stores answer now. (An `App` exists only once its signing keys are
    /// loaded and its policy compiled.) `Err` names what is not ready, with no secret or address.
    pub async fn readiness(&self) -> Result<(), String> {
        crate::keyspaces::READINESS
            .contains(self.stores.ephemeral.as_ref(), "probe")
            .await
            .map_err(|_| "ephemeral store".to_owned())?;
        self.stores.durable.is_revoked(&["readiness-probe"]).await.map_err(|_| "durable store".to_owned())?;
        Ok(())
    }

    /// Reloads the policy folder; a broken file keeps the running policy and says why.
    pub fn reload_policy(&self) -> bool {
        let Some(dir) = &self.config.policy.dir else { return false };
        match crate::policy::load_dir(dir) {
            Ok(policy) => {
                self.policy.store(Arc::new(Box::new(policy)));
                tracing::info!(folder = %dir.display(), "policy reloaded");
                true
            }
            Err(errors) => {
                for e in &errors {
                    tracing::error!(problem = %e, "policy not reloaded; the running policy stays in force");
                }
                false
            }
        }
    }
}

/// Reloads the policy on SIGHUP and when its files change.
pub fn spawn_policy_reloader(app: &Arc<App>) -> Option<tokio::task::JoinHandle<()>> {
    let app = app.clone();
    let dir = app.config.policy.dir.clone()?;
    Some(tokio::spawn(async move {
        let mut last = crate::policy::modified(&dir);
        let mut ticker = tokio::time::interval(Duration::from_secs(app.config.policy.reload_interval_secs.max(1)));
        #[cfg(unix)]
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let sighup = async {
                match hangup.as_mut() {
                    Some(s) => s.recv().await.is_some(),
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let sighup = std::future::pending::<bool>();
            tokio::select! {
                _ = ticker.tick() => {
                    let now = crate::policy::modified(&dir);
                    if now != last {
                        last = now;
                        app.reload_policy();
                    }
                }
                true = sighup => {
                    tracing::info!("SIGHUP: reloading the policy");
                    last = crate::policy::modified(&dir);
                    app.reload_policy();
                }
            }
        }
    }))
}

/// Runs periodic housekeeping: picking up rotated keys, forgetting expired revocations, writing
/// the summaries of token refusals that were counted but not recorded one by one.
pub fn spawn_housekeeping(app: &Arc<App>) -> tokio::task::JoinHandle<()> {
    let app = app.clone();
    tokio::spawn(async move {
        let interval = Duration::from_secs(app.config.keys.reload_interval_secs);
        let mut ticker = tokio::time::interval(interval);
        let mut last_purge = app.clock.now();
        loop {
            ticker.tick().await;
            let now = app.clock.now();
            app.audit_refusal_summaries().await;
            if let Err(e) = app.checkpoints.tick(app.stores.durable.as_ref(), now, app.clock.now_millis(), false).await
            {
                tracing::error!(error = %e, "audit checkpoint failed");
            }
            match app.keys.refresh(now) {
                Ok(true) => tracing::info!("signing keys reloaded"),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "key file could not be reloaded; keeping the keys in use"),
            }
            if now - last_purge >= 3600 {
                last_purge = now;
                if let Err(e) = app.stores.durable.purge_expired(now).await {
                    tracing::warn!(error = %e, "could not purge expired revocations");
                }
            }
        }
    })
}
