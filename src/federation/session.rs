//! The browser's sign-in session: who is signed in (within the global and the provider's idle
//! and absolute limits, and only while the sign-in session is alive in the shared store), its
//! CSRF token, and which pending authorizations and upstream round trips this browser began
//! (so that a request id or a provider's answer replayed into another browser leads nowhere).
//!
//! The session record itself is kept by tower-sessions in the ephemeral store
//! ([`crate::keyspaces::BROWSER_SESSIONS`]); the liveness of each sign-in is a separate
//! [`crate::keyspaces::SIGN_INS`] entry, so that ending it (sign-out, provider logout) is seen by
//! every node and every `online_access` grant made under it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;
use tower_sessions::Session;

use crate::app::App;
use crate::audit::{Actor, AuditEvent, AuditKind, AuditOutcome};
use crate::domain::identity::Identity;
use crate::keyspaces::SIGN_INS;
use crate::token::random_token;

const USER_KEY: &str = "user";
const CSRF_KEY: &str = "csrf";

/// Who is signed in in this browser.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionUser {
    pub identity: Identity,
    pub session_id: String,
    pub signed_in_at: i64,
    /// Provider-specific limits (NHS login: 30 min idle, 12 h), tighter than the global ones.
    #[serde(default)]
    pub idle_secs: Option<i64>,
    #[serde(default)]
    pub absolute_secs: Option<i64>,
    #[serde(default)]
    pub last_seen: i64,
}

/// Session limits for one sign-in.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionLimits {
    pub idle_secs: Option<i64>,
    pub absolute_secs: Option<i64>,
}

/// The session store failed; never the user's fault.
#[derive(Debug, thiserror::Error)]
#[error("session store failure: {0}")]
pub struct SessionError(String);

fn failed(e: impl std::fmt::Display) -> SessionError {
    tracing::error!(error = %e, "session store failure");
    SessionError(e.to_string())
}

/// One browser's sign-in session.
#[derive(Debug, Clone)]
pub struct SignInSession(Session);

impl SignInSession {
    pub fn new(session: Session) -> Self {
        Self(session)
    }

    /// The signed-in user, if their sign-in session is still alive (not ended, not past its
    /// absolute limit, not idle for longer than allowed); a dead one is forgotten.
    pub async fn user(&self, app: &App) -> Result<Option<SessionUser>, SessionError> {
        let Some(mut user) = self.0.get::<SessionUser>(USER_KEY).await.map_err(failed)? else { return Ok(None) };
        let now = app.clock.now();
        let sessions = &app.config.sessions;
        let absolute = user.absolute_secs.unwrap_or(sessions.absolute_timeout_secs).min(sessions.absolute_timeout_secs);
        let expired = user.signed_in_at + absolute <= now;
        let idle = user.idle_secs.is_some_and(|limit| user.last_seen > 0 && now - user.last_seen > limit);
        let alive = SIGN_INS.contains(app.stores.ephemeral.as_ref(), &user.session_id).await.map_err(failed)?;
        if expired || idle || !alive {
            self.0.remove_value(USER_KEY).await.map_err(failed)?;
            return Ok(None);
        }
        if user.idle_secs.is_some() && now - user.last_seen >= 30 {
            user.last_seen = now;
            self.0.insert(USER_KEY, &user).await.map_err(failed)?;
        }
        Ok(Some(user))
    }

    /// Signs `identity` in to this browser: a new session id (no fixation), a live sign-in
    /// session for `online_access`, a fresh CSRF token, and an audit record. Returns the sign-in
    /// session id.
    pub async fn sign_in(&self, app: &App, identity: Identity, limits: SessionLimits) -> Result<String, SessionError> {
        self.0.cycle_id().await.map_err(failed)?;
        let session_id = random_token(16);
        let ttl = Duration::from_secs(app.config.sessions.absolute_timeout_secs.unsigned_abs());
        SIGN_INS.mark(app.stores.ephemeral.as_ref(), &session_id, ttl).await.map_err(failed)?;
        let now = app.clock.now();
        let user = SessionUser {
            identity,
            session_id: session_id.clone(),
            signed_in_at: now,
            idle_secs: limits.idle_secs,
            absolute_secs: limits.absolute_secs,
            last_seen: now,
        };
        self.0.insert(USER_KEY, &user).await.map_err(failed)?;
        self.0.insert(CSRF_KEY, random_token(24)).await.map_err(failed)?;
        let identity = &user.identity;
        tracing::info!(subject = %identity.platform_subject(), provider = %identity.provider, "signed in");
        let actor = Actor {
            subject: Some(identity.platform_subject()),
            name: identity.name.clone(),
            roles: identity.role_codes.clone(),
            fhir_user: identity.fhir_user.clone(),
            org: identity.org.clone(),
            ..Default::default()
        };
        let event = AuditEvent::new(AuditKind::SignIn, AuditOutcome::Success, actor)
            .detail(format!("provider {}", identity.provider));
        app.audit.record_or_log(&event).await;
        Ok(session_id)
    }

    /// Ends this browser's sign-in session (and the `online_access` grants made under it) and
    /// forgets everything the browser session held; returns whose it was.
    pub async fn sign_out(&self, app: &App) -> Result<Option<Identity>, SessionError> {
        let user = self.user(app).await?;
        if let Some(user) = &user {
            crate::oauth::oidc::end_session(app, &user.session_id).await.map_err(failed)?;
        }
        self.0.flush().await.map_err(failed)?;
        Ok(user.map(|u| u.identity))
    }

    /// This session's CSRF token, made on first use.
    pub async fn csrf_token(&self) -> Result<String, SessionError> {
        if let Some(token) = self.0.get::<String>(CSRF_KEY).await.map_err(failed)? {
            return Ok(token);
        }
        let token = random_token(24);
        self.0.insert(CSRF_KEY, &token).await.map_err(failed)?;
        Ok(token)
    }

    /// Whether `presented` is this session's CSRF token (compared in constant time).
    pub async fn csrf_matches(&self, presented: &str) -> Result<bool, SessionError> {
        let expected = self.0.get::<String>(CSRF_KEY).await.map_err(failed)?;
        Ok(expected.is_some_and(|token| bool::from(token.as_bytes().ct_eq(presented.as_bytes()))))
    }

    /// Records that this browser began pending authorization `id`.
    pub async fn own_pending(&self, id: &str) -> Result<(), SessionError> {
        self.0.insert(&format!("pending:{id}"), true).await.map_err(failed)
    }

    /// Whether this browser began pending authorization `id`.
    pub async fn owns_pending(&self, id: &str) -> Result<bool, SessionError> {
        Ok(self.0.get::<bool>(&format!("pending:{id}")).await.map_err(failed)?.unwrap_or(false))
    }

    /// Records that this browser began the upstream round trip `state`.
    pub async fn own_round_trip(&self, state: &str) -> Result<(), SessionError> {
        self.0.insert(&round_trip_marker(state), true).await.map_err(failed)
    }

    /// Whether this browser began round trip `state`; the mark is spent either way.
    pub async fn take_round_trip(&self, state: &str) -> bool {
        let mine = self.0.get::<bool>(&round_trip_marker(state)).await.ok().flatten().unwrap_or(false);
        if mine {
            let _ = self.0.remove_value(&round_trip_marker(state)).await;
        }
        mine
    }
}

fn round_trip_marker(state: &str) -> String {
    format!("upstream-state:{state}")
}
