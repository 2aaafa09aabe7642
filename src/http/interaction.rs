//! The browser side of authorization: `/authorize` (GET and POST), sign-in, patient picker and
//! consent pages, each bound to the browser session that started it and protected by a CSRF token
//! and an Origin check.

use axum::body::Bytes;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;
use tower_sessions::Session;

use super::AppState;
use super::pages::{self, PagePolicy, consent::consent as consent_page};
use crate::app::App;
use crate::audit::{Actor, AuditEvent, AuditKind, AuditOutcome};
use crate::domain::client::Client;
use crate::domain::identity::Identity;
use crate::domain::scope::ScopeSet;
use crate::launch::{directory, register::take_launch};
use crate::oauth::authorize::{self, Outcome, Pending, SessionView, Step};
use crate::oauth::error::OAuthError;
use crate::oauth::grants::refresh_token::signin_key;
use crate::oauth::params::{Params, is_form_content_type};
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

pub(super) fn policy(app: &App, client: Option<&Client>) -> PagePolicy {
    let form_targets = client
        .map(|c| {
            let mut origins: Vec<String> = c.origins.clone();
            for uri in &c.redirect_uris {
                if let Ok(url) = url::Url::parse(uri) {
                    if !matches!(url.scheme(), "http" | "https") {
                        origins.push(format!("{}:", url.scheme()));
                    }
                }
            }
            origins
        })
        .unwrap_or_default();
    PagePolicy { frame_ancestors: app.config.pages.frame_ancestors.clone(), form_targets, hide_header: false }
}

fn session_failure(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "session store failure");
    pages::error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sorry, there is a problem with the service",
        "Try again later.",
        &PagePolicy::default(),
    )
}

fn oauth_failure(err: OAuthError) -> Response {
    tracing::warn!(error = %err, "authorization could not continue");
    pages::error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sorry, there is a problem with the service",
        "Try again later.",
        &PagePolicy::default(),
    )
}

/// The signed-in user of this browser, if their sign-in session is still alive (not ended, not
/// past its absolute limit, not idle for longer than allowed).
pub(super) async fn current_user(app: &App, session: &Session) -> Result<Option<SessionUser>, Response> {
    let Some(mut user) = session.get::<SessionUser>(USER_KEY).await.map_err(session_failure)? else { return Ok(None) };
    let now = app.clock.now();
    let sessions = &app.config.sessions;
    let absolute = user.absolute_secs.unwrap_or(sessions.absolute_timeout_secs).min(sessions.absolute_timeout_secs);
    let expired = user.signed_in_at + absolute <= now;
    let idle = user.idle_secs.is_some_and(|limit| user.last_seen > 0 && now - user.last_seen > limit);
    let alive = app.stores.ephemeral.get(&signin_key(&user.session_id)).await.map_err(session_failure)?.is_some();
    if expired || idle || !alive {
        session.remove_value(USER_KEY).await.map_err(session_failure)?;
        return Ok(None);
    }
    if user.idle_secs.is_some() && now - user.last_seen >= 30 {
        user.last_seen = now;
        session.insert(USER_KEY, &user).await.map_err(session_failure)?;
    }
    Ok(Some(user))
}

/// This session's CSRF token, made on first use.
pub(super) async fn csrf_token(session: &Session) -> Result<String, Response> {
    if let Some(token) = session.get::<String>(CSRF_KEY).await.map_err(session_failure)? {
        return Ok(token);
    }
    let token = random_token(24);
    session.insert(CSRF_KEY, &token).await.map_err(session_failure)?;
    Ok(token)
}

/// Checks a submitted form: same-origin (when the browser says), and the session's CSRF token.
pub(super) async fn check_form(
    app: &App,
    session: &Session,
    headers: &HeaderMap,
    form: &FormFields,
) -> Result<(), Response> {
    let refuse = || {
        pages::error_page(
            StatusCode::FORBIDDEN,
            "This form cannot be accepted",
            "The form did not come from this service, or your session has ended.",
            &PagePolicy::default(),
        )
    };
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let ours = url::Url::parse(app.issuer()).map(|u| u.origin().ascii_serialization()).unwrap_or_default();
        if origin != ours {
            return Err(refuse());
        }
    }
    let expected = session.get::<String>(CSRF_KEY).await.map_err(session_failure)?;
    let presented = form.get("csrf").unwrap_or_default();
    match expected {
        Some(token) if bool::from(token.as_bytes().ct_eq(presented.as_bytes())) => Ok(()),
        _ => Err(refuse()),
    }
}

