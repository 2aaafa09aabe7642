//! The one extractor for form-encoded protocol requests (token, introspection, revocation,
//! back-channel logout): the body with its `Content-Type` and `Authorization` headers.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::oauth::error::OAuthError;
use crate::oauth::params::{FormRequest, Params};

/// A protocol request as received.
pub struct OAuthForm {
    content_type: Option<String>,
    authorization: Option<String>,
    body: Bytes,
}

impl OAuthForm {
    /// The request for the protocol functions.
    pub fn request(&self) -> FormRequest<'_> {
        FormRequest {
            content_type: self.content_type.as_deref(),
            authorization: self.authorization.as_deref(),
            body: &self.body,
        }
    }

    /// The form's parameters (each at most once), if it is a form.
    pub fn params(&self) -> Result<Params, OAuthError> {
        Params::from_form(self.content_type.as_deref(), &self.body)
    }
}

fn header_values(headers: &axum::http::HeaderMap) -> (Option<String>, Option<String>) {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    (header(header::CONTENT_TYPE), header(header::AUTHORIZATION))
}

impl<S: Send + Sync> FromRequest<S> for OAuthForm {
    type Rejection = Response;
    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (content_type, authorization) = header_values(request.headers());
        let body = Bytes::from_request(request, state).await.map_err(IntoResponse::into_response)?;
        Ok(Self { content_type, authorization, body })
    }
}
