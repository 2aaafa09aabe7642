//! Resolving the key that verifies a client's JWT: from its registered JWK Set or its `jwks_uri`
//! (fetched with redirects off, cached no longer than the response's Cache-Control allows, and
//! fetched again once when a `kid` is unknown). Exactly one key may match `kid` and the algorithm
//! (SMART App Launch 2.2, client-confidential-asymmetric).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use url::Url;

use crate::clock::Clock;
use crate::config::ClientsConfig;
use crate::domain::client::{Client, ClientAuth, KeySource};
use crate::domain::jwk::{Jwk, JwkSet};
use crate::token::jose::{Algorithm, VerifyingKey};

const MAX_JWKS_BYTES: usize = 64 * 1024;
/// A kid miss refetches a `jwks_uri` at most this often.
const REFETCH_INTERVAL_MS: i64 = 10_000;

/// Why no key could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyLookupError {
    #[error("the client has no keys registered")]
    NotAsymmetric,
    #[error("no registered key has kid `{0}` for this algorithm")]
    NoMatch(String),
    #[error("more than one registered key has kid `{0}` for this algorithm")]
    Ambiguous(String),
    #[error("the registered key `{0}` cannot be used: {1}")]
    Unusable(String, String),
    #[error("the client's jwks_uri could not be fetched: {0}")]
    Fetch(String),
}

#[derive(Debug, Clone)]
struct FetchedSet {
    set: Arc<JwkSet>,
    fetched_at_ms: i64,
    expires_at_ms: i64,
}

/// Chooses and caches client verification keys.
#[derive(Debug)]
pub struct ClientKeys {
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    default_ttl_ms: i64,
    max_ttl_ms: i64,
    fetched: Mutex<HashMap<Url, FetchedSet>>,
    parsed: Mutex<HashMap<(String, Algorithm), VerifyingKey>>,
}

impl ClientKeys {
    pub fn new(config: &ClientsConfig, clock: Arc<dyn Clock>) -> Result<Self, reqwest::Error> {
        let http = crate::outbound::client_builder(Duration::from_secs(config.jwks_fetch_timeout_secs)).build()?;
        Ok(Self {
            http,
            clock,
            default_ttl_ms: (config.jwks_cache_default_secs * 1000) as i64,
            max_ttl_ms: (config.jwks_cache_max_secs * 1000) as i64,
            fetched: Mutex::new(HashMap::new()),
            parsed: Mutex::new(HashMap::new()),
        })
    }

    /// The single key of `client` with `kid` that can verify `alg`.
    pub async fn resolve(&self, client: &Client, kid: &str, alg: Algorithm) -> Result<VerifyingKey, KeyLookupError> {
        match &client.auth {
            ClientAuth::PrivateKeyJwt(KeySource::Jwks(set)) => {
                self.choose(&format!("client:{}", client.id), set, kid, alg)
            }
            ClientAuth::PrivateKeyJwt(KeySource::JwksUri(url)) => {
                let (set, fresh) = self.remote_set(url, false).await?;
                match self.choose(url.as_str(), &set, kid, alg) {
                    Err(KeyLookupError::NoMatch(_)) if !fresh => {
                        let (set, _) = self.remote_set(url, true).await?;
                        self.choose(url.as_str(), &set, kid, alg)
                    }
                    other => other,
                }
            }
            _ => Err(KeyLookupError::NotAsymmetric),
        }
    }

    fn choose(&self, source: &str, set: &JwkSet, kid: &str, alg: Algorithm) -> Result<VerifyingKey, KeyLookupError> {
        let matches: Vec<&Jwk> = set
            .keys
            .iter()
            .filter(|k| k.kid.as_deref() == Some(kid) && k.kty == alg.key_type() && k.is_for_verification())
            .filter(|k| k.alg.as_deref().is_none_or(|a| a == alg.as_str()))
            .collect();
        let jwk = match matches.as_slice() {
            [] => return Err(KeyLookupError::NoMatch(kid.to_owned())),
            [one] => *one,
            _ => return Err(KeyLookupError::Ambiguous(kid.to_owned())),
        };
        let cache_key = (format!("{source}#{}", crate::token::jose::thumbprint(jwk)), alg);
        if let Some(key) = self.parsed.lock().get(&cache_key) {
            return Ok(key.clone());
        }
        let key =
            VerifyingKey::from_jwk(jwk, alg).map_err(|e| KeyLookupError::Unusable(kid.to_owned(), e.to_string()))?;
        let mut parsed = self.parsed.lock();
        if parsed.len() > 10_000 {
            parsed.clear();
        }
        parsed.insert(cache_key, key.clone());
        Ok(key)
    }