/// Fields of an HTML form (a name may repeat, as checkboxes do).
#[derive(Debug, Default)]
pub struct FormFields(Vec<(String, String)>);

impl FormFields {
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Option<Self> {
        let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        is_form_content_type(ct).then(|| Self(form_urlencoded::parse(body).into_owned().collect()))
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }
}

fn pending_marker(id: &str) -> String {
    format!("pending:{id}")
}

pub(super) fn redirect(location: &str, status: StatusCode) -> Response {
    let mut response = status.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// [`respond`] after a form post or a provider's answer.
pub(super) async fn respond_outcome(
    state: &AppState,
    session: &Session,
    outcome: Outcome,
    client: Option<&Client>,
) -> Response {
    respond(&state, session, outcome, client, StatusCode::SEE_OTHER).await
}

/// Turns an outcome into a response: an error page, a redirect, or the next page.
async fn respond(
    app: &App,
    session: &Session,
    outcome: Outcome,
    client: Option<&Client>,
    status: StatusCode,
) -> Response {
    match outcome {
        Outcome::ErrorPage { message } => pages::error_page(
            StatusCode::BAD_REQUEST,
            "This app's request cannot be accepted",
            &message,
            &policy(app, client),
        ),
        Outcome::Redirect { location } => redirect(&location, status),
        Outcome::Interact { pending_id, step } => {
            if let Err(e) = session.insert(&pending_marker(&pending_id), true).await {
                return session_failure(e);
            }
            let path = match step {
                Step::SignIn => "/signin",
                Step::PickPatient => "/authorize/patient",
                Step::Consent => "/authorize/consent",
            };
            redirect(&format!("{path}?req={pending_id}"), StatusCode::SEE_OTHER)
        }
    }
}

/// The pending authorization `id`, if this browser started it.
async fn owned_pending(
    app: &App,
    session: &Session,
    id: Option<&str>,
) -> Result<(Pending, std::sync::Arc<Client>), Response> {
    let gone = || {
        pages::error_page(
            StatusCode::BAD_REQUEST,
            "This sign-in has expired",
            "It took too long, or it was started in another browser. Go back to the app and start again.",
            &PagePolicy::default(),
        )
    };
    let id = id.ok_or_else(gone)?;
    let mine = session.get::<bool>(&pending_marker(id)).await.map_err(session_failure)?.unwrap_or(false);
    if !mine {
        return Err(gone());
    }
    authorize::load_pending(app, id).await.map_err(oauth_failure)?.ok_or_else(gone)
}

async fn start(
    state: &AppState,
    session: &Session,
    params: Result<Params, OAuthError>,
    status: StatusCode,
) -> Response {
    let app = &state;
    let params = match params {
        Ok(p) => p,
        Err(e) => {
            return pages::error_page(
                StatusCode::BAD_REQUEST,
                "This app's request cannot be accepted",
                &e.description,
                &policy(app, None),
            );
        }
    };
    let launch = match params.get("launch") {
        Some(id) => match take_launch(app.stores.ephemeral.as_ref(), id).await {
            Ok(Some(launch)) => Some(Ok(launch)),
            Ok(None) => Some(Err("unknown launch".to_owned())),
            Err(e) => return session_failure(e),
        },
        None => None,
    };
    let user = match current_user(app, session).await {
        Ok(user) => user,
        Err(response) => return response,
    };
    let view =
        SessionView { identity: user.as_ref().map(|u| u.identity.clone()), session_id: user.map(|u| u.session_id) };
    let client = match params.get("client_id") {
        Some(id) => app.clients.get(id).await.ok().flatten(),
        None => None,
    };
    match authorize::begin(app, &params, launch, &view).await {
        Ok(outcome) => respond(app, session, outcome, client.as_deref(), status).await,
        Err(e) => oauth_failure(e),
    }
}

/// `GET /authorize`.
pub async fn authorize_get(State(state): State<AppState>, session: Session, RawQuery(query): RawQuery) -> Response {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    start(&state, &session, params, StatusCode::FOUND).await
}

/// `POST /authorize` (SMART `authorize-post`).
pub async fn authorize_post(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    start(&state, &session, Params::from_form(ct, &body), StatusCode::SEE_OTHER).await
}

#[derive(Debug, Deserialize)]
pub struct PendingQuery {
    req: Option<String>,
    idp: Option<String>,
}

/// `GET /signin`.
pub async fn sign_in_page(State(state): State<AppState>, session: Session, Query(q): Query<PendingQuery>) -> Response {
    let app = &state;
    let (pending, client) = match owned_pending(app, &session, q.req.as_deref()).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    match csrf_token(&session).await {
        Ok(csrf) => super::federation::sign_in_step(&state, &session, pending, client, q.idp.as_deref(), csrf).await,
        Err(response) => response,
    }
}

/// `POST /signin`: the development identity provider.
pub async fn sign_in_submit(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let app = &state;
    let Some(form) = FormFields::parse(&headers, &body) else {
        return pages::error_page(
            StatusCode::BAD_REQUEST,
            "This form cannot be accepted",
            "The form was not sent as a form.",
            &PagePolicy::default(),
        );
    };
    if let Err(response) = check_form(app, &session, &headers, &form).await {
        return response;
    }
    let (pending, client) = match owned_pending(app, &session, form.get("req")).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let now = app.clock.now();
    let username = form.get("username").unwrap_or_default();
    let Some(identity) = crate::federation::dev::authenticate(
        &app.config.dev_idp,
        username,
        form.get("password").unwrap_or_default(),
        now,
    ) else {
        tracing::info!(username = %username, "development sign-in failed");
        let actor = Actor {
            subject: Some(format!("dev:{username}")),
            client_id: Some(client.id.clone()),
            ..Default::default()
        };
        app.audit
            .record_or_log(
                &AuditEvent::new(AuditKind::SignIn, AuditOutcome::Failed, actor).detail("wrong username or password"),
            )
            .await;
        let csrf = csrf_token(&session).await.unwrap_or_default();
        return pages::sign_in(
            &csrf,
            &pending.id,
            &client.name,
            Some("Enter a correct username and password."),
            &policy(app, Some(&client)),
        );
    };
    match establish_session(app, &session, identity.clone(), SessionLimits::default()).await {
        Ok(session_id) => match authorize::signed_in(app, pending, &client, identity, session_id).await {
            Ok(outcome) => respond(app, &session, outcome, Some(&client), StatusCode::SEE_OTHER).await,
            Err(e) => oauth_failure(e),
        },
        Err(response) => response,
    }
}

/// Signs `identity` in to this browser: a new session id (no fixation), a registered sign-in
/// session for `online_access`, and a fresh CSRF token.
pub(super) async fn establish_session(
    app: &App,
    session: &Session,
    identity: Identity,
    limits: SessionLimits,
) -> Result<String, Response> {
    session.cycle_id().await.map_err(session_failure)?;
    let session_id = random_token(16);
    let ttl = std::time::Duration::from_secs(app.config.sessions.absolute_timeout_secs.unsigned_abs());
    app.stores.ephemeral.put(&signin_key(&session_id), b"1", ttl).await.map_err(session_failure)?;
    let now = app.clock.now();
    let user = SessionUser {
        identity,
        session_id: session_id.clone(),
        signed_in_at: now,
        idle_secs: limits.idle_secs,
        absolute_secs: limits.absolute_secs,
        last_seen: now,
    };
    session.insert(USER_KEY, &user).await.map_err(session_failure)?;
    session.insert(CSRF_KEY, random_token(24)).await.map_err(session_failure)?;
    tracing::info!(subject = %user.identity.platform_subject(), provider = %user.identity.provider, "signed in");
    let actor = Actor {
        subject: Some(user.identity.platform_subject()),
        name: user.identity.name.clone(),
        roles: user.identity.role_codes.clone(),
        fhir_user: user.identity.fhir_user.clone(),
        org: user.identity.org.clone(),
        ..Default::default()
    };
    app.audit
        .record_or_log(
            &AuditEvent::new(AuditKind::SignIn, AuditOutcome::Success, actor)
                .detail(format!("provider {}", user.identity.provider)),
        )
        .await;
    Ok(session_id)
}

/// `GET /authorize/patient`.
pub async fn picker_page(State(state): State<AppState>, session: Session, Query(q): Query<PendingQuery>) -> Response {
    let app = &state;
    let (pending, client) = match owned_pending(app, &session, q.req.as_deref()).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some(identity) = &pending.identity else { return oauth_failure(OAuthError::server_error()) };
    let patients = match directory::patients_for(app.stores.durable.as_ref(), identity).await {
        Ok(p) => p,
        Err(e) => return session_failure(e),
    };
    match csrf_token(&session).await {
        Ok(csrf) => pages::patient_picker(&csrf, &pending.id, &patients, None, &policy(app, Some(&client))),
        Err(response) => response,
    }
}

/// `POST /authorize/patient`.
pub async fn picker_submit(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let app = &state;
    let Some(form) = FormFields::parse(&headers, &body) else {
        return pages::error_page(
            StatusCode::BAD_REQUEST,
            "This form cannot be accepted",
            "The form was not sent as a form.",
            &PagePolicy::default(),
        );
    };
    if let Err(response) = check_form(app, &session, &headers, &form).await {
        return response;
    }
    let (pending, client) = match owned_pending(app, &session, form.get("req")).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some(identity) = pending.identity.clone() else { return oauth_failure(OAuthError::server_error()) };
    let patients = match directory::patients_for(app.stores.durable.as_ref(), &identity).await {
        Ok(p) => p,
        Err(e) => return session_failure(e),
    };
    let allowed: Vec<String> = patients.iter().map(|p| p.id.clone()).collect();
    let pending_id = pending.id.clone();
    match authorize::patient_chosen(app, pending, &client, form.get("patient").unwrap_or_default(), &allowed).await {
        Ok(Ok(outcome)) => respond(app, &session, outcome, Some(&client), StatusCode::SEE_OTHER).await,
        Ok(Err(message)) => {
            let csrf = csrf_token(&session).await.unwrap_or_default();
            pages::patient_picker(&csrf, &pending_id, &patients, Some(&message), &policy(app, Some(&client)))
        }
        Err(e) => oauth_failure(e),
    }
}

/// `GET /authorize/consent`.
pub async fn consent_get(State(state): State<AppState>, session: Session, Query(q): Query<PendingQuery>) -> Response {
    let app = &state;
    let (pending, client) = match owned_pending(app, &session, q.req.as_deref()).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let scopes = ScopeSet::parse(&pending.scope).unwrap_or_default();
    match csrf_token(&session).await {
        Ok(csrf) => consent_page(&csrf, &pending.id, &client.name, &scopes, &policy(app, Some(&client))),
        Err(response) => response,
    }
}

/// `POST /authorize/consent`: `decision` = `allow` (with the ticked `scope`s) or `deny`.
pub async fn consent_submit(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let app = &state;
    let Some(form) = FormFields::parse(&headers, &body) else {
        return pages::error_page(
            StatusCode::BAD_REQUEST,
            "This form cannot be accepted",
            "The form was not sent as a form.",
            &PagePolicy::default(),
        );
    };
    if let Err(response) = check_form(app, &session, &headers, &form).await {
        return response;
    }
    let (pending, client) = match owned_pending(app, &session, form.get("req")).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let allow = match form.get("decision") {
        Some("allow") => true,
        Some("deny") => false,
        _ => {
            return pages::error_page(
                StatusCode::BAD_REQUEST,
                "Choose allow or deny",
                "The form did not say whether you allow access.",
                &policy(app, Some(&client)),
            );
        }
    };
    match authorize::consent_given(app, pending, &client, allow, &form.all("scope")).await {
        Ok(outcome) => respond(app, &session, outcome, Some(&client), StatusCode::SEE_OTHER).await,
        Err(e) => oauth_failure(e),
    }
}
