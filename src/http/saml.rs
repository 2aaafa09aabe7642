//! SAML over HTTP: our service-provider metadata, the Assertion Consumer Service (HTTP-POST) and
//! the step after it that binds the sign-in to the browser that started it.
//!
//! The IdP's form POST to `/saml/acs` is cross-site, so it carries no session cookie (SameSite
//! Lax). The response is verified there, and its RelayState (our single-use round trip, which names
//! the AuthnRequest it answers) is consumed; the verified identity waits under a one-time
//! reference while the browser is sent to `/saml/continue`, a top-level GET that does carry the
//! cookie. Only a browser holding the marker set when the sign-in began gets a session: a response
//! replayed into another browser (login CSRF) signs no one in.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use super::AppState;
use super::federation::{
    Upstream, browser_marker, end_upstream_sessions, expired_page, failure_page, finish_sign_in, sid_key, sub_key,
    upstream_key,
};
use super::interaction::redirect;
use super::pages::{self, PagePolicy};
use crate::audit::{Actor, AuditEvent, AuditKind, AuditOutcome};
use crate::domain::identity::Identity;
use crate::federation::SignInError;
use crate::federation::saml_logout::{RedirectMessage, read_redirect};
use crate::oauth::params::Params;
use crate::token::random_token;

/// A verified sign-in waiting for its browser.
#[derive(Debug, Serialize, Deserialize)]
struct Verified {
    upstream: Upstream,
    identity: Identity,
}

fn verified_key(reference: &str) -> String {
    format!("saml-verified:{reference}")
}

