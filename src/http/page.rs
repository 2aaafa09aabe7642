//! What every browser page shares: the [`PendingPage`] and [`PostedForm`] extractors (the
//! session, the pending authorization this browser owns, the form's content type, Origin and
//! CSRF token), the one [`PageError`] they and the pages answer with, and the redirect and
//! outcome responses.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::AppState;
use super::pages::{self, PagePolicy};
use crate::app::App;
use crate::domain::client::Client;
use crate::federation::session::{SessionError, SignInSession};
use crate::oauth::authorize::{self, Outcome, Pending, Step};
use crate::oauth::error::OAuthError;
use crate::oauth::params::is_form_content_type;

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

/// The pending authorization `id` and its client, if this browser began it.
async fn owned_pending(
    app: &App,
    session: &SignInSession,
    id: Option<&str>,
) -> Result<(Pending, Arc<Client>), PageError> {
    let id = id.ok_or(PageError::Expired)?;
    if !session.owns_pending(id).await? {
        return Err(PageError::Expired);
    }
    authorize::load_pending(app, id).await?.ok_or(PageError::Expired)
}

async fn sign_in_session(parts: &mut Parts, app: &AppState) -> Result<SignInSession, PageError> {
    let session = Session::from_request_parts(parts, app).await.map_err(|(_, why)| {
        tracing::error!(error = %why, "no session layer on a page route");
        PageError::Session
    })?;
    Ok(SignInSession::new(session))
}

#[derive(Debug, Default, Deserialize)]
struct PendingQuery {
    req: Option<String>,
    idp: Option<String>,
}

/// A page of a pending authorization (`?req=`), shown only to the browser that began it.
pub struct PendingPage {
    pub session: SignInSession,
    pub pending: Pending,
    pub client: Arc<Client>,
    /// This session's CSRF token, for the page's form.
    pub csrf: String,
    /// The provider chosen on the chooser page (`?idp=`).
    pub idp: Option<String>,
}

impl FromRequestParts<AppState> for PendingPage {
    type Rejection = PageError;
    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let session = sign_in_session(parts, app).await?;
        let query = Query::<PendingQuery>::try_from_uri(&parts.uri).map(|q| q.0).unwrap_or_default();
        let (pending, client) = owned_pending(app, &session, query.req.as_deref()).await?;
        let csrf = session.csrf_token().await?;
        Ok(Self { session, pending, client, csrf, idp: query.idp })
    }
}

/// Fields of an HTML form (a name may repeat, as checkboxes do).
#[derive(Debug, Default)]
pub struct FormFields(Vec<(String, String)>);

impl FormFields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }
}

/// A form posted by one of our pages: sent as a form, from our origin (when the browser says),
/// carrying this session's CSRF token.
pub struct PostedForm {
    pub session: SignInSession,
    pub fields: FormFields,
}

impl PostedForm {
    /// The pending authorization the form names (`req`), if this browser began it.
    pub async fn pending(&self, app: &App) -> Result<(Pending, Arc<Client>), PageError> {
        owned_pending(app, &self.session, self.fields.get("req")).await
    }
}

fn same_origin(app: &App, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let ours = url::Url::parse(app.issuer()).map(|u| u.origin().ascii_serialization()).unwrap_or_default();
    origin == ours
}

impl FromRequest<AppState> for PostedForm {
    type Rejection = PageError;
    async fn from_request(request: Request, app: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let session = sign_in_session(&mut parts, app).await?;
        let headers = parts.headers.clone();
        let body = Bytes::from_request(Request::from_parts(parts, body), app).await.map_err(PageError::Body)?;
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        if !is_form_content_type(content_type) {
            return Err(PageError::NotAForm);
        }
        let fields = FormFields(form_urlencoded::parse(&body).into_owned().collect());
        if !same_origin(app, &headers) || !session.csrf_matches(fields.get("csrf").unwrap_or_default()).await? {
            return Err(PageError::Forbidden);
        }
        Ok(Self { session, fields })
    }
}
