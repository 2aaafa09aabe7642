//! Federated sign-in over HTTP: the provider chooser and the redirect to an upstream provider
//! (the round trip itself is [`crate::federation::round_trip`]), the callback that completes it,
//! and OIDC back-channel logout.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::AppState;
use super::error::ErrorResponse;
use super::extract::PendingPage;
use super::forms::OAuthForm;
use super::page::{PageError, policy, redirect, respond};
use super::pages::{self, PagePolicy};
use crate::app::App;
use crate::domain::identity::Identity;
use crate::federation::round_trip::{CallbackAnswer, Purpose, Upstream};
use crate::federation::session::SignInSession;
use crate::federation::{BeginOptions, SignInError, UpstreamProvider};
use crate::launch::journey::JourneyError;
use crate::launch::signed_in::{FinishError, Finished};
use crate::oauth::error::OAuthError;

/// The page for a sign-in that failed at or after the provider (NHS App users are sent back).
pub(super) fn failure_page(app: &App, err: &SignInError, nhs_app: bool) -> Response {
    tracing::info!(error = %err, "federated sign-in failed");
    let home = app.config.nhs_app.home_url.clone();
    let back = nhs_app.then_some(("Go back to the NHS App", home.as_str()));
    let mut page_policy = PagePolicy { hide_header: nhs_app, ..PagePolicy::default() };
    page_policy.frame_ancestors = app.config.pages.frame_ancestors.clone();
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

/// The page for an answer we no longer (or never) expected.
pub(super) fn expired_page() -> Response {
    pages::sign_in_failed(
        "This sign-in has expired or was started in another browser. Go back to the app and start again.",
        None,
        &PagePolicy::default(),
    )
}

/// Starts a round trip to `provider`, binds it to this browser and redirects there.
pub(super) async fn go_upstream(
    app: &App,
    session: &SignInSession,
    provider: &UpstreamProvider,
    purpose: Purpose,
    options: BeginOptions,
) -> Response {
    let nhs_app = purpose.from_nhs_app();
    let started = match app.begin_upstream(provider, purpose, &options).await {
        Ok(started) => started,
        Err(e) => return failure_page(app, &e, nhs_app),
    };
    if let Err(e) = session.own_round_trip(&started.state).await {
        return failure_page(app, &SignInError::Upstream(e.to_string()), nhs_app);
    }
    redirect(&started.url, StatusCode::SEE_OTHER)
}

/// The sign-in step of an authorization: the chooser, the development form, or a redirect to
/// the chosen provider (`idp` from the chooser, `idp_hint`, the client's default, or the only one).
pub async fn sign_in_step(app: &App, page: PendingPage) -> Response {
    let PendingPage { session, pending, client, csrf, idp } = page;
    let allowed = app.allowed_providers(&client);
    let choice = idp
        .or_else(|| pending.idp_hint.clone())
        .or_else(|| client.default_identity_provider.clone())
        .or_else(|| (allowed.len() == 1).then(|| allowed[0].0.clone()));
    let page_policy = policy(app, Some(&client));
    let Some(choice) = choice else {
        return pages::provider_chooser(&pending.id, &client.name, &allowed, &page_policy);
    };
    let unavailable =
        |why: &str| pages::error_page(StatusCode::BAD_REQUEST, "That sign-in is not available", why, &page_policy);
    if !allowed.iter().any(|(id, _)| *id == choice) {
        return unavailable(&format!("`{choice}` is not a way to sign in to {}.", client.name));
    }
    if choice == "dev" {
        return pages::sign_in(&csrf, &pending.id, &client.name, None, &page_policy);
    }
    let Some(provider) = app.federation.get(&choice) else {
        return unavailable("The identity provider is not configured.");
    };
    // prompt=none never reaches this step: without a session /authorize answers login_required.
    let options = BeginOptions {
        force_login: pending.needs_login && pending.identity.is_some(),
        silent: false,
        asserted_login_identity: None,
    };
    go_upstream(app, &session, &provider, Purpose::Authorize { pending_id: pending.id.clone() }, options).await
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /federation/callback`: the provider's answer.
pub async fn callback(State(app): State<AppState>, session: Session, Query(q): Query<CallbackQuery>) -> Response {
    let session = SignInSession::new(session);
    let Some(round) = q.state.as_deref() else { return expired_page() };
    let mine = session.take_round_trip(round).await;
    let (Some(record), true) = (app.take_upstream(round).await, mine) else { return expired_page() };
    if app.federation.get(&record.idp).is_none() {
        return expired_page();
    }
    let nhs_app = record.purpose.from_nhs_app();
    let answer = CallbackAnswer {
        code: q.code.as_deref(),
        error: q.error.as_deref(),
        error_description: q.error_description.as_deref(),
    };
    match app.complete_oidc(&record, answer).await {
        Ok(identity) => finish_sign_in(&app, &session, record, identity).await,
        Err(e) => failure_page(&app, &e, nhs_app),
    }
}

/// After a provider vouched for `identity`: our session, then whatever the sign-in was for.
pub(super) async fn finish_sign_in(
    app: &App,
    session: &SignInSession,
    record: Upstream,
    identity: Identity,
) -> Response {
    match app.finish_sign_in(session, record, identity).await {
        Ok(Finished::Authorization { outcome, client }) => {
            respond(app, session, outcome, Some(&client), StatusCode::SEE_OTHER).await
        }
        Ok(Finished::Journey(url)) => redirect(&url, StatusCode::SEE_OTHER),
        Err(FinishError::Expired) => expired_page(),
        Err(FinishError::Session(e)) => PageError::from(e).into_response(),
        Err(FinishError::Authorization(e)) => failure_page(app, &SignInError::Upstream(e.to_string()), false),
        Err(FinishError::Journey(e)) => {
            let status = if matches!(e, JourneyError::Unknown) {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let title = if status == StatusCode::NOT_FOUND {
                "Page not found"
            } else {
                "Sorry, there is a problem with the service"
            };
            pages::error_page(status, title, &e.to_string(), &PagePolicy::default())
        }
    }
}

/// `POST /federation/backchannel-logout/{idp}` with `logout_token`.
pub async fn backchannel_logout(State(app): State<AppState>, Path(idp): Path<String>, form: OAuthForm) -> Response {
    let refuse = |why: &str| {
        tracing::warn!(idp = %idp, reason = %why, "back-channel logout refused");
        ErrorResponse(OAuthError::invalid_request(why)).into_response()
    };
    let Ok(params) = form.params() else { return refuse("the body must be a form") };
    let Some(token) = params.get("logout_token") else { return refuse("missing logout_token") };
    match app.backchannel_logout(&idp, token).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => refuse(&e.to_string()),
    }
}
