//! Token revocation (RFC 7009). The client authenticates as at the token endpoint; a token that
//! is unknown, invalid, expired or another client's gets the same 200 and nothing changes.
//! Revoking an access token makes it inactive everywhere from that moment; revoking a refresh
//! token revokes its grant (RFC 7009 §2.1): the whole refresh family and every access token the
//! grant issued.

use super::client_auth::{ClientCredentials, authenticate_client};
use super::error::OAuthError;
use super::grants::revoke_grant;
use super::issue::{GrantData, token_hash};
use super::params::{FormRequest, Params};
use crate::app::App;
use crate::token::access::CheckError;

/// What a revocation did (the response is 200 either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    AccessToken,
    /// A refresh token, and with it its grant.
    Grant,
    Nothing,
}

pub async fn revoke(app: &App, request: FormRequest<'_>) -> Result<Revoked, OAuthError> {
    let params = Params::from_form(request.content_type, request.body)?;
    let client =
        authenticate_client(app, ClientCredentials { authorization: request.authorization, params: &params }).await?;
    let token = params.require("token")?;
    // RFC 7009 §2.1: an unknown token_type_hint is ignored and the search extended.
    let now = app.clock.now();
    let claims = match app.check_access_token(token, None).await {
        Ok(claims) => claims,
        // already revoked: RFC 7009 §2.2 answers 200 all the same
        Err(CheckError::Revoked) => return Ok(Revoked::Nothing),
        Err(CheckError::Store(e)) => return Err(e.into()),
        Err(CheckError::Invalid(_)) => return revoke_refresh_token(app, &client.client.id, token, now).await,
    };
    if claims.client_id != client.client.id {
        tracing::warn!(client_id = %client.client.id, owner = %claims.client_id, "revocation of another client's token ignored");
        return Ok(Revoked::Nothing);
    }
    app.stores.durable.revoke(&claims.jti, claims.exp).await?;
    tracing::info!(client_id = %claims.client_id, jti = %claims.jti, "access token revoked");
    let actor = crate::audit::Actor {
        subject: Some(claims.sub.clone()),
        client_id: Some(claims.client_id.clone()),
        ..Default::default()
    };
    let event =
        crate::audit::AuditEvent::new(crate::audit::AuditKind::TokenRevoke, crate::audit::AuditOutcome::Success, actor)
            .patient(claims.patient.as_deref())
            .detail(format!("access token {}", claims.jti));
    app.audit.record_or_log(&event).await;
    Ok(Revoked::AccessToken)
}

/// Revokes the grant of a refresh token the client holds.
async fn revoke_refresh_token(app: &App, client_id: &str, token: &str, now: i64) -> Result<Revoked, OAuthError> {
    let Some(grant) = app.stores.durable.grant_by_refresh_token(&token_hash(token)).await? else {
        return Ok(Revoked::Nothing);
    };
    if grant.client_id != client_id {
        tracing::warn!(client_id = %client_id, owner = %grant.client_id, "revocation of another client's refresh token ignored");
        return Ok(Revoked::Nothing);
    }
    revoke_grant(app, &grant.id, now).await?;
    tracing::info!(client_id = %client_id, grant_id = %grant.id, "refresh token revoked with its grant");
    let data: Option<GrantData> = serde_json::from_str(&grant.data).ok();
    let actor = crate::audit::Actor {
        subject: Some(grant.subject.clone()),
        client_id: Some(client_id.to_owned()),
        ..Default::default()
    };
    let event =
        crate::audit::AuditEvent::new(crate::audit::AuditKind::TokenRevoke, crate::audit::AuditOutcome::Success, actor)
            .patient(data.as_ref().and_then(|d| d.context.patient.as_deref()))
            .detail(format!("refresh token and its grant {}", grant.id));
    app.audit.record_or_log(&event).await;
    Ok(Revoked::Grant)
}
