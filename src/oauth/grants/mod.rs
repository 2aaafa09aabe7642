//! Grant handlers, one file per grant, dispatched on [`GrantType`]. The pipeline in
//! `token_endpoint` has already authenticated the client and checked that it may use the grant.

pub mod authorization_code;
pub mod client_credentials;
pub mod refresh_token;
pub mod token_exchange;

use super::client_auth::AuthenticatedClient;
use super::error::OAuthError;
use super::params::Params;
use super::token_endpoint::TokenResponse;
use crate::app::App;
use crate::domain::client::GrantType;
use crate::domain::scope::ScopeSet;

/// Grant types with a handler.
pub const ENABLED: &[GrantType] =
    &[GrantType::AuthorizationCode, GrantType::RefreshToken, GrantType::ClientCredentials, GrantType::TokenExchange];

/// What a grant handler gets.
#[derive(Debug)]
pub struct GrantRequest<'a> {
    pub app: &'a App,
    pub client: &'a AuthenticatedClient,
    pub params: &'a Params,
    /// The `scope` parameter, parsed; `None` when absent.
    pub requested_scope: Option<ScopeSet>,
    /// The thumbprint of the DPoP key the tokens are bound to, when the request carried a proof.
    pub dpop_jkt: Option<&'a str>,
    pub now: i64,
}

/// Runs the handler for `grant`.
pub async fn dispatch(grant: GrantType, request: GrantRequest<'_>) -> Result<TokenResponse, OAuthError> {
    match grant {
        GrantType::AuthorizationCode => authorization_code::grant(request).await,
        GrantType::RefreshToken => refresh_token::grant(request).await,
        GrantType::ClientCredentials => client_credentials::grant(request).await,
        GrantType::TokenExchange => token_exchange::grant(request).await,
    }
}

/// Revokes a grant: its refresh tokens stop working and every access token it issued is
/// inactive from now on (the revocation outlives the longest access token).
pub async fn revoke_grant(app: &App, grant_id: &str, now: i64) -> Result<(), OAuthError> {
    app.stores.durable.revoke_grant(grant_id, now).await?;
    let until =
        now + i64::from(crate::domain::client::MAX_ACCESS_TOKEN_LIFETIME_SECS) + app.config.tokens.clock_skew_secs;
    app.stores.durable.revoke(grant_id, until).await?;
    Ok(())
}
