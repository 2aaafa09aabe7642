//! An OpenID Connect relying party for upstream providers (OpenID Connect Core 1.0 §3.1,
//! Discovery 1.0): discovery cached and refreshed, code flow with PKCE S256, `nonce` and
//! `state`, client authentication by `client_secret_basic` or `private_key_jwt` (RFC 7523), and
//! ID-token checks — exact `iss`, `aud`, `exp`, `nonce`, an algorithm allow-list (never `none`,
//! never HMAC), an unknown `kid` refetching the JWKS once. UserInfo is merged only when its `sub`
//! matches. Built on carebroker's own JOSE (see the closing note on why not `openidconnect`).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::SignInError;
use crate::clock::Clock;
use crate::config::idps::{IdpConfig, IdpKind};
use crate::domain::jwk::JwkSet;
use crate::domain::pkce::s256;
use crate::token::jose::{self, Algorithm, SigningKey, VerifyingKey};
use crate::token::random_token;

/// The parts of a discovery document carebroker uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: String,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

/// What must survive the round trip to the provider (stored server-side under `state`).
/// For SAML, `state` is the RelayState and `saml_request_id` the AuthnRequest's ID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundTrip {
    pub state: String,
    #[serde(default)]
    pub nonce: String,
    #[serde(default)]
    pub code_verifier: String,
    /// Parameters sent that the answer is checked against (NHS login `vtr`).
    #[serde(default)]
    pub requested_vtr: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saml_request_id: Option<String>,
}

/// How the client proves itself at the provider's token endpoint.
enum UpstreamAuth {
    Secret(String),
    PrivateKey(SigningKey),
}

/// Verified claims from the ID token, merged with UserInfo when used.
pub type Claims = Map<String, Value>;

/// The provider's keys usable for verification: (kid, algorithm, key) for each accepted algorithm
/// the key's type allows.
type ProviderKeys = Vec<(Option<String>, Algorithm, VerifyingKey)>;

/// A generic OIDC upstream.
pub struct OidcClient {
    pub config: IdpConfig,
    auth: UpstreamAuth,
    algs: Vec<Algorithm>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    discovery: Mutex<Option<(Arc<Discovery>, i64)>>,
    /// The provider's verification keys, parsed once per fetch for each accepted algorithm.
    jwks: Mutex<Option<(Arc<ProviderKeys>, i64)>>,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("id", &self.config.id)
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

/// Reads a JSON number or numeric string (CIS2 sends assurance levels as either).
pub fn number_claim(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
}

impl OidcClient {
    /// Builds the client; the private key (if any) is loaded now.
    pub fn new(config: IdpConfig, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let auth = match (&config.client_secret, &config.private_key_file) {
            (Some(secret), _) => UpstreamAuth::Secret(secret.expose().to_owned()),
            (None, Some(path)) => {
                let pem =
                    std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
                let der = jose::pkcs8_from_pem(&pem).map_err(|e| e.to_string())?;
                let default = if config.kind == IdpKind::NhsLogin { "RS512" } else { "RS256" };
                let alg = Algorithm::parse(config.private_key_alg.as_deref().unwrap_or(default))
                    .ok_or("unknown private_key_alg")?;
                UpstreamAuth::PrivateKey(SigningKey::from_pkcs8(alg, &der).map_err(|e| e.to_string())?)
            }
            (None, None) => return Err("no client credential".into()),
        };
        let algs = config.id_token_algs().iter().filter_map(|a| Algorithm::parse(a)).collect();
        let http = crate::outbound::client_builder(Duration::from_secs(10)).build().map_err(|e| e.to_string())?;
        Ok(Self { config, auth, algs, http, clock, discovery: Mutex::new(None), jwks: Mutex::new(None) })
    }

