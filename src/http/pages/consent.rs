//! The consent page: each requested scope in plain words, as a checkbox the user may untick.

use axum::http::StatusCode;
use axum::response::Response;

use super::{PagePolicy, escape, hidden_fields, page};
use crate::domain::scope::{Permissions, Scope, ScopeContext, ScopeSet};

fn resource_words(resource: Option<&str>) -> String {
    match resource {
        None => "all kinds of record".to_owned(),
        Some("CarePlan") => "care plans".to_owned(),
        Some("Patient") => "demographic details (name, date of birth, address)".to_owned(),
        Some("Practitioner") => "details of health and care staff".to_owned(),
        Some("RelatedPerson") => "details of carers and relatives".to_owned(),
        Some("AuditEvent") => "the access log".to_owned(),
        Some(other) => format!("{other} records"),
    }
}

fn permission_words(p: Permissions) -> String {
    let mut verbs = Vec::new();
    for (bit, verb) in [
        (Permissions::READ, "see"),
        (Permissions::SEARCH, "search"),
        (Permissions::CREATE, "create"),
        (Permissions::UPDATE, "change"),
        (Permissions::DELETE, "delete"),
    ] {
        if p.contains(bit) {
            verbs.push(verb);
        }
    }
    match verbs.as_slice() {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// A scope in plain words.
pub fn describe(scope: &Scope) -> String {
    match scope {
        Scope::Resource(r) => {
            let whose = match r.context {
                ScopeContext::Patient => "of the patient you choose",
                ScopeContext::User => "you have access to",
                ScopeContext::System => "held by this service",
            };
            let limit = if r.params.is_empty() {
                String::new()
            } else {
                format!(
                    " (only where {})",
                    r.params.iter().map(|(k, v)| format!("{k} is {v}")).collect::<Vec<_>>().join(" and ")
                )
            };
            let verbs = permission_words(r.permissions);
            let mut sentence = format!("{verbs} {} {whose}{limit}", resource_words(r.resource.as_deref()));
            if let Some(first) = sentence.get(..1) {
                sentence = first.to_uppercase() + &sentence[1..];
            }
            sentence
        }
        Scope::Launch => "Open with the patient and context of your record system".to_owned(),
        Scope::LaunchContext { resource, .. } if resource == "patient" => {
            "Know which patient you have chosen".to_owned()
        }
        Scope::LaunchContext { resource, .. } => format!("Know which {resource} you are working on"),
        Scope::OpenId => "Confirm who you are".to_owned(),
        Scope::FhirUser => "Know your role record (as a member of staff, carer or patient)".to_owned(),
        Scope::OidcClaims("profile") => "See your name".to_owned(),
        Scope::OidcClaims(other) => format!("See your {other}"),
        Scope::OfflineAccess => "Stay connected after you sign out, until you withdraw access".to_owned(),
        Scope::OnlineAccess => "Stay connected while you are signed in".to_owned(),
        Scope::Extension(name) => format!("Service-specific access: {name}"),
    }
}

/// The consent form.
pub fn consent(csrf: &str, pending_id: &str, client_name: &str, scopes: &ScopeSet, policy: &PagePolicy) -> Response {
    let mut items = String::new();
    for (i, scope) in scopes.iter().enumerate() {
        let value = scope.to_string();
        items.push_str(&format!(
            "<div class=\"nhsuk-checkboxes__item\"><input class=\"nhsuk-checkboxes__input\" id=\"scope-{i}\" name=\"scope\" type=\"checkbox\" value=\"{v}\" checked>\
             <label class=\"nhsuk-label nhsuk-checkboxes__label\" for=\"scope-{i}\">{words} <span class=\"nhsuk-hint\">({v})</span></label></div>",
            v = escape(&value),
            words = escape(&describe(scope)),
        ));
    }
    let body = format!(
        "<form method=\"post\" action=\"/authorize/consent\">{}\
         <fieldset class=\"nhsuk-fieldset\"><legend class=\"nhsuk-fieldset__legend nhsuk-fieldset__legend--l\">\
         <h1 class=\"nhsuk-fieldset__heading\">Allow {} to:</h1></legend>\
         <p class=\"nhsuk-hint\">Untick anything you do not want to allow.</p>\
         <div class=\"nhsuk-checkboxes\">{items}</div></fieldset>\
         <button class=\"nhsuk-button\" type=\"submit\" name=\"decision\" value=\"allow\">Allow</button> \
         <button class=\"nhsuk-button nhsuk-button--secondary\" type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
        hidden_fields(csrf, pending_id),
        escape(client_name)
    );
    page(StatusCode::OK, "Allow access", &body, policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_read_as_plain_words() {
        let d = |s: &str| describe(&Scope::parse(s).unwrap());
        assert_eq!(d("patient/CarePlan.rs"), "See and search care plans of the patient you choose");
        assert_eq!(d("user/*.cruds"), "See, search, create, change and delete all kinds of record you have access to");
        assert_eq!(
            d("patient/Observation.rs?category=laboratory"),
            "See and search Observation records of the patient you choose (only where category is laboratory)"
        );
        assert_eq!(d("launch/patient"), "Know which patient you have chosen");
    }
}
