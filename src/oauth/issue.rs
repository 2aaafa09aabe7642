//! Issuing the tokens of a user grant: the access token (RFC 9068) with launch context, the ID
//! token (OpenID Connect Core §2, RS256) and a rotating refresh token. Shared by the
//! `authorization_code` and `refresh_token` grants.

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::error::OAuthError;
use super::token_endpoint::TokenResponse;
use crate::app::App;
use crate::domain::client::Client;
use crate::domain::identity::Identity;
use crate::domain::launch::LaunchContext;
use crate::domain::scope::{Scope, ScopeSet};
use crate::token::access::{self, AccessTokenClaims};
use crate::token::random_token;

/// What a grant record keeps besides its columns (stored as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantData {
    pub identity: Identity,
    pub context: LaunchContext,
    /// `online_access`: the grant ends with the sign-in session.
    pub online: bool,
    /// A public client's refresh tokens are bound to the DPoP key of the code exchange
    /// (RFC 9449 §5): every refresh must be proved with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_jkt: Option<String>,
}

/// What to issue.
#[derive(Debug)]
pub struct Issue<'a> {
    pub client: &'a Client,
    pub identity: &'a Identity,
    pub scope: &'a ScopeSet,
    pub context: &'a LaunchContext,
    pub grant_id: &'a str,
    pub session_id: Option<&'a str>,
    pub nonce: Option<&'a str>,
    /// A new refresh token to hand out, if the grant has one.
    pub refresh_token: Option<String>,
    /// The DPoP key the access token is bound to.
    pub dpop_jkt: Option<&'a str>,
    pub now: i64,
}

/// SHA-256 of an opaque token (refresh tokens and codes are stored only hashed).
pub fn token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, token.as_bytes()))
}

/// True when the scope asks for a refresh token (SMART: `offline_access` or `online_access`).
pub fn wants_refresh(scope: &ScopeSet) -> bool {
    scope.contains(&Scope::OfflineAccess) || scope.contains(&Scope::OnlineAccess)
}

/// A new refresh token (the store keeps only its [`token_hash`]).
pub fn new_refresh_token() -> String {
    random_token(32)
}

fn signing_failed(e: crate::token::jose::JoseError) -> OAuthError {
    tracing::error!(error = %e, "token signing failed");
    OAuthError::server_error()
}

/// The absolute `fhirUser` URL.
pub fn absolute_fhir_user(app: &App, reference: &str) -> String {
    format!("{}/{reference}", app.fhir_base())
}

/// Signs the access token (and ID token when `openid` was granted) and builds the response.
pub fn issue_tokens(app: &App, issue: Issue<'_>) -> Result<TokenResponse, OAuthError> {
    let lifetime =
        i64::from(issue.client.access_token_lifetime_secs.unwrap_or(app.config.tokens.access_token_lifetime_secs));
    let policy = app.policy.load_full();
    let holder = super::scope_policy::user_holder(&**policy, issue.identity, &issue.client.id);
    let narrowed = super::scope_policy::narrow(&**policy, &holder, issue.scope);
    let scope = narrowed.to_string();
    let context = issue.context;
    let claims = AccessTokenClaims {
        iss: app.issuer().to_owned(),
        sub: issue.identity.platform_subject(),
        aud: app.fhir_base().to_owned(),
        exp: issue.now + lifetime,
        iat: issue.now,
        jti: random_token(18),
        client_id: issue.client.id.clone(),
        scope: scope.clone(),
        grant_id: Some(issue.grant_id.to_owned()),
        auth_time: Some(issue.identity.auth_time),
        acr: issue.identity.acr.clone(),
        amr: (!issue.identity.amr.is_empty()).then(|| issue.identity.amr.clone()),
        fhir_user: issue.identity.fhir_user.clone(),
        patient: context.patient.clone(),
        encounter: context.encounter.clone(),
        fhir_context: (!context.fhir_context.is_empty())
            .then(|| serde_json::Value::Array(context.fhir_context.clone())),
        roles: holder.roles,
        org: issue.identity.org.clone(),
        assurance: Some(issue.identity.assurance),
        need_patient_banner: context.need_patient_banner,
        intent: context.intent.clone(),
        smart_style_url: context.smart_style_url.clone(),
        tenant: context.tenant.clone(),
        cnf: super::token_endpoint::confirmation(issue.dpop_jkt),
        // a proxy acts for the patient in context: the actor is named (RFC 8693 §4.1)
        act: issue
            .identity
            .proxy_for
            .as_ref()
            .map(|_| serde_json::json!({"sub": issue.identity.platform_subject(), "iss": issue.identity.issuer})),
        ..Default::default()
    };
    let ring = app.keys.ring();
    let access_token = access::mint(&ring, &claims).map_err(signing_failed)?;

    let id_token = if issue.scope.contains(&Scope::OpenId) {
        let mut id = serde_json::json!({
            "iss": app.issuer(),
            "sub": claims.sub,
            "aud": issue.client.id,
            "azp": issue.client.id,
            "exp": issue.now + app.config.launch.id_token_lifetime_secs,
            "iat": issue.now,
            "auth_time": issue.identity.auth_time,
            "at_hash": at_hash(&access_token),
        });
        if let Some(nonce) = issue.nonce {
            id["nonce"] = nonce.into();
        }
        if let Some(sid) = issue.session_id {
            id["sid"] = sid.into();
        }
        if let Some(acr) = &issue.identity.acr {
            id["acr"] = acr.clone().into();
        }
        if !issue.identity.amr.is_empty() {
            id["amr"] = issue.identity.amr.clone().into();
        }
        if issue.scope.contains(&Scope::FhirUser) || issue.scope.contains(&Scope::OidcClaims("profile")) {
            if let Some(user) = &issue.identity.fhir_user {
                id["fhirUser"] = absolute_fhir_user(app, user).into();
            }
        }
        if issue.scope.contains(&Scope::OidcClaims("profile")) {
            if let Some(name) = &issue.identity.name {
                id["name"] = name.clone().into();
            }
        }
        Some(ring.id_token_key(issue.client.id_token_es256).sign("JWT", &id).map_err(signing_failed)?)
    } else {
        None
    };

    Ok(TokenResponse {
        access_token,
        token_type: super::token_endpoint::token_type(issue.dpop_jkt),
        expires_in: lifetime,
        scope,
        refresh_token: issue.refresh_token,
        id_token,
        context: context.token_parameters(),
        subject: claims.sub.clone(),
        dpop_nonce: None,
        audit_note: None,
    })
}

/// OpenID Connect Core §3.1.3.6: the left half of SHA-256 of the access token, base64url.
fn at_hash(access_token: &str) -> String {
    let hash = digest(&SHA256, access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&hash.as_ref()[..16])
}
