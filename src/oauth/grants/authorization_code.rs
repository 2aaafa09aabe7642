//! `authorization_code` (RFC 6749 §4.1.3, RFC 7636 §4.6, SMART App Launch 2.2): the code is
//! taken from the store in one atomic step, bound to the client, the redirect URI and the PKCE
//! verifier. A code presented twice fails, and what it issued is revoked (RFC 6749 §4.1.2).

use std::time::Duration;

use super::GrantRequest;
use crate::domain::client::GrantType;
use crate::domain::pkce;
use crate::domain::scope::{Scope, ScopeSet};
use crate::keyspaces::{CODES, USED_CODES};
use crate::oauth::error::OAuthError;
use crate::oauth::issue::{self, GrantData, Issue, token_hash};
use crate::oauth::token_endpoint::TokenResponse;
use crate::store::GrantRecord;

/// How long a redeemed code is remembered, to catch a second use.
const USED_CODE_MEMORY_SECS: u64 = 3600;

pub async fn grant(request: GrantRequest<'_>) -> Result<TokenResponse, OAuthError> {
    let GrantRequest { app, client, params, dpop_jkt: request_jkt, now, .. } = request;
    let code = params.require("code")?;
    let store = app.stores.ephemeral.as_ref();
    let code_hash = token_hash(code);
    let Some(record) = CODES.take(store, &code_hash).await? else {
        if let Some(grant_id) = USED_CODES.get(store, &code_hash).await? {
            super::revoke_grant(app, &grant_id, now).await?;
            tracing::warn!(client_id = %client.client.id, grant_id = %grant_id, "authorization code reused; its grant is revoked");
            return Err(OAuthError::invalid_grant(
                "the authorization code was already used; the tokens it issued are revoked",
            ));
        }
        return Err(OAuthError::invalid_grant("the authorization code is unknown or expired"));
    };
    USED_CODES.put(store, &code_hash, &record.grant_id, Duration::from_secs(USED_CODE_MEMORY_SECS)).await?;

    if record.client_id != client.client.id {
        return Err(OAuthError::invalid_grant("the authorization code was issued to another client"));
    }
    if record.expires_at <= now {
        return Err(OAuthError::invalid_grant("the authorization code has expired"));
    }
    if params.get("redirect_uri") != Some(record.redirect_uri.as_str()) {
        return Err(OAuthError::invalid_grant("`redirect_uri` does not match the authorization request"));
    }
    let verifier =
        params.get("code_verifier").ok_or_else(|| OAuthError::invalid_grant("missing `code_verifier` (PKCE)"))?;
    if !pkce::verify(verifier, &record.code_challenge) {
        return Err(OAuthError::invalid_grant("`code_verifier` does not match the code challenge"));
    }

    let scope = ScopeSet::parse(&record.scope).map_err(|_| OAuthError::server_error())?;
    let online = !scope.contains(&Scope::OfflineAccess) && scope.contains(&Scope::OnlineAccess);
    let refresh = issue::wants_refresh(&scope) && client.client.allows_grant(GrantType::RefreshToken);
    let config = &app.config;
    let grant_expires = if online {
        now + config.sessions.absolute_timeout_secs
    } else {
        now + config.launch.offline_grant_lifetime_secs
    };
    let dpop_jkt = request_jkt.filter(|_| client.client.is_public()).map(str::to_owned);
    let data = GrantData { identity: record.identity.clone(), context: record.context.clone(), online, dpop_jkt };
    let refresh_token = refresh.then(issue::new_refresh_token);
    app.stores
        .durable
        .insert_grant(
            &GrantRecord {
                id: record.grant_id.clone(),
                client_id: client.client.id.clone(),
                subject: record.identity.platform_subject(),
                scope: record.scope.clone(),
                session_id: online.then(|| record.session_id.clone()).flatten(),
                data: serde_json::to_string(&data).map_err(|_| OAuthError::server_error())?,
                created_at: now,
                expires_at: grant_expires,
                revoked_at: None,
            },
            refresh_token.as_deref().map(token_hash).as_deref(),
        )
        .await?;
    let response = issue::issue_tokens(
        app,
        Issue {
            client: &client.client,
            identity: &record.identity,
            scope: &scope,
            context: &record.context,
            grant_id: &record.grant_id,
            session_id: record.session_id.as_deref(),
            nonce: record.nonce.as_deref(),
            refresh_token,
            dpop_jkt: request_jkt,
            now,
        },
    )?;
    tracing::info!(client_id = %client.client.id, grant_id = %record.grant_id, scope = %response.scope, "tokens issued for an authorization code");
    Ok(response)
}
