//! "Who has looked at my record": the access history of the signed-in patient's own record, in
//! the NHS look, without JavaScript, usable inside the NHS App (no header there, a way back).

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::{PagePolicy, escape, page};

/// What happened, in words, from the event's subtype.
fn what(event: &Value) -> &'static str {
    match event["subtype"][0]["code"].as_str().unwrap_or_default() {
        "read" | "vread" | "history-instance" => "Viewed your record",
        "search-type" => "Searched for your record",
        "create" => "Created a plan",
        "update" => "Changed your plan",
        "token-issue" | "token-exchange" => "Was given access",
        "token-refresh" => "Renewed access",
        "token-revoke" => "Gave up access",
        "launch" => "Opened your record from their system",
        "110122" => "Signed in",
        "110123" => "Signed out",
        _ => "Used your record",
    }
}

fn cell(text: &str) -> String {
    format!("<td class=\"nhsuk-table__cell\">{}</td>", escape(text))
}

/// The page: one row per access (newest first), emergency accesses shown with their reason.
/// `events` are (when, in UK time; the patient's view of the AuditEvent).
pub fn access_history(name: &str, events: &[(String, Value)], back: Option<&str>, policy: &PagePolicy) -> Response {
    let mut rows = String::new();
    let mut emergencies = String::new();
    for (when, event) in events {
        let who = event["agent"][0]["who"]["display"].as_str().unwrap_or("A system or app (no person named)");
        let roles: Vec<&str> = event["agent"][0]["role"]
            .as_array()
            .map(|r| r.iter().filter_map(|r| r["coding"][0]["code"].as_str()).collect())
            .unwrap_or_default();
        let org = event["source"]["site"].as_str().unwrap_or("-");
        let refused = event["outcome"] != "0";
        let action =
            if refused { format!("Was refused: {}", what(event).to_lowercase()) } else { what(event).to_owned() };
        let verified = event["extension"][0]["valueBoolean"].as_bool() == Some(true);
        let emergency = event["purposeOfEvent"][0]["text"].as_str();
        if let Some(reason) = emergency {
            emergencies.push_str(&format!("<li>{}: {} ({})</li>", escape(when), escape(reason), escape(who)));
        }
        rows.push_str(&format!(
            "<tr class=\"nhsuk-table__row\">{}{}{}{}{}{}</tr>",
            cell(when),
            cell(who),
            cell(&roles.join(", ")),
            cell(org),
            cell(&format!("{action}{}", if emergency.is_some() { " in an emergency" } else { "" })),
            cell(if verified { "Yes" } else { "No: reported to the information governance team" }),
        ));
    }
    let emergency_html = if emergencies.is_empty() {
        String::new()
    } else {
        format!(
            "<div class=\"nhsuk-warning-callout\"><h2 class=\"nhsuk-warning-callout__label\">Emergency access</h2>\
             <p>Someone opened your record in an emergency. They gave these reasons:</p><ul>{emergencies}</ul></div>"
        )
    };
    let table = if events.is_empty() {
        "<p>Nobody has looked at your care plan yet.</p>".to_owned()
    } else {
        format!(
            "<table class=\"nhsuk-table\"><caption class=\"nhsuk-table__caption\">Every time your record was opened, newest first</caption>\
             <thead><tr><th scope=\"col\">When (UK time)</th><th scope=\"col\">Who</th><th scope=\"col\">Role</th>\
             <th scope=\"col\">Organisation</th><th scope=\"col\">What</th><th scope=\"col\">Record checked</th></tr></thead>\
             <tbody>{rows}</tbody></table>"
        )
    };
    let back_html = back.map_or_else(String::new, |url| {
        format!("<a class=\"nhsuk-back-link__link\" href=\"{}\">Back to the NHS App</a>", escape(url))
    });
    let body = format!(
        "{back_html}<h1>Who has looked at your record</h1><p>{}: these are the people and services that opened your \
         urgent care plan. \"Record checked\" says whether each entry matches the tamper-evident log.</p>{emergency_html}{table}",
        escape(name)
    );
    page(StatusCode::OK, "Who has looked at your record", &body, policy)
}
