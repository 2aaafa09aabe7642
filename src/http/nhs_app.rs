//! The NHS App web integration: the jump-off entry (`/nhs-app/{journey}`) that signs the
//! patient in silently through NHS login, and the well-known files the app links need.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

use super::AppState;
use super::federation::go_upstream;
use super::pages::{self, PagePolicy};
use crate::federation::BeginOptions;
use crate::federation::round_trip::Purpose;
use crate::federation::session::SignInSession;

pub(super) fn in_nhs_app(headers: &HeaderMap) -> bool {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.contains("nhsapp-android/") || ua.contains("nhsapp-ios/"))
}

/// `GET /nhs-app/{journey}?…&assertedLoginIdentity=JWT`: silent NHS login, then the journey's app
/// with the patient in context.
pub async fn nhs_app_entry(
    State(app): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(journey): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let config = &app.config.nhs_app;
    let page_policy = PagePolicy { hide_header: in_nhs_app(&headers), ..PagePolicy::default() };
    if !config.enabled || !config.journeys.contains_key(&journey) {
        let why = "This NHS App link is not known here.";
        return pages::error_page(StatusCode::NOT_FOUND, "Page not found", why, &page_policy);
    }
    let asserted = form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "assertedLoginIdentity")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty());
    let Some(asserted) = asserted else {
        let back = Some(("Go to the NHS App", config.home_url.as_str()));
        return pages::sign_in_failed("Open this page from the NHS App.", back, &page_policy);
    };
    let Some(provider) = app.federation.get(&config.idp) else {
        let title = "Sorry, there is a problem with the service";
        return pages::error_page(StatusCode::SERVICE_UNAVAILABLE, title, "NHS login is not configured.", &page_policy);
    };
    let options = BeginOptions { silent: true, asserted_login_identity: Some(asserted), force_login: false };
    go_upstream(&app, &SignInSession::new(session), &provider, Purpose::NhsApp { journey }, options).await
}

/// `/.well-known/assetlinks.json` and `/.well-known/apple-app-site-association` (NHS App links).
async fn well_known_file(file: Option<&std::path::Path>) -> Response {
    let bytes = match file {
        Some(file) => tokio::fs::read(file).await.ok(),
        None => None,
    };
    match bytes {
        Some(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub async fn assetlinks(State(app): State<AppState>) -> Response {
    well_known_file(app.config.nhs_app.assetlinks_file.as_deref()).await
}

pub async fn apple_app_site_association(State(app): State<AppState>) -> Response {
    well_known_file(app.config.nhs_app.apple_app_site_association_file.as_deref()).await
}
