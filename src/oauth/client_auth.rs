//! Client authentication at the token, introspection and revocation endpoints (RFC 6749 §2.3):
//! `client_secret_basic`, `client_secret_post`, `private_key_jwt` (RFC 7523 §2.2 and §3 as profiled
//! by SMART App Launch 2.2 client-confidential-asymmetric), or a public client naming itself.
//! A client must use the one method it registered, and only one method per request.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::error::{Challenge, OAuthError};
use super::params::Params;
use crate::app::App;
use crate::domain::client::{AuthMethod, Client, ClientAuth};
use crate::domain::secret::verify_secret;
use crate::keyspaces::ASSERTION_JTIS;
use crate::token::jose::{self, Algorithm};

/// RFC 7523 §2.2 `client_assertion_type`.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Algorithms a client may sign its assertion with.
pub const CLIENT_ASSERTION_ALGS: [Algorithm; 5] =
    [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::ES256, Algorithm::ES384];

/// A client that proved who it is (or, for a public client, named itself).
#[derive(Debug, Clone)]
pub struct AuthenticatedClient {
    pub client: Arc<Client>,
    pub method: AuthMethod,
}

/// What the request carries for client authentication.
#[derive(Debug, Clone, Copy)]
pub struct ClientCredentials<'a> {
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a str>,
    pub params: &'a Params,
}

enum Presented<'a> {
    Basic { id: String, secret: String },
    Post { id: &'a str, secret: &'a str },
    Assertion { assertion: &'a str, kind: &'a str },
    Public { id: &'a str },
}

fn basic_credentials(header: &str) -> Option<Result<(String, String), OAuthError>> {
    let (scheme, value) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let bad = || OAuthError::invalid_client("the Basic credentials are malformed").with_challenge(Challenge::Basic);
    let decoded = STANDARD.decode(value.trim()).ok().and_then(|b| String::from_utf8(b).ok());
    Some(decoded.and_then(|text| text.split_once(':').map(|(i, s)| (i.to_owned(), s.to_owned()))).ok_or_else(bad))
}

fn presented<'a>(creds: ClientCredentials<'a>) -> Result<Presented<'a>, OAuthError> {
    let params = creds.params;
    let basic = creds.authorization.and_then(basic_credentials).transpose()?;
    let mut methods = Vec::new();
    if let Some((id, secret)) = basic {
        methods.push(Presented::Basic { id, secret });
    }
    if let Some(secret) = params.get("client_secret") {
        methods.push(Presented::Post { id: params.get("client_id").unwrap_or_default(), secret });
    }
    if params.contains("client_assertion") || params.contains("client_assertion_type") {
        methods.push(Presented::Assertion {
            assertion: params.get("client_assertion").unwrap_or_default(),
            kind: params.get("client_assertion_type").unwrap_or_default(),
        });
    }
    match methods.len() {
        0 => match params.get("client_id") {
            Some(id) => Ok(Presented::Public { id }),
            None => Err(OAuthError::invalid_client("the client did not identify itself")),
        },
        1 => Ok(methods.remove(0)),
        _ => Err(OAuthError::invalid_request("the request uses more than one client authentication method")),
    }
}

/// True when the request identifies a client in any way (header, secret, assertion, client_id).
pub fn identifies_client(creds: ClientCredentials<'_>) -> bool {
    let basic =
        creds.authorization.is_some_and(|h| h.trim().get(..6).is_some_and(|s| s.eq_ignore_ascii_case("basic ")));
    basic
        || ["client_id", "client_secret", "client_assertion", "client_assertion_type"]
            .iter()
            .any(|p| creds.params.contains(p))
}

/// Authenticates the client of a request.
pub async fn authenticate_client(app: &App, creds: ClientCredentials<'_>) -> Result<AuthenticatedClient, OAuthError> {
    let client_id_param = creds.params.get("client_id");
    match presented(creds)? {
        Presented::Basic { id, secret } => {
            let fail = |why: &str| OAuthError::invalid_client(why.to_owned()).with_challenge(Challenge::Basic);
            if client_id_param.is_some_and(|p| p != id) {
                return Err(fail("`client_id` does not match the Basic credentials"));
            }
            let client = app.clients.get(&id).await?.ok_or_else(|| fail("unknown client or wrong secret"))?;
            check_secret(&client, AuthMethod::ClientSecretBasic, &secret)
                .map_err(|()| fail("unknown client or wrong secret"))?;
            Ok(AuthenticatedClient { client, method: AuthMethod::ClientSecretBasic })
        }
        Presented::Post { id, secret } => {
            let fail = || OAuthError::invalid_client("unknown client or wrong secret");
            let client = app.clients.get(id).await?.ok_or_else(fail)?;
            check_secret(&client, AuthMethod::ClientSecretPost, secret).map_err(|()| fail())?;
            Ok(AuthenticatedClient { client, method: AuthMethod::ClientSecretPost })
        }
        Presented::Assertion { assertion, kind } => {
            if kind != JWT_BEARER_ASSERTION {
                return Err(OAuthError::invalid_client(format!(
                    "`client_assertion_type` must be `{JWT_BEARER_ASSERTION}`"
                )));
            }
            if assertion.is_empty() {
                return Err(OAuthError::invalid_client("missing `client_assertion`"));
            }
            let client = verify_client_assertion(app, assertion, client_id_param).await?;
            Ok(AuthenticatedClient { client, method: AuthMethod::PrivateKeyJwt })
        }
        Presented::Public { id } => {
            let client = app.clients.get(id).await?.ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
            if !client.is_public() {
                return Err(OAuthError::invalid_client("this client must authenticate"));
            }
            Ok(AuthenticatedClient { client, method: AuthMethod::None })
        }
    }
}

