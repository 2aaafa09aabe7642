//! Client keys for tests and the client assertions they sign (RFC 7523).

use carebroker::domain::client::ClientMetadata;
use carebroker::domain::jwk::JwkSet;
use carebroker::token::jose::{Algorithm, SigningKey};
use carebroker::token::random_token;
use serde_json::{Value, json};

use super::TOKEN_URL;

/// A client's key pair.
pub struct ClientKey {
    pub key: SigningKey,
}

impl ClientKey {
    pub fn generate(alg: Algorithm) -> Self {
        let der = SigningKey::generate_pkcs8(alg).expect("keygen");
        Self { key: SigningKey::from_pkcs8(alg, &der).expect("key") }
    }

    pub fn kid(&self) -> String {
        self.key.kid.clone()
    }

    pub fn jwks(&self) -> JwkSet {
        JwkSet { keys: vec![self.key.public_jwk()] }
    }

    /// Standard SMART backend claims for `client_id` at time `now`.
    pub fn claims(client_id: &str, now: i64) -> Value {
        json!({"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "exp": now + 300, "iat": now, "jti": random_token(16)})
    }

    /// Signs `claims` with header `{alg, kid, typ: JWT}`.
    pub fn sign(&self, claims: &Value) -> String {
        self.key.sign("JWT", claims).expect("sign")
    }

    /// Signs under an arbitrary header (its `alg` must be this key's).
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        self.key.sign_with_header(header, claims).expect("sign")
    }

    /// A fresh valid assertion for `client_id`.
    pub fn assertion(&self, client_id: &str, now: i64) -> String {
        self.sign(&Self::claims(client_id, now))
    }
}

/// A SMART backend services client with an inline JWK Set.
pub fn backend_client(client_id: &str, key: &ClientKey, scope: &str) -> ClientMetadata {
    ClientMetadata {
        client_id: client_id.into(),
        token_endpoint_auth_method: "private_key_jwt".into(),
        jwks: Some(key.jwks()),
        grant_types: vec!["client_credentials".into()],
        scope: scope.into(),
        ..Default::default()
    }
}

/// A confidential symmetric client.
pub fn secret_client(client_id: &str, method: &str, secret: &str) -> ClientMetadata {
    ClientMetadata {
        client_id: client_id.into(),
        token_endpoint_auth_method: method.into(),
        client_secret_hash: Some(carebroker::domain::secret::hash_secret(secret)),
        grant_types: vec!["authorization_code".into()],
        redirect_uris: vec!["https://app.example/cb".into()],
        scope: "openid fhirUser patient/*.rs".into(),
        ..Default::default()
    }
}

pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The form of a client_credentials request with `assertion`.
pub fn backend_form<'a>(assertion: &'a str, scope: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("scope", scope),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion),
    ]
}
