//! Test support: a `TestApp` builder driving the real router in-process, keys for test clients,
//! and access to the real Redis and PostgreSQL servers started by `scripts/test.sh`.

pub mod browser;
pub mod fake_idp;
pub mod fhir;
pub mod keys;
pub mod node_idp;
pub mod pds_double;
pub mod saml_idp;
pub mod services;
pub mod simplesaml;
pub mod smart;
pub mod ssb_double;
pub mod vrs_double;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use carebroker::clock::FixedClock;
use carebroker::config::{Config, Loaded, Secret, StoreKind};
use carebroker::domain::client::{Client, ClientMetadata};
use carebroker::token::keys::KeyFile;
use carebroker::{App, AppState};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;

/// 2026-11-22T00:00:00Z: tests start here unless told otherwise.
pub const T0: i64 = 1_795_305_600;
/// The head of a small test policy: one role, mapped from CIS2's Nurse Access Role; tests add
/// their rules after it.
pub const CLINICIAN_POLICY_HEAD: &str = r#"
[roles]
clinician = "Clinicians"

[[map]]
role = "clinician"
source = "cis2"
role_codes = ["R8001"]
"#;
pub const ISSUER: &str = "http://127.0.0.1:8080";
pub const TOKEN_URL: &str = "http://127.0.0.1:8080/token";
pub const FHIR_BASE: &str = "http://127.0.0.1:8080/fhir";
pub const INITIAL_ACCESS_TOKEN: &str = "test-initial-access-token-0123456789abcdef";

/// One key file for the whole run: RSA key generation is slow, and tests need no distinct keys.
fn shared_key_file() -> &'static KeyFile {
    static KEYS: OnceLock<KeyFile> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut file = KeyFile::default();
        file.ensure(T0 - 100_000).expect("test keys");
        file
    })
}

type ConfigTweak = Box<dyn FnOnce(&mut Config)>;

pub enum StoreChoice {
    Embedded,
    RedisPostgres {
        redis_url: String,
        postgres_url: String,
    },
    /// A Redis Cluster through its comma-separated seed URLs, and PostgreSQL.
    RedisClusterPostgres {
        seeds: String,
        postgres_url: String,
    },
}

pub struct TestAppBuilder {
    clients: Vec<ClientMetadata>,
    idps: Vec<carebroker::config::idps::IdpConfig>,
    clock_at: i64,
    store: StoreChoice,
    tweaks: Vec<ConfigTweak>,
    dir: Option<tempfile::TempDir>,
}

/// The app under test with its clock and its private folder.
pub struct TestApp {
    pub state: AppState,
    pub clock: Arc<FixedClock>,
    pub router: Router,
    pub dir: Arc<tempfile::TempDir>,
}

/// A response with its body read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// Asserts an OAuth error response with this status and code, and that no token came back.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> &Self {
        assert_eq!(self.status.as_u16(), status, "status; body: {}", self.text());
        let body = self.json();
        assert_eq!(body["error"], code, "error code; body: {body}");
        assert!(
            body.get("access_token").is_none() && body.get("refresh_token").is_none(),
            "a token was issued: {body}"
        );
        self
    }
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            clients: Vec::new(),
            idps: Vec::new(),
            clock_at: T0,
            store: StoreChoice::Embedded,
            tweaks: Vec::new(),
            dir: None,
        }
    }

    pub async fn request(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        let mut builder = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response =
            self.router.clone().oneshot(builder.body(Body::from(body)).expect("request")).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.expect("body").to_bytes().to_vec();
        Reply { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, &[], Vec::new()).await
    }

    /// POSTs `params` form-encoded.
    pub async fn post_form(&self, path: &str, params: &[(&str, &str)], headers: &[(&str, &str)]) -> Reply {
        let body = form(params);
        let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
        all.extend_from_slice(headers);
        self.request(Method::POST, path, &all, body.into_bytes()).await
    }

    pub fn now(&self) -> i64 {
        use carebroker::clock::Clock as _;
        self.clock.now()
    }
}

/// A loopback port nothing listens on (for a server a test starts, or a closed one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