    /// Sends one request to the provider, timed and counted per provider (`/metrics`).
    async fn call(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, SignInError> {
        let started = std::time::Instant::now();
        let sent = request.send().await;
        let ok = sent.as_ref().is_ok_and(|r| r.status().is_success());
        crate::telemetry::upstream(&self.config.id, ok, started.elapsed());
        sent.map_err(SignInError::upstream)
    }

    async fn get_json(&self, url: &str) -> Result<Value, SignInError> {
        let response = self.call(self.http.get(url).header("accept", "application/json")).await?;
        if !response.status().is_success() {
            return Err(SignInError::Upstream(format!("{url} answered HTTP {}", response.status().as_u16())));
        }
        response.json().await.map_err(SignInError::upstream)
    }

    /// The provider's discovery document, cached for `discovery_cache_secs` (or fetched again).
    pub async fn discovery(&self, refresh: bool) -> Result<Arc<Discovery>, SignInError> {
        let now = self.clock.now();
        if !refresh {
            if let Some((doc, at)) = self.discovery.lock().clone() {
                if now - at < self.config.discovery_cache_secs as i64 {
                    return Ok(doc);
                }
            }
        }
        let url = format!("{}/.well-known/openid-configuration", self.config.issuer.trim_end_matches('/'));
        let doc: Discovery = serde_json::from_value(self.get_json(&url).await?)
            .map_err(|e| SignInError::Upstream(format!("discovery: {e}")))?;
        if doc.issuer != self.config.issuer {
            return Err(SignInError::IdToken(format!(
                "discovery names issuer `{}`, not the configured `{}`",
                doc.issuer, self.config.issuer
            )));
        }
        let doc = Arc::new(doc);
        *self.discovery.lock() = Some((doc.clone(), now));
        Ok(doc)
    }

    async fn jwks(&self, refresh: bool) -> Result<Arc<ProviderKeys>, SignInError> {
        let now = self.clock.now();
        if !refresh {
            if let Some((set, at)) = self.jwks.lock().clone() {
                if now - at < self.config.discovery_cache_secs as i64 {
                    return Ok(set);
                }
            }
        }
        let doc = self.discovery(false).await?;
        let set: JwkSet = serde_json::from_value(self.get_json(&doc.jwks_uri).await?)
            .map_err(|e| SignInError::Upstream(format!("JWKS: {e}")))?;
        let keys: ProviderKeys = set
            .keys
            .iter()
            .filter(|k| k.is_for_verification())
            .flat_map(|k| {
                self.algs
                    .iter()
                    .filter(|alg| k.kty == alg.key_type())
                    .filter_map(|&alg| VerifyingKey::from_jwk(k, alg).ok().map(|key| (k.kid.clone(), alg, key)))
            })
            .collect();
        let keys = Arc::new(keys);
        *self.jwks.lock() = Some((keys.clone(), now));
        Ok(keys)
    }

    /// The authorization URL to send the browser to, and what to remember for the answer.
    pub async fn authorization_url(
        &self,
        redirect_uri: &str,
        extra: &[(&str, String)],
        vtr: Vec<String>,
    ) -> Result<(String, RoundTrip), SignInError> {
        let doc = self.discovery(false).await?;
        let trip = RoundTrip {
            state: random_token(24),
            nonce: random_token(24),
            code_verifier: random_token(48),
            requested_vtr: vtr,
            saml_request_id: None,
        };
        let mut url = url::Url::parse(&doc.authorization_endpoint).map_err(SignInError::upstream)?;
        let scope = if self.config.scopes.is_empty() { "openid".to_owned() } else { self.config.scopes.join(" ") };
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &scope)
            .append_pair("state", &trip.state)
            .append_pair("nonce", &trip.nonce)
            .append_pair("code_challenge", &s256(&trip.code_verifier))
            .append_pair("code_challenge_method", "S256");
        for (name, value) in extra {
            url.query_pairs_mut().append_pair(name, value);
        }
        Ok((url.to_string(), trip))
    }

    /// RFC 7523 client assertion for the provider's token endpoint.
    fn client_assertion(&self, key: &SigningKey, audience: &str) -> Result<String, SignInError> {
        let now = self.clock.now();
        let claims = json!({"iss": self.config.client_id, "sub": self.config.client_id, "aud": audience, "iat": now, "exp": now + 60, "jti": random_token(18)});
        key.sign("JWT", &claims).map_err(SignInError::upstream)
    }

