//! Dynamic client registration (RFC 7591), protected by an initial access token (§1.2, §3).
//! Registration is disabled when no initial access token is configured. Registered clients are
//! durable. The requested scope is narrowed to `registration.allowed_scope`.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use super::clients::RegisterClientError;
use super::error::{ErrorCode, OAuthError};
use crate::app::App;
use crate::domain::client::{AuthMethod, ClientMetadata, GrantType};
use crate::domain::jwk::JwkSet;
use crate::domain::scope::{ScopeContext, ScopeSet};
use crate::domain::secret::hash_secret;
use crate::token::jose::{Algorithm, VerifyingKey};
use crate::token::random_token;

/// RFC 7591 §2 client metadata as a client sends it. Members carebroker does not understand are
/// ignored (§2: "MUST ignore any client metadata sent by the client that it does not understand").
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RegistrationRequest {
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: Option<String>,
    pub grant_types: Option<Vec<String>>,
    pub response_types: Option<Vec<String>>,
    pub client_name: Option<String>,
    pub scope: Option<String>,
    pub jwks: Option<JwkSet>,
    pub jwks_uri: Option<String>,
    /// SMART: where an EHR launch opens the app.
    pub launch_uri: Option<String>,
}

/// RFC 7591 §3.2.1 response.
#[derive(Debug, Clone, Serialize)]
pub struct RegistrationResponse {
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    pub client_id_issued_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    pub token_endpoint_auth_method: String,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub redirect_uris: Vec<String>,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks: Option<JwkSet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch_uri: Option<String>,
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationError {
    /// Registration is switched off (no initial access token configured).
    Disabled,
    /// Missing or wrong initial access token (RFC 6750 `invalid_token`).
    Unauthorized(OAuthError),
    /// RFC 7591 §3.2.2 error.
    Rejected(OAuthError),
}

impl From<OAuthError> for RegistrationError {
    fn from(err: OAuthError) -> Self {
        Self::Rejected(err)
    }
}

fn metadata_error(description: impl Into<String>) -> RegistrationError {
    RegistrationError::Rejected(OAuthError::new(ErrorCode::InvalidClientMetadata, description))
}

/// Registers a client.
pub async fn register(
    app: &App,
    authorization: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<RegistrationResponse, RegistrationError> {
    let Some(expected) = &app.config.registration.initial_access_token else {
        return Err(RegistrationError::Disabled);
    };
    let presented = authorization
        .and_then(|h| h.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let authorized = presented.is_some_and(|token| bool::from(token.as_bytes().ct_eq(expected.expose().as_bytes())));
    if !authorized {
        return Err(RegistrationError::Unauthorized(OAuthError::invalid_token(
            "a valid initial access token is required",
        )));
    }
    let is_json = content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(OAuthError::invalid_request("the body must be application/json").into());
    }
    let request: RegistrationRequest = serde_json::from_slice(body)
        .map_err(|e| metadata_error(format!("the body is not valid client metadata: {e}")))?;

    let now = app.clock.now();
    let (metadata, secret) = to_metadata(app, request, now)?;
    let client = app.clients.register(metadata, now).await.map_err(|e| match e {
        RegisterClientError::Invalid(problems) => {
            let first = &problems[0];
            let code = if first.field.starts_with("redirect_uris") {
                ErrorCode::InvalidRedirectUri
            } else {
                ErrorCode::InvalidClientMetadata
            };
            let all: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect();
            RegistrationError::Rejected(OAuthError::new(code, all.join("; ")))
        }
        RegisterClientError::Taken(_) => RegistrationError::Rejected(OAuthError::server_error()),
        RegisterClientError::Store(e) => RegistrationError::Rejected(e.into()),
    })?;
    tracing::info!(client_id = %client.id, method = client.auth.method().as_str(), "client registered");
    let m = &client.metadata;
    Ok(RegistrationResponse {
        client_id: client.id.clone(),
        client_secret_expires_at: secret.as_ref().map(|_| 0),
        client_secret: secret,
        client_id_issued_at: now,
        client_name: m.client_name.clone(),
        token_endpoint_auth_method: m.token_endpoint_auth_method.clone(),
        grant_types: m.grant_types.clone(),
        response_types: if client.allows_grant(GrantType::AuthorizationCode) {
            vec!["code".into()]
        } else {
            Vec::new()
        },
        redirect_uris: m.redirect_uris.clone(),
        scope: m.scope.clone(),
        jwks: m.jwks.clone(),
        jwks_uri: m.jwks_uri.clone(),
        launch_uri: m.launch_uri.clone(),
    })
}

/// Applies RFC 7591 defaults and our registration policy; returns the metadata and the plain
/// secret (shown once, stored only hashed).
fn to_metadata(
    app: &App,
    request: RegistrationRequest,
    now: i64,
) -> Result<(ClientMetadata, Option<String>), RegistrationError> {
    let method_name = request.token_endpoint_auth_method.unwrap_or_else(|| "client_secret_basic".into());
    let method = AuthMethod::parse(&method_name)
        .ok_or_else(|| metadata_error(format!("token_endpoint_auth_method `{method_name}` is not supported")))?;
    let grant_types = request.grant_types.unwrap_or_else(|| vec!["authorization_code".into()]);
    let wants_code = grant_types.iter().any(|g| g == GrantType::AuthorizationCode.as_str());
    // RFC 7591 §2 defaults response_types to ["code"], which only fits a client that uses the
    // authorization endpoint: absent, it follows from the grant types instead.
    let response_types =
        request.response_types.unwrap_or_else(|| if wants_code { vec!["code".into()] } else { Vec::new() });
    if response_types.iter().any(|r| r != "code") || (wants_code != response_types.contains(&"code".to_owned())) {
        return Err(metadata_error("response_types must be [\"code\"] with authorization_code, and empty otherwise"));
    }

    let allowed = ScopeSet::parse(&app.config.registration.allowed_scope).unwrap_or_default();
    let requested =
        ScopeSet::parse(request.scope.as_deref().unwrap_or_default()).map_err(|e| metadata_error(e.to_string()))?;
    let system_grant = grant_types
        .iter()
        .any(|g| g == GrantType::ClientCredentials.as_str() || g == GrantType::TokenExchange.as_str());
    let scope: ScopeSet = requested
        .narrow_to(&allowed)
        .iter()
        .filter(|s| system_grant || s.as_resource().is_none_or(|r| r.context != ScopeContext::System))
        .cloned()
        .collect();
    let scope = scope.to_string();

    let production = !app.config.public_url_is_loopback();
    if production && request.jwks_uri.as_deref().is_some_and(|u| !u.starts_with("https://")) {
        return Err(metadata_error("jwks_uri must be https"));
    }
    if let Some(set) = &request.jwks {
        for (i, jwk) in set.keys.iter().enumerate() {
            let usable = Algorithm::ALL.iter().any(|alg| VerifyingKey::from_jwk(jwk, *alg).is_ok());
            if !usable {
                return Err(metadata_error(format!(
                    "jwks.keys[{i}] is not a usable RSA (2048+ bits) or P-256/P-384 key"
                )));
            }
        }
    }

    let secret =
        matches!(method, AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost).then(|| random_token(32));
    let metadata = ClientMetadata {
        client_id: random_token(16),
        client_name: request.client_name,
        token_endpoint_auth_method: method.as_str().to_owned(),
        client_secret_hash: secret.as_deref().map(hash_secret),
        jwks: request.jwks,
        jwks_uri: request.jwks_uri,
        redirect_uris: request.redirect_uris,
        grant_types,
        scope,
        launch_uri: request.launch_uri,
        client_id_issued_at: Some(now),
        ..Default::default()
    };
    Ok((metadata, secret))
}
