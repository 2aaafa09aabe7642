//! `POST /launch`: a trusted EHR registers a launch in context. The EHR authenticates as at the
//! token endpoint: HTTP Basic, or `client_id`/`client_secret` or `client_assertion_type`/
//! `client_assertion` members in the JSON body.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::error::ErrorResponse;
use crate::launch::register::{LaunchError, LaunchRequest, register_launch};
use crate::oauth::client_auth::{ClientCredentials, authenticate_client};
use crate::oauth::error::OAuthError;
use crate::oauth::params::Params;

const AUTH_MEMBERS: [&str; 4] = ["client_id_ehr", "client_secret", "client_assertion_type", "client_assertion"];

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    (status, Json(json!({"error": code, "error_description": description}))).into_response()
}

pub async fn register(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let authority = &state.authority;
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !json_body {
        return ErrorResponse(OAuthError::invalid_request("the body must be application/json")).into_response();
    }
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(&body) else {
        return ErrorResponse(OAuthError::invalid_request("the body must be a JSON object")).into_response();
    };
    // Client-authentication members travel beside the launch; `client_id_ehr` names the EHR when
    // it sends a secret in the body (`client_id` is the app to open).
    let mut pairs = Vec::new();
    for name in AUTH_MEMBERS {
        if let Some(value) = fields.remove(name) {
            let Some(text) = value.as_str() else {
                return ErrorResponse(OAuthError::invalid_request(format!("`{name}` must be a string")))
                    .into_response();
            };
            pairs.push((if name == "client_id_ehr" { "client_id" } else { name }, text.to_owned()));
        }
    }
    let encoded = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    let params = match Params::parse(encoded.as_bytes()) {
        Ok(p) => p,
        Err(e) => return ErrorResponse(e).into_response(),
    };
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let ehr = match authenticate_client(authority, ClientCredentials { authorization, params: &params }).await {
        Ok(ehr) if !ehr.client.is_public() => ehr,
        Ok(_) => return ErrorResponse(OAuthError::invalid_client("an EHR must authenticate")).into_response(),
        Err(e) => return ErrorResponse(e).into_response(),
    };
    let request: LaunchRequest = match serde_json::from_value(Value::Object(fields)) {
        Ok(r) => r,
        Err(e) => {
            return ErrorResponse(OAuthError::invalid_request(format!("the launch is not valid: {e}"))).into_response();
        }
    };
    let (patient, app_id, user) = (request.patient.clone(), request.client_id.clone(), request.user.sub.clone());
    let app = match authority.clients.get(&request.client_id).await {
        Ok(app) => app,
        Err(e) => return ErrorResponse(e.into()).into_response(),
    };
    let result = register_launch(
        authority.stores.ephemeral.as_ref(),
        &ehr.client,
        app.as_deref(),
        request,
        authority.fhir_base(),
        authority.config.launch.lifetime_secs,
        authority.clock.now(),
    )
    .await;
    let actor = crate::audit::Actor {
        subject: Some(ehr.client.id.clone()),
        client_id: Some(ehr.client.id.clone()),
        ..Default::default()
    };
    match result {
        Ok(Ok(response)) => {
            let event = crate::audit::AuditEvent::new(
                crate::audit::AuditKind::Launch,
                crate::audit::AuditOutcome::Success,
                actor,
            )
            .patient(Some(&patient))
            .detail(format!("launch registered for {app_id} as {user}"));
            if let Err(e) = authority.audit.record(&event).await {
                tracing::error!(error = %e, "launch audit failed");
                return ErrorResponse(OAuthError::new(
                    crate::oauth::error::ErrorCode::TemporarilyUnavailable,
                    "the launch could not be audited",
                ))
                .into_response();
            }
            (StatusCode::CREATED, Json(response)).into_response()
        }
        Ok(Err(LaunchError::NotTrusted(m))) => error(StatusCode::FORBIDDEN, "unauthorized_client", &m),
        Ok(Err(LaunchError::NotAllowed(m))) => error(StatusCode::FORBIDDEN, "access_denied", &m),
        Ok(Err(LaunchError::Invalid(m))) => error(StatusCode::BAD_REQUEST, "invalid_request", &m),
        Err(e) => ErrorResponse(e.into()).into_response(),
    }
}
