//! Grant handlers, one file per grant, dispatched on [`GrantType`]. The pipeline in
//! `token_endpoint` has already authenticated the client and checked that it may use the grant.

pub mod client_credentials;

use super::Authority;
use super::client_auth::AuthenticatedClient;
use super::error::{ErrorCode, OAuthError};
use super::params::Params;
use super::token_endpoint::TokenResponse;
use crate::domain::client::GrantType;
use crate::domain::scope::ScopeSet;

/// Grant types with a handler.
pub const ENABLED: &[GrantType] = &[GrantType::ClientCredentials];

/// What a grant handler gets.
#[derive(Debug)]
pub struct GrantRequest<'a> {
    pub authority: &'a Authority,
    pub client: &'a AuthenticatedClient,
    pub params: &'a Params,
    /// The `scope` parameter, parsed; `None` when absent.
    pub requested_scope: Option<ScopeSet>,
    pub now: i64,
}

/// Runs the handler for `grant`.
pub async fn dispatch(grant: GrantType, request: GrantRequest<'_>) -> Result<TokenResponse, OAuthError> {
    match grant {
        GrantType::ClientCredentials => client_credentials::grant(request).await,
        other => Err(OAuthError::new(ErrorCode::UnsupportedGrantType, format!("grant type `{}` is not supported", other.as_str()))),
    }
}
