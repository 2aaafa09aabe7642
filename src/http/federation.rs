//! Federated sign-in over HTTP: the provider chooser and the redirect to an upstream provider,
//! the callback that completes it, OIDC back-channel logout, and the NHS App entry with its
//! well-known files.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use super::AppState;
use super::error::ErrorResponse;
use super::interaction::{SessionLimits, establish_session, policy, redirect, respond_outcome};
use super::pages::{self, PagePolicy};
use crate::audit::{Actor, AuditEvent, AuditKind, AuditOutcome};
use crate::domain::client::Client;
use crate::domain::identity::Identity;
use crate::domain::launch::{EhrLaunch, LaunchContext};
use crate::federation::oidc::RoundTrip;
use crate::federation::{BeginOptions, SignInError, UpstreamProvider};
use crate::oauth::authorize::{self, Pending};
use crate::oauth::error::OAuthError;

/// Why the browser went to the provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Purpose {
    /// Signing in for a pending authorization.
    Authorize { pending_id: String },
    /// An NHS App jump-off into a journey.
    NhsApp { journey: String },
}

/// Remembered between the redirect to the provider and its answer (single use).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Upstream {
    pub(super) idp: String,
    pub(super) trip: RoundTrip,
    purpose: Purpose,
}

pub(super) fn upstream_key(state: &str) -> String {
    format!("upstream:{state}")
}
pub(super) fn browser_marker(state: &str) -> String {
    format!("upstream-state:{state}")
}

/// The callback every provider redirects to.
pub fn callback_url(state: &AppState) -> String {
    state.config.endpoint("/federation/callback")
}

/// The providers `client` allows, as (id, display name); `dev` when the development sign-in is on.
pub fn allowed_providers(state: &AppState, client: &Client) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = Vec::new();
    if state.config.dev_idp.enabled {
        all.push(("dev".into(), "Development sign-in".into()));
    }
    all.extend(state.federation.all().map(|p| (p.id().to_owned(), p.name().to_owned())));
    if client.identity_providers.is_empty() {
        return all;
    }
    all.into_iter().filter(|(id, _)| client.identity_providers.contains(id)).collect()
}

pub(super) fn failure_page(state: &AppState, err: &SignInError, nhs_app: bool) -> Response {
    tracing::info!(error = %err, "federated sign-in failed");
    let home = state.config.nhs_app.home_url.clone();
    let back = nhs_app.then_some(("Go back to the NHS App", home.as_str()));
    let mut page_policy = PagePolicy { hide_header: nhs_app, ..PagePolicy::default() };
    page_policy.frame_ancestors = state.config.pages.frame_ancestors.clone();
    let message = match err {
        SignInError::Provider { code, .. }
            if nhs_app && matches!(code.as_str(), "login_required" | "sso_login_required" | "interaction_required") =>
        {
            "Your NHS App session could not be used to sign you in here. Go back to the NHS App and try again."
                .to_owned()
        }
        other => other.to_string(),
    };
    pages::sign_in_failed(&message, back, &page_policy)
}

