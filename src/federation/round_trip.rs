//! A round trip to an upstream identity provider, without HTTP types: [`App::begin_upstream`]
//! remembers why the browser went (single use, bound to the browser by the caller's session
//! marker) and where to send it; the answer comes back to [`App::complete_oidc`] (the OIDC
//! callback) or [`App::accept_saml_response`] (the SAML ACS, whose verified identity waits for
//! its browser under a one-time reference). Once signed in, our session is indexed by the
//! provider's session id and subject so that provider logout — OIDC back-channel
//! ([`App::backchannel_logout`], with its `jti` replay check) or SAML single logout
//! ([`App::saml_logout_request`]) — can end it; [`App::saml_single_logout`] asks a SAML provider to
//! end its session when the user signs out here.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::oidc::RoundTrip;
use super::saml_logout::RedirectMessage;
use super::{BeginOptions, SignInError, UpstreamProvider};
use crate::app::App;
use crate::audit::{Actor, AuditEvent, AuditKind, AuditOutcome};
use crate::domain::client::Client;
use crate::domain::identity::Identity;
use crate::keyspaces::{LOGOUT_JTIS, SAML_LOGOUTS, SAML_VERIFIED, UPSTREAM, UPSTREAM_SIDS, UPSTREAM_SUBS};
use crate::store::keyspace::Keyspace;
use crate::token::random_token;

/// How long a SAML sign-in verified at the ACS waits for its browser.
const VERIFIED_WAIT: Duration = Duration::from_secs(120);

/// Why the browser went to the provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Purpose {
    /// Signing in for a pending authorization.
    Authorize { pending_id: String },
    /// An NHS App jump-off into a journey.
    NhsApp { journey: String },
}

impl Purpose {
    /// Whether the user came from the NHS App (its pages hide our header and lead back there).
    pub fn from_nhs_app(&self) -> bool {
        matches!(self, Self::NhsApp { .. })
    }
}

/// Remembered between the redirect to the provider and its answer (single use).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upstream {
    pub idp: String,
    pub trip: RoundTrip,
    pub purpose: Purpose,
}

/// A SAML sign-in verified at the ACS, waiting for the browser that began it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Verified {
    pub upstream: Upstream,
    pub identity: Identity,
}

/// A logout we asked a SAML provider for, waiting for its answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct PendingLogout {
    pub idp: String,
    pub request_id: String,
    /// Where the user goes after (a client's post-logout redirect), or our signed-out page.
    pub then: Option<String>,
}

/// A started round trip: where to send the browser, and the `state` to bind to it.
#[derive(Debug)]
pub struct Started {
    pub url: String,
    pub state: String,
}

/// The provider's answer at the OIDC callback.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallbackAnswer<'a> {
    pub code: Option<&'a str>,
    pub error: Option<&'a str>,
    pub error_description: Option<&'a str>,
}

/// What the provider's SAML logout message led to.
#[derive(Debug)]
pub enum SamlLogout {
    /// The provider asked us to end the user's sessions; `answer` is the redirect back to it
    /// (None when it has no logout service to answer to).
    Requested { answer: Option<String> },
    /// The provider answered the logout we asked for: whether it succeeded, and where to go next.
    Answered { succeeded: bool, then: Option<String> },
}

/// A refused provider logout message, for the log and the page.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LogoutRefused(pub String);

fn refused(why: impl Into<String>) -> LogoutRefused {
    let why = why.into();
    tracing::warn!(reason = %why, "provider logout refused");
    LogoutRefused(why)
}

impl App {
    /// The callback every OIDC provider redirects to.
    pub fn callback_url(&self) -> String {
        self.config.endpoint("/federation/callback")
    }

