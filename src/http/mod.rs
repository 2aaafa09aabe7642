//! The only module that knows axum and tower: the router, the one error-to-response mapping,
//! middleware, and start-up/shutdown of the server.

pub mod audit_viewer;
mod discovery;
pub mod error;
mod extract;
mod federation;
mod fhir;
mod forms;
mod interaction;
mod middleware;
mod my_record;
mod nhs_app;
mod oauth;
mod oidc;
mod openapi;
mod operations;
pub mod page;
pub mod pages;
mod saml;
pub mod session_store;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

use crate::app::{App, StartError, spawn_housekeeping, spawn_policy_reloader};

/// Shared state of every handler: the one application core.
pub type AppState = Arc<App>;

/// The application router, usable in-process (tests call it with `tower::ServiceExt::oneshot`).
pub fn app(state: AppState) -> Router {
    let config = state.config.clone();
    let https = config.issuer().starts_with("https://");

    let public = Router::new()
        .route("/.well-known/openid-configuration", get(discovery::openid_configuration))
        .route("/.well-known/oauth-authorization-server", get(discovery::authorization_server_metadata))
        .route("/fhir/.well-known/smart-configuration", get(discovery::smart_configuration))
        .route("/jwks.json", get(discovery::jwks))
        .route("/saml/metadata", get(saml::metadata))
        .route("/fhir/metadata", get(fhir::metadata))
        .route("/.well-known/assetlinks.json", get(nhs_app::assetlinks))
        .route("/.well-known/apple-app-site-association", get(nhs_app::apple_app_site_association))
        .layer(CorsLayer::new().allow_origin(Any).allow_methods([Method::GET]));

    let token_cors = {
        let app = state.clone();
        CorsLayer::new()
            .allow_methods([Method::POST])
            .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, header::HeaderName::from_static("dpop")])
            .expose_headers([error::DPOP_NONCE])
            .allow_origin(AllowOrigin::async_predicate(move |origin: HeaderValue, _parts: &Parts| {
                let app = app.clone();
                async move { origin.to_str().is_ok_and(|o| app.clients.is_public_client_origin(o)) }
            }))
    };
    let token = Router::new()
        .route("/token", post(oauth::token))
        .route("/par", post(oauth::pushed_authorization_request))
        .layer(token_cors.clone());

    let fhir_api = Router::new()
        .route("/fhir/CarePlan", get(fhir::careplan_search).post(fhir::careplan_create))
        .route("/fhir/CarePlan/{id}", get(fhir::careplan_read).put(fhir::careplan_update))
        .route("/fhir/CarePlan/{id}/_history", get(fhir::careplan_history))
        .route("/fhir/CarePlan/{id}/_history/{vid}", get(fhir::careplan_vread))
        .route("/fhir/Consent", get(fhir::consent_search).post(fhir::consent_create))
        .route("/fhir/Consent/{id}", get(fhir::consent_read).put(fhir::consent_update))
        .route("/fhir/Patient", get(fhir::patient_search))
        .route("/fhir/Patient/{id}", get(fhir::patient_read))
        .route("/fhir/Practitioner/{id}", get(fhir::practitioner_read))
        .route("/fhir/RelatedPerson/{id}", get(fhir::related_person_read))
        .route("/fhir/AuditEvent", get(fhir::audit_search))
        .route("/fhir/{*rest}", get(fhir::unsupported))
        .route("/availability", get(fhir::availability))
        .layer(axum::middleware::from_fn(middleware::no_store))
        .layer(
            token_cors
                .allow_methods([Method::GET, Method::POST, Method::PUT])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::IF_MATCH,
                    header::ACCEPT,
                    header::HeaderName::from_static("dpop"),
                ])
                .expose_headers([header::ETAG, header::LOCATION, header::LAST_MODIFIED, header::WWW_AUTHENTICATE]),
        );

    let token_bearing = Router::new()
        .merge(token)
        .route("/introspect", post(oauth::introspection))
        .route("/revoke", post(oauth::revocation))
        .route("/register", post(oauth::registration))
        .route("/launch", post(oauth::launch))
        .route("/federation/backchannel-logout/{idp}", post(federation::backchannel_logout))
        .route("/saml/acs", post(saml::acs))
        .route("/saml/slo", get(saml::slo))
        .route("/userinfo", get(oidc::userinfo).post(oidc::userinfo))
        .layer(axum::middleware::from_fn(middleware::no_store));

    let https_cookie = https;
    let same_site = match config.sessions.cookie_same_site.as_str() {
        "none" => SameSite::None,
        "strict" => SameSite::Strict,
        _ => SameSite::Lax,
    };
    let sessions = SessionManagerLayer::new(session_store::EphemeralSessionStore::new(state.stores.ephemeral.clone()))
        .with_name(if https_cookie { "__Host-carebroker" } else { "carebroker_session" })
        .with_secure(https_cookie)
        .with_http_only(true)
        .with_same_site(same_site)
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(time::Duration::seconds(config.sessions.idle_timeout_secs)));
    let pages_router = Router::new()
        .route("/authorize", get(interaction::authorize_get).post(interaction::authorize_post))
        .route("/signin", get(interaction::sign_in_page).post(interaction::sign_in_submit))
        .route("/authorize/patient", get(interaction::picker_page).post(interaction::picker_submit))
        .route("/authorize/consent", get(interaction::consent_get).post(interaction::consent_submit))
        .route("/logout", get(oidc::logout_get).post(oidc::logout_post))
        .route("/federation/callback", get(federation::callback))
        .route("/saml/continue", get(saml::resume))
        .route("/nhs-app/{journey}", get(nhs_app::nhs_app_entry))
        .route("/my-record/access-history", get(my_record::access_history))
        .route("/my-record/sharing", get(my_record::sharing).post(my_record::change_sharing))
        .route("/audit", get(audit_viewer::audit_viewer))
        .layer(sessions);

    Router::new()
        .merge(public)
        .merge(token_bearing)
        .merge(pages_router)
        .merge(fhir_api)
        .route("/static/nhs.css", get(stylesheet))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(operations::readyz))
        .route("/metrics", get(operations::metrics))
        .route("/openapi.json", get(operations::openapi_document))
        .route_layer(axum::middleware::from_fn(middleware::measure))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found").into_response() })
        .layer(DefaultBodyLimit::max(config.server.max_body_bytes))
        .layer(axum::middleware::from_fn(move |req, next| middleware::security_headers(https, req, next)))
        .layer(PropagateRequestIdLayer::new(middleware::X_REQUEST_ID.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
            let id = request.headers().get(&middleware::X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(middleware::X_REQUEST_ID.clone(), middleware::RandomRequestId))
        .with_state(state)
}

async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=86400")],
        pages::STYLESHEET,
    )
}

/// Binds and serves until SIGTERM or ctrl-c, then drains in-flight requests.
pub async fn serve(state: AppState) -> Result<(), StartError> {
    let addr = state.config.server.listen.clone();
    let listener =
        TcpListener::bind(&addr).await.map_err(|source| StartError::Listen { addr: addr.clone(), source })?;
    serve_on(state, listener, shutdown_signal()).await
}

/// Serves on an already bound listener until `shutdown` completes.
pub async fn serve_on(
    state: AppState,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let housekeeping = spawn_housekeeping(&state);
    let reloader = spawn_policy_reloader(&state);
    tracing::info!(listen = %addr, issuer = %state.issuer(), "carebroker listening");
    let result = axum::serve(listener, app(state).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| StartError::Listen { addr, source });
    housekeeping.abort();
    if let Some(r) = reloader {
        r.abort();
    }
    tracing::info!("carebroker stopped");
    result
}

/// Completes on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
