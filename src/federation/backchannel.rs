//! OpenID Connect Back-Channel Logout 1.0 §2.6: a verified `logout_token` (signed by the
//! provider, our client as audience, recent `iat`, the back-channel event, `sid` or `sub`, no
//! `nonce`, a `jti` never seen before) names the upstream session to end.

use serde_json::Value;

use super::SignInError;
use super::oidc::OidcClient;

/// The event member a logout token must carry.
pub const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// How old a logout token may be (NHS RPs use 5 minutes).
pub const MAX_AGE_SECS: i64 = 300;

/// Who is to be logged out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutTarget {
    pub sid: Option<String>,
    pub sub: Option<String>,
    pub jti: String,
    pub exp: i64,
}

/// Verifies a logout token from `client`'s provider.
pub async fn verify_logout_token(client: &OidcClient, token: &str, now: i64) -> Result<LogoutTarget, SignInError> {
    let claims = client.verify_jwt(token, None).await?;
    let fail = |why: &str| Err(SignInError::IdToken(why.to_owned()));
    let iat = claims.get("iat").and_then(Value::as_i64).unwrap_or(0);
    if now - iat > MAX_AGE_SECS {
        return fail("the logout token is too old");
    }
    if !claims.get("events").and_then(|e| e.get(LOGOUT_EVENT)).is_some_and(Value::is_object) {
        return fail("the token is not a back-channel logout token (events)");
    }
    if claims.contains_key("nonce") {
        return fail("a logout token must not carry a nonce");
    }
    let sid = claims.get("sid").and_then(Value::as_str).map(str::to_owned);
    let sub = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
    if sid.is_none() && sub.is_none() {
        return fail("the logout token names neither sid nor sub");
    }
    let jti = claims.get("jti").and_then(Value::as_str).filter(|j| !j.is_empty()).map(str::to_owned);
    let Some(jti) = jti else { return fail("the logout token has no jti") };
    let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(iat + MAX_AGE_SECS);
    Ok(LogoutTarget { sid, sub, jti, exp })
}
