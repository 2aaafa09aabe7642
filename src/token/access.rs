//! Access tokens: JWTs per RFC 9068 (`typ: at+jwt`), signed ES256, with SMART launch context.

use serde::{Deserialize, Serialize};

use super::jose::{self, Algorithm, JoseError};
use super::keys::{ACCESS_TOKEN_ALG, KeyRing};

/// The `typ` header of an access token (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Claims of a carebroker access token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub sub: String,
    /// The FHIR base URL this token is for.
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: String,
    pub scope: String,
    /// The grant (refresh-token family) this token belongs to; revoking the grant revokes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amr: Option<Vec<String>>,
    #[serde(default, rename = "fhirUser", skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<String>,
    #[serde(default, rename = "fhirContext", skip_serializing_if = "Option::is_none")]
    pub fhir_context: Option<serde_json::Value>,
    /// Platform roles from the role mapping.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// ODS code of the organisation the user acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// Assurance of the sign-in, 0-3 (CIS2 AAL; NHS login P0/P5/P9 as 1/2/3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assurance: Option<u8>,
    /// RFC 8693 §4.1 actor, for delegation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<serde_json::Value>,
    /// RFC 8693 §4.4: who may act for the subject when this token is exchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_act: Option<serde_json::Value>,
    /// SMART launch context echoed at introspection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub need_patient_banner: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smart_style_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// RFC 9449 / RFC 8705 confirmation, for sender-constrained tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<serde_json::Value>,
}

/// Why an access token is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessTokenError {
    #[error(transparent)]
    Jose(#[from] JoseError),
    #[error("the token is not an access token (typ `{0}`)")]
    WrongType(String),
    #[error("the token was not signed by a key of this server")]
    UnknownKey,
    #[error("the token claims are not valid: {0}")]
    BadClaims(String),
    #[error("the token was issued by `{0}`, not this server")]
    WrongIssuer(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token is for `{0}`, not this resource")]
    WrongAudience(String),
}

/// Signs `claims` with the current access-token key.
pub fn mint(keys: &KeyRing, claims: &AccessTokenClaims) -> Result<String, JoseError> {
    keys.access_token_key().sign(ACCESS_TOKEN_TYP, claims)
}

/// Verifies an access token of ours: ES256 only, `typ` at+jwt, a published `kid`, our issuer, not
/// expired at `now`, and (when given) the expected audience.
pub fn verify(
    keys: &KeyRing,
    token: &str,
    issuer: &str,
    audience: Option<&str>,
    now: i64,
) -> Result<AccessTokenClaims, AccessTokenError> {
    const ALLOWED: [Algorithm; 1] = [ACCESS_TOKEN_ALG];
    let jws = jose::decode(token, &ALLOWED)?;
    let typ = jws.header.typ.clone().unwrap_or_default();
    if !typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) && !typ.eq_ignore_ascii_case("application/at+jwt") {
        return Err(AccessTokenError::WrongType(typ));
    }
    let key = jws.header.kid.as_deref().and_then(|kid| keys.verifying_key(kid)).ok_or(AccessTokenError::UnknownKey)?;
    let payload = jws.verify(key)?;
    let claims: AccessTokenClaims =
        serde_json::from_slice(&payload).map_err(|e| AccessTokenError::BadClaims(e.to_string()))?;
    if claims.iss != issuer {
        return Err(AccessTokenError::WrongIssuer(claims.iss));
    }
    if claims.exp <= now {
        return Err(AccessTokenError::Expired);
    }
    if let Some(aud) = audience {
        if claims.aud != aud {
            return Err(AccessTokenError::WrongAudience(claims.aud));
        }
    }
    Ok(claims)
}

impl AccessTokenClaims {
    /// The thumbprint of the DPoP key this token is bound to (`cnf.jkt`), if it is bound.
    pub fn dpop_jkt(&self) -> Option<&str> {
        self.cnf.as_ref().and_then(|c| c.get("jkt")).and_then(serde_json::Value::as_str)
    }
}

/// Why an access token is not active.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The token does not verify (signature, type, issuer, expiry, audience).
    #[error(transparent)]
    Invalid(#[from] AccessTokenError),
    /// The token verifies but it, or the grant it belongs to, has been revoked.
    #[error("the token has been revoked")]
    Revoked,
    /// The revocation list could not be read: fail closed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The one check of an access token of ours, used wherever one is presented (the FHIR guard,
/// introspection, userinfo, revocation): [`verify`] (signature, `typ`, issuer, expiry and, when
/// given, audience), then neither its `jti` nor its grant is revoked.
pub async fn check_active(
    keys: &KeyRing,
    revocations: &dyn crate::store::RevocationStore,
    token: &str,
    issuer: &str,
    audience: Option<&str>,
    now: i64,
) -> Result<AccessTokenClaims, CheckError> {
    let claims = verify(keys, token, issuer, audience, now)?;
    let mut ids = vec![claims.jti.as_str()];
    if let Some(grant) = &claims.grant_id {
        ids.push(grant);
    }
    if revocations.is_revoked(&ids).await? {
        return Err(CheckError::Revoked);
    }
    Ok(claims)
}