pub fn form(params: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

impl TestAppBuilder {
    pub fn with_client(mut self, metadata: ClientMetadata) -> Self {
        self.clients.push(metadata);
        self
    }
    pub fn with_idp(mut self, idp: carebroker::config::idps::IdpConfig) -> Self {
        self.idps.push(idp);
        self
    }
    pub fn with_clock(mut self, unix_seconds: i64) -> Self {
        self.clock_at = unix_seconds;
        self
    }
    pub fn with_config(mut self, tweak: impl FnOnce(&mut Config) + 'static) -> Self {
        self.tweaks.push(Box::new(tweak));
        self
    }
    /// The development users (nurse, doctor at A9A5A; carer at VNC12; patient 9434765919) and the
    /// seeded Patients and Practitioners of `config/dev/`.
    pub fn with_dev_users(self) -> Self {
        self.with_config(|c| {
            let dev = carebroker::config::load_from(
                None,
                Some(carebroker::config::EMBEDDED_DEFAULT),
                Vec::<(String, String)>::new(),
            )
            .map(|l| l.config.dev_idp)
            .unwrap_or_else(|p| panic!("embedded default invalid: {p:?}"));
            c.dev_idp = dev;
            c.fhir.seed_dir = Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dev/fhir"));
        })
    }
    /// The shipped access policy (`policies/`), as a deployment runs it.
    pub fn with_shipped_policy(self) -> Self {
        self.with_config(|c| c.policy.dir = Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")))
    }
    pub fn with_registration(self) -> Self {
        self.with_config(|c| c.registration.initial_access_token = Some(Secret::new(INITIAL_ACCESS_TOKEN)))
    }
    pub fn with_store(mut self, store: StoreChoice) -> Self {
        self.store = store;
        self
    }
    /// Reuses a folder (SQLite file and keys) from an earlier app: a restart.
    pub fn with_dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    pub async fn build(self) -> TestApp {
        let dir = self.dir.unwrap_or_else(|| tempfile::tempdir().expect("tempdir"));
        let mut config = Config::default();
        config.store.sqlite_path = dir.path().join("carebroker.db");
        config.keys.dir = dir.path().join("keys");
        config.clients.dir = dir.path().join("no-client-files");
        let (redis_url, postgres_url, cluster) = match &self.store {
            StoreChoice::Embedded => (None, None, false),
            StoreChoice::RedisPostgres { redis_url, postgres_url } => (Some(redis_url), Some(postgres_url), false),
            StoreChoice::RedisClusterPostgres { seeds, postgres_url } => (Some(seeds), Some(postgres_url), true),
        };
        if let (Some(redis_url), Some(postgres_url)) = (redis_url, postgres_url) {
            config.store.kind = StoreKind::RedisPostgres;
            config.store.redis_url = Some(Secret::new(redis_url.clone()));
            config.store.redis_cluster = cluster;
            config.store.postgres_url = Some(Secret::new(postgres_url.clone()));
            config.store.redis_prefix = format!("test-{}:", carebroker::token::random_token(6));
        }
        for tweak in self.tweaks {
            tweak(&mut config);
        }
        if !KeyFile::path(&config.keys.dir).exists() {
            shared_key_file().save(&config.keys.dir).expect("save keys");
        }
        let clients: Vec<Client> = self
            .clients
            .iter()
            .map(|m| m.validate().unwrap_or_else(|p| panic!("test client invalid: {p:?}")))
            .collect();
        let clock = Arc::new(FixedClock::at(self.clock_at));
        let state =
            Arc::new(App::build(Loaded { config, clients, idps: self.idps }, clock.clone()).await.expect("app state"));
        let router = carebroker::app(state.clone());
        TestApp { state, clock, router, dir: Arc::new(dir) }
    }
}

/// Splits a compact JWS and returns its header and claims without verifying (test inspection).
pub fn jwt_parts(token: &str) -> (Value, Value) {
    use base64::Engine as _;
    let mut parts = token.split('.');
    let decode = |p: Option<&str>| -> Value {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p.expect("part")).expect("base64url");
        serde_json::from_slice(&bytes).expect("json")
    };
    (decode(parts.next()), decode(parts.next()))
}
