//! OAuth 2.0 error codes (RFC 6749 §4.1.2.1 and §5.2, RFC 6750 §3.1, RFC 7009, RFC 7591 §3.2.2,
//! OpenID Connect Core §3.1.2.6) kept apart from internal causes. Only `http` turns them into
//! responses; a store failure becomes `server_error` with the cause logged, never shown.

use std::fmt;

use crate::store::StoreError;

/// The `error` value of an OAuth error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    AccessDenied,
    UnsupportedResponseType,
    ServerError,
    TemporarilyUnavailable,
    InvalidToken,
    InsufficientScope,
    UnsupportedTokenType,
    InvalidRedirectUri,
    InvalidClientMetadata,
    InvalidTarget,
    LoginRequired,
    InteractionRequired,
    ConsentRequired,
    /// Dynamic registration is switched off (404).
    NotFound,
    /// RFC 9126 §4: the `request_uri` is unknown, expired, used or another client's.
    InvalidRequestUri,
    /// RFC 9449 §5: the DPoP proof is missing, malformed or does not match.
    InvalidDpopProof,
    /// RFC 9449 §8: the proof must carry the server nonce sent in `DPoP-Nonce`.
    UseDpopNonce,
}

impl ErrorCode {
    /// Every code, for the OpenAPI document.
    pub const ALL: [ErrorCode; 23] = [
        Self::InvalidRequest,
        Self::InvalidClient,
        Self::InvalidGrant,
        Self::UnauthorizedClient,
        Self::UnsupportedGrantType,
        Self::InvalidScope,
        Self::AccessDenied,
        Self::UnsupportedResponseType,
        Self::ServerError,
        Self::TemporarilyUnavailable,
        Self::InvalidToken,
        Self::InsufficientScope,
        Self::UnsupportedTokenType,
        Self::InvalidRedirectUri,
        Self::InvalidClientMetadata,
        Self::InvalidTarget,
        Self::LoginRequired,
        Self::InteractionRequired,
        Self::ConsentRequired,
        Self::NotFound,
        Self::InvalidRequestUri,
        Self::InvalidDpopProof,
        Self::UseDpopNonce,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::AccessDenied => "access_denied",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::InvalidRedirectUri => "invalid_redirect_uri",
            Self::InvalidClientMetadata => "invalid_client_metadata",
            Self::InvalidTarget => "invalid_target",
            Self::LoginRequired => "login_required",
            Self::InteractionRequired => "interaction_required",
            Self::ConsentRequired => "consent_required",
            Self::NotFound => "not_found",
            Self::InvalidRequestUri => "invalid_request_uri",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::UseDpopNonce => "use_dpop_nonce",
        }
    }
}

/// Which `WWW-Authenticate` challenge a 401 carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// The client authenticated with HTTP Basic (RFC 6749 §5.2).
    Basic,
    /// A bearer token was presented or required (RFC 6750 §3).
    Bearer,
    /// A DPoP-bound token was presented (RFC 9449 §7.1).
    Dpop,
}

/// An OAuth error: code, a description for the developer, and the challenge to send if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: String,
    pub challenge: Option<Challenge>,
    /// An HTTP status other than the code's usual one: a launch the EHR may not make is 403.
    pub status: Option<u16>,
    /// The server nonce to send in `DPoP-Nonce` (RFC 9449 §8).
    pub dpop_nonce: Option<String>,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self { code, description: description.into(), challenge: None, status: None, dpop_nonce: None }
    }
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }
    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidClient, description)
    }
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidGrant, description)
    }
    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidScope, description)
    }
    pub fn unauthorized_client(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::UnauthorizedClient, description)
    }
    pub fn invalid_token(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidToken, description).with_challenge(Challenge::Bearer)
    }
    /// A failure of ours; the description is generic and the cause goes to the log.
    pub fn server_error() -> Self {
        Self::new(ErrorCode::ServerError, "the server could not complete the request")
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub fn with_challenge(mut self, challenge: Challenge) -> Self {
        self.challenge = Some(challenge);
        self
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.description)
    }
}

impl std::error::Error for OAuthError {}

impl From<StoreError> for OAuthError {
    fn from(err: StoreError) -> Self {
        tracing::error!(error = %err, "state store failure");
        Self::new(ErrorCode::TemporarilyUnavailable, "the server could not reach its state store; try again")
    }
}
