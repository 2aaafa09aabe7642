//! `POST /launch` without HTTP types: a JSON launch request, the EHR's client authentication
//! beside it, the user it presents checked at their provider (a CIS2/OIDC ID token, or a legacy
//! smartcard session at the Spine Security Broker), then [`super::register::register_launch`].
//! Every outcome is audited against the patient; a refusal is an [`OAuthError`] like every other.

use serde_json::Value;

use super::register::{LaunchError, LaunchRequest, LaunchResponse, UserForm, register_launch};
use crate::app::App;
use crate::audit::{Actor, AuditEvent, AuditKind, AuditOutcome};
use crate::domain::identity::Identity;
use crate::federation::SignInError;
use crate::oauth::client_auth::{ClientCredentials, authenticate_client};
use crate::oauth::error::{ErrorCode, OAuthError};
use crate::oauth::params::Params;

/// Client-authentication members that travel beside the launch. `client_id_ehr` names the EHR
/// when it sends a secret in the body (`client_id` is the app to open).
const AUTH_MEMBERS: [&str; 4] = ["client_id_ehr", "client_secret", "client_assertion_type", "client_assertion"];

fn refused(code: ErrorCode, description: impl Into<String>) -> OAuthError {
    OAuthError::new(code, description).with_status(403)
}

impl App {
    /// Registers the launch an EHR asks for: `authorization` and `content_type` are its headers,
    /// `body` the JSON launch.
    pub async fn launch_request(
        &self,
        authorization: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<LaunchResponse, OAuthError> {
        let json_body = content_type
            .and_then(|ct| ct.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !json_body {
            return Err(OAuthError::invalid_request("the body must be application/json"));
        }
        let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(body) else {
            return Err(OAuthError::invalid_request("the body must be a JSON object"));
        };
        let mut pairs = Vec::new();
        for name in AUTH_MEMBERS {
            if let Some(value) = fields.remove(name) {
                let Some(text) = value.as_str() else {
                    return Err(OAuthError::invalid_request(format!("`{name}` must be a string")));
                };
                pairs.push((if name == "client_id_ehr" { "client_id" } else { name }, text.to_owned()));
            }
        }
        let encoded = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        let params = Params::parse(encoded.as_bytes())?;
        let ehr = authenticate_client(self, ClientCredentials { authorization, params: &params }).await?;
        if ehr.client.is_public() {
            return Err(OAuthError::invalid_client("an EHR must authenticate"));
        }
        let request: LaunchRequest = serde_json::from_value(Value::Object(fields))
            .map_err(|e| OAuthError::invalid_request(format!("the launch is not valid: {e}")))?;
        let (patient, app_id) = (request.patient.clone(), request.client_id.clone());
        let opened = self.clients.get(&request.client_id).await?;
        let actor = Actor {
            subject: Some(ehr.client.id.clone()),
            client_id: Some(ehr.client.id.clone()),
            ..Default::default()
        };
        let audit = |outcome: AuditOutcome, detail: String| {
            AuditEvent::new(AuditKind::Launch, outcome, actor.clone()).patient(Some(&patient)).detail(detail)
        };
        // Only a trusted EHR gets its presented tokens checked upstream.
        let verified = if ehr.client.ehr_launch.is_none() {
            None
        } else {
            match self.presented_user(&request).await {
                Ok(identity) => identity,
                Err(e) => {
                    self.audit
                        .record_or_log(&audit(AuditOutcome::Failed, format!("presented user refused for {app_id}")))
                        .await;
                    return Err(e);
                }
            }
        };
        let user = verified
            .as_ref()
            .map(|i| i.platform_subject())
            .or_else(|| request.user.as_ref().map(|u| format!("ehr:{}:{}", ehr.client.id, u.sub)))
            .unwrap_or_default();
        let result = register_launch(
            self.stores.ephemeral.as_ref(),
            &ehr.client,
            opened.as_deref(),
            request,
            verified,
            self.fhir_base(),
            self.config.launch.lifetime_secs,
            self.clock.now(),
        )
        .await?;
        match result {
            Ok(response) => {
                let event = audit(AuditOutcome::Success, format!("launch registered for {app_id} as {user}"));
                if let Err(e) = self.audit.record(&event).await {
                    tracing::error!(error = %e, "launch audit failed");
                    return Err(OAuthError::new(ErrorCode::TemporarilyUnavailable, "the launch could not be audited"));
                }
                Ok(response)
            }
            Err(LaunchError::Invalid(m)) => Err(OAuthError::invalid_request(m)),
            Err(refusal) => {
                // An EHR trying what it may not is worth a record.
                let event = audit(AuditOutcome::Denied, format!("launch of {app_id} refused: {refusal}"));
                self.audit.record_or_log(&event).await;
                Err(match refusal {
                    LaunchError::NotTrusted(m) => refused(ErrorCode::UnauthorizedClient, m),
                    other => refused(ErrorCode::AccessDenied, other.to_string()),
                })
            }
        }
    }

    /// Verifies the user a launch presents as a token: a configured provider's ID token (found
    /// by its `iss`) or a legacy smartcard session at the Spine Security Broker. `Ok(None)` when
    /// the EHR asserts the user instead.
    async fn presented_user(&self, request: &LaunchRequest) -> Result<Option<Identity>, OAuthError> {
        let now = self.clock.now();
        let checked = |e: SignInError| match e {
            SignInError::Upstream(m) => {
                tracing::warn!(error = %m, "presented launch user could not be checked");
                OAuthError::new(ErrorCode::TemporarilyUnavailable, m)
            }
            other => refused(ErrorCode::AccessDenied, format!("the presented user was refused: {other}")),
        };
        match request.user_form() {
            Ok(UserForm::Asserted) | Err(_) => Ok(None),
            Ok(UserForm::IdToken) => {
                let token = request.id_token.as_deref().unwrap_or_default();
                let provider = match self.federation.for_token(token) {
                    Ok(provider) => provider,
                    Err(None) => return Err(OAuthError::invalid_request("id_token is not a signed JWT with an iss")),
                    Err(Some(issuer)) => {
                        let why = format!("`{issuer}` is not a configured identity provider");
                        return Err(refused(ErrorCode::AccessDenied, why));
                    }
                };
                provider.presented(token, request.access_token.as_deref(), now).await.map(Some).map_err(checked)
            }
            Ok(UserForm::SsoToken) => {
                let ssb = self.federation.cis_sso.as_ref().ok_or_else(|| {
                    refused(ErrorCode::AccessDenied, "legacy smartcard sessions are not accepted here")
                })?;
                ssb.identity(request.sso_token.as_deref().unwrap_or_default(), now).await.map(Some).map_err(checked)
            }
        }
    }
}
