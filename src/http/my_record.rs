//! The signed-in patient's own pages under `/my-record/`, in the NHS look, usable inside the NHS
//! App (no header there, a way back) and without JavaScript:
//! - `access-history`: who has looked at their record. Reading it is itself a disclosure about
//!   the patient, and audited as one.
//! - `sharing`: their sharing choices (FHIR `Consent`), to record and withdraw. The page acts as
//!   the patient through the same FHIR operations, guard, policy and audit as an app would.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};
use tower_sessions::Session;

use super::AppState;
use super::extract::PostedForm;
use super::page::PageError;
use super::pages::{self, PagePolicy};
use crate::app::App;
use crate::audit::{Actor, AuditEvent, AuditKind, AuditOutcome};
use crate::federation::session::{SessionUser, SignInSession};
use crate::fhir::consent::{ODS_SYSTEM, SCOPE_SYSTEM};
use crate::fhir::guard::Caller;
use crate::fhir::outcome::FhirError;
use crate::token::access::AccessTokenClaims;

/// The most entries the access-history page lists.
const MAX_ENTRIES: i64 = 500;
/// The client id pages act under in the audit and the policy.
pub(super) const PAGES_CLIENT: &str = "carebroker-pages";
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
    let events: Vec<(String, Value)> =
        history.into_iter().map(|(time, event)| (crate::clock::uk_local_time(time), event)).collect();
    let name = user.identity.name.clone().unwrap_or_else(|| "You".into());
    pages::history::access_history(&name, &events, back.as_deref(), &policy)
}

/// The patient as a FHIR caller: what a patient app's token for them would carry.
fn patient_caller(app: &App, user: &SessionUser, patient: &str) -> Caller {
    page_caller(app, user, "patient/Consent.cruds patient/CarePlan.rs", Some(patient))
}

/// The signed-in user as a FHIR caller on one of carebroker's pages: `scope`, the patient in
/// context, and the roles the policy maps their sign-in to, exactly as a token would carry them.
pub(super) fn page_caller(app: &App, user: &SessionUser, scope: &str, patient: Option<&str>) -> Caller {
    let now = app.clock.now();
    let policy = app.policy.load_full();
    let holder = crate::oauth::scope_policy::user_holder(&**policy, &user.identity, PAGES_CLIENT);
    let claims = AccessTokenClaims {
        iss: app.issuer().to_owned(),
        sub: user.identity.platform_subject(),
        aud: app.fhir_base().to_owned(),
        exp: now + 60,
        iat: now,
        jti: crate::token::random_token(12),
        client_id: PAGES_CLIENT.into(),
        scope: scope.into(),
        grant_id: Some(user.session_id.clone()),
        fhir_user: user.identity.fhir_user.clone(),
        patient: patient.map(str::to_owned),
        roles: holder.roles,
        org: holder.org,
        assurance: Some(holder.assurance),
        ..Default::default()
    };
    Caller::on_page(claims, None, now)
}

/// The parts of the patient's plans (their categories, with a name where the plan gives one).
async fn plan_parts(app: &App, caller: &Caller, patient: &str) -> Result<Vec<(String, String, String)>, FhirError> {
    let plans = app.search_careplans(caller, Some(&format!("patient={patient}"))).await?;
    let mut parts: Vec<(String, String, String)> = Vec::new();
    for entry in plans.body["entry"].as_array().into_iter().flatten() {
        for coding in entry["resource"]["category"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["coding"].as_array().into_iter().flatten())
        {
            let (Some(system), Some(code)) = (coding["system"].as_str(), coding["code"].as_str()) else { continue };
            let name = coding["display"].as_str().or_else(|| entry["resource"]["title"].as_str()).unwrap_or(code);
            if !parts.iter().any(|(s, c, _)| s == system && c == code) {
                parts.push((system.to_owned(), code.to_owned(), name.to_owned()));
            }
        }
    }
    Ok(parts)
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
    let parts = plan_parts(app, &caller, &patient).await;
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

/// A new choice as a Consent, from the form.
fn choice_from_form(form: &PostedForm, patient: &str, now_ms: i64) -> Result<Value, String> {
    let ods = |name: &str| -> Result<Option<Value>, String> {
        match form.fields.get(name).map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(code) if code.len() <= 10 && code.bytes().all(|b| b.is_ascii_alphanumeric()) => Ok(Some(
                json!([{"reference": {"identifier": {"system": ODS_SYSTEM, "value": code.to_ascii_uppercase()}}}]),
            )),
            Some(_) => Err("An organisation code is 3 to 10 letters and numbers, like B86011.".into()),
        }
    };
    let deny = match form.fields.get("kind") {
        Some("organisation") => {
            let actor = ods("organisation")?.ok_or("Enter the code of the organisation.")?;
            json!({"type": "deny", "actor": actor})
        }
        Some("part") => {
            let (system, code) =
                form.fields.get("part").and_then(|p| p.rsplit_once('|')).ok_or("Choose a part of your plan.")?;
            let mut deny = json!({"type": "deny", "code": [{"coding": [{"system": system, "code": code}]}]});
            if let Some(gp) = ods("except")? {
                deny["provision"] = json!([{"type": "permit", "actor": gp}]);
            }
            deny
        }
        _ => return Err("Choose what you want to keep private.".into()),
    };
    Ok(json!({
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": SCOPE_SYSTEM, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Consent Document"}]}],
        "patient": {"reference": format!("Patient/{patient}")},
        "dateTime": crate::audit::fhir::instant(now_ms),
        "provision": {"type": "permit", "provision": [deny]}
    }))
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
        Some("add") => match choice_from_form(&form, &patient, app.clock.now_millis()) {
            Ok(consent) => {
                app.create_consent(&caller, consent.to_string().as_bytes()).await.map_err(|e| problem_of(&e))
            }
            Err(problem) => Err(problem),
        },
        Some("withdraw") => {
            let id = form.fields.get("id").unwrap_or_default();
            match app.read_consent(&caller, id).await {
                Ok(current) => {
                    let mut consent = current.body;
                    consent["status"] = json!("inactive");
                    let version = format!("W/\"{}\"", current.version.unwrap_or_default());
                    app.update_consent(&caller, id, Some(&version), consent.to_string().as_bytes())
                        .await
                        .map_err(|e| problem_of(&e))
                }
                Err(e) => Err(problem_of(&e)),
            }
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
