//! Pushed authorization requests (RFC 9126): the client sends the authorization request to
//! `/par` with its client authentication, every check `/authorize` makes is made then (with the
//! same errors, as JSON), and it gets a single-use `request_uri` for 60 seconds that
//! `/authorize?client_id=…&request_uri=…` redeems. A client registered with
//! `require_pushed_authorization_requests` can start an authorization no other way.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::authorize::{self, SessionView};
use super::client_auth::{ClientCredentials, authenticate_client};
use super::error::{ErrorCode, OAuthError};
use super::params::{FormRequest, Params};
use crate::app::App;
use crate::keyspaces::{LAUNCHES, PUSHED_REQUESTS};
use crate::token::random_token;

/// How long a `request_uri` may be redeemed (RFC 9126 §2.2 suggests 5 to 600 seconds).
pub const REQUEST_URI_LIFETIME_SECS: u64 = 60;

/// The `request_uri` prefix (RFC 9126 §2.2).
const URN: &str = "urn:ietf:params:oauth:request_uri:";

/// The authorization request parameters kept for `/authorize` (anything else, client
/// authentication included, is dropped, so a push stores a bounded amount).
const KEPT: [&str; 15] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "aud",
    "resource",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "prompt",
    "max_age",
    "launch",
    "idp_hint",
    "response_mode",
];

/// A pushed request waiting to be redeemed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushedRequest {
    pub client_id: String,
    pub params: Vec<(String, String)>,
}

/// RFC 9126 §2.2 response.
#[derive(Debug, Clone, Serialize)]
pub struct PushedResponse {
    pub request_uri: String,
    pub expires_in: u64,
}

impl App {
    /// `POST /par`.
    pub async fn push_authorization_request(&self, request: FormRequest<'_>) -> Result<PushedResponse, OAuthError> {
        let params = Params::from_form(request.content_type, request.body)?;
        let client =
            authenticate_client(self, ClientCredentials { authorization: request.authorization, params: &params })
                .await?;
        if params.contains("request_uri") {
            return Err(OAuthError::invalid_request("a pushed request may not itself carry `request_uri`"));
        }
        if params.get("client_id").is_some_and(|id| id != client.client.id) {
            return Err(OAuthError::invalid_request("`client_id` is not the authenticated client"));
        }
        let redirect_uri = params.require("redirect_uri")?;
        if !client.client.redirect_uris.iter().any(|r| r == redirect_uri) {
            return Err(OAuthError::invalid_request("`redirect_uri` is not registered for this client"));
        }
        // The launch is consumed at /authorize; here it must exist and be for this app.
        let launch = match params.get("launch") {
            Some(id) => Some(match LAUNCHES.get(self.stores.ephemeral.as_ref(), id).await? {
                Some(launch) => Ok(launch),
                None => Err("unknown launch".to_owned()),
            }),
            None => None,
        };
        authorize::check_request(self, &client.client, &params, launch, &SessionView::default(), true)?;
        let id = random_token(24);
        let mut pairs = params.pairs_only(&KEPT);
        if !pairs.iter().any(|(k, _)| k == "client_id") {
            pairs.push(("client_id".into(), client.client.id.clone()));
        }
        let pushed = PushedRequest { client_id: client.client.id.clone(), params: pairs };
        let ttl = Duration::from_secs(REQUEST_URI_LIFETIME_SECS);
        PUSHED_REQUESTS.put(self.stores.ephemeral.as_ref(), &id, &pushed, ttl).await?;
        Ok(PushedResponse { request_uri: format!("{URN}{id}"), expires_in: REQUEST_URI_LIFETIME_SECS })
    }

    /// The parameters `/authorize` acts on: a pushed request's when `request_uri` names one
    /// (consumed, and only for the client that pushed it), else those given. `Ok((params,
    /// pushed))`; `Err` is shown to the user, never redirected (the redirect URI is not known).
    pub async fn authorization_params(&self, params: Params) -> Result<(Params, bool), OAuthError> {
        let Some(uri) = params.get("request_uri") else { return Ok((params, false)) };
        let refused = |why: &str| OAuthError::new(ErrorCode::InvalidRequestUri, why);
        let client_id = params.get("client_id").ok_or_else(|| refused("`client_id` must come with `request_uri`"))?;
        let id = uri.strip_prefix(URN).ok_or_else(|| refused("`request_uri` was not issued by this server"))?;
        let store = self.stores.ephemeral.as_ref();
        let gone = || refused("`request_uri` is unknown, expired or already used");
        // checked before it is consumed: another client naming it does not spend it
        let pushed = PUSHED_REQUESTS.get(store, id).await?.ok_or_else(gone)?;
        if pushed.client_id != client_id {
            return Err(refused("`request_uri` was pushed by another client"));
        }
        let pushed = PUSHED_REQUESTS.take(store, id).await?.ok_or_else(gone)?;
        Ok((Params::from_pairs(pushed.params), true))
    }
}
