//! `GET /my-record/access-history`: the signed-in patient's own access history as a page.
//! Reading it is itself a disclosure about the patient, and audited as one.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

use super::AppState;
use super::page::PageError;
use super::pages::{self, PagePolicy};
use crate::audit::{Actor, AuditEvent, AuditKind, AuditOutcome};
use crate::federation::session::SignInSession;

/// The most entries the page lists.
const MAX_ENTRIES: i64 = 500;

pub async fn access_history(State(app): State<AppState>, session: Session, headers: HeaderMap) -> Response {
    let in_app = super::nhs_app::in_nhs_app(&headers);
    let policy = PagePolicy { hide_header: in_app, ..PagePolicy::default() };
    let back = in_app.then_some(app.config.nhs_app.home_url.as_str());
    let user = match SignInSession::new(session).user(&app).await {
        Ok(user) => user,
        Err(e) => return PageError::from(e).into_response(),
    };
    let Some(user) = user else {
        let why = "Open this page from the NHS App, or sign in to your care plan first.";
        return pages::error_page(
            StatusCode::UNAUTHORIZED,
            "Sign in to see who has looked at your record",
            why,
            &policy,
        );
    };
    let Some(patient) = user.identity.own_patient_id().map(str::to_owned) else {
        let why = "Only a patient can see who has looked at their own record.";
        return pages::error_page(StatusCode::FORBIDDEN, "This page is for patients", why, &policy);
    };
    let result = app.patient_access_history(&patient, MAX_ENTRIES).await;
    let actor = Actor {
        subject: Some(user.identity.platform_subject()),
        name: user.identity.name.clone(),
        fhir_user: user.identity.fhir_user.clone(),
        ..Default::default()
    };
    let outcome = if result.is_ok() { AuditOutcome::Success } else { AuditOutcome::Failed };
    let event = AuditEvent::new(AuditKind::FhirSearch, outcome, actor)
        .target("AuditEvent", None, None)
        .patient(Some(&patient))
        .detail("access history page");
    if app.audit.record(&event).await.is_err() {
        return PageError::Session.into_response();
    }
    let Ok(history) = result else { return PageError::Session.into_response() };
    let events: Vec<(String, serde_json::Value)> =
        history.into_iter().map(|(time, event)| (crate::clock::uk_local_time(time), event)).collect();
    let name = user.identity.name.clone().unwrap_or_else(|| "You".into());
    pages::history::access_history(&name, &events, back, &policy)
}
