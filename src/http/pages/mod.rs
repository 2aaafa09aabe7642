//! Server-rendered pages in the NHS service style: sign-in, patient picker, consent, errors,
//! sign-out. Plain HTML forms that work without JavaScript, labelled fields, one `h1` per page,
//! a CSRF token in every form, and a Content-Security-Policy that allows framing only by the
//! configured EHR origins.

pub mod audit;
pub mod consent;
pub mod history;
pub mod sharing;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

pub use crate::domain::markup::escape;

/// Framing and form targets for a page.
#[derive(Debug, Clone, Default)]
pub struct PagePolicy {
    /// Origins allowed to frame the page (configured EHR origins).
    pub frame_ancestors: Vec<String>,
    /// Extra `form-action` sources: where a form's answer may redirect (the client's origin).
    pub form_targets: Vec<String>,
    /// The NHS App hides the service header (it shows its own).
    pub hide_header: bool,
}

/// A whole page around `body`.
pub fn page(status: StatusCode, title: &str, body: &str, policy: &PagePolicy) -> Response {
    let header_html = if policy.hide_header {
        String::new()
    } else {
        "<header class=\"nhsuk-header\" role=\"banner\"><div class=\"nhsuk-width-container\">\
         <span class=\"nhsuk-logo\" aria-hidden=\"true\">NHS</span> <span class=\"nhsuk-header__service\">Shared care record sign-in</span>\
         </div></header>"
            .to_owned()
    };
    let html = format!(
        "<!DOCTYPE html><html lang=\"en-GB\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} - Shared care record</title><link rel=\"stylesheet\" href=\"/static/nhs.css\"></head>\
         <body><a class=\"nhsuk-skip-link\" href=\"#main\">Skip to main content</a>{header_html}\
         <div class=\"nhsuk-width-container\"><main class=\"nhsuk-main-wrapper\" id=\"main\">{body}</main></div>\
         <footer class=\"nhsuk-footer\"><div class=\"nhsuk-width-container\">carebroker</div></footer></body></html>",
        title = escape(title),
    );
    let frame = if policy.frame_ancestors.is_empty() { "'none'".to_owned() } else { policy.frame_ancestors.join(" ") };
    let mut forms = vec!["'self'".to_owned()];
    forms.extend(policy.form_targets.iter().cloned());
    let csp = format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action {}; frame-ancestors {frame}; base-uri 'none'",
        forms.join(" ")
    );
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    if !policy.frame_ancestors.is_empty() {
        // X-Frame-Options cannot list several origins; CSP frame-ancestors governs.
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // `no-referrer` would make browsers send `Origin: null` on form posts, which the CSRF check
    // rightly refuses; `same-origin` keeps the Origin and still sends nothing to other sites.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

/// An error page: what went wrong and what to do, never a redirect.
pub fn error_page(status: StatusCode, title: &str, message: &str, policy: &PagePolicy) -> Response {
    let body = format!(
        "<h1>{}</h1><p>{}</p><p>Go back to the app you came from and try again. If it keeps happening, contact the app's support team.</p>",
        escape(title),
        escape(message)
    );
    page(status, title, &body, policy)
}

/// A hidden CSRF field and the pending-request field every interaction form carries.
pub fn hidden_fields(csrf: &str, pending_id: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"req\" value=\"{}\">",
        escape(csrf),
        escape(pending_id)
    )
}

/// The sign-in form (development identity provider).
pub fn sign_in(csrf: &str, pending_id: &str, client_name: &str, error: Option<&str>, policy: &PagePolicy) -> Response {
    let error_html = error.map_or_else(String::new, |e| {
        format!("<div class=\"nhsuk-error-summary\" role=\"alert\" tabindex=\"-1\"><h2 class=\"nhsuk-error-summary__title\">There is a problem</h2><p>{}</p></div>", escape(e))
    });
    let body = format!(
        "{error_html}<h1>Sign in</h1><p>{} wants to use your shared care record access.</p>\
         <form method=\"post\" action=\"/signin\" novalidate>{}\
         <div class=\"nhsuk-form-group\"><label class=\"nhsuk-label\" for=\"username\">Username</label>\
         <input class=\"nhsuk-input\" id=\"username\" name=\"username\" type=\"text\" autocomplete=\"username\" required autofocus></div>\
         <div class=\"nhsuk-form-group\"><label class=\"nhsuk-label\" for=\"password\">Password</label>\
         <input class=\"nhsuk-input\" id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></div>\
         <button class=\"nhsuk-button\" type=\"submit\">Sign in</button></form>\
         <p class=\"nhsuk-hint\">Development sign-in: for local testing only.</p>",
        escape(client_name),
        hidden_fields(csrf, pending_id)
    );
    let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    page(status, "Sign in", &body, policy)
}