    /// The providers `client` allows, as (id, display name); `dev` when the development sign-in
    /// is on.
    pub fn allowed_providers(&self, client: &Client) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = Vec::new();
        if self.config.dev_idp.enabled {
            all.push(("dev".into(), "Development sign-in".into()));
        }
        all.extend(self.federation.all().map(|p| (p.id().to_owned(), p.name().to_owned())));
        if client.identity_providers.is_empty() {
            return all;
        }
        all.into_iter().filter(|(id, _)| client.identity_providers.contains(id)).collect()
    }

    /// Starts a sign-in at `provider` for `purpose`, remembering the round trip until the
    /// provider answers (at most `federation.upstream_timeout_secs`).
    pub async fn begin_upstream(
        &self,
        provider: &UpstreamProvider,
        purpose: Purpose,
        options: &BeginOptions,
    ) -> Result<Started, SignInError> {
        let (url, trip) = provider.begin(&self.callback_url(), options).await?;
        let state = trip.state.clone();
        let record = Upstream { idp: provider.id().to_owned(), trip, purpose };
        let ttl = Duration::from_secs(self.config.federation.upstream_timeout_secs);
        UPSTREAM.put(self.stores.ephemeral.as_ref(), &state, &record, ttl).await.map_err(SignInError::upstream)?;
        Ok(Started { url, state })
    }

    /// Consumes the round trip `state` names: of concurrent answers, one gets it.
    pub async fn take_upstream(&self, state: &str) -> Option<Upstream> {
        UPSTREAM.take(self.stores.ephemeral.as_ref(), state).await.ok().flatten()
    }

    /// Completes an OIDC round trip with the provider's answer; a failure is audited.
    pub async fn complete_oidc(&self, record: &Upstream, answer: CallbackAnswer<'_>) -> Result<Identity, SignInError> {
        let result = match (answer.error, answer.code, self.federation.get(&record.idp)) {
            (_, _, None) => Err(SignInError::Upstream("the provider is no longer configured".into())),
            (Some(code), _, _) => Err(SignInError::Provider {
                code: code.to_owned(),
                description: answer.error_description.map(str::to_owned),
            }),
            (None, Some(code), Some(provider)) => {
                match provider.complete(&record.trip, &self.callback_url(), code, self.clock.now()).await {
                    Ok(identity) if identity.proxy_for.is_some() => self.verify_proxy(identity).await,
                    other => other,
                }
            }
            (None, None, _) => Err(SignInError::Upstream("the answer carried neither a code nor an error".into())),
        };
        if let Err(e) = &result {
            self.audit_sign_in_failure(&record.idp, e).await;
        }
        result
    }

    /// The SAML Assertion Consumer Service: consumes the round trip named by `relay_state`,
    /// verifies `response` and keeps the identity for the browser that began the sign-in. The
    /// answer is the one-time reference that browser presents; `None` for an answer we never
    /// asked for or no longer expect (IdP-initiated responses included).
    pub async fn accept_saml_response(&self, relay_state: &str, response: &str) -> Result<Option<String>, SignInError> {
        let Some(upstream) = self.take_upstream(relay_state).await else { return Ok(None) };
        let Some(idp) = self.federation.get(&upstream.idp) else { return Ok(None) };
        let Some(saml) = idp.saml() else { return Ok(None) };
        let identity =
            match saml.complete(&upstream.trip, response, self.stores.ephemeral.as_ref(), self.clock.now()).await {
                Ok(identity) => identity,
                Err(e) => {
                    self.audit_sign_in_failure(&upstream.idp, &e).await;
                    return Err(e);
                }
            };
        let reference = random_token(24);
        SAML_VERIFIED
            .put(self.stores.ephemeral.as_ref(), &reference, &Verified { upstream, identity }, VERIFIED_WAIT)
            .await
            .map_err(|_| SignInError::Upstream("the sign-in could not be saved".into()))?;
        Ok(Some(reference))
    }

    /// Takes the SAML sign-in waiting under `reference`.
    pub async fn take_saml_verified(&self, reference: &str) -> Option<Verified> {
        if reference.is_empty() || reference.len() > 64 {
            return None;
        }
        SAML_VERIFIED.take(self.stores.ephemeral.as_ref(), reference).await.ok().flatten()
    }

    async fn audit_sign_in_failure(&self, idp: &str, error: &SignInError) {
        let actor = Actor { subject: Some(format!("{idp}:?")), ..Default::default() };
        let event = AuditEvent::new(AuditKind::SignIn, AuditOutcome::Failed, actor).detail(error.to_string());
        self.audit.record_or_log(&event).await;
    }

    /// Indexes our sign-in session by the provider's `sid` and `sub` (and a SAML NameID that is
    /// not our subject), for provider logout.
    pub async fn remember_upstream_session(&self, idp: &str, identity: &Identity, session_id: &str) {
        let store = self.stores.ephemeral.as_ref();
        let ttl = Duration::from_secs(self.config.sessions.absolute_timeout_secs.unsigned_abs());
        let mut keys = vec![(UPSTREAM_SUBS, identity.subject.as_str())];
        if let Some(sid) = &identity.upstream_session {
            keys.push((UPSTREAM_SIDS, sid));
        }
        if let Some((name_id, _)) = identity.upstream_name_id.as_ref().filter(|(n, _)| *n != identity.subject) {
            keys.push((UPSTREAM_SUBS, name_id));
        }
        for (space, id) in keys {
            if let Err(e) = space.put(store, &format!("{idp}:{id}"), &session_id.to_owned(), ttl).await {
                tracing::warn!(error = %e, "upstream session not indexed; provider logout will not find it");
            }
        }
    }

    /// Ends the sign-in sessions indexed under `keys` (and their online grants): how many ended,
    /// and whether any could not be.
    async fn end_upstream_sessions(&self, keys: &[(Keyspace<String>, String)]) -> (usize, bool) {
        let (mut ended, mut failed) = (0, false);
        for (space, id) in keys {
            match space.take(self.stores.ephemeral.as_ref(), id).await {
                Ok(Some(session_id)) => match crate::oauth::oidc::end_session(self, &session_id).await {
                    Ok(_) => ended += 1,
                    Err(_) => failed = true,
                },
                Ok(None) => {}
                Err(_) => failed = true,
            }
        }
        (ended, failed)
    }

    /// OIDC Back-Channel Logout 1.0 from provider `idp`: verifies the `logout_token`, refuses a
    /// replayed one, and ends the sessions it names; the answer is how many ended.
    pub async fn backchannel_logout(&self, idp: &str, logout_token: &str) -> Result<usize, LogoutRefused> {
        let provider = match self.federation.get(idp) {
            Some(p) if p.config().backchannel_logout => p,
            _ => return Err(refused("back-channel logout is not enabled for this provider")),
        };
        let now = self.clock.now();
        let Some(client) = provider.oidc() else {
            return Err(refused("back-channel logout is for OpenID Connect providers"));
        };
        let target = super::backchannel::verify_logout_token(client, logout_token, now)
            .await
            .map_err(|e| refused(e.to_string()))?;
        let ttl = Duration::from_secs(u64::try_from(target.exp - now + 300).unwrap_or(600).max(600));
        let jti = format!("{idp}:{}", target.jti);
        match LOGOUT_JTIS.first_use(self.stores.ephemeral.as_ref(), &jti, ttl).await {
            Ok(true) => {}
            Ok(false) => return Err(refused("this logout token was already used")),
            Err(e) => return Err(refused(e.to_string())),
        }
        let key = match (&target.sid, &target.sub) {
            (Some(sid), _) => (UPSTREAM_SIDS, format!("{idp}:{sid}")),
            (None, Some(sub)) => (UPSTREAM_SUBS, format!("{idp}:{sub}")),
            (None, None) => return Err(refused("the logout token names no session")),
        };
        let (ended, _) = self.end_upstream_sessions(&[key]).await;
        tracing::info!(idp = %idp, ended, "back-channel logout");
        Ok(ended)
    }

    /// After the user signed out here: the URL asking their SAML provider to sign them out too,
    /// when it supports single logout (`None` otherwise, or when the request cannot be made).
    pub async fn saml_single_logout(&self, ended: &Identity, then: Option<String>) -> Option<String> {
        let provider = self.federation.get(&ended.provider)?;
        let idp = provider.saml()?;
        let relay = random_token(24);
        let (url, request_id) = match idp.logout_request(ended, &relay, self.clock.now()).await {
            Ok(Some(found)) => found,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(idp = %ended.provider, error = %e, "SAML single logout not started");
                return None;
            }
        };
        let pending = PendingLogout { idp: ended.provider.clone(), request_id, then };
        let ttl = Duration::from_secs(self.config.federation.upstream_timeout_secs);
        SAML_LOGOUTS.put(self.stores.ephemeral.as_ref(), &relay, &pending, ttl).await.ok()?;
        Some(url)
    }

    /// Where a sign-out form's answer may redirect: the signed-in user's SAML logout service.
    pub async fn logout_form_targets(&self, signed_in: Option<&Identity>) -> Vec<String> {
        let Some(provider) = signed_in.and_then(|i| self.federation.get(&i.provider)) else { return Vec::new() };
        match provider.saml() {
            Some(idp) => idp.slo_origin().await.into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// A SAML provider's HTTP-Redirect logout message (`raw` is the whole query): its request to
    /// end the user's sessions here (audited), or its answer to ours.
    pub async fn saml_logout_request(&self, raw: &str) -> Result<SamlLogout, LogoutRefused> {
        let message = super::saml_logout::read_redirect(raw).map_err(|e| refused(e.to_string()))?;
        if !message.is_request {
            return self.saml_logout_answered(raw, &message).await;
        }
        let now = self.clock.now();
        let Some(provider) = message.issuer.as_deref().and_then(|i| self.federation.by_issuer(i)) else {
            return Err(refused("the logout request is not from a configured provider"));
        };
        let Some(idp) = provider.saml() else { return Err(refused("the logout request is not from a SAML provider")) };
        let ask = idp
            .accept_logout_request(raw, &message, self.stores.ephemeral.as_ref(), now)
            .await
            .map_err(|e| refused(e.to_string()))?;
        let mut keys: Vec<(Keyspace<String>, String)> =
            ask.session_indexes.iter().map(|s| (UPSTREAM_SIDS, format!("{}:{s}", provider.id()))).collect();
        keys.push((UPSTREAM_SUBS, format!("{}:{}", provider.id(), ask.name_id)));
        let (ended, failed) = self.end_upstream_sessions(&keys).await;
        tracing::info!(idp = %provider.id(), ended, "SAML single logout from the provider");
        let actor = Actor { subject: Some(format!("{}:{}", provider.id(), ask.name_id)), ..Default::default() };
        let outcome = if failed { AuditOutcome::Failed } else { AuditOutcome::Success };
        let event = AuditEvent::new(AuditKind::SignOut, outcome, actor)
            .detail(format!("provider logout ended {ended} session(s)"));
        self.audit.record_or_log(&event).await;
        let answer = idp
            .logout_response(&ask.request_id, message.relay_state.as_deref(), !failed, now)
            .await
            .map_err(|e| refused(e.to_string()))?;
        Ok(SamlLogout::Requested { answer })
    }

    /// The provider's answer to the logout we asked for: read, verified, then consumed (a forged
    /// answer must not spend the real one).
    async fn saml_logout_answered(&self, raw: &str, message: &RedirectMessage) -> Result<SamlLogout, LogoutRefused> {
        let store = self.stores.ephemeral.as_ref();
        let Some(relay) = message.relay_state.as_deref() else {
            return Err(refused("the logout answer has no RelayState"));
        };
        let Some(pending) = SAML_LOGOUTS.get(store, relay).await.ok().flatten() else {
            return Err(refused("this sign-out has expired or was already completed"));
        };
        let Some(idp) = self.federation.get(&pending.idp) else {
            return Err(refused("the provider is no longer configured"));
        };
        let Some(saml) = idp.saml() else { return Err(refused("the provider is not a SAML provider")) };
        let verdict = saml.accept_logout_response(raw, message, &pending.request_id, self.clock.now()).await;
        if verdict.is_ok() && !matches!(SAML_LOGOUTS.take(store, relay).await, Ok(Some(_))) {
            return Err(refused("this sign-out was already completed"));
        }
        let succeeded = verdict.map_err(|e| refused(e.to_string()))?;
        Ok(SamlLogout::Answered { succeeded, then: pending.then })
    }
}
