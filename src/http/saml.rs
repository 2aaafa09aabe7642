//! SAML over HTTP: our service-provider metadata, the Assertion Consumer Service (HTTP-POST),
//! the step after it that binds the sign-in to the browser that started it, and single logout.
//!
//! The IdP's form POST to `/saml/acs` is cross-site, so it carries no session cookie (SameSite
//! Lax). The response is verified there and its RelayState (our single-use round trip) consumed;
//! the verified identity waits under a one-time reference while the browser is sent to
//! `/saml/continue`, a top-level GET that does carry the cookie. Only a browser holding the mark
//! set when the sign-in began gets a session: a response replayed into another browser (login
//! CSRF) signs no one in.

use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::AppState;
use super::federation::{expired_page, failure_page, finish_sign_in};
use super::forms::OAuthForm;
use super::page::redirect;
use super::pages::{self, PagePolicy};
use crate::federation::SignInError;
use crate::federation::round_trip::SamlLogout;
use crate::federation::session::SignInSession;

/// `GET /saml/metadata`.
pub async fn metadata(State(app): State<AppState>) -> Response {
    match app.federation.saml_sp.metadata_xml() {
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
pub async fn acs(State(app): State<AppState>, form: OAuthForm) -> Response {
    let Ok(form) = form.params() else {
        return failure_page(&app, &SignInError::IdToken("the SAML answer is not a single form post".into()), false);
    };
    let (Some(relay_state), Some(response)) = (form.get("RelayState"), form.get("SAMLResponse")) else {
        // An unsolicited (IdP-initiated) response has no RelayState of ours: never accepted.
        return expired_page();
    };
    match app.accept_saml_response(relay_state, response).await {
        Ok(Some(reference)) => {
            redirect(&format!("{}?ref={reference}", app.config.endpoint("/saml/continue")), StatusCode::SEE_OTHER)
        }
        Ok(None) => expired_page(),
        Err(e) => failure_page(&app, &e, false),
    }
}

#[derive(Debug, Deserialize)]
pub struct ContinueQuery {
    #[serde(rename = "ref")]
    reference: Option<String>,
}

/// `GET /saml/continue?ref=…`: the browser that began the sign-in picks it up.
pub async fn resume(State(app): State<AppState>, session: Session, Query(q): Query<ContinueQuery>) -> Response {
    let session = SignInSession::new(session);
    let Some(verified) = app.take_saml_verified(q.reference.as_deref().unwrap_or_default()).await else {
        return expired_page();
    };
    if !session.take_round_trip(&verified.upstream.trip.state).await {
        tracing::warn!(idp = %verified.upstream.idp, "a SAML sign-in arrived in a browser that did not start it");
        return expired_page();
    }
    finish_sign_in(&app, &session, verified.upstream, verified.identity).await
}

/// `GET /saml/slo`: a provider's logout request (the user signed out there), or its answer to ours.
pub async fn slo(State(app): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let policy = PagePolicy::default();
    match app.saml_logout_request(&query.unwrap_or_default()).await {
        Ok(SamlLogout::Requested { answer: Some(url) }) => redirect(&url, StatusCode::SEE_OTHER),
        Ok(SamlLogout::Requested { answer: None }) | Ok(SamlLogout::Answered { succeeded: true, then: None }) => {
            pages::signed_out(&policy)
        }
        Ok(SamlLogout::Answered { succeeded: true, then: Some(target) }) => redirect(&target, StatusCode::FOUND),
        Ok(SamlLogout::Answered { succeeded: false, .. }) => pages::error_page(
            StatusCode::OK,
            "You have signed out here",
            "Your organisation's sign-in service could not sign you out. Close the browser to end that session.",
            &policy,
        ),
        Err(e) => pages::error_page(StatusCode::BAD_REQUEST, "This sign-out could not be completed", &e.0, &policy),
    }
}