/// The sign-in chooser: one link per identity provider the app allows.
pub fn provider_chooser(
    pending_id: &str,
    client_name: &str,
    providers: &[(String, String)],
    policy: &PagePolicy,
) -> Response {
    let mut items = String::new();
    for (id, name) in providers {
        items.push_str(&format!(
            "<li><a class=\"nhsuk-button nhsuk-button--secondary\" href=\"/signin?req={}&amp;idp={}\">{}</a></li>",
            escape(pending_id),
            escape(id),
            escape(name)
        ));
    }
    let body = format!(
        "<h1>How do you want to sign in?</h1><p>{} wants to use your shared care record access.</p><ul class=\"nhsuk-list\">{items}</ul>",
        escape(client_name)
    );
    page(StatusCode::OK, "Choose how to sign in", &body, policy)
}

/// A sign-in that could not be completed, with what to do next.
pub fn sign_in_failed(message: &str, back: Option<(&str, &str)>, policy: &PagePolicy) -> Response {
    let back_html = back.map_or_else(String::new, |(label, url)| {
        format!("<p><a class=\"nhsuk-button\" href=\"{}\">{}</a></p>", escape(url), escape(label))
    });
    let body = format!(
        "<h1>You could not be signed in</h1><p>{}</p>{back_html}<p>If this keeps happening, contact the service desk and quote the time of this attempt.</p>",
        escape(message)
    );
    page(StatusCode::FORBIDDEN, "You could not be signed in", &body, policy)
}

/// The patient picker: a radio list of the patients this user may open.
pub fn patient_picker(
    csrf: &str,
    pending_id: &str,
    patients: &[crate::launch::directory::PatientSummary],
    error: Option<&str>,
    policy: &PagePolicy,
) -> Response {
    let error_html = error.map_or_else(String::new, |e| {
        format!("<div class=\"nhsuk-error-summary\" role=\"alert\" tabindex=\"-1\"><h2 class=\"nhsuk-error-summary__title\">There is a problem</h2><p>{}</p></div>", escape(e))
    });
    if patients.is_empty() {
        return error_page(
            StatusCode::FORBIDDEN,
            "No patients to choose from",
            "You have no patients you can open here.",
            policy,
        );
    }
    let mut items = String::new();
    for (i, p) in patients.iter().enumerate() {
        let born = p.birth_date.as_deref().map(|d| format!(", born {}", escape(d))).unwrap_or_default();
        items.push_str(&format!(
            "<div class=\"nhsuk-radios__item\"><input class=\"nhsuk-radios__input\" id=\"patient-{i}\" name=\"patient\" type=\"radio\" value=\"{id}\">\
             <label class=\"nhsuk-label nhsuk-radios__label\" for=\"patient-{i}\">{name} (NHS number {id}{born}){whose}</label></div>",
            id = escape(&p.id),
            name = escape(&p.name),
            whose = if p.acting_for { " — someone you care for" } else { "" },
        ));
    }
    let body = format!(
        "{error_html}<form method=\"post\" action=\"/authorize/patient\">{}\
         <fieldset class=\"nhsuk-fieldset\"><legend class=\"nhsuk-fieldset__legend nhsuk-fieldset__legend--l\"><h1 class=\"nhsuk-fieldset__heading\">Choose a patient</h1></legend>\
         <div class=\"nhsuk-radios\">{items}</div></fieldset>\
         <button class=\"nhsuk-button\" type=\"submit\">Continue</button></form>",
        hidden_fields(csrf, pending_id)
    );
    page(if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK }, "Choose a patient", &body, policy)
}

/// The signed-out confirmation, or the question before signing out.
pub fn signed_out(policy: &PagePolicy) -> Response {
    page(StatusCode::OK, "You have signed out", "<h1>You have signed out</h1><p>You can close this window.</p>", policy)
}

pub fn confirm_sign_out(csrf: &str, policy: &PagePolicy) -> Response {
    let body = format!(
        "<h1>Sign out?</h1><form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button class=\"nhsuk-button\" type=\"submit\">Sign out</button></form>",
        escape(csrf)
    );
    page(StatusCode::OK, "Sign out", &body, policy)
}

/// The stylesheet: NHS colours and type scale, no external fonts or scripts.
pub const STYLESHEET: &str = include_str!("../../../static/nhs.css");
