//! The extractors of browser pages: [`PendingPage`] (a page of a pending authorization this
//! browser owns) and [`PostedForm`] (a form sent as a form, from our origin, with this
//! session's CSRF token). Each refuses with a [`PageError`] page.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::Deserialize;
use tower_sessions::Session;

use super::AppState;
use super::page::PageError;
use crate::app::App;
use crate::domain::client::Client;
use crate::federation::session::SignInSession;
use crate::oauth::authorize::{self, Pending};
use crate::oauth::params::is_form_content_type;

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
