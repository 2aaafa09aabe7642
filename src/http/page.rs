//! What every browser page shares: the one [`PageError`] pages and their extractors
//! (`super::extract`) answer with, the page policy for a client, and the redirect and outcome
//! responses.

use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::pages::{self, PagePolicy};
use crate::app::App;
use crate::domain::client::Client;
use crate::federation::session::{SessionError, SignInSession};
use crate::oauth::authorize::{Outcome, Step};
use crate::oauth::error::OAuthError;

/// Why a page could not be served; each is a page of its own.
#[derive(Debug)]
pub enum PageError {
    /// The session store failed.
    Session,
    /// The pending authorization is unknown, expired, or another browser's.
    Expired,
    /// A form post whose body is not a form.
    NotAForm,
    /// The body could not be read (too large, say): axum's own answer.
    Body(BytesRejection),
    /// A form from another origin or without this session's CSRF token.
    Forbidden,
    /// The authorization could not continue (a store failure of ours).
    Unavailable(OAuthError),
}

impl From<SessionError> for PageError {
    fn from(_: SessionError) -> Self {
        Self::Session
    }
}

impl From<OAuthError> for PageError {
    fn from(err: OAuthError) -> Self {
        Self::Unavailable(err)
    }
}

fn problem_page() -> Response {
    pages::error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sorry, there is a problem with the service",
        "Try again later.",
        &PagePolicy::default(),
    )
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let policy = PagePolicy::default();
        match self {
            Self::Session => problem_page(),
            Self::Unavailable(err) => {
                tracing::warn!(error = %err, "authorization could not continue");
                problem_page()
            }
            Self::Expired => pages::error_page(
                StatusCode::BAD_REQUEST,
                "This sign-in has expired",
                "It took too long, or it was started in another browser. Go back to the app and start again.",
                &policy,
            ),
            Self::NotAForm => pages::error_page(
                StatusCode::BAD_REQUEST,
                "This form cannot be accepted",
                "The form was not sent as a form.",
                &policy,
            ),
            Self::Body(rejection) => rejection.into_response(),
            Self::Forbidden => pages::error_page(
                StatusCode::FORBIDDEN,
                "This form cannot be accepted",
                "The form did not come from this service, or your session has ended.",
                &policy,
            ),
        }
    }
}

/// The page policy for pages shown on behalf of `client`: frame ancestors from configuration,
/// and the client's origins (and custom redirect schemes) as form targets.
pub fn policy(app: &App, client: Option<&Client>) -> PagePolicy {
    let form_targets = client
        .map(|c| {
            let mut origins: Vec<String> = c.origins.clone();
            for uri in &c.redirect_uris {
                if let Ok(url) = url::Url::parse(uri) {
                    if !matches!(url.scheme(), "http" | "https") {
                        origins.push(format!("{}:", url.scheme()));
                    }
                }
            }
            origins
        })
        .unwrap_or_default();
    PagePolicy { frame_ancestors: app.config.pages.frame_ancestors.clone(), form_targets, hide_header: false }
}

/// A redirect that is never cached.
pub fn redirect(location: &str, status: StatusCode) -> Response {
    let mut response = status.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Turns an authorization outcome into a response: an error page, a redirect, or the next page
/// (which this browser then owns).
pub async fn respond(
    app: &App,
    session: &SignInSession,
    outcome: Outcome,
    client: Option<&Client>,
    status: StatusCode,
) -> Response {
    match outcome {
        Outcome::ErrorPage { message } => pages::error_page(
            StatusCode::BAD_REQUEST,
            "This app's request cannot be accepted",
            &message,
            &policy(app, client),
        ),
        Outcome::Redirect { location } => redirect(&location, status),
        Outcome::Interact { pending_id, step } => {
            if let Err(e) = session.own_pending(&pending_id).await {
                return PageError::from(e).into_response();
            }
            let path = match step {
                Step::SignIn => "/signin",
                Step::PickPatient => "/authorize/patient",
                Step::Consent => "/authorize/consent",
            };
            redirect(&format!("{path}?req={pending_id}"), StatusCode::SEE_OTHER)
        }
    }
}