    /// Exchanges the code and returns the verified, merged claims.
    pub async fn redeem(&self, trip: &RoundTrip, redirect_uri: &str, code: &str) -> Result<Claims, SignInError> {
        let doc = self.discovery(false).await?;
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", redirect_uri.to_owned()),
            ("code_verifier", trip.code_verifier.clone()),
        ];
        let mut request = self.http.post(&doc.token_endpoint);
        match &self.auth {
            UpstreamAuth::Secret(secret) => request = request.basic_auth(&self.config.client_id, Some(secret)),
            UpstreamAuth::PrivateKey(key) => {
                form.push(("client_id", self.config.client_id.clone()));
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
                ));
                form.push(("client_assertion", self.client_assertion(key, &doc.token_endpoint)?));
            }
        }
        let response = self.call(request.form(&form)).await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.map_err(SignInError::upstream)?;
        if status != 200 {
            return Err(SignInError::Upstream(format!(
                "the token endpoint refused the code: {} {}",
                body["error"].as_str().unwrap_or("error"),
                body["error_description"].as_str().unwrap_or_default()
            )));
        }
        let id_token = body["id_token"]
            .as_str()
            .ok_or_else(|| SignInError::IdToken("the token response has no id_token".into()))?;
        let mut claims = self.verify_id_token(id_token, Some(&trip.nonce)).await?;
        if self.uses_userinfo() {
            let access = body["access_token"]
                .as_str()
                .ok_or_else(|| SignInError::Upstream("no access_token for userinfo".into()))?;
            self.merge_userinfo(&mut claims, access).await?;
        }
        Ok(claims)
    }

    /// Whether this provider's roles and names come from userinfo (CIS2's do).
    pub fn uses_userinfo(&self) -> bool {
        self.config.use_userinfo.unwrap_or(self.config.kind == IdpKind::Cis2)
    }

    /// Adds the userinfo claims (for `access_token`) to verified `claims`; userinfo never
    /// overrides a claim of the ID token, and its `sub` must be the token's.
    pub async fn merge_userinfo(&self, claims: &mut Claims, access_token: &str) -> Result<(), SignInError> {
        let doc = self.discovery(false).await?;
        let endpoint = doc
            .userinfo_endpoint
            .clone()
            .ok_or_else(|| SignInError::Upstream("the provider has no userinfo endpoint".into()))?;
        let response = self.call(self.http.get(&endpoint).bearer_auth(access_token)).await?;
        if !response.status().is_success() {
            return Err(SignInError::Upstream(format!("userinfo answered HTTP {}", response.status().as_u16())));
        }
        let info: Map<String, Value> = response.json().await.map_err(SignInError::upstream)?;
        if info.get("sub") != claims.get("sub") {
            return Err(SignInError::IdToken("the userinfo `sub` does not match the ID token".into()));
        }
        for (name, value) in info {
            claims.entry(name).or_insert(value);
        }
        Ok(())
    }

    /// The one key for `alg` (and `kid`, when the token names one).
    fn key_for(keys: &ProviderKeys, kid: Option<&str>, alg: Algorithm) -> Option<VerifyingKey> {
        let mut candidates = keys
            .iter()
            .filter(|(k, a, _)| *a == alg && kid.is_none_or(|kid| k.as_deref() == Some(kid)))
            .map(|(_, _, key)| key);
        match (candidates.next(), candidates.next()) {
            (Some(one), None) => Some(one.clone()),
            _ => None,
        }
    }

    /// Verifies an ID token from this provider: algorithm allow-list, key by
    /// `kid` (one JWKS refetch for an unknown one), signature, exact `iss`, `aud` containing our
    /// client id, time. `nonce` is checked when given.
    pub async fn verify_id_token(&self, token: &str, nonce: Option<&str>) -> Result<Claims, SignInError> {
        let claims = self.verify_jwt(token, nonce).await?;
        Self::require_subject(&claims)?;
        Ok(claims)
    }

    /// An ID token an EHR presents for its user: as [`Self::verify_id_token`] with no nonce (the
    /// sign-in was the EHR's), `exp` required, and `aud` one of `audiences`.
    pub async fn verify_presented_id_token(&self, token: &str, audiences: &[&str]) -> Result<Claims, SignInError> {
        let claims = self.verify_jwt_for(token, None, audiences).await?;
        if claims.get("exp").and_then(Value::as_i64).is_none() {
            return Err(SignInError::IdToken("the ID token has no exp".into()));
        }
        Self::require_subject(&claims)?;
        Ok(claims)
    }

    fn require_subject(claims: &Claims) -> Result<(), SignInError> {
        if claims.get("sub").and_then(Value::as_str).is_none_or(|s| s.is_empty() || s.len() > 255) {
            return Err(SignInError::IdToken("the token has no valid sub".into()));
        }
        Ok(())
    }

    /// [`Self::verify_id_token`] without requiring `sub` (a logout token may carry only `sid`).
    pub async fn verify_jwt(&self, token: &str, nonce: Option<&str>) -> Result<Claims, SignInError> {
        self.verify_jwt_for(token, nonce, &[self.config.client_id.as_str()]).await
    }

    /// Verifies a JWT from this provider for one of `audiences` (with several `aud` values, `azp`
    /// must be one of ours too).
    async fn verify_jwt_for(
        &self,
        token: &str,
        nonce: Option<&str>,
        audiences: &[&str],
    ) -> Result<Claims, SignInError> {
        let jws = jose::decode(token, &self.algs).map_err(|e| SignInError::IdToken(e.to_string()))?;
        let kid = jws.header.kid.clone();
        let mut key = Self::key_for(&*self.jwks(false).await?, kid.as_deref(), jws.algorithm);
        if key.is_none() {
            key = Self::key_for(&*self.jwks(true).await?, kid.as_deref(), jws.algorithm);
        }
        let key = key.ok_or_else(|| {
            SignInError::IdToken(format!("no single key of the provider matches kid `{}`", kid.unwrap_or_default()))
        })?;
        let payload = jws.verify(&key).map_err(|e| SignInError::IdToken(e.to_string()))?;
        let claims: Claims = serde_json::from_slice(&payload)
            .map_err(|_| SignInError::IdToken("the claims are not a JSON object".into()))?;
        if claims.get("iss").and_then(Value::as_str) != Some(self.config.issuer.as_str()) {
            return Err(SignInError::IdToken(format!(
                "the token was issued by `{}`, not `{}`",
                claims.get("iss").and_then(Value::as_str).unwrap_or("?"),
                self.config.issuer
            )));
        }
        let ours = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|a| audiences.contains(&a));
        let audience_ok = match claims.get("aud") {
            Some(aud @ Value::String(_)) => ours(Some(aud)),
            Some(Value::Array(auds)) => {
                auds.iter().any(|a| ours(Some(a))) && (auds.len() == 1 || ours(claims.get("azp")))
            }
            _ => false,
        };
        if !audience_ok {
            return Err(SignInError::IdToken("the token is not for this client (aud)".into()));
        }
        let now = self.clock.now();
        const SKEW: i64 = 60;
        if let Some(exp) = claims.get("exp").and_then(Value::as_i64) {
            if exp + SKEW <= now {
                return Err(SignInError::IdToken("the token has expired".into()));
            }
        } else if nonce.is_some() {
            return Err(SignInError::IdToken("the ID token has no exp".into()));
        }
        if claims.get("iat").and_then(Value::as_i64).is_some_and(|iat| iat > now + SKEW) {
            return Err(SignInError::IdToken("the token was issued in the future".into()));
        }
        if let Some(expected) = nonce {
            if claims.get("nonce").and_then(Value::as_str) != Some(expected) {
                return Err(SignInError::IdToken("the nonce does not match this sign-in".into()));
            }
        }
        Ok(claims)
    }
}