/// Starts a sign-in at `provider`: remembers the round trip (bound to this browser) and
/// redirects there.
async fn go_upstream(
    state: &AppState,
    session: &Session,
    provider: &UpstreamProvider,
    purpose: Purpose,
    options: BeginOptions,
) -> Response {
    let nhs_app = matches!(purpose, Purpose::NhsApp { .. });
    let (url, trip) = match provider.begin(&callback_url(state), &options).await {
        Ok(started) => started,
        Err(e) => return failure_page(state, &e, nhs_app),
    };
    let record = Upstream { idp: provider.id().to_owned(), trip: trip.clone(), purpose };
    let ttl = Duration::from_secs(state.config.federation.upstream_timeout_secs);
    let stored = match serde_json::to_vec(&record) {
        Ok(bytes) => {
            state.stores.ephemeral.put(&upstream_key(&trip.state), &bytes, ttl).await.map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = stored {
        return failure_page(state, &SignInError::Upstream(e), nhs_app);
    }
    if let Err(e) = session.insert(&browser_marker(&trip.state), true).await {
        return failure_page(state, &SignInError::Upstream(e.to_string()), nhs_app);
    }
    redirect(&url, StatusCode::SEE_OTHER)
}

/// The sign-in step of an authorization: the chooser, the development form, or a redirect to
/// the chosen provider (`idp` from the chooser, `idp_hint`, the client's default, or the only one).
pub async fn sign_in_step(
    state: &AppState,
    session: &Session,
    pending: Pending,
    client: Arc<Client>,
    chosen: Option<&str>,
    csrf: String,
) -> Response {
    let allowed = allowed_providers(state, &client);
    let choice = chosen
        .map(str::to_owned)
        .or_else(|| pending.idp_hint.clone())
        .or_else(|| client.default_identity_provider.clone())
        .or_else(|| (allowed.len() == 1).then(|| allowed[0].0.clone()));
    let page_policy = policy(&state, Some(&client));
    let Some(choice) = choice else {
        return pages::provider_chooser(&pending.id, &client.name, &allowed, &page_policy);
    };
    if !allowed.iter().any(|(id, _)| *id == choice) {
        return pages::error_page(
            StatusCode::BAD_REQUEST,
            "That sign-in is not available",
            &format!("`{choice}` is not a way to sign in to {}.", client.name),
            &page_policy,
        );
    }
    if choice == "dev" {
        return pages::sign_in(&csrf, &pending.id, &client.name, None, &page_policy);
    }
    let Some(provider) = state.federation.get(&choice) else {
        return pages::error_page(
            StatusCode::BAD_REQUEST,
            "That sign-in is not available",
            "The identity provider is not configured.",
            &page_policy,
        );
    };
    // prompt=none never reaches this step: without a session /authorize answers login_required.
    let options = BeginOptions {
        force_login: pending.needs_login && pending.identity.is_some(),
        silent: false,
        asserted_login_identity: None,
    };
    go_upstream(state, session, &provider, Purpose::Authorize { pending_id: pending.id.clone() }, options).await
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /federation/callback`: the provider's answer.
pub async fn callback(State(state): State<AppState>, session: Session, Query(q): Query<CallbackQuery>) -> Response {
    let app = &state;
    let gone = expired_page;
    let Some(round) = q.state.as_deref() else { return gone() };
    let mine = session.get::<bool>(&browser_marker(round)).await.ok().flatten().unwrap_or(false);
    let record = match app.stores.ephemeral.take(&upstream_key(round)).await {
        Ok(Some(bytes)) => serde_json::from_slice::<Upstream>(&bytes).ok(),
        _ => None,
    };
    let (Some(record), true) = (record, mine) else { return gone() };
    let _ = session.remove_value(&browser_marker(round)).await;
    let nhs_app = matches!(record.purpose, Purpose::NhsApp { .. });
    let Some(provider) = state.federation.get(&record.idp) else { return gone() };

    let now = app.clock.now();
    let result = match (&q.error, &q.code) {
        (Some(code), _) => Err(SignInError::Provider { code: code.clone(), description: q.error_description.clone() }),
        (None, Some(code)) => provider.complete(&record.trip, &callback_url(&state), code, now).await,
        (None, None) => Err(SignInError::Upstream("the answer carried neither a code nor an error".into())),
    };
    let identity = match result {
        Ok(identity) => identity,
        Err(e) => {
            let actor = Actor { subject: Some(format!("{}:?", record.idp)), ..Default::default() };
            app.audit
                .record_or_log(&AuditEvent::new(AuditKind::SignIn, AuditOutcome::Failed, actor).detail(e.to_string()))
                .await;
            return failure_page(&state, &e, nhs_app);
        }
    };
    finish_sign_in(&state, &session, record, identity).await
}

/// The page for an answer we no longer (or never) expected.
pub(super) fn expired_page() -> Response {
    pages::sign_in_failed(
        "This sign-in has expired or was started in another browser. Go back to the app and start again.",
        None,
        &PagePolicy::default(),
    )
}

/// After a provider vouched for `identity`: our session, then whatever the sign-in was for.
pub(super) async fn finish_sign_in(
    state: &AppState,
    session: &Session,
    record: Upstream,
    identity: Identity,
) -> Response {
    let app = &state;
    let gone = expired_page;
    let Some(provider) = state.federation.get(&record.idp) else { return gone() };
    let config = provider.config();
    let (idle_secs, absolute_secs) = config.session_limits();
    let limits = SessionLimits { idle_secs, absolute_secs };
    let session_id = match establish_session(app, session, identity.clone(), limits).await {
        Ok(id) => id,
        Err(response) => return response,
    };
    remember_upstream_session(state, &record.idp, &identity, &session_id).await;
    match record.purpose {
        Purpose::Authorize { pending_id } => match authorize::load_pending(app, &pending_id).await {
            Ok(Some((pending, client))) => {
                match authorize::signed_in(app, pending, &client, identity, session_id).await {
                    Ok(outcome) => respond_outcome(state, session, outcome, Some(&client)).await,
                    Err(e) => failure_page(state, &SignInError::Upstream(e.to_string()), false),
                }
            }
            _ => gone(),
        },
        Purpose::NhsApp { journey } => open_journey(state, &journey, identity).await,
    }
}

/// Index keys of our sign-in sessions by the provider's session id (OIDC `sid`, SAML
/// `SessionIndex`) and by its subject (OIDC `sub`, SAML `NameID`).
pub(super) fn sid_key(idp: &str, sid: &str) -> String {
    format!("upstream-sid:{idp}:{sid}")
}
pub(super) fn sub_key(idp: &str, sub: &str) -> String {
    format!("upstream-sub:{idp}:{sub}")
}

/// Ends the sign-in sessions indexed under `keys` (and their online grants): how many ended, and
/// whether any could not be.
pub(super) async fn end_upstream_sessions(state: &AppState, keys: &[String]) -> (usize, bool) {
    let app = &state;
    let (mut ended, mut failed) = (0, false);
    for key in keys {
        match app.stores.ephemeral.take(key).await {
            Ok(Some(session_id)) => {
                match crate::oauth::oidc::end_session(app, &String::from_utf8_lossy(&session_id)).await {
                    Ok(_) => ended += 1,
                    Err(_) => failed = true,
                }
            }
            Ok(None) => {}
            Err(_) => failed = true,
        }
    }
    (ended, failed)
}

/// Indexes our sign-in session by the provider's `sid` and `sub`, for provider logout.
async fn remember_upstream_session(
    state: &AppState,
    idp: &str,
    identity: &crate::domain::identity::Identity,
    session_id: &str,
) {
    let store = &state.stores.ephemeral;
    let ttl = Duration::from_secs(state.config.sessions.absolute_timeout_secs.unsigned_abs());
    let mut keys = vec![sub_key(idp, &identity.subject)];
    if let Some(sid) = &identity.upstream_session {
        keys.push(sid_key(idp, sid));
    }
    // a SAML logout request names the user by NameID, which need not be our subject
    if let Some((name_id, _)) = identity.upstream_name_id.as_ref().filter(|(n, _)| *n != identity.subject) {
        keys.push(sub_key(idp, name_id));
    }
    for key in keys {
        if let Err(e) = store.put(&key, session_id.as_bytes(), ttl).await {
            tracing::warn!(error = %e, "upstream session not indexed; back-channel logout will not find it");
        }
    }
}

/// `POST /federation/backchannel-logout/{idp}` with `logout_token`.
pub async fn backchannel_logout(
    State(state): State<AppState>,
    Path(idp): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let app = &state;
    let refuse = |why: &str| {
        tracing::warn!(idp = %idp, reason = %why, "back-channel logout refused");
        ErrorResponse(OAuthError::invalid_request(why)).into_response()
    };
    let provider = match state.federation.get(&idp) {
        Some(p) if p.config().backchannel_logout => p,
        _ => return refuse("back-channel logout is not enabled for this provider"),
    };
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let Ok(params) = crate::oauth::params::Params::from_form(ct, &body) else {
        return refuse("the body must be a form");
    };
    let Some(token) = params.get("logout_token") else { return refuse("missing logout_token") };
    let now = app.clock.now();
    let Some(client) = provider.oidc() else { return refuse("back-channel logout is for OpenID Connect providers") };
    let target = match crate::federation::backchannel::verify_logout_token(client, token, now).await {
        Ok(t) => t,
        Err(e) => return refuse(&e.to_string()),
    };
    let ttl = Duration::from_secs(u64::try_from(target.exp - now + 300).unwrap_or(600).max(600));
    match app.stores.ephemeral.put_if_absent(&format!("logout-jti:{idp}:{}", target.jti), b"1", ttl).await {
        Ok(true) => {}
        Ok(false) => return refuse("this logout token was already used"),
        Err(e) => return refuse(&e.to_string()),
    }
    let key = match (&target.sid, &target.sub) {
        (Some(sid), _) => sid_key(&idp, sid),
        (None, Some(sub)) => sub_key(&idp, sub),
        (None, None) => return refuse("the logout token names no session"),
    };
    let (ended, _) = end_upstream_sessions(&state, &[key]).await;
    tracing::info!(idp = %idp, ended, "back-channel logout");
    StatusCode::OK.into_response()
}

fn in_nhs_app(headers: &HeaderMap) -> bool {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.contains("nhsapp-android/") || ua.contains("nhsapp-ios/"))
}

/// `GET /nhs-app/{journey}?…&assertedLoginIdentity=JWT`: silent NHS login, then the journey's app
/// with the patient in context.
pub async fn nhs_app_entry(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(journey): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let config = &state.config.nhs_app;
    let page_policy = PagePolicy { hide_header: in_nhs_app(&headers), ..PagePolicy::default() };
    if !config.enabled || !config.journeys.contains_key(&journey) {
        return pages::error_page(
            StatusCode::NOT_FOUND,
            "Page not found",
            "This NHS App link is not known here.",
            &page_policy,
        );
    }
    let asserted = form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "assertedLoginIdentity")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty());
    let Some(asserted) = asserted else {
        return pages::sign_in_failed(
            "Open this page from the NHS App.",
            Some(("Go to the NHS App", &config.home_url)),
            &page_policy,
        );
    };
    let Some(provider) = state.federation.get(&config.idp) else {
        return pages::error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sorry, there is a problem with the service",
            "NHS login is not configured.",
            &page_policy,
        );
    };
    let options = BeginOptions { silent: true, asserted_login_identity: Some(asserted), force_login: false };
    go_upstream(&state, &session, &provider, Purpose::NhsApp { journey }, options).await
}

/// After NHS login: the patient opens the journey's app with themselves in context (no picker),
/// through a launch carebroker registers for them.
async fn open_journey(state: &AppState, journey: &str, identity: crate::domain::identity::Identity) -> Response {
    let app = &state;
    let Some(journey_config) = app.config.nhs_app.journeys.get(journey) else {
        return pages::error_page(
            StatusCode::NOT_FOUND,
            "Page not found",
            "This NHS App journey is not known here.",
            &PagePolicy::default(),
        );
    };
    let client = match app.clients.get(&journey_config.client_id).await {
        Ok(Some(client)) => client,
        _ => {
            return pages::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sorry, there is a problem with the service",
                "The journey's app is not registered.",
                &PagePolicy::default(),
            );
        }
    };
    let (Some(launch_uri), Some(patient)) = (client.launch_uri.clone(), identity.nhs_number.clone()) else {
        return pages::error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sorry, there is a problem with the service",
            "The journey cannot be opened.",
            &PagePolicy::default(),
        );
    };
    let launch = EhrLaunch {
        ehr_client_id: "nhs-app".into(),
        app_client_id: client.id.clone(),
        identity,
        context: LaunchContext { patient: Some(patient), need_patient_banner: Some(false), ..Default::default() },
        skip_consent: client.skip_consent,
    };
    let stored = crate::launch::register::store_launch(
        app.stores.ephemeral.as_ref(),
        &launch,
        &launch_uri,
        app.fhir_base(),
        app.config.launch.lifetime_secs,
    )
    .await;
    match stored {
        Ok((_, url)) => redirect(url.as_str(), StatusCode::SEE_OTHER),
        Err(e) => pages::error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sorry, there is a problem with the service",
            if matches!(e, crate::store::StoreError::Corrupt(_)) {
                "The journey's app is misconfigured."
            } else {
                "Try again later."
            },
            &PagePolicy::default(),
        ),
    }
}

/// `/.well-known/assetlinks.json` and `/.well-known/apple-app-site-association` (NHS App links).
async fn well_known_file(file: Option<&std::path::Path>) -> Response {
    let bytes = match file {
        Some(file) => tokio::fs::read(file).await.ok(),
        None => None,
    };
    match bytes {
        Some(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub async fn assetlinks(State(state): State<AppState>) -> Response {
    well_known_file(state.config.nhs_app.assetlinks_file.as_deref()).await
}

pub async fn apple_app_site_association(State(state): State<AppState>) -> Response {
    well_known_file(state.config.nhs_app.apple_app_site_association_file.as_deref()).await
}
