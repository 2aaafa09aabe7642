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
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use super::AppState;
use super::federation::{Upstream, browser_marker, expired_page, failure_page, finish_sign_in, upstream_key};
use super::interaction::redirect;
use crate::audit::{Actor, AuditEvent, AuditKind, AuditOutcome};
use crate::domain::identity::Identity;
use crate::federation::SignInError;
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
    let Some(sp) = state.federation.saml_sp.as_ref() else { return StatusCode::NOT_FOUND.into_response() };
    match sp.metadata_xml() {
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
    let authority = &state.authority;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let Ok(form) = Params::from_form(content_type, &body) else {
        return failure_page(&state, &SignInError::IdToken("the SAML answer is not a single form post".into()), false);
    };
    let (Some(relay_state), Some(response)) = (form.get("RelayState"), form.get("SAMLResponse")) else {
        // An unsolicited (IdP-initiated) response has no RelayState of ours: never accepted.
        return expired_page();
    };
    let record = match authority.stores.ephemeral.take(&upstream_key(relay_state)).await {
        Ok(Some(bytes)) => serde_json::from_slice::<Upstream>(&bytes).ok(),
        _ => None,
    };
    let Some(record) = record else { return expired_page() };
    let Some(provider) = state.federation.get(&record.idp) else { return expired_page() };
    let Some(idp) = provider.saml() else { return expired_page() };
    let now = authority.clock.now();
    let identity = match idp.complete(&record.trip, response, authority.stores.ephemeral.as_ref(), now).await {
        Ok(identity) => identity,
        Err(e) => {
            let actor = Actor { subject: Some(format!("{}:?", record.idp)), ..Default::default() };
            authority
                .audit
                .record_or_log(&AuditEvent::new(AuditKind::SignIn, AuditOutcome::Failed, actor).detail(e.to_string()))
                .await;
            return failure_page(&state, &e, false);
        }
    };
    let reference = random_token(24);
    let stored = match serde_json::to_vec(&Verified { upstream: record, identity }) {
        Ok(bytes) => {
            authority.stores.ephemeral.put(&verified_key(&reference), &bytes, Duration::from_secs(120)).await.is_ok()
        }
        Err(_) => false,
    };
    if !stored {
        return failure_page(&state, &SignInError::Upstream("the sign-in could not be saved".into()), false);
    }
    redirect(&format!("{}?ref={reference}", authority.config.endpoint("/saml/continue")), StatusCode::SEE_OTHER)
}

#[derive(Debug, Deserialize)]
pub struct ContinueQuery {
    #[serde(rename = "ref")]
    reference: Option<String>,
}

/// `GET /saml/continue?ref=…`: the browser that began the sign-in picks it up.
pub async fn resume(State(state): State<AppState>, session: Session, Query(q): Query<ContinueQuery>) -> Response {
    let authority = &state.authority;
    let Some(reference) = q.reference.filter(|r| !r.is_empty() && r.len() <= 64) else { return expired_page() };
    let verified = match authority.stores.ephemeral.take(&verified_key(&reference)).await {
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
