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
use crate::domain::identity::Identity;
use crate::federation::SignInError;
use crate::launch::register::{LaunchError, LaunchRequest, UserForm, register_launch};
use crate::oauth::client_auth::{ClientCredentials, authenticate_client};
use crate::oauth::error::OAuthError;
use crate::oauth::params::Params;

const AUTH_MEMBERS: [&str; 4] = ["client_id_ehr", "client_secret", "client_assertion_type", "client_assertion"];

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    (status, Json(json!({"error": code, "error_description": description}))).into_response()
}

pub async fn register(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let app = &state;
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
    let ehr = match authenticate_client(app, ClientCredentials { authorization, params: &params }).await {
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
    let (patient, app_id) = (request.patient.clone(), request.client_id.clone());
    let opened = match app.clients.get(&request.client_id).await {
        Ok(found) => found,
        Err(e) => return ErrorResponse(e.into()).into_response(),
    };
    let actor = crate::audit::Actor {
        subject: Some(ehr.client.id.clone()),
        client_id: Some(ehr.client.id.clone()),
        ..Default::default()
    };
    // Only a trusted EHR gets its presented tokens checked upstream.
    let verified = if ehr.client.ehr_launch.is_none() {
        None
    } else {
        match presented_user(&state, &request).await {
            Ok(identity) => identity,
            Err(response) => {
                let event = crate::audit::AuditEvent::new(
                    crate::audit::AuditKind::Launch,
                    crate::audit::AuditOutcome::Failed,
                    actor,
                )
                .patient(Some(&patient))
                .detail(format!("presented user refused for {app_id}"));
                app.audit.record_or_log(&event).await;
                return response;
            }
        }
    };
    let user = verified
        .as_ref()
        .map(|i| i.platform_subject())
        .or_else(|| request.user.as_ref().map(|u| format!("ehr:{}:{}", ehr.client.id, u.sub)))
        .unwrap_or_default();
    let result = register_launch(
        app.stores.ephemeral.as_ref(),
        &ehr.client,
        opened.as_deref(),
        request,
        verified,
        app.fhir_base(),
        app.config.launch.lifetime_secs,
        app.clock.now(),
    )
    .await;
    match result {
        Ok(Ok(response)) => {
            let event = crate::audit::AuditEvent::new(
                crate::audit::AuditKind::Launch,
                crate::audit::AuditOutcome::Success,
                actor,
            )
            .patient(Some(&patient))
            .detail(format!("launch registered for {app_id} as {user}"));
            if let Err(e) = app.audit.record(&event).await {
                tracing::error!(error = %e, "launch audit failed");
                return ErrorResponse(OAuthError::new(
                    crate::oauth::error::ErrorCode::TemporarilyUnavailable,
                    "the launch could not be audited",
                ))
                .into_response();
            }
            (StatusCode::CREATED, Json(response)).into_response()
        }
        Ok(Err(LaunchError::Invalid(m))) => error(StatusCode::BAD_REQUEST, "invalid_request", &m),
        Ok(Err(refusal)) => {
            // An EHR trying what it may not is worth a record.
            let event = crate::audit::AuditEvent::new(
                crate::audit::AuditKind::Launch,
                crate::audit::AuditOutcome::Denied,
                actor,
            )
            .patient(Some(&patient))
            .detail(format!("launch of {app_id} refused: {refusal}"));
            app.audit.record_or_log(&event).await;
            match refusal {
                LaunchError::NotTrusted(m) => error(StatusCode::FORBIDDEN, "unauthorized_client", &m),
                other => error(StatusCode::FORBIDDEN, "access_denied", &other.to_string()),
            }
        }
        Err(e) => ErrorResponse(e.into()).into_response(),
    }
}

/// Verifies the user a launch presents as a token: a configured provider's ID token (found by its
/// `iss`) or a legacy smartcard session at the Spine Security Broker. `Ok(None)` when the EHR
/// asserts the user instead.
async fn presented_user(state: &AppState, request: &LaunchRequest) -> Result<Option<Identity>, Response> {
    let now = state.clock.now();
    let refused = |e: SignInError| match e {
        SignInError::Upstream(m) => {
            tracing::warn!(error = %m, "presented launch user could not be checked");
            error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", &m)
        }
        other => error(StatusCode::FORBIDDEN, "access_denied", &format!("the presented user was refused: {other}")),
    };
    match request.user_form() {
        Ok(UserForm::Asserted) | Err(_) => Ok(None),
        Ok(UserForm::IdToken) => {
            let token = request.id_token.as_deref().unwrap_or_default();
            let issuer = unverified_issuer(token).ok_or_else(|| {
                error(StatusCode::BAD_REQUEST, "invalid_request", "id_token is not a signed JWT with an iss")
            })?;
            let provider = state.federation.by_issuer(&issuer).ok_or_else(|| {
                error(
                    StatusCode::FORBIDDEN,
                    "access_denied",
                    &format!("`{issuer}` is not a configured identity provider"),
                )
            })?;
            provider.presented(token, request.access_token.as_deref(), now).await.map(Some).map_err(refused)
        }
        Ok(UserForm::SsoToken) => {
            let ssb = state.federation.cis_sso.as_ref().ok_or_else(|| {
                error(StatusCode::FORBIDDEN, "access_denied", "legacy smartcard sessions are not accepted here")
            })?;
            ssb.identity(request.sso_token.as_deref().unwrap_or_default(), now).await.map(Some).map_err(refused)
        }
    }
}

/// The `iss` of a compact JWS, read before verification only to pick the provider that must
/// then verify it.
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else { return None };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}
