//! The audit viewer page: a search form (GET, so a search is a link an auditor can keep), then
//! emergency accesses with their reasons, then every matching record with whether it verifies.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::{PagePolicy, escape, page};
use crate::http::audit_viewer::{Filter, emergency_reason};

pub struct Viewer<'a> {
    pub filter: &'a Filter,
    pub events: &'a [Value],
    pub problem: Option<&'a str>,
    pub searched: bool,
}

fn field(id: &str, label: &str, value: &str, hint: &str) -> String {
    format!(
        "<div class=\"nhsuk-form-group\"><label class=\"nhsuk-label\" for=\"{id}\">{label}</label>\
         <div class=\"nhsuk-hint\">{hint}</div><input class=\"nhsuk-input\" id=\"{id}\" name=\"{id}\" value=\"{}\"></div>",
        escape(value)
    )
}

fn cell(text: &str) -> String {
    format!("<td class=\"nhsuk-table__cell\">{}</td>", escape(text))
}

pub fn viewer(view: &Viewer<'_>, policy: &PagePolicy) -> Response {
    let f = view.filter;
    let outcomes = [("", "Any"), ("success", "Allowed"), ("refused", "Refused"), ("failed", "Failed")]
        .iter()
        .map(|(v, label)| {
            let selected = if f.outcome == *v { " selected" } else { "" };
            format!("<option value=\"{v}\"{selected}>{label}</option>")
        })
        .collect::<String>();
    let form = format!(
        "<form method=\"get\" action=\"/audit\">{}{}{}{}{}\
         <div class=\"nhsuk-form-group\"><label class=\"nhsuk-label\" for=\"outcome\">Outcome</label>\
         <select class=\"nhsuk-select\" id=\"outcome\" name=\"outcome\">{outcomes}</select></div>\
         <button class=\"nhsuk-button\" type=\"submit\">Search the access log</button></form>",
        field("patient", "Patient", &f.patient, "NHS number, 10 digits"),
        field("user", "User", &f.user, "as recorded, for example cis2:555057896106"),
        field("org", "Organisation", &f.org, "ODS code of the user's organisation"),
        field("since", "From", &f.since, "date, for example 2026-12-01"),
        field("until", "To", &f.until, "date, inclusive"),
    );
    let problem = view.problem.map_or_else(String::new, |p| {
        format!(
            "<div class=\"nhsuk-error-summary\" role=\"alert\"><h2 class=\"nhsuk-error-summary__title\">The search could not be run</h2><p>{}</p></div>",
            escape(p)
        )
    });
    let mut emergencies = String::new();
    let mut rows = String::new();
    for event in view.events {
        let when = event["recorded"].as_str().unwrap_or_default();
        let who = event["agent"][0]["who"]["display"]
            .as_str()
            .or_else(|| event["agent"][0]["who"]["identifier"]["value"].as_str())
            .unwrap_or("-");
        let org = event["source"]["site"].as_str().unwrap_or("-");
        let patient = event["entity"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|e| e["what"]["reference"].as_str()?.strip_prefix("Patient/")?.split('/').next())
            .unwrap_or("-");
        let what = event["subtype"][0]["code"].as_str().or_else(|| event["type"]["code"].as_str()).unwrap_or("-");
        let outcome = match event["outcome"].as_str() {
            Some("0") => "Allowed",
            Some("4") => "Refused",
            _ => "Failed",
        };
        let verified = event["extension"][0]["valueBoolean"].as_bool() == Some(true);
        if let Some(reason) = emergency_reason(event) {
            emergencies.push_str(&format!(
                "<li><strong>{}</strong>: {} opened the record of {} ({}) — reason given: {}</li>",
                escape(when),
                escape(who),
                escape(patient),
                escape(org),
                escape(reason)
            ));
        }
        rows.push_str(&format!(
            "<tr class=\"nhsuk-table__row\">{}{}{}{}{}{}{}</tr>",
            cell(when),
            cell(who),
            cell(org),
            cell(patient),
            cell(what),
            cell(outcome),
            cell(if verified { "Yes" } else { "NO: investigate" })
        ));
    }
    let emergency_html = if emergencies.is_empty() {
        String::new()
    } else {
        format!(
            "<div class=\"nhsuk-warning-callout\"><h2 class=\"nhsuk-warning-callout__label\">Emergency (break-glass) access</h2><ul>{emergencies}</ul></div>"
        )
    };
    let results = if !view.searched || view.problem.is_some() {
        String::new()
    } else if view.events.is_empty() {
        "<p>No record matches this search.</p>".to_owned()
    } else {
        format!(
            "<table class=\"nhsuk-table\"><caption class=\"nhsuk-table__caption\">{} record(s), emergency access first, then newest first</caption>\
             <thead><tr><th scope=\"col\">When (UTC)</th><th scope=\"col\">Who</th><th scope=\"col\">Organisation</th>\
             <th scope=\"col\">Patient</th><th scope=\"col\">What</th><th scope=\"col\">Outcome</th><th scope=\"col\">Verifies</th></tr></thead>\
             <tbody>{rows}</tbody></table>",
            view.events.len()
        )
    };
    let body = format!(
        "<h1>Access log</h1><p>Every access to a care record, who made it and whether it was allowed. Searching here is itself recorded.</p>\
         {problem}{form}{emergency_html}{results}"
    );
    page(StatusCode::OK, "Access log", &body, policy)
}
