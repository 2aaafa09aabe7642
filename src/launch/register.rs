//! EHR launch in context: a trusted EHR (a confidential client with `ehr_launch` trust) registers
//! who is signed in and which patient is open, and gets an opaque, single-use launch id bound to
//! the app and to itself. SMART App Launch 2.2 §"EHR launch".

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::client::Client;
use crate::domain::identity::{Identity, is_fhir_id, is_fhir_user_reference};
use crate::domain::launch::{EhrLaunch, LaunchContext, check_fhir_context_item};
use crate::domain::nhs_number::NhsNumber;
use crate::domain::url_rules::check_https_or_loopback;
use crate::store::{EphemeralStore, StoreError};
use crate::token::random_token;

/// The user as the EHR vouches for them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertedUser {
    pub sub: String,
    pub name: Option<String>,
    pub fhir_user: Option<String>,
    #[serde(default)]
    pub role_codes: Vec<String>,
    #[serde(default)]
    pub activity_codes: Vec<String>,
    pub org: String,
}

/// `POST /launch` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchRequest {
    pub client_id: String,
    pub patient: String,
    pub encounter: Option<String>,
    pub fhir_context: Option<Vec<Value>>,
    pub intent: Option<String>,
    pub need_patient_banner: Option<bool>,
    pub smart_style_url: Option<String>,
    pub tenant: Option<String>,
    pub user: AssertedUser,
}

/// `POST /launch` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchResponse {
    pub launch: String,
    pub launch_url: String,
    pub expires_in: u64,
}

/// Why a launch was not registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    /// The caller is not an EHR trusted to register launches (`unauthorized_client`).
    #[error("{0}")]
    NotTrusted(String),
    /// The EHR may not vouch for this user or open this app (`access_denied`).
    #[error("{0}")]
    NotAllowed(String),
    /// The request is malformed (`invalid_request`).
    #[error("{0}")]
    Invalid(String),
}

fn launch_key(id: &str) -> String {
    format!("launch:{id}")
}

/// Checks a launch request against the EHR's trust and stores it.
pub async fn register_launch(
    store: &dyn EphemeralStore,
    ehr: &Client,
    app: Option<&Client>,
    request: LaunchRequest,
    fhir_base: &str,
    lifetime_secs: u64,
    now: i64,
) -> Result<Result<LaunchResponse, LaunchError>, StoreError> {
    let launch = match check(ehr, app, request, now) {
        Ok(launch) => launch,
        Err(e) => return Ok(Err(e)),
    };
    let Some(launch_uri) = app.and_then(|a| a.launch_uri.clone()) else {
        return Ok(Err(LaunchError::Invalid("the app has no launch_uri registered".into())));
    };
    let id = random_token(24);
    let bytes = serde_json::to_vec(&launch).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    store.put(&launch_key(&id), &bytes, Duration::from_secs(lifetime_secs)).await?;
    let mut url = url::Url::parse(&launch_uri).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    url.query_pairs_mut().append_pair("iss", fhir_base).append_pair("launch", &id);
    tracing::info!(ehr = %ehr.id, app = %launch.app_client_id, user = %launch.identity.platform_subject(), "EHR launch registered");
    Ok(Ok(LaunchResponse { launch: id, launch_url: url.to_string(), expires_in: lifetime_secs }))
}

fn check(ehr: &Client, app: Option<&Client>, request: LaunchRequest, now: i64) -> Result<EhrLaunch, LaunchError> {
    let trust = ehr
        .ehr_launch
        .as_ref()
        .ok_or_else(|| LaunchError::NotTrusted("this client may not register launches".into()))?;
    let app = app.ok_or_else(|| LaunchError::Invalid(format!("app `{}` is not registered", request.client_id)))?;
    if !trust.may_open(&app.id) {
        return Err(LaunchError::NotAllowed(format!("this EHR may not open `{}`", app.id)));
    }
    let patient = NhsNumber::parse(&request.patient).map_err(|e| LaunchError::Invalid(format!("patient: {e}")))?;
    if let Some(encounter) = &request.encounter {
        if !is_fhir_id(encounter) {
            return Err(LaunchError::Invalid("encounter must be a FHIR id".into()));
        }
    }
    let fhir_context = request.fhir_context.unwrap_or_default();
    for item in &fhir_context {
        check_fhir_context_item(item).map_err(LaunchError::Invalid)?;
    }
    if let Some(url) = &request.smart_style_url {
        check_https_or_loopback(url).map_err(|e| LaunchError::Invalid(format!("smart_style_url: {e}")))?;
    }
    let user = request.user;
    if user.sub.is_empty() || user.sub.len() > 255 {
        return Err(LaunchError::Invalid("user.sub must be 1-255 characters".into()));
    }
    if let Some(reference) = &user.fhir_user {
        if !is_fhir_user_reference(reference) {
            return Err(LaunchError::Invalid(
                "user.fhir_user must be Practitioner/…, Patient/…, RelatedPerson/… or Person/…".into(),
            ));
        }
    }
    if !trust.may_assert_subject(&user.sub) {
        return Err(LaunchError::NotAllowed(format!("this EHR may not vouch for user `{}`", user.sub)));
    }
    if !trust.may_assert_org(&user.org) {
        return Err(LaunchError::NotAllowed(format!(
            "this EHR may not vouch for users of organisation `{}`",
            user.org
        )));
    }
    if let Some(role) = user.role_codes.iter().find(|r| !trust.may_assert_role(r)) {
        return Err(LaunchError::NotAllowed(format!("this EHR may not vouch for role `{role}`")));
    }
    Ok(EhrLaunch {
        ehr_client_id: ehr.id.clone(),
        app_client_id: app.id.clone(),
        identity: Identity {
            provider: format!("ehr:{}", ehr.id),
            source: "ehr".into(),
            assurance: trust.assurance,
            subject: user.sub,
            name: user.name,
            fhir_user: user.fhir_user,
            org: Some(user.org),
            role_codes: user.role_codes,
            activity_codes: user.activity_codes,
            amr: vec!["ehr".into()],
            auth_time: now,
            ..Default::default()
        },
        context: LaunchContext {
            patient: Some(patient.to_string()),
            encounter: request.encounter,
            fhir_context,
            need_patient_banner: request.need_patient_banner,
            intent: request.intent,
            smart_style_url: request.smart_style_url,
            tenant: request.tenant,
        },
        skip_consent: trust.skip_consent,
    })
}

/// Consumes a launch id: of concurrent callers, one gets it.
pub async fn take_launch(store: &dyn EphemeralStore, id: &str) -> Result<Option<EhrLaunch>, StoreError> {
    match store.take(&launch_key(id)).await? {
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| StoreError::Corrupt(e.to_string())),
        None => Ok(None),
    }
}
