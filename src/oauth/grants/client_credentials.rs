//! `client_credentials` for SMART Backend Services (SMART App Launch 2.2, backend-services):
//! private_key_jwt clients only, `system/` scopes (v1, v2 and granular), at most 300 s, no
//! refresh token.

use super::GrantRequest;
use crate::domain::client::AuthMethod;
use crate::domain::scope::{Scope, ScopeContext};
use crate::oauth::error::OAuthError;
use crate::oauth::token_endpoint::TokenResponse;
use crate::token::access::{self, AccessTokenClaims};
use crate::token::random_token;

/// SMART backend services: `expires_in` SHOULD NOT exceed 300.
const BACKEND_MAX_LIFETIME_SECS: u32 = 300;

pub async fn grant(request: GrantRequest<'_>) -> Result<TokenResponse, OAuthError> {
    let GrantRequest { app, client, requested_scope, dpop_jkt: request_jkt, now, .. } = request;
    if client.method != AuthMethod::PrivateKeyJwt {
        return Err(OAuthError::unauthorized_client("client_credentials needs private_key_jwt client authentication"));
    }
    let requested = requested_scope.ok_or_else(|| OAuthError::invalid_scope("`scope` is required"))?;
    if let Some(bad) = requested.iter().find(|s| !is_system_scope(s)) {
        return Err(OAuthError::invalid_scope(format!(
            "`{bad}` cannot be granted to a backend service; use system/ scopes"
        )));
    }
    let granted = requested.narrow_to(&client.client.scope);
    let policy = app.policy.load_full();
    let holder = crate::oauth::scope_policy::system_holder(&**policy, &client.client);
    let granted = crate::oauth::scope_policy::narrow(&**policy, &holder, &granted);
    if granted.is_empty() {
        return Err(OAuthError::invalid_scope(unmapped_or_refused(app, &client.client.id, &holder.roles)));
    }

    let lifetime = client
        .client
        .access_token_lifetime_secs
        .unwrap_or(app.config.tokens.backend_access_token_lifetime_secs)
        .min(app.config.tokens.backend_access_token_lifetime_secs)
        .min(BACKEND_MAX_LIFETIME_SECS);
    let scope = granted.to_string();
    let claims = AccessTokenClaims {
        iss: app.issuer().to_owned(),
        sub: client.client.id.clone(),
        aud: app.fhir_base().to_owned(),
        exp: now + i64::from(lifetime),
        iat: now,
        jti: random_token(18),
        client_id: client.client.id.clone(),
        scope: scope.clone(),
        roles: holder.roles,
        assurance: Some(3),
        cnf: crate::oauth::token_endpoint::confirmation(request_jkt),
        ..Default::default()
    };
    let access_token = access::mint(&app.keys.ring(), &claims).map_err(|e| {
        tracing::error!(error = %e, "access token signing failed");
        OAuthError::server_error()
    })?;
    tracing::info!(client_id = %claims.client_id, jti = %claims.jti, scope = %scope, "issued backend services token");
    Ok(TokenResponse {
        access_token,
        token_type: crate::oauth::token_endpoint::token_type(request_jkt),
        expires_in: i64::from(lifetime),
        scope,
        refresh_token: None,
        id_token: None,
        context: serde_json::Map::new(),
        subject: claims.sub.clone(),
        dpop_nonce: None,
        audit_note: None,
    })
}

/// Why nothing could be granted: the usual cause is that no operator has given the client a role
/// yet, which the message says, naming the client and the policy files to edit.
fn unmapped_or_refused(app: &crate::app::App, client_id: &str, roles: &[String]) -> String {
    let folder = app.config.policy.dir.as_ref().map(|d| d.display().to_string());
    match (roles.is_empty(), folder) {
        (true, Some(folder)) => format!(
            "client `{client_id}` has no role in the access policy: an operator grants one with a [[map]] entry \
             (source = \"system\", clients = [\"{client_id}\"]) in the policy files in `{folder}`"
        ),
        (true, None) => format!("none of the requested scopes is allowed for client `{client_id}`"),
        (false, _) => format!(
            "the access policy permits none of the requested scopes to client `{client_id}` (roles: {})",
            roles.join(", ")
        ),
    }
}

/// `system/` resource scopes, and extension scopes (such as the introspection scope).
fn is_system_scope(scope: &Scope) -> bool {
    match scope {
        Scope::Resource(r) => r.context == ScopeContext::System,
        Scope::Extension(_) => true,
        _ => false,
    }
}
