//! Configuration: defaults -> file -> environment (`CAREBROKER__SECTION__KEY`). Unknown keys are
//! refused, secrets may come from `*_file`, and [`load`] returns EVERY problem with its key path.
//! `config/carebroker.toml` documents every key.

mod clients;
pub mod idps;
mod load;
mod validate;

pub use validate::partner_keys;

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

pub use load::{ConfigProblem, Loaded, load, load_from, toml_files};

/// The embedded development default (`config/dev.toml`), used when `serve` gets no `--config`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/dev.toml");

/// A secret value: never printed by `Debug`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub keys: KeysConfig,
    pub tokens: TokensConfig,
    pub clients: ClientsConfig,
    pub registration: RegistrationConfig,
    pub introspection: IntrospectionConfig,
    pub sessions: SessionsConfig,
    pub launch: LaunchConfig,
    pub dev_idp: DevIdpConfig,
    pub fhir: FhirConfig,
    pub pages: PagesConfig,
    pub pds: PdsConfig,
    pub vrs: VrsConfig,
    pub audit: AuditConfig,
    pub availability: AvailabilityConfig,
    pub federation: FederationConfig,
    pub nhs_app: NhsAppConfig,
    pub policy: PolicyConfig,
    pub exchange: ExchangeConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Socket address to listen on.
    pub listen: String,
    /// The URL clients reach carebroker at: the OAuth issuer. The FHIR base is `{public_url}/fhir`.
    pub public_url: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:8080".into(), public_url: "http://127.0.0.1:8080".into(), max_body_bytes: 256 * 1024 }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum StoreKind {
    /// Memory for ephemeral state, SQLite for durable state.
    #[default]
    #[serde(rename = "embedded")]
    Embedded,
    /// Redis for ephemeral state, PostgreSQL for durable state.
    #[serde(rename = "redis+postgres")]
    RedisPostgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub kind: StoreKind,
    pub sqlite_path: PathBuf,
    /// One `redis://` URL, or with `redis_cluster` the seed nodes of a Redis Cluster, comma-separated.
    pub redis_url: Option<Secret>,
    pub redis_url_file: Option<PathBuf>,
    /// `redis_url` names a Redis Cluster: keys are spread over its masters by slot.
    pub redis_cluster: bool,
    pub redis_prefix: String,
    pub postgres_url: Option<Secret>,
    pub postgres_url_file: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Embedded,
            sqlite_path: "data/carebroker.db".into(),
            redis_url: None,
            redis_url_file: None,
            redis_cluster: false,
            redis_prefix: "carebroker:".into(),
            postgres_url: None,
            postgres_url_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Folder of the key file (private keys; keep it out of version control).
    pub dir: PathBuf,
    /// How often the server looks for a rotated key file.
    pub reload_interval_secs: u64,
    /// How long a next key must have been published before `keys rotate` promotes it.
    pub min_published_secs: i64,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self { dir: "data/keys".into(), reload_interval_secs: 30, min_published_secs: 600 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// Default access-token lifetime (a client may set its own, at most 3600).
    pub access_token_lifetime_secs: u32,
    /// Longest lifetime of a client-credentials (SMART Backend Services) token, at most 300.
    pub backend_access_token_lifetime_secs: u32,
    /// Longest lifetime of a client assertion: `exp` may be at most this far ahead.
    pub client_assertion_max_lifetime_secs: i64,
    /// Allowed difference between our clock and a client's when checking `exp`, `nbf`, `iat`.
    pub clock_skew_secs: i64,
    /// How old (by `iat`) a DPoP proof may be (RFC 9449); its `jti` is remembered as long.
    pub dpop_proof_max_age_secs: i64,
    /// Require DPoP proofs to carry a server nonce (`use_dpop_nonce`, `DPoP-Nonce`).
    pub dpop_require_nonce: bool,
    /// How long a server nonce is accepted after it was handed out; a new one is handed out
    /// after half of it.
    pub dpop_nonce_lifetime_secs: u64,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            access_token_lifetime_secs: 300,
            backend_access_token_lifetime_secs: 300,
            client_assertion_max_lifetime_secs: 300,
            clock_skew_secs: 30,
            dpop_proof_max_age_secs: 300,
            dpop_require_nonce: false,
            dpop_nonce_lifetime_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientsConfig {
    /// Folder of `*.toml` client files.
    pub dir: PathBuf,
    /// How long a fetched `jwks_uri` is cached when its response has no Cache-Control max-age.
    pub jwks_cache_default_secs: u64,
    /// Upper bound on caching a fetched `jwks_uri`, whatever its Cache-Control says.
    pub jwks_cache_max_secs: u64,
    /// Timeout for fetching a `jwks_uri`.
    pub jwks_fetch_timeout_secs: u64,
}

impl Default for ClientsConfig {
    fn default() -> Self {
        Self {
            dir: "config/clients".into(),
            jwks_cache_default_secs: 300,
            jwks_cache_max_secs: 3600,
            jwks_fetch_timeout_secs: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// RFC 7591 initial access token; registration is disabled when unset.
    pub initial_access_token: Option<Secret>,
    pub initial_access_token_file: Option<PathBuf>,
    /// The most a dynamically registered client may ask for (space-separated scopes).
    pub allowed_scope: String,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            initial_access_token: None,
            initial_access_token_file: None,
            allowed_scope:
                "openid fhirUser profile launch launch/patient launch/encounter offline_access online_access \
                            patient/*.cruds user/*.cruds system/*.rs"
                    .into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntrospectionConfig {
    /// The scope a bearer token needs to call `/introspect` (SMART token-introspection).
    pub scope: String,
}

impl Default for IntrospectionConfig {
    fn default() -> Self {
        Self { scope: "__introspect".into() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// A sign-in session ends after this long without use.
    pub idle_timeout_secs: i64,
    /// ... and after this long in any case; `online_access` grants end with it.
    pub absolute_timeout_secs: i64,
    /// `lax` (default) or `none` (needed when an EHR frames the pages in an iframe; https only).
    pub cookie_same_site: String,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self { idle_timeout_secs: 1800, absolute_timeout_secs: 43_200, cookie_same_site: "lax".into() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LaunchConfig {
    /// How long a registered EHR launch may wait to be used.
    pub lifetime_secs: u64,
    /// Authorization codes live this long (single use).
    pub code_lifetime_secs: u64,
    /// An interactive authorization (sign-in, picker, consent) must finish within this.
    pub interaction_lifetime_secs: u64,
    /// ID-token lifetime.
    pub id_token_lifetime_secs: i64,
    /// Lifetime of an `offline_access` grant (its refresh tokens).
    pub offline_grant_lifetime_secs: i64,
    /// Authorization requests (at `/authorize` and `/par`) one client may start per minute on
    /// each node: each is kept while the user signs in, and a public client needs no secret.
    pub max_authorizations_per_client_per_minute: u32,
}

impl Default for LaunchConfig {
    fn default() -> Self {
        Self {
            lifetime_secs: 300,
            code_lifetime_secs: 60,
            interaction_lifetime_secs: 900,
            id_token_lifetime_secs: 300,
            offline_grant_lifetime_secs: 90 * 86_400,
            max_authorizations_per_client_per_minute: 6000,
        }
    }
}

/// A built-in identity provider for development: allowed only when the public URL is loopback.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevIdpConfig {
    pub enabled: bool,
    pub users: Vec<DevUser>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevUser {
    pub username: String,
    /// Plain text: development only (loopback), never a real password.
    pub password: Secret,
    pub name: String,
    /// `Practitioner/…`, `Patient/…`, `RelatedPerson/…` or `Person/…`.
    pub fhir_user: String,
    pub role_codes: Vec<String>,
    pub activity_codes: Vec<String>,
    /// ODS code.
    pub org: Option<String>,
    pub nhs_number: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FhirConfig {
    /// A folder of FHIR JSON (resources or Bundles) loaded at start where not already stored.
    pub seed_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PagesConfig {
    /// EHR origins allowed to frame carebroker's pages (`frame-ancestors`); none by default.
    pub frame_ancestors: Vec<String>,
}

/// Signed checkpoints of the audit log's Merkle tree, and where they are published.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Sign a checkpoint once this many records were added since the last one...
    pub checkpoint_every_records: u64,
    /// ...or this long after the last one, when anything was added.
    pub checkpoint_every_secs: u64,
    /// The checkpoints' origin line and key name (default: the public URL's host and port, then
    /// `/audit`).
    pub checkpoint_origin: Option<String>,
    /// A file every checkpoint is appended to (a witness the database cannot rewrite).
    pub witness_file: Option<PathBuf>,
    /// An HTTP endpoint every checkpoint is POSTed to (`text/plain`).
    pub witness_url: Option<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_every_records: 1000,
            checkpoint_every_secs: 300,
            checkpoint_origin: None,
            witness_file: None,
            witness_url: None,
        }
    }
}

impl Config {
    /// The audit checkpoints' origin (and key name).
    pub fn checkpoint_origin(&self) -> String {
        self.audit.checkpoint_origin.clone().unwrap_or_else(|| {
            let url = url::Url::parse(&self.server.public_url).ok();
            let host = url.as_ref().and_then(|u| u.host_str()).unwrap_or("carebroker").to_owned();
            match url.and_then(|u| u.port()) {
                Some(port) => format!("{host}:{port}/audit"),
                None => format!("{host}/audit"),
            }
        })
    }
}

/// The Validated Relationships Service FHIR API: proxy roles (FHIR `Consent`), checked when a
/// proxy signs in with an NHS login composite token and again at every refresh.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VrsConfig {
    pub enabled: bool,
    /// e.g. `https://int.api.service.nhs.uk/validated-relationships/FHIR/R4`.
    pub base_url: String,
    /// Bearer token for the API platform (not needed for the sandbox).
    pub access_token: Option<Secret>,
    pub access_token_file: Option<PathBuf>,
    pub timeout_secs: u64,
}

impl Default for VrsConfig {
    fn default() -> Self {
        Self { enabled: false, base_url: String::new(), access_token: None, access_token_file: None, timeout_secs: 5 }
    }
}

/// The NHS Personal Demographics Service FHIR API, checked when a patient is opened.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PdsConfig {
    pub enabled: bool,
    /// e.g. `https://int.api.service.nhs.uk/personal-demographics/FHIR/R4`.
    pub base_url: String,
    /// Bearer token for PDS (not needed for the sandbox).
    pub access_token: Option<Secret>,
    pub access_token_file: Option<PathBuf>,
    /// `NHSD-End-User-Organisation-ODS` header, for multi-organisation apps.
    pub end_user_org_ods: Option<String>,
    /// How long a PDS answer is reused.
    pub cache_secs: u64,
    pub timeout_secs: u64,
    /// `fail_closed` (refuse to open the patient) or `fail_open` (serve local data, flagged).
    pub on_unavailable: String,
}

impl Default for PdsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: String::new(),
            access_token: None,
            access_token_file: None,
            end_user_org_ods: None,
            cache_secs: 300,
            timeout_secs: 5,
            on_unavailable: "fail_closed".into(),
        }
    }
}

/// Upstream identity providers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// Folder of `*.toml` provider files (see `config/idps/`).
    pub idps_dir: PathBuf,
    /// How long a redirect to an upstream provider may take to come back.
    pub upstream_timeout_secs: u64,
    /// Legacy CIS smartcard sessions, checked at the Spine Security Broker.
    pub cis_sso: CisSsoConfig,
    /// carebroker as a SAML 2.0 service provider (for `kind = "saml"` providers).
    pub saml: SamlSpConfig,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            idps_dir: "config/idps".into(),
            upstream_timeout_secs: 600,
            cis_sso: CisSsoConfig::default(),
            saml: SamlSpConfig::default(),
        }
    }
}

