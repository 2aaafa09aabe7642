//! `refresh_token` (RFC 6749 §6) with rotation: every use returns a new refresh token and uses
//! the old one up in one atomic step; presenting a used one revokes the whole grant (SMART best
//! practices; OAuth 2.0 Security BCP §4.14). `scope` may repeat or narrow, never widen. Launch
//! context stays with the grant. An `online_access` grant ends with its sign-in session.

use super::GrantRequest;
use crate::domain::scope::ScopeSet;
use crate::keyspaces::SIGN_INS;
use crate::oauth::error::{ErrorCode, OAuthError};
use crate::oauth::issue::{self, GrantData, Issue, token_hash};
use crate::oauth::token_endpoint::TokenResponse;
use crate::store::{GrantRecord, RefreshTokenUse, Rotation};

pub async fn grant(request: GrantRequest<'_>) -> Result<TokenResponse, OAuthError> {
    let GrantRequest { app, client, params, requested_scope, dpop_jkt, now } = request;
    let presented = params.require("refresh_token")?;
    let durable = &app.stores.durable;
    let hash = token_hash(presented);
    // The presented token is spent and the next one stored in one transaction; the next one is
    // handed out only if every check below passes (a refused refresh leaves it with nobody). A
    // public client's DPoP binding is checked in that transaction before anything is spent.
    let next = issue::new_refresh_token();
    let next_hash = token_hash(&next);
    let public = client.client.is_public();
    let refusal = std::sync::OnceLock::new();
    let may_spend = |grant: &GrantRecord| match public.then(|| refresh_binding(grant, dpop_jkt)) {
        Some(Err(why)) => {
            let _ = refusal.set(why);
            false
        }
        _ => true,
    };
    let rotation =
        Rotation { presented: &hash, next: &next_hash, client_id: &client.client.id, now, may_spend: &may_spend };
    let (grant, token_expires, next_stored) = match durable.rotate_refresh_token(rotation).await? {
        RefreshTokenUse::Refused => return Err(refusal.into_inner().unwrap_or_else(OAuthError::server_error)),
        RefreshTokenUse::Unknown => return Err(OAuthError::invalid_grant("the refresh token is unknown")),
        RefreshTokenUse::Reused { grant_id } => {
            super::revoke_grant(app, &grant_id, now).await?;
            tracing::warn!(grant_id = %grant_id, "a used refresh token was presented again; the grant is revoked");
            return Err(OAuthError::invalid_grant("the refresh token was already used; the grant is revoked"));
        }
        RefreshTokenUse::Fresh { grant, expires_at, next_stored } => {
            (grant.ok_or_else(|| OAuthError::invalid_grant("the grant no longer exists"))?, expires_at, next_stored)
        }
    };
    if grant.client_id != client.client.id {
        // Presented by the wrong client: the token is now spent, so the real client's next use is
        // seen as a replay and the grant ends. That is the safe outcome of a leaked token.
        return Err(OAuthError::invalid_grant("the refresh token was issued to another client"));
    }
    if grant.revoked_at.is_some() {
        return Err(OAuthError::invalid_grant("the grant has been revoked"));
    }
    if grant.expires_at <= now || token_expires <= now || !next_stored {
        return Err(OAuthError::invalid_grant("the grant has expired"));
    }
    let data: GrantData = serde_json::from_str(&grant.data).map_err(|_| OAuthError::server_error())?;
    if data.online {
        let alive = match &grant.session_id {
            Some(sid) => SIGN_INS.contains(app.stores.ephemeral.as_ref(), sid).await?,
            None => false,
        };
        if !alive {
            super::revoke_grant(app, &grant.id, now).await?;
            return Err(OAuthError::invalid_grant("the sign-in session of this online_access grant has ended"));
        }
    }

    if data.identity.proxy_for.is_some() {
        // a proxy acts only while the relationship does: asked again at every refresh
        match app.recheck_proxy(&data.identity).await {
            Ok(()) => {}
            Err(crate::federation::SignInError::Upstream(why)) => {
                return Err(OAuthError::new(ErrorCode::TemporarilyUnavailable, why));
            }
            Err(why) => {
                super::revoke_grant(app, &grant.id, now).await?;
                return Err(OAuthError::invalid_grant(format!("you can no longer act for this person: {why}")));
            }
        }
    }

    let original = ScopeSet::parse(&grant.scope).map_err(|_| OAuthError::server_error())?;
    let scope = match requested_scope {
        None => original,
        Some(requested) if requested.is_within(&original) => requested,
        Some(_) => {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                "a refresh may keep or narrow the scope, never widen it",
            ));
        }
    };
    let refresh_token = Some(next);
    let response = issue::issue_tokens(
        app,
        Issue {
            client: &client.client,
            identity: &data.identity,
            scope: &scope,
            context: &data.context,
            grant_id: &grant.id,
            session_id: grant.session_id.as_deref(),
            nonce: None,
            refresh_token,
            dpop_jkt,
            now,
        },
    )?;
    tracing::info!(client_id = %client.client.id, grant_id = %grant.id, "refresh token rotated");
    Ok(response)
}

/// A public client's refresh token bound to a DPoP key is refused, and not spent, without a
/// proof made with that key (RFC 9449 §5). Asked by the store before it spends the token.
fn refresh_binding(grant: &GrantRecord, dpop_jkt: Option<&str>) -> Result<(), OAuthError> {
    let data: GrantData = serde_json::from_str(&grant.data).map_err(|_| OAuthError::server_error())?;
    match (data.dpop_jkt.as_deref(), dpop_jkt) {
        (Some(bound), Some(presented)) if bound == presented => Ok(()),
        (Some(_), _) => Err(OAuthError::new(
            ErrorCode::InvalidDpopProof,
            "the refresh token is bound to a DPoP key: send a proof made with that key",
        )),
        (None, _) => Ok(()),
    }
}
