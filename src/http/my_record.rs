//! The signed-in patient's own pages under `/my-record/`, in the NHS look, usable inside the NHS
//! App (no header there, a way back) and without JavaScript:
//! - `access-history`: who has looked at their record. Reading it is itself a disclosure about
//!   the patient, and audited as one.
//! - `sharing`: their sharing choices (FHIR `Consent`), to record and withdraw. The page acts as
//!   the patient through the same FHIR operations, guard, policy and audit as an app would.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::Value;
use tower_sessions::Session;

use super::AppState;
use super::extract::PostedForm;
use super::page::PageError;
use super::pages::{self, PagePolicy};
use crate::app::App;
use crate::federation::session::{SessionUser, SignInSession};
use crate::fhir::consent::ChoiceRequest;
use crate::fhir::guard::Caller;
use crate::fhir::outcome::FhirError;

/// The most entries the access-history page lists.
const MAX_ENTRIES: i64 = 500;
const SHARING_PATH: &str = "/my-record/sharing";

/// The page policy and the way back into the NHS App, when the page is opened there.
fn look(app: &App, headers: &HeaderMap) -> (PagePolicy, Option<String>) {
    let in_app = super::nhs_app::in_nhs_app(headers);
    let back = in_app.then(|| app.config.nhs_app.home_url.clone());
    (PagePolicy { hide_header: in_app, ..PagePolicy::default() }, back)
}

/// The signed-in patient and their NHS number, or the page that says why not.
async fn signed_in_patient(
    app: &App,
    session: &SignInSession,
    what: &str,
    policy: &PagePolicy,
) -> Result<(SessionUser, String), Response> {
    let user = session.user(app).await.map_err(|e| PageError::from(e).into_response())?;
    let Some(user) = user else {
        let why = "Open this page from the NHS App, or sign in to your care plan first.";
        return Err(pages::error_page(StatusCode::UNAUTHORIZED, &format!("Sign in to {what}"), why, policy));
    };
    let Some(patient) = user.identity.own_patient_id().map(str::to_owned) else {
        let why = "Only a patient can use this page for their own record.";
        return Err(pages::error_page(StatusCode::FORBIDDEN, "This page is for patients", why, policy));
    };
    Ok((user, patient))
}

pub async fn access_history(State(app): State<AppState>, session: Session, headers: HeaderMap) -> Response {
    let (policy, back) = look(&app, &headers);
    let (user, patient) =
        match signed_in_patient(&app, &SignInSession::new(session), "see who has looked at your record", &policy).await
        {
            Ok(found) => found,
            Err(page) => return page,
        };
    let Ok(history) = app.patient_access_history(&user.identity, &patient, MAX_ENTRIES).await else {
        return PageError::Session.into_response();
    };
    let events: Vec<(String, Value)> =
        history.into_iter().map(|(time, event)| (crate::clock::uk_local_time(time), event)).collect();
    let name = user.identity.name.clone().unwrap_or_else(|| "You".into());
    pages::history::access_history(&name, &events, back.as_deref(), &policy)
}

/// The patient as a FHIR caller: what a patient app's token for them would carry.
fn patient_caller(app: &App, user: &SessionUser, patient: &str) -> Caller {
    app.page_caller(user, "patient/Consent.cruds patient/CarePlan.rs", Some(patient))
}

/// The page, with `problem` above the forms when the last choice could not be recorded.
async fn sharing_page(app: &App, session: &SignInSession, headers: &HeaderMap, problem: Option<String>) -> Response {
    let (policy, back) = look(app, headers);
    let (user, patient) = match signed_in_patient(app, session, "manage who sees your care plan", &policy).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let caller = patient_caller(app, &user, &patient);
    let choices = app.search_consents(&caller, Some(&format!("patient={patient}&status=active"))).await;
    let parts = app.plan_parts(&caller, &patient).await;
    let (Ok(choices), Ok(parts)) = (choices, parts) else { return PageError::Session.into_response() };
    let choices: Vec<Value> =
        choices.body["entry"].as_array().into_iter().flatten().map(|e| e["resource"].clone()).collect();
    let csrf = match session.csrf_token().await {
        Ok(csrf) => csrf,
        Err(e) => return PageError::from(e).into_response(),
    };
    let view = pages::sharing::Sharing { csrf: &csrf, choices: &choices, parts: &parts, problem: problem.as_deref() };
    pages::sharing::sharing(&view, back.as_deref(), &policy)
}

pub async fn sharing(State(app): State<AppState>, session: Session, headers: HeaderMap) -> Response {
    sharing_page(&app, &SignInSession::new(session), &headers, None).await
}

/// What went wrong, in words for the patient.
fn problem_of(error: &FhirError) -> String {
    match error {
        FhirError::Unprocessable(issues) | FhirError::BadRequest(issues) => {
            issues.iter().map(|i| i.diagnostics.clone()).collect::<Vec<_>>().join(" ")
        }
        FhirError::PolicyDenied { .. } | FhirError::Denied { .. } | FhirError::InsufficientScope(_) => {
            "You cannot make this choice for this record.".into()
        }
        _ => "Your choice could not be saved. Try again in a few minutes.".into(),
    }
}

pub async fn change_sharing(State(app): State<AppState>, headers: HeaderMap, form: PostedForm) -> Response {
    let (policy, _) = look(&app, &headers);
    let (user, patient) = match signed_in_patient(&app, &form.session, "manage who sees your care plan", &policy).await
    {
        Ok(found) => found,
        Err(page) => return page,
    };
    let caller = patient_caller(&app, &user, &patient);
    let done = match form.fields.get("action") {
        Some("add") => {
            let fields = &form.fields;
            let request = ChoiceRequest {
                kind: fields.get("kind"),
                organisation: fields.get("organisation"),
                part: fields.get("part"),
                except: fields.get("except"),
            };
            match request.consent(&patient, app.clock.now_millis()) {
                Ok(consent) => {
                    app.create_consent(&caller, consent.to_string().as_bytes()).await.map_err(|e| problem_of(&e))
                }
                Err(problem) => Err(problem),
            }
        }
        Some("withdraw") => {
            let id = form.fields.get("id").unwrap_or_default();
            app.withdraw_consent(&caller, id).await.map_err(|e| problem_of(&e))
        }
        _ => Err("Choose what you want to do.".into()),
    };
    match done {
        // back to the page by GET, so a reload does not send the form again
        Ok(_) => Redirect::to(SHARING_PATH).into_response(),
        Err(problem) => {
            let mut page = sharing_page(&app, &form.session, &headers, Some(problem)).await;
            if page.status() == StatusCode::OK {
                *page.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            }
            page
        }
    }
}
