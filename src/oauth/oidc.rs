//! OpenID Connect beyond the ID token: UserInfo (Core §5.3) and RP-initiated logout (RP-Initiated
//! Logout 1.0), which ends the sign-in session and the `online_access` grants made under it.

use serde::Deserialize;
use serde_json::{Value, json};

use super::dpop::SenderRefusal;
use super::error::{Challenge, ErrorCode, OAuthError};
use super::grants::revoke_grant;
use super::issue::{GrantData, absolute_fhir_user};
use crate::app::App;
use crate::domain::scope::{Scope, ScopeSet};
use crate::keyspaces::SIGN_INS;
use crate::token::access::CheckError;
use crate::token::jose;
use crate::token::keys::{ACCESS_TOKEN_ALG, ID_TOKEN_ALG};

/// UserInfo: the claims of the signed-in user, for a token holding `openid`. A DPoP-bound token
/// comes under the DPoP scheme with a proof of its key over this request (`method url`).
pub async fn userinfo(
    app: &App,
    authorization: Option<&str>,
    dpop: super::dpop::DpopHeader<'_>,
    method: &str,
    url: &str,
) -> Result<Value, OAuthError> {
    use crate::token::Scheme;
    let (scheme, token) = crate::token::credentials(authorization)
        .filter(|(_, t)| !t.is_empty())
        .ok_or_else(|| OAuthError::invalid_token("an access token is required"))?;
    let challenge = if scheme == Scheme::Dpop { Challenge::Dpop } else { Challenge::Bearer };
    let refuse = |code: ErrorCode, why: &str| OAuthError::new(code, why).with_challenge(challenge).with_status(401);
    let claims = app.check_access_token(token, Some(app.fhir_base())).await.map_err(|e| match e {
        CheckError::Store(e) => e.into(),
        CheckError::Invalid(_) | CheckError::Revoked => {
            refuse(ErrorCode::InvalidToken, "the access token is not active")
        }
    })?;
    app.check_sender(scheme, token, &claims, dpop, method, url).await.map_err(|refusal| match refusal {
        SenderRefusal::Store(e) => e.into(),
        refused @ SenderRefusal::Refused { code, .. } => {
            refuse(code, &refused.description()).with_challenge(Challenge::Dpop)
        }
    })?;
    let scope = ScopeSet::parse(&claims.scope).unwrap_or_default();
    if !scope.contains(&Scope::OpenId) {
        return Err(OAuthError::new(ErrorCode::InsufficientScope, "the token was not granted `openid`")
            .with_challenge(Challenge::Bearer));
    }
    let mut out = json!({"sub": claims.sub});
    if let Some(user) = &claims.fhir_user {
        out["fhirUser"] = absolute_fhir_user(app, user).into();
    }
    if scope.contains(&Scope::OidcClaims("profile")) {
        if let Some(grant_id) = &claims.grant_id {
            if let Some(grant) = app.stores.durable.get_grant(grant_id).await? {
                if let Ok(data) = serde_json::from_str::<GrantData>(&grant.data) {
                    if let Some(name) = data.identity.name {
                        out["name"] = name.into();
                    }
                }
            }
        }
    }
    Ok(out)
}

/// What a verified `id_token_hint` says.
#[derive(Debug, Clone, Deserialize)]
pub struct IdTokenHint {
    pub sub: String,
    pub aud: String,
    #[serde(default)]
    pub sid: Option<String>,
}

/// Verifies an ID token we issued (its expiry does not matter for logout).
pub fn verify_id_token_hint(app: &App, hint: &str) -> Option<IdTokenHint> {
    let jws = jose::decode(hint, &[ID_TOKEN_ALG, ACCESS_TOKEN_ALG]).ok()?;
    // an access token is signed by the same ES256 key as an ES256 ID token: only `typ: JWT` is one
    if jws.header.typ.as_deref() != Some("JWT") {
        return None;
    }
    let ring = app.keys.ring();
    let key = ring.verifying_key(jws.header.kid.as_deref()?)?;
    let payload = jws.verify(key).ok()?;
    let claims: Value = serde_json::from_slice(&payload).ok()?;
    if claims["iss"] != app.issuer() {
        return None;
    }
    serde_json::from_value(claims).ok()
}

/// Ends sign-in session `session_id`: it can no longer refresh `online_access` grants, and those
/// grants (and their access tokens) are revoked now.
pub async fn end_session(app: &App, session_id: &str) -> Result<usize, OAuthError> {
    SIGN_INS.delete(app.stores.ephemeral.as_ref(), session_id).await?;
    let now = app.clock.now();
    let grants = app.stores.durable.grants_of_session(session_id).await?;
    for grant in &grants {
        revoke_grant(app, grant, now).await?;
    }
    tracing::info!(session = %session_id, revoked = grants.len(), "sign-in session ended");
    Ok(grants.len())
}

/// A `post_logout_redirect_uri` is honoured only when registered for the client.
pub async fn post_logout_target(app: &App, client_id: &str, uri: &str) -> Result<bool, OAuthError> {
    Ok(app.clients.get(client_id).await?.is_some_and(|c| c.post_logout_redirect_uris.iter().any(|u| u == uri)))
}
