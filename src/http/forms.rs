//! The one extractor for form-encoded protocol requests (token, introspection, revocation,
//! back-channel logout, the SAML ACS): the body with its `Content-Type`, `Authorization` and
//! `DPoP` headers.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use crate::oauth::dpop::DpopHeader;
use crate::oauth::error::OAuthError;
use crate::oauth::params::{FormRequest, Params};

/// A protocol request as received.
pub struct OAuthForm {
    content_type: Option<String>,
    authorization: Option<String>,
    dpop: Dpop,
    body: Bytes,
}

/// The `DPoP` header(s), owned.
pub enum Dpop {
    Absent,
    Proof(String),
    Repeated,
}

impl Dpop {
    /// Reads the `DPoP` request headers (RFC 9449 §4.3: at most one).
    pub fn of(headers: &HeaderMap) -> Self {
        let mut values = headers.get_all("dpop").iter();
        match (values.next(), values.next()) {
            (None, _) => Self::Absent,
            (Some(v), None) => v.to_str().map_or(Self::Repeated, |p| Self::Proof(p.to_owned())),
            (Some(_), Some(_)) => Self::Repeated,
        }
    }

    pub fn header(&self) -> DpopHeader<'_> {
        match self {
            Self::Absent => DpopHeader::Absent,
            Self::Proof(p) => DpopHeader::Proof(p),
            Self::Repeated => DpopHeader::Repeated,
        }
    }
}

impl OAuthForm {
    /// The request for the protocol functions.
    pub fn request(&self) -> FormRequest<'_> {
        FormRequest {
            content_type: self.content_type.as_deref(),
            authorization: self.authorization.as_deref(),
            dpop: self.dpop.header(),
            body: &self.body,
        }
    }

    /// The form's parameters (each at most once), if it is a form.
    pub fn params(&self) -> Result<Params, OAuthError> {
        Params::from_form(self.content_type.as_deref(), &self.body)
    }
}

fn header_values(headers: &HeaderMap) -> (Option<String>, Option<String>, Dpop) {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    (header(header::CONTENT_TYPE), header(header::AUTHORIZATION), Dpop::of(headers))
}

impl<S: Send + Sync> FromRequest<S> for OAuthForm {
    type Rejection = Response;
    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (content_type, authorization, dpop) = header_values(request.headers());
        let body = Bytes::from_request(request, state).await.map_err(IntoResponse::into_response)?;
        Ok(Self { content_type, authorization, dpop, body })
    }
}
