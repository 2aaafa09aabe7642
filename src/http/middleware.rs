//! Cross-cutting HTTP behaviour: security headers on every response, request ids, and the
//! no-store headers of token-bearing endpoints.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::request_id::{MakeRequestId, RequestId};

/// `X-Request-ID` values: random, URL-safe.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&crate::token::random_token(12)).ok().map(RequestId::new)
    }
}

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How long a client is asked to wait after a 503.
const RETRY_AFTER_SECS: &str = "5";

/// Adds security headers a route has not set itself: no sniffing, no framing (pages that may be
/// framed by an EHR set their own `frame-ancestors`), no referrer, HSTS behind https, and
/// `Retry-After` on every 503.
pub async fn security_headers(https: bool, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let response_is_unavailable = response.status() == axum::http::StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    let defaults: [(HeaderName, &'static str); 4] = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    // a store outage (or anything else unavailable) says when to come back (RFC 9110 §10.2.3)
    if response_is_unavailable && !headers.contains_key(header::RETRY_AFTER) {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    }
    if https && !headers.contains_key(header::STRICT_TRANSPORT_SECURITY) {
        headers
            .insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000; includeSubDomains"));
    }
    response
}

/// `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 §5.1; SMART requires both) on every
/// answer of an endpoint that may carry tokens or patient data, errors included: no browser,
/// proxy or shared cache keeps a copy of a care record.
pub async fn no_store(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// Counts and times every request that reached a route, labelled by the route's template (never
/// the path itself: ids, NHS numbers and codes stay out of the metrics).
pub async fn measure(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    crate::telemetry::request(&route, method, response.status().as_u16(), started.elapsed());
    response
}
