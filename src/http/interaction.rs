//! The browser side of authorization: `/authorize` (GET and POST), sign-in, patient picker and
//! consent pages. Each page is a [`PendingPage`] and each form a [`PostedForm`]: bound to the
//! browser session that began the authorization, and the forms to its CSRF token and origin.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

use super::AppState;
use super::extract::{PendingPage, PostedForm};
use super::page::{PageError, policy, respond};
use super::pages::{self, consent::consent as consent_page};
use crate::audit::{Actor, AuditEvent, AuditKind, AuditOutcome};
use crate::domain::scope::ScopeSet;
use crate::federation::session::{SessionLimits, SignInSession};
use crate::launch::register::take_launch;
use crate::oauth::authorize::{self, SessionView};
use crate::oauth::error::OAuthError;
use crate::oauth::params::Params;

async fn start(
    app: &AppState,
    session: SignInSession,
    params: Result<Params, OAuthError>,
    status: StatusCode,
) -> Response {
    let refused = |e: OAuthError| {
        let policy = policy(app, None);
        pages::error_page(StatusCode::BAD_REQUEST, "This app's request cannot be accepted", &e.description, &policy)
    };
    let (params, pushed) = match params {
        Ok(p) => match app.authorization_params(p).await {
            Ok(found) => found,
            Err(e) if e.code == crate::oauth::error::ErrorCode::TemporarilyUnavailable => {
                return PageError::Unavailable(e).into_response();
            }
            Err(e) => return refused(e),
        },
        Err(e) => return refused(e),
    };
    let launch = match params.get("launch") {
        Some(id) => match take_launch(app.stores.ephemeral.as_ref(), id).await {
            Ok(Some(launch)) => Some(Ok(launch)),
            Ok(None) => Some(Err("unknown launch".to_owned())),
            Err(e) => return PageError::Unavailable(e.into()).into_response(),
        },
        None => None,
    };
    let user = match session.user(app).await {
        Ok(user) => user,
        Err(e) => return PageError::from(e).into_response(),
    };
    let view =
        SessionView { identity: user.as_ref().map(|u| u.identity.clone()), session_id: user.map(|u| u.session_id) };
    let client = match params.get("client_id") {
        Some(id) => app.clients.get(id).await.ok().flatten(),
        None => None,
    };
    match authorize::begin(app, &params, launch, &view, pushed).await {
        Ok(outcome) => respond(app, &session, outcome, client.as_deref(), status).await,
        Err(e) => PageError::from(e).into_response(),
    }
}

/// `GET /authorize`.
pub async fn authorize_get(State(app): State<AppState>, session: Session, RawQuery(query): RawQuery) -> Response {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    start(&app, SignInSession::new(session), params, StatusCode::FOUND).await
}

/// `POST /authorize` (SMART `authorize-post`).
pub async fn authorize_post(
    State(app): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    start(&app, SignInSession::new(session), Params::from_form(ct, &body), StatusCode::SEE_OTHER).await
}

/// `GET /signin`: the chooser, the development form, or the redirect to the chosen provider.
pub async fn sign_in_page(State(app): State<AppState>, page: PendingPage) -> Response {
    super::federation::sign_in_step(&app, page).await
}

/// `POST /signin`: the development identity provider.
pub async fn sign_in_submit(State(app): State<AppState>, form: PostedForm) -> Result<Response, PageError> {
    let (pending, client) = form.pending(&app).await?;
    let username = form.fields.get("username").unwrap_or_default();
    let password = form.fields.get("password").unwrap_or_default();
    let Some(identity) = crate::federation::dev::authenticate(&app.config.dev_idp, username, password, app.clock.now())
    else {
        tracing::info!(username = %username, "development sign-in failed");
        let actor = Actor {
            subject: Some(format!("dev:{username}")),
            client_id: Some(client.id.clone()),
            ..Default::default()
        };
        let event =
            AuditEvent::new(AuditKind::SignIn, AuditOutcome::Failed, actor).detail("wrong username or password");
        app.audit.record_or_log(&event).await;
        let csrf = form.session.csrf_token().await.unwrap_or_default();
        let error = Some("Enter a correct username and password.");
        return Ok(pages::sign_in(&csrf, &pending.id, &client.name, error, &policy(&app, Some(&client))));
    };
    let session_id = form.session.sign_in(&app, identity.clone(), SessionLimits::default()).await?;
    let outcome = authorize::signed_in(&app, pending, &client, identity, session_id).await?;
    Ok(respond(&app, &form.session, outcome, Some(&client), StatusCode::SEE_OTHER).await)
}

