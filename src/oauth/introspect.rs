//! Token introspection (RFC 7662 with the SMART App Launch 2.2 token-introspection profile).
//! Callers authenticate as a client, or present a bearer token holding the introspection scope.
//! A privileged caller (bearer token with that scope, or a client allowed that scope) may
//! introspect any token; any other client only its own. Anything inactive, unknown or not the
//! caller's to see is exactly `{"active": false}`.

use serde_json::{Map, Value, json};

use super::client_auth::{ClientCredentials, authenticate_client};
use super::error::{ErrorCode, OAuthError};
use super::params::{FormRequest, Params};
use crate::app::App;
use crate::domain::scope::{Scope, ScopeSet};
use crate::token::access::{AccessTokenClaims, CheckError};

/// Who is asking.
enum Caller {
    Privileged,
    Client(String),
}

/// An access token of ours that is active now, or `None` (inactive, unknown, revoked: all the
/// same to a caller); only a store failure is an error.
async fn active_access_token(app: &App, token: &str) -> Result<Option<AccessTokenClaims>, OAuthError> {
    match app.check_access_token(token, None).await {
        Ok(claims) => Ok(Some(claims)),
        Err(CheckError::Store(e)) => Err(e.into()),
        Err(CheckError::Invalid(_) | CheckError::Revoked) => Ok(None),
    }
}

/// Answers an introspection request with the RFC 7662 §2.2 JSON object.
pub async fn introspect(app: &App, request: FormRequest<'_>) -> Result<Value, OAuthError> {
    let params = Params::from_form(request.content_type, request.body)?;
    let introspection_scope = Scope::parse(&app.config.introspection.scope).ok();
    let caller = if let Some(token) = crate::token::bearer(request.authorization) {
        let claims = active_access_token(app, token)
            .await?
            .ok_or_else(|| OAuthError::invalid_token("the bearer token is not active"))?;
        if claims.dpop_jkt().is_some() {
            return Err(OAuthError::invalid_token(
                "a DPoP-bound token cannot authorize introspection as a bearer token",
            ));
        }
        let scopes = ScopeSet::parse(&claims.scope).unwrap_or_default();
        if !introspection_scope.as_ref().is_some_and(|s| scopes.contains(s)) {
            return Err(OAuthError::new(
                ErrorCode::InsufficientScope,
                format!("the bearer token lacks the `{}` scope", app.config.introspection.scope),
            )
            .with_challenge(super::error::Challenge::Bearer));
        }
        Caller::Privileged
    } else {
        let client =
            authenticate_client(app, ClientCredentials { authorization: request.authorization, params: &params })
                .await?;
        if client.client.is_public() {
            return Err(OAuthError::invalid_client("introspection needs an authenticated client"));
        }
        if introspection_scope.as_ref().is_some_and(|s| client.client.scope.contains(s)) {
            Caller::Privileged
        } else {
            Caller::Client(client.client.id.clone())
        }
    };
    let token = params.require("token")?;

    let Some(claims) = active_access_token(app, token).await? else {
        return Ok(json!({"active": false}));
    };
    if let Caller::Client(id) = &caller {
        if *id != claims.client_id {
            return Ok(json!({"active": false}));
        }
    }
    Ok(active_response(&claims))
}

/// The RFC 7662 active response: every claim, so launch context is echoed as SMART requires.
fn active_response(claims: &AccessTokenClaims) -> Value {
    let mut out = Map::new();
    out.insert("active".into(), Value::Bool(true));
    out.insert("token_type".into(), Value::String(super::token_endpoint::token_type(claims.dpop_jkt()).into()));
    if let Ok(Value::Object(fields)) = serde_json::to_value(claims) {
        for (name, value) in fields {
            if name != "grant_id" {
                out.insert(name, value);
            }
        }
    }
    Value::Object(out)
}