/// carebroker's own SAML service provider: one entity for every SAML identity provider, with its
/// metadata at `/saml/metadata`, the Assertion Consumer Service at `/saml/acs` (HTTP-POST) and
/// single logout at `/saml/slo` (HTTP-Redirect).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamlSpConfig {
    /// Our entity ID; `{public_url}/saml/metadata` when unset.
    pub entity_id: Option<String>,
    /// PKCS#8 PEM key and PEM certificate: signs AuthnRequests and logout messages and is
    /// published in our metadata. Without them requests go unsigned.
    pub key_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
}

/// Legacy CIS ("CIS1") smartcard SSO: a desktop client presents the Identity Agent's SSO token and
/// carebroker asks the Spine Security Broker for the session's role assertion.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CisSsoConfig {
    pub enabled: bool,
    /// The SSB role-assertion base URL; carebroker calls `{url}/saml/RoleAssertion?token=…`.
    pub role_assertion_url: String,
    /// PEM file of extra trusted roots for the SSB's TLS (NHS internal CAs over HSCN).
    pub ca_file: Option<PathBuf>,
    pub timeout_secs: u64,
    /// Accept sessions in SSB training mode (`ssbMode` 1). Never in production.
    pub allow_training_mode: bool,
    /// Clock skew allowed on the assertion's `NotBefore`/`NotOnOrAfter`.
    pub max_skew_secs: i64,
    /// The assertion's `Issuer` must be this, when set.
    pub issuer: Option<String>,
}