/// `GET /saml/metadata`.
pub async fn metadata(State(state): State<AppState>) -> Response {
    match state.federation.saml_sp.metadata_xml() {
        Ok(xml) => {
            let mut r = xml.into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/samlmetadata+xml"));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "SAML metadata could not be written");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// `POST /saml/acs` with `SAMLResponse` and `RelayState`.
pub async fn acs(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let app = &state;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let Ok(form) = Params::from_form(content_type, &body) else {
        return failure_page(&state, &SignInError::IdToken("the SAML answer is not a single form post".into()), false);
    };
    let (Some(relay_state), Some(response)) = (form.get("RelayState"), form.get("SAMLResponse")) else {
        // An unsolicited (IdP-initiated) response has no RelayState of ours: never accepted.
        return expired_page();
    };
    let record = match app.stores.ephemeral.take(&upstream_key(relay_state)).await {
        Ok(Some(bytes)) => serde_json::from_slice::<Upstream>(&bytes).ok(),
        _ => None,
    };
    let Some(record) = record else { return expired_page() };
    let Some(provider) = state.federation.get(&record.idp) else { return expired_page() };
    let Some(idp) = provider.saml() else { return expired_page() };
    let now = app.clock.now();
    let identity = match idp.complete(&record.trip, response, app.stores.ephemeral.as_ref(), now).await {
        Ok(identity) => identity,
        Err(e) => {
            let actor = Actor { subject: Some(format!("{}:?", record.idp)), ..Default::default() };
            app.audit
                .record_or_log(&AuditEvent::new(AuditKind::SignIn, AuditOutcome::Failed, actor).detail(e.to_string()))
                .await;
            return failure_page(&state, &e, false);
        }
    };
    let reference = random_token(24);
    let stored = match serde_json::to_vec(&Verified { upstream: record, identity }) {
        Ok(bytes) => {
            app.stores.ephemeral.put(&verified_key(&reference), &bytes, Duration::from_secs(120)).await.is_ok()
        }
        Err(_) => false,
    };
    if !stored {
        return failure_page(&state, &SignInError::Upstream("the sign-in could not be saved".into()), false);
    }
    redirect(&format!("{}?ref={reference}", app.config.endpoint("/saml/continue")), StatusCode::SEE_OTHER)
}

#[derive(Debug, Deserialize)]
pub struct ContinueQuery {
    #[serde(rename = "ref")]
    reference: Option<String>,
}

/// `GET /saml/continue?ref=…`: the browser that began the sign-in picks it up.
pub async fn resume(State(state): State<AppState>, session: Session, Query(q): Query<ContinueQuery>) -> Response {
    let app = &state;
    let Some(reference) = q.reference.filter(|r| !r.is_empty() && r.len() <= 64) else { return expired_page() };
    let verified = match app.stores.ephemeral.take(&verified_key(&reference)).await {
        Ok(Some(bytes)) => serde_json::from_slice::<Verified>(&bytes).ok(),
        _ => None,
    };
    let Some(verified) = verified else { return expired_page() };
    let marker = browser_marker(&verified.upstream.trip.state);
    if !session.get::<bool>(&marker).await.ok().flatten().unwrap_or(false) {
        tracing::warn!(idp = %verified.upstream.idp, "a SAML sign-in arrived in a browser that did not start it");
        return expired_page();
    }
    let _ = session.remove_value(&marker).await;
    finish_sign_in(&state, &session, verified.upstream, verified.identity).await
}

/// A logout we asked a SAML provider for, waiting for its answer.
#[derive(Debug, Serialize, Deserialize)]
struct PendingLogout {
    idp: String,
    request_id: String,
    /// Where the user goes after (a client's post-logout redirect), or our signed-out page.
    then: Option<String>,
}

fn logout_key(relay_state: &str) -> String {
    format!("saml-logout:{relay_state}")
}

/// After the user signed out here: the redirect asking their SAML provider to sign them out
/// too, when it supports single logout (`None` otherwise, or when the request cannot be made).
pub(super) async fn single_logout(state: &AppState, ended: &Identity, then: Option<String>) -> Option<Response> {
    let app = &state;
    let provider = state.federation.get(&ended.provider)?;
    let idp = provider.saml()?;
    let relay = random_token(24);
    let now = app.clock.now();
    let (url, request_id) = match idp.logout_request(ended, &relay, now).await {
        Ok(Some(found)) => found,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(idp = %ended.provider, error = %e, "SAML single logout not started");
            return None;
        }
    };
    let pending = PendingLogout { idp: ended.provider.clone(), request_id, then };
    let bytes = serde_json::to_vec(&pending).ok()?;
    let ttl = Duration::from_secs(app.config.federation.upstream_timeout_secs);
    app.stores.ephemeral.put(&logout_key(&relay), &bytes, ttl).await.ok()?;
    Some(redirect(&url, StatusCode::SEE_OTHER))
}

/// Where the sign-out form's answer may redirect: the signed-in user's SAML logout service.
pub(super) async fn logout_form_targets(state: &AppState, signed_in: Option<&Identity>) -> Vec<String> {
    let Some(provider) = signed_in.and_then(|i| state.federation.get(&i.provider)) else { return Vec::new() };
    match provider.saml() {
        Some(idp) => idp.slo_origin().await.into_iter().collect(),
        None => Vec::new(),
    }
}

fn logout_refused(why: &str) -> Response {
    tracing::warn!(reason = %why, "SAML logout message refused");
    pages::error_page(StatusCode::BAD_REQUEST, "This sign-out could not be completed", why, &PagePolicy::default())
}

/// `GET /saml/slo`: a provider's logout request (the user signed out there), or its answer to ours.
pub async fn slo(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let app = &state;
    let raw = query.unwrap_or_default();
    let message = match read_redirect(&raw) {
        Ok(m) => m,
        Err(e) => return logout_refused(&e.to_string()),
    };
    let now = app.clock.now();
    if !message.is_request {
        return logout_answered(&state, &raw, &message).await;
    }
    let Some(provider) = message.issuer.as_deref().and_then(|i| state.federation.by_issuer(i)) else {
        return logout_refused("the logout request is not from a configured provider");
    };
    let Some(idp) = provider.saml() else { return logout_refused("the logout request is not from a SAML provider") };
    let ask = match idp.accept_logout_request(&raw, &message, app.stores.ephemeral.as_ref(), now).await {
        Ok(ask) => ask,
        Err(e) => return logout_refused(&e.to_string()),
    };
    let mut keys: Vec<String> = ask.session_indexes.iter().map(|s| sid_key(provider.id(), s)).collect();
    keys.push(sub_key(provider.id(), &ask.name_id));
    let (ended, failed) = end_upstream_sessions(&state, &keys).await;
    tracing::info!(idp = %provider.id(), ended, "SAML single logout from the provider");
    let actor = Actor { subject: Some(format!("{}:{}", provider.id(), ask.name_id)), ..Default::default() };
    let outcome = if failed { AuditOutcome::Failed } else { AuditOutcome::Success };
    app.audit
        .record_or_log(
            &AuditEvent::new(AuditKind::SignOut, outcome, actor)
                .detail(format!("provider logout ended {ended} session(s)")),
        )
        .await;
    match idp.logout_response(&ask.request_id, message.relay_state.as_deref(), !failed, now).await {
        Ok(Some(url)) => redirect(&url, StatusCode::SEE_OTHER),
        Ok(None) => pages::signed_out(&PagePolicy::default()),
        Err(e) => logout_refused(&e.to_string()),
    }
}

/// The provider's answer to the logout we asked for.
async fn logout_answered(state: &AppState, raw: &str, message: &RedirectMessage) -> Response {
    let app = &state;
    let Some(relay) = message.relay_state.as_deref() else {
        return logout_refused("the logout answer has no RelayState");
    };
    // Read, verify, then consume: a forged answer must not spend the real one.
    let pending = match app.stores.ephemeral.get(&logout_key(relay)).await {
        Ok(Some(bytes)) => serde_json::from_slice::<PendingLogout>(&bytes).ok(),
        _ => None,
    };
    let Some(pending) = pending else { return logout_refused("this sign-out has expired or was already completed") };
    let Some(idp) = state.federation.get(&pending.idp) else {
        return logout_refused("the provider is no longer configured");
    };
    let Some(saml) = idp.saml() else { return logout_refused("the provider is not a SAML provider") };
    let verdict = saml.accept_logout_response(raw, message, &pending.request_id, app.clock.now()).await;
    if verdict.is_ok() && !matches!(app.stores.ephemeral.take(&logout_key(relay)).await, Ok(Some(_))) {
        return logout_refused("this sign-out was already completed");
    }
    match verdict {
        Ok(true) => match pending.then {
            Some(target) => redirect(&target, StatusCode::FOUND),
            None => pages::signed_out(&PagePolicy::default()),
        },
        Ok(false) => pages::error_page(
            StatusCode::OK,
            "You have signed out here",
            "Your organisation's sign-in service could not sign you out. Close the browser to end that session.",
            &PagePolicy::default(),
        ),
        Err(e) => logout_refused(&e.to_string()),
    }
}