fn check_secret(client: &Client, method: AuthMethod, secret: &str) -> Result<(), ()> {
    match &client.auth {
        ClientAuth::Secret { method: registered, hash } if *registered == method => {
            // SMART clients send the raw secret; RFC 6749 §2.3.1 clients form-encode it first.
            let decoded: String =
                form_urlencoded::parse(format!("s={secret}").as_bytes()).map(|(_, v)| v.into_owned()).collect();
            if verify_secret(secret, hash) || (decoded != secret && verify_secret(&decoded, hash)) {
                Ok(())
            } else {
                Err(())
            }
        }
        _ => Err(()),
    }
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<serde_json::Value>,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
    jti: Option<String>,
}

/// RFC 7523 §3 as SMART profiles it: `iss` = `sub` = client, `aud` = our token URL, `exp` at most
/// the configured lifetime ahead, `jti` never accepted twice (across every node sharing the
/// ephemeral store), `kid` naming exactly one registered key, `jku` only if it is the registered
/// `jwks_uri`. Every failure is `invalid_client`.
pub async fn verify_client_assertion(
    app: &App,
    assertion: &str,
    client_id_param: Option<&str>,
) -> Result<Arc<Client>, OAuthError> {
    let fail = |why: String| OAuthError::invalid_client(format!("client assertion rejected: {why}"));
    let jws = jose::decode(assertion, &CLIENT_ASSERTION_ALGS).map_err(|e| fail(e.to_string()))?;
    if !jws.header.typ.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("JWT")) {
        return Err(fail("the header `typ` must be `JWT`".into()));
    }
    let kid = jws.header.kid.clone().filter(|k| !k.is_empty()).ok_or_else(|| fail("the header has no `kid`".into()))?;
    let unverified: AssertionClaims = serde_json::from_slice(jws.unverified_payload())
        .map_err(|_| fail("the claims are not a JSON object".into()))?;
    let iss = unverified.iss.clone().ok_or_else(|| fail("missing `iss`".into()))?;
    if unverified.sub.as_deref() != Some(iss.as_str()) {
        return Err(fail("`sub` must equal `iss`".into()));
    }
    if client_id_param.is_some_and(|id| id != iss) {
        return Err(fail("`client_id` does not match the assertion's `iss`".into()));
    }
    let client = app.clients.get(&iss).await?.ok_or_else(|| fail("unknown client".into()))?;
    let registered_uri = match &client.auth {
        ClientAuth::PrivateKeyJwt(crate::domain::client::KeySource::JwksUri(url)) => Some(url.as_str()),
        ClientAuth::PrivateKeyJwt(_) => None,
        _ => return Err(fail("this client is not registered for private_key_jwt".into())),
    };
    if let Some(jku) = &jws.header.jku {
        if registered_uri != Some(jku.as_str()) {
            return Err(fail("`jku` is not the client's registered jwks_uri".into()));
        }
    }
    let key = app.client_keys.resolve(&client, &kid, jws.algorithm).await.map_err(|e| fail(e.to_string()))?;
    let payload = jws.verify(&key).map_err(|e| fail(e.to_string()))?;
    let claims: AssertionClaims =
        serde_json::from_slice(&payload).map_err(|_| fail("the claims are not valid".into()))?;

    let token_url = app.token_endpoint();
    if !crate::token::jose::audience_includes(claims.aud.as_ref(), token_url) {
        return Err(fail(format!("`aud` must be `{token_url}`")));
    }
    let now = app.clock.now();
    let skew = app.config.tokens.clock_skew_secs;
    let max_lifetime = app.config.tokens.client_assertion_max_lifetime_secs;
    let exp = claims.exp.ok_or_else(|| fail("missing `exp`".into()))?;
    if exp + skew <= now {
        return Err(fail("the assertion has expired".into()));
    }
    if exp > now + max_lifetime {
        return Err(fail(format!("`exp` is more than {max_lifetime} seconds ahead")));
    }
    if claims.nbf.is_some_and(|nbf| nbf > now + skew) {
        return Err(fail("the assertion is not valid yet (`nbf`)".into()));
    }
    if claims.iat.is_some_and(|iat| iat > now + skew) {
        return Err(fail("`iat` is in the future".into()));
    }
    let jti = claims
        .jti
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or_else(|| fail("missing or oversized `jti`".into()))?;
    let ttl = Duration::from_secs(u64::try_from(exp + skew - now + 1).unwrap_or(1));
    let fresh = ASSERTION_JTIS.first_use(app.stores.ephemeral.as_ref(), &format!("{iss}:{jti}"), ttl).await?;
    if !fresh {
        return Err(fail("this `jti` was already used".into()));
    }
    Ok(client)
}