    /// The cached set for `url`, fetching it when stale or when `refetch` asks (rate-limited).
    /// Returns the set and whether it was fetched just now.
    async fn remote_set(&self, url: &Url, refetch: bool) -> Result<(Arc<JwkSet>, bool), KeyLookupError> {
        let now = self.clock.now_millis();
        if let Some(cached) = self.fetched.lock().get(url) {
            let fresh_enough =
                now < cached.expires_at_ms && (!refetch || now - cached.fetched_at_ms < REFETCH_INTERVAL_MS);
            if fresh_enough {
                return Ok((cached.set.clone(), false));
            }
        }
        let (set, ttl_ms) = self.fetch(url).await?;
        let set = Arc::new(set);
        let mut fetched = self.fetched.lock();
        if ttl_ms > 0 {
            fetched
                .insert(url.clone(), FetchedSet { set: set.clone(), fetched_at_ms: now, expires_at_ms: now + ttl_ms });
        } else {
            fetched.remove(url);
        }
        Ok((set, true))
    }

    async fn fetch(&self, url: &Url) -> Result<(JwkSet, i64), KeyLookupError> {
        let fail = |why: String| KeyLookupError::Fetch(why);
        let response = self
            .http
            .get(url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !response.status().is_success() {
            return Err(fail(format!("HTTP {}", response.status().as_u16())));
        }
        let ttl = cache_lifetime_ms(
            response.headers().get(reqwest::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()),
            self.default_ttl_ms,
            self.max_ttl_ms,
        );
        if response.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
            return Err(fail("the JWK Set is too large".into()));
        }
        let body = response.bytes().await.map_err(|e| fail(e.to_string()))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(fail("the JWK Set is too large".into()));
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| fail(format!("not a JWK Set: {e}")))?;
        if set.keys.iter().any(Jwk::has_private_material) {
            return Err(fail("the JWK Set holds private key material".into()));
        }
        Ok((set, ttl))
    }
}

/// How long a response may be cached: `no-store`/`no-cache` → 0, `max-age=N` → N (capped at
/// `max`), no directive → `default` (also capped).
pub fn cache_lifetime_ms(cache_control: Option<&str>, default: i64, max: i64) -> i64 {
    let Some(header) = cache_control else { return default.min(max) };
    let mut max_age = None;
    for directive in header.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if directive == "no-store" || directive == "no-cache" {
            return 0;
        }
        if let Some(value) = directive.strip_prefix("max-age=") {
            max_age = Some(value.trim_matches('"').parse::<i64>().unwrap_or(0).max(0) * 1000);
        }
    }
    max_age.unwrap_or(default).min(max)
}

#[cfg(test)]
mod tests {
    use super::cache_lifetime_ms;

    #[test]
    fn cache_control_bounds_the_cache() {
        assert_eq!(cache_lifetime_ms(None, 300_000, 3_600_000), 300_000);
        assert_eq!(cache_lifetime_ms(Some("public, max-age=60"), 300_000, 3_600_000), 60_000);
        assert_eq!(cache_lifetime_ms(Some("max-age=86400"), 300_000, 3_600_000), 3_600_000);
        assert_eq!(cache_lifetime_ms(Some("no-store"), 300_000, 3_600_000), 0);
        assert_eq!(cache_lifetime_ms(Some("max-age=60, no-cache"), 300_000, 3_600_000), 0);
        assert_eq!(cache_lifetime_ms(Some("max-age=junk"), 300_000, 3_600_000), 0);
        assert_eq!(cache_lifetime_ms(Some("private"), 300_000, 3_600_000), 300_000);
    }
}
