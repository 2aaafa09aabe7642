//! The token endpoint as a pipeline in a fixed order: parse the form (refusing repeated
//! parameters and non-form bodies) -> authenticate the client -> is the grant type known, enabled
//! and allowed for this client -> parse the requested scope -> the grant handler. The HTTP layer
//! adds `Cache-Control: no-store` and `Pragma: no-cache` to every answer.

use serde::Serialize;

use super::client_auth::{AuthenticatedClient, ClientCredentials, authenticate_client, identifies_client};
use super::error::{ErrorCode, OAuthError};
use super::grants::{self, GrantRequest};
use super::params::{FormRequest, Params};
use crate::app::App;
use crate::domain::client::GrantType;
use crate::domain::scope::ScopeSet;

/// RFC 6749 §5.1 successful response, plus SMART launch context.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// SMART launch-context parameters (`patient`, `encounter`, `fhirContext`, ...).
    #[serde(flatten)]
    pub context: serde_json::Map<String, serde_json::Value>,
    /// Who the token speaks for (for the audit log; not sent).
    #[serde(skip)]
    pub subject: String,
    /// The DPoP server nonce to send in `DPoP-Nonce` (a header, not in the body).
    #[serde(skip)]
    pub dpop_nonce: Option<String>,
    /// More for the audit record (a token exchange's subject token type, issuer and actors).
    #[serde(skip)]
    pub audit_note: Option<String>,
}

/// The `token_type` of an access token bound to a DPoP key, or not.
pub fn token_type(dpop_jkt: Option<&str>) -> &'static str {
    if dpop_jkt.is_some() { "DPoP" } else { "Bearer" }
}

/// The `cnf` claim of a DPoP-bound access token (RFC 9449 §6.1).
pub fn confirmation(dpop_jkt: Option<&str>) -> Option<serde_json::Value> {
    dpop_jkt.map(|jkt| serde_json::json!({ "jkt": jkt }))
}

/// The public client a refresh token belongs to; confidential clients must authenticate.
async fn public_client_of_refresh_token(app: &App, params: &Params) -> Result<AuthenticatedClient, OAuthError> {
    let unidentified = || OAuthError::invalid_client("the client did not identify itself");
    let token = params.get("refresh_token").ok_or_else(unidentified)?;
    let hash = super::issue::token_hash(token);
    let grant = app.stores.durable.grant_by_refresh_token(&hash).await?.ok_or_else(unidentified)?;
    let client = app.clients.get(&grant.client_id).await?.ok_or_else(unidentified)?;
    if !client.is_public() {
        return Err(OAuthError::invalid_client("this client must authenticate"));
    }
    Ok(AuthenticatedClient { client, method: crate::domain::client::AuthMethod::None })
}

/// Grant types this server has a handler for.
pub fn enabled_grant_types() -> &'static [GrantType] {
    grants::ENABLED
}

/// Runs the token endpoint pipeline.
pub async fn exchange_token(app: &App, request: FormRequest<'_>) -> Result<TokenResponse, OAuthError> {
    let params = Params::from_form(request.content_type, request.body)?;
    let creds = ClientCredentials { authorization: request.authorization, params: &params };
    let client = if !identifies_client(creds) && params.get("grant_type") == Some("refresh_token") {
        // SMART: a public client may refresh without sending client_id (client-js does not).
        public_client_of_refresh_token(app, &params).await?
    } else {
        authenticate_client(app, creds).await?
    };

    let grant_name = params.require("grant_type")?;
    let grant = GrantType::parse(grant_name).filter(|g| grants::ENABLED.contains(g)).ok_or_else(|| {
        OAuthError::new(ErrorCode::UnsupportedGrantType, format!("grant type `{grant_name}` is not supported"))
    })?;
    if !client.client.allows_grant(grant) {
        return Err(OAuthError::unauthorized_client(format!("this client may not use the `{grant_name}` grant")));
    }

    let requested_scope =
        params.get("scope").map(ScopeSet::parse).transpose().map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
    let now = app.clock.now();
    // The proof is checked (and its jti spent) before the grant, so a bad proof spends no code.
    let result = match sender_key(app, &client, request.dpop).await {
        Ok(dpop_jkt) => {
            let request = GrantRequest {
                app,
                client: &client,
                params: &params,
                requested_scope,
                dpop_jkt: dpop_jkt.as_deref(),
                now,
            };
            grants::dispatch(grant, request).await
        }
        Err(e) => Err(e),
    };
    audit_token_request(app, grant, &client, &result).await?;
    let nonce = app.dpop_nonce().await?;
    match result {
        Ok(mut response) => {
            crate::telemetry::token_issued(grant.as_str());
            response.dpop_nonce = nonce;
            Ok(response)
        }
        Err(e) => Err(e),
    }
}

/// The thumbprint of the key the request's DPoP proof is signed with, if it sent one; a client
/// registered with `dpop_bound_access_tokens` must.
async fn sender_key(
    app: &App,
    client: &AuthenticatedClient,
    header: super::dpop::DpopHeader<'_>,
) -> Result<Option<String>, OAuthError> {
    let proof = app.check_dpop(header, "POST", app.token_endpoint(), None, true).await?;
    if proof.is_none() && client.client.dpop_bound_access_tokens {
        return Err(OAuthError::new(
            ErrorCode::InvalidDpopProof,
            "this client's access tokens are DPoP-bound: send a DPoP proof",
        ));
    }
    Ok(proof.map(|p| p.jkt))
}

/// Every grant an authenticated client asked for is audited, refusals included. A token is not
/// handed out when its issue cannot be audited.
async fn audit_token_request(
    app: &App,
    grant: GrantType,
    client: &AuthenticatedClient,
    result: &Result<TokenResponse, OAuthError>,
) -> Result<(), OAuthError> {
    use crate::audit::{Actor, AuditEvent, AuditKind, AuditOutcome};
    let kind = match grant {
        GrantType::RefreshToken => AuditKind::TokenRefresh,
        GrantType::TokenExchange => AuditKind::TokenExchange,
        _ => AuditKind::TokenIssue,
    };
    let (outcome, subject, patient, detail) = match result {
        Ok(r) => (
            AuditOutcome::Success,
            r.subject.clone(),
            r.context.get("patient").and_then(|p| p.as_str()).map(str::to_owned),
            match &r.audit_note {
                Some(note) => format!("{} scope={} {note}", grant.as_str(), r.scope),
                None => format!("{} scope={}", grant.as_str(), r.scope),
            },
        ),
        Err(e) => (
            AuditOutcome::Failed,
            client.client.id.clone(),
            None,
            format!("{} {}: {}", grant.as_str(), e.code.as_str(), e.description),
        ),
    };
    let actor = Actor { subject: Some(subject), client_id: Some(client.client.id.clone()), ..Default::default() };
    let event = AuditEvent::new(kind, outcome, actor).patient(patient.as_deref()).detail(detail);
    app.audit.record(&event).await.map_err(|e| {
        tracing::error!(error = %e, "token audit failed");
        OAuthError::new(ErrorCode::TemporarilyUnavailable, "the request could not be audited; try again")
    })?;
    Ok(())
}