impl Default for CisSsoConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            role_assertion_url: String::new(),
            ca_file: None,
            timeout_secs: 10,
            allow_training_mode: false,
            max_skew_secs: 60,
            issuer: None,
        }
    }
}

/// The NHS App web integration: jump-off links land here and sign the patient in silently.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NhsAppConfig {
    pub enabled: bool,
    /// The NHS login provider (an id in `federation.idps_dir`).
    pub idp: String,
    /// Where "back to the NHS App" goes when silent sign-in fails.
    pub home_url: String,
    /// Journey name -> the SMART app it opens.
    pub journeys: std::collections::BTreeMap<String, NhsAppJourney>,
    /// Files served at `/.well-known/assetlinks.json` and `/.well-known/apple-app-site-association`.
    pub assetlinks_file: Option<PathBuf>,
    pub apple_app_site_association_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NhsAppJourney {
    /// The SMART app the journey opens (a client with a launch_uri).
    pub client_id: String,
}

/// Token exchange (RFC 8693): partners whose own signed JWTs may be exchanged.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExchangeConfig {
    pub issuers: Vec<TrustedIssuer>,
    /// Resource servers besides our FHIR API that exchanged tokens may be for.
    pub resource_servers: Vec<ResourceServer>,
}

/// Another resource server that trusts carebroker's tokens (it verifies them with our JWKS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceServer {
    /// Its audience: the `resource` (absolute URI) or `audience` (logical name) naming it, and
    /// the token's `aud`.
    pub audience: String,
    /// The scopes it accepts: an exchanged token for it carries no others.
    pub scope: String,
}

