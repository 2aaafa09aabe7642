//! "Who sees my care plan": the patient's sharing choices in words, each with a button to
//! withdraw it, and the two kinds of choice they can make. Plain forms, no JavaScript.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::{PagePolicy, escape, page};

/// What the page shows.
pub struct Sharing<'a> {
    pub csrf: &'a str,
    /// The patient's active Consents.
    pub choices: &'a [Value],
    /// The parts of their plans: (system, code, name).
    pub parts: &'a [(String, String, String)],
    /// Why the last choice could not be recorded.
    pub problem: Option<&'a str>,
}

fn organisations(actors: &Value) -> Vec<String> {
    actors
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["reference"]["identifier"]["value"].as_str().map(str::to_owned))
        .collect()
}

/// One choice in words.
fn describe(deny: &Value, parts: &[(String, String, String)]) -> String {
    if deny["type"] == "permit" {
        let who: Vec<&str> = deny["actor"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["reference"]["reference"].as_str())
            .collect();
        return format!("Let {} add notes to your plan", who.join(", "));
    }
    let orgs = organisations(&deny["actor"]);
    let codes: Vec<String> = crate::fhir::consent::codings(&deny["code"])
        .into_iter()
        .map(|(system, code)| {
            parts.iter().find(|(s, c, _)| *s == system && *c == code).map_or(code, |(_, _, name)| name.clone())
        })
        .collect();
    let except: Vec<String> =
        deny["provision"].as_array().into_iter().flatten().flat_map(|p| organisations(&p["actor"])).collect();
    let what = if codes.is_empty() {
        "your care plan".to_owned()
    } else {
        format!("the {} part of your plan", codes.join(", "))
    };
    let who = if orgs.is_empty() { "anyone".to_owned() } else { format!("organisation {}", orgs.join(", ")) };
    let mut sentence = format!("Do not share {what} with {who}");
    if !except.is_empty() {
        sentence.push_str(&format!(", except {}", except.join(", ")));
    }
    sentence
}

pub fn sharing(view: &Sharing<'_>, back: Option<&str>, policy: &PagePolicy) -> Response {
    let csrf = format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", escape(view.csrf));
    let mut rows = String::new();
    for consent in view.choices {
        let id = consent["id"].as_str().unwrap_or_default();
        for deny in consent["provision"]["provision"].as_array().into_iter().flatten() {
            rows.push_str(&format!(
                "<li><p>{}</p><form method=\"post\" action=\"/my-record/sharing\">{csrf}\
                 <input type=\"hidden\" name=\"action\" value=\"withdraw\"><input type=\"hidden\" name=\"id\" value=\"{}\">\
                 <button class=\"nhsuk-button nhsuk-button--secondary\" type=\"submit\">Withdraw this choice</button></form></li>",
                escape(&describe(deny, view.parts)),
                escape(id)
            ));
        }
    }
    let current = if rows.is_empty() {
        "<p>You have not made any choices. Everyone caring for you can see your care plan.</p>".to_owned()
    } else {
        format!("<ul class=\"nhsuk-list\">{rows}</ul>")
    };
    let problem = view.problem.map_or_else(String::new, |p| {
        format!(
            "<div class=\"nhsuk-error-summary\" role=\"alert\"><h2 class=\"nhsuk-error-summary__title\">Your choice was not saved</h2><p>{}</p></div>",
            escape(p)
        )
    });
    let options: String = view
        .parts
        .iter()
        .map(|(system, code, name)| {
            format!("<option value=\"{}|{}\">{}</option>", escape(system), escape(code), escape(name))
        })
        .collect();
    let part_form = if view.parts.is_empty() {
        String::new()
    } else {
        format!(
            "<form method=\"post\" action=\"/my-record/sharing\">{csrf}<input type=\"hidden\" name=\"action\" value=\"add\">\
             <input type=\"hidden\" name=\"kind\" value=\"part\"><h2>Keep a part of your plan private</h2>\
             <label class=\"nhsuk-label\" for=\"part\">Part of your plan</label><select class=\"nhsuk-select\" id=\"part\" name=\"part\">{options}</select>\
             <label class=\"nhsuk-label\" for=\"except\">Except for (organisation code, for example your GP practice; optional)</label>\
             <input class=\"nhsuk-input\" id=\"except\" name=\"except\" maxlength=\"10\">\
             <button class=\"nhsuk-button\" type=\"submit\">Save this choice</button></form>"
        )
    };
    let back_html = back.map_or_else(String::new, |url| {
        format!("<a class=\"nhsuk-back-link__link\" href=\"{}\">Back to the NHS App</a>", escape(url))
    });
    let body = format!(
        "{back_html}<h1>Who sees your care plan</h1>{problem}\
         <p>Your urgent care plan is shared with the people caring for you. You can choose to keep it, or a part of it, \
         from an organisation. In an emergency a clinician can still open it: they must give a reason, and you will see \
         it in <a href=\"/my-record/access-history\">who has looked at your record</a>. Services such as NHS 111 will \
         still be told that you have a plan, but not what is in it.</p>\
         <h2>Your choices</h2>{current}\
         <form method=\"post\" action=\"/my-record/sharing\">{csrf}<input type=\"hidden\" name=\"action\" value=\"add\">\
         <input type=\"hidden\" name=\"kind\" value=\"organisation\"><h2>Keep your plan from an organisation</h2>\
         <label class=\"nhsuk-label\" for=\"organisation\">Organisation code (for example B86011)</label>\
         <input class=\"nhsuk-input\" id=\"organisation\" name=\"organisation\" maxlength=\"10\" required>\
         <button class=\"nhsuk-button\" type=\"submit\">Save this choice</button></form>{part_form}"
    );
    page(StatusCode::OK, "Who sees your care plan", &body, policy)
}
