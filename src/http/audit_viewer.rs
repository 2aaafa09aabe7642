//! `GET /audit`: the audit viewer for information-governance staff (the policy's `auditor`
//! role), in the NHS look and without JavaScript. It searches the FHIR AuditEvent API as the
//! signed-in auditor, through the same guard, policy and audit as any client (so every search is
//! itself on the record), by patient, user, organisation, time and outcome, and shows emergency
//! (break-glass) accesses first and whether each record verifies against the chain.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use tower_sessions::Session;

use super::AppState;
use super::page::PageError;
use super::pages::{self, PagePolicy};
use crate::federation::session::SignInSession;

/// The viewer's search form.
#[derive(Debug, Default, Deserialize)]
pub struct Filter {
    #[serde(default)]
    pub patient: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub org: String,
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub outcome: String,
}

fn is_date(text: &str) -> bool {
    time::Date::parse(text, time::macros::format_description!("[year]-[month]-[day]")).is_ok()
}

impl Filter {
    /// What is wrong with the form, in words, or the FHIR search it asks for.
    fn query(&self) -> Result<String, String> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("_count", "100");
        let patient = self.patient.trim();
        if !patient.is_empty() {
            if patient.len() != 10 || !patient.bytes().all(|b| b.is_ascii_digit()) {
                return Err("An NHS number is 10 digits.".into());
            }
            query.append_pair("patient", patient);
        }
        let user = self.user.trim();
        if !user.is_empty() {
            if user.len() > 200 {
                return Err("The user is too long.".into());
            }
            query.append_pair("agent", user);
        }
        let org = self.org.trim();
        if !org.is_empty() && (org.len() > 10 || !org.bytes().all(|b| b.is_ascii_alphanumeric())) {
            return Err("An organisation code is up to 10 letters and numbers.".into());
        }
        for (value, prefix, what) in [(&self.since, "ge", "From"), (&self.until, "le", "To")] {
            let value = value.trim();
            if !value.is_empty() {
                if !is_date(value) {
                    return Err(format!("{what} must be a date such as 2026-12-01."));
                }
                query.append_pair("date", &format!("{prefix}{value}"));
            }
        }
        if !matches!(self.outcome.as_str(), "" | "success" | "refused" | "failed") {
            return Err("Choose an outcome from the list.".into());
        }
        Ok(query.finish())
    }

    fn keeps(&self, event: &Value) -> bool {
        let org = self.org.trim();
        let org_ok = org.is_empty() || event["source"]["site"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(org));
        let outcome = event["outcome"].as_str().unwrap_or_default();
        let outcome_ok = match self.outcome.as_str() {
            "success" => outcome == "0",
            "refused" => outcome == "4",
            "failed" => outcome == "8",
            _ => true,
        };
        org_ok && outcome_ok
    }
}

/// The break-glass reason an AuditEvent records, if any.
pub fn emergency_reason(event: &Value) -> Option<&str> {
    let detail = event["outcomeDesc"].as_str()?;
    detail.split("; ").find_map(|part| part.strip_prefix("break-glass: "))
}

pub async fn audit_viewer(State(app): State<AppState>, session: Session, Query(filter): Query<Filter>) -> Response {
    let policy = PagePolicy::default();
    let user = match SignInSession::new(session).user(&app).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            let why = "Sign in with your smartcard or your organisation's account, then open this page again.";
            return pages::error_page(StatusCode::UNAUTHORIZED, "Sign in to review the access log", why, &policy);
        }
        Err(e) => return PageError::from(e).into_response(),
    };
    // the auditor as the FHIR AuditEvent API will judge them: the roles their sign-in maps to
    let caller = app.page_caller(&user, "user/AuditEvent.rs", None);
    if !caller.claims.roles.iter().any(|r| r == "auditor") {
        let why = "The access log is for information governance staff (the auditor role).";
        return pages::error_page(StatusCode::FORBIDDEN, "You cannot review the access log", why, &policy);
    }
    let searched = !(filter.patient.is_empty()
        && filter.user.is_empty()
        && filter.org.is_empty()
        && filter.since.is_empty()
        && filter.until.is_empty()
        && filter.outcome.is_empty());
    let (events, problem) = match filter.query() {
        Err(problem) => (Vec::new(), Some(problem)),
        Ok(_) if !searched => (Vec::new(), None),
        Ok(query) => {
            match app.search_audit_events(&caller, Some(&query)).await {
                Ok(bundle) => {
                    let mut events: Vec<Value> = bundle.body["entry"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|e| e["resource"].clone())
                        .filter(|e| filter.keeps(e))
                        .collect();
                    // emergency accesses first, each group newest first as searched
                    events.sort_by_key(|e| emergency_reason(e).is_none());
                    (events, None)
                }
                Err(e) => {
                    let why = e.issues().into_iter().map(|i| i.diagnostics).collect::<Vec<_>>().join(" ");
                    (Vec::new(), Some(why))
                }
            }
        }
    };
    let view = pages::audit::Viewer { filter: &filter, events: &events, problem: problem.as_deref(), searched };
    pages::audit::viewer(&view, &policy)
}