/// `GET /authorize/patient`.
pub async fn picker_page(State(app): State<AppState>, page: PendingPage) -> Result<Response, PageError> {
    let identity = page.pending.identity.as_ref().ok_or_else(OAuthError::server_error)?;
    let patients = app.patient_choices(identity, &page.pending.acting_for).await.map_err(|_| PageError::Session)?;
    Ok(pages::patient_picker(&page.csrf, &page.pending.id, &patients, None, &policy(&app, Some(&page.client))))
}

/// `POST /authorize/patient`.
pub async fn picker_submit(State(app): State<AppState>, form: PostedForm) -> Result<Response, PageError> {
    let (mut pending, client) = form.pending(&app).await?;
    let identity = pending.identity.clone().ok_or_else(OAuthError::server_error)?;
    let patients = app.patient_choices(&identity, &pending.acting_for).await.map_err(|_| PageError::Session)?;
    let allowed: Vec<String> = patients.iter().map(|p| p.id.clone()).collect();
    let pending_id = pending.id.clone();
    let chosen = form.fields.get("patient").unwrap_or_default();
    // acting for someone else: confirmed with VRS again, and this authorization is the proxy's
    if patients.iter().any(|p| p.acting_for && p.id == chosen) {
        match app.act_for(&identity, chosen).await {
            Ok(proxy) => pending.identity = Some(proxy),
            Err(e) => {
                let csrf = form.session.csrf_token().await.unwrap_or_default();
                let message = format!("You cannot act for this person: {e}");
                return Ok(pages::patient_picker(
                    &csrf,
                    &pending_id,
                    &patients,
                    Some(&message),
                    &policy(&app, Some(&client)),
                ));
            }
        }
    }
    match authorize::patient_chosen(&app, pending, &client, chosen, &allowed).await? {
        Ok(outcome) => Ok(respond(&app, &form.session, outcome, Some(&client), StatusCode::SEE_OTHER).await),
        Err(message) => {
            let csrf = form.session.csrf_token().await.unwrap_or_default();
            Ok(pages::patient_picker(&csrf, &pending_id, &patients, Some(&message), &policy(&app, Some(&client))))
        }
    }
}

/// `GET /authorize/consent`.
pub async fn consent_get(State(app): State<AppState>, page: PendingPage) -> Response {
    let scopes = ScopeSet::parse(&page.pending.scope).unwrap_or_default();
    consent_page(&page.csrf, &page.pending.id, &page.client.name, &scopes, &policy(&app, Some(&page.client)))
}

/// `POST /authorize/consent`: `decision` = `allow` (with the ticked `scope`s) or `deny`.
pub async fn consent_submit(State(app): State<AppState>, form: PostedForm) -> Result<Response, PageError> {
    let (pending, client) = form.pending(&app).await?;
    let allow = match form.fields.get("decision") {
        Some("allow") => true,
        Some("deny") => false,
        _ => {
            let policy = policy(&app, Some(&client));
            let why = "The form did not say whether you allow access.";
            return Ok(pages::error_page(StatusCode::BAD_REQUEST, "Choose allow or deny", why, &policy));
        }
    };
    let outcome = authorize::consent_given(&app, pending, &client, allow, &form.fields.all("scope")).await?;
    Ok(respond(&app, &form.session, outcome, Some(&client), StatusCode::SEE_OTHER).await)
}