/// A partner that signs JWTs about its users (`urn:ietf:params:oauth:token-type:jwt`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuer {
    /// A short name: identities are `{id}:{sub}`, and the role mapping's `provider`.
    pub id: String,
    /// The JWT's `iss`, compared exactly.
    pub issuer: String,
    /// The partner's public keys (a JWK Set file).
    pub jwks_file: PathBuf,
    /// How far ahead a JWT's `exp` may be.
    #[serde(default = "default_partner_jwt_lifetime")]
    pub max_lifetime_secs: i64,
    /// The assurance (0-3) the partner's sign-in stands for.
    #[serde(default)]
    pub assurance: u8,
}

fn default_partner_jwt_lifetime() -> i64 {
    300
}

/// Access policy files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Folder of policy files (`policies/`). Unset: scopes and the patient compartment alone
    /// decide (development only; a warning is logged).
    pub dir: Option<PathBuf>,
    /// How often the folder is checked for changed files (SIGHUP reloads at once).
    pub reload_interval_secs: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self { dir: None, reload_interval_secs: 5 }
    }
}

/// The "does a care plan exist?" check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AvailabilityConfig {
    /// Where a caller sends a user to open the plan; `{nhs_number}` is replaced.
    pub launch_url_template: String,
}

impl Default for AvailabilityConfig {
    fn default() -> Self {
        Self { launch_url_template: "http://127.0.0.1:8765/launch?patient={nhs_number}".into() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `auto` (JSON lines when the log is not a terminal, text on one), `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info,carebroker=debug`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: "auto".into(), filter: "info".into() }
    }
}

impl Config {
    /// The issuer: `public_url` without a trailing slash.
    pub fn issuer(&self) -> &str {
        self.server.public_url.trim_end_matches('/')
    }

    /// An absolute URL of one of our endpoints.
    /// Whether the public URL is on a loopback host (development: `dev_only` files load).
    pub fn public_url_is_loopback(&self) -> bool {
        url::Url::parse(&self.server.public_url).is_ok_and(|u| crate::domain::url_rules::is_loopback_host(u.host()))
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer())
    }

    /// The FHIR base URL: tokens' audience.
    pub fn fhir_base(&self) -> String {
        self.endpoint("/fhir")
    }
}
