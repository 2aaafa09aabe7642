//! EHR launch in context: a trusted EHR (a confidential client with `ehr_launch` trust) registers
//! who is signed in and which patient is open, and gets an opaque, single-use launch id bound to
//! the app and to itself. SMART App Launch 2.2 §"EHR launch".

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::client::Client;
use crate::domain::identity::{Identity, is_fhir_id, is_fhir_user_reference, job_role};
use crate::domain::launch::{EhrLaunch, LaunchContext, check_fhir_context_item};
use crate::domain::nhs_number::NhsNumber;
use crate::domain::url_rules::check_https_or_loopback;
use crate::keyspaces::LAUNCHES;
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
    /// The user as the EHR vouches for them. Exactly one of `user`, `id_token` and `sso_token`.
    pub user: Option<AssertedUser>,
    /// The user as an ID token of a configured provider (CIS2, or an OIDC provider) that the EHR
    /// holds; `access_token` lets carebroker read the provider's userinfo (CIS2 roles).
    pub id_token: Option<String>,
    pub access_token: Option<String>,
    /// The user as a legacy CIS smartcard session (the Identity Agent's SSO token).
    pub sso_token: Option<String>,
}

/// How the launch names its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserForm {
    Asserted,
    IdToken,
    SsoToken,
}

impl LaunchRequest {
    /// Which form the user comes in; exactly one is allowed.
    pub fn user_form(&self) -> Result<UserForm, LaunchError> {
        let forms: Vec<UserForm> = [
            self.user.is_some().then_some(UserForm::Asserted),
            self.id_token.is_some().then_some(UserForm::IdToken),
            self.sso_token.is_some().then_some(UserForm::SsoToken),
        ]
        .into_iter()
        .flatten()
        .collect();
        if self.access_token.is_some() && self.id_token.is_none() {
            return Err(LaunchError::Invalid("access_token goes with id_token".into()));
        }
        match forms.as_slice() {
            [one] => Ok(*one),
            [] => Err(LaunchError::Invalid("name the user: `user`, `id_token` or `sso_token`".into())),
            _ => Err(LaunchError::Invalid("give only one of `user`, `id_token` and `sso_token`".into())),
        }
    }
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

/// Checks a launch request against the EHR's trust and stores it.
/// `verified` is the user when the request presented a token that has already been verified.
#[allow(clippy::too_many_arguments)]
pub async fn register_launch(
    store: &dyn EphemeralStore,
    ehr: &Client,
    app: Option<&Client>,
    request: LaunchRequest,
    verified: Option<Identity>,
    fhir_base: &str,
    lifetime_secs: u64,
    now: i64,
) -> Result<Result<LaunchResponse, LaunchError>, StoreError> {
    let launch = match check(ehr, app, request, verified, now) {
        Ok(launch) => launch,
        Err(e) => return Ok(Err(e)),
    };
    let Some(launch_uri) = app.and_then(|a| a.launch_uri.clone()) else {
        return Ok(Err(LaunchError::Invalid("the app has no launch_uri registered".into())));
    };
    let (id, url) = store_launch(store, &launch, &launch_uri, fhir_base, lifetime_secs).await?;
    tracing::info!(ehr = %ehr.id, app = %launch.app_client_id, user = %launch.identity.platform_subject(), "EHR launch registered");
    Ok(Ok(LaunchResponse { launch: id, launch_url: url.to_string(), expires_in: lifetime_secs }))
}

/// Stores `launch` under a fresh single-use id for `lifetime_secs`: (the id, the app's
/// `launch_uri` with `iss` and `launch`).
pub async fn store_launch(
    store: &dyn EphemeralStore,
    launch: &EhrLaunch,
    launch_uri: &str,
    fhir_base: &str,
    lifetime_secs: u64,
) -> Result<(String, url::Url), StoreError> {
    let mut url = url::Url::parse(launch_uri).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let id = random_token(24);
    LAUNCHES.put(store, &id, launch, Duration::from_secs(lifetime_secs)).await?;
    url.query_pairs_mut().append_pair("iss", fhir_base).append_pair("launch", &id);
    Ok((id, url))
}

fn check(
    ehr: &Client,
    app: Option<&Client>,
    request: LaunchRequest,
    verified: Option<Identity>,
    now: i64,
) -> Result<EhrLaunch, LaunchError> {
    let trust = ehr
        .ehr_launch
        .as_ref()
        .ok_or_else(|| LaunchError::NotTrusted("this client may not register launches".into()))?;
    let app = app.ok_or_else(|| LaunchError::Invalid(format!("app `{}` is not registered", request.client_id)))?;
    if !trust.may_open(&app.id) {
        return Err(LaunchError::NotAllowed(format!("this EHR may not open `{}`", app.id)));
    }
    let patient = NhsNumber::parse(&request.patient).map_err(|e| LaunchError::Invalid(format!("patient: {e}")))?;
    let form = request.user_form()?;
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
    let identity = match (form, request.user, verified) {
        (UserForm::Asserted, Some(user), _) => asserted_identity(ehr, trust, user, now)?,
        (UserForm::IdToken | UserForm::SsoToken, _, Some(identity)) => {
            // Proven by its provider, not vouched for by the EHR: the EHR's lists of subjects and
            // roles it may assert do not apply, its organisations do.
            if let Some(org) = identity.org.as_deref().filter(|org| !trust.may_assert_org(org)) {
                return Err(LaunchError::NotAllowed(format!("this EHR may not launch users of organisation `{org}`")));
            }
            identity
        }
        _ => return Err(LaunchError::Invalid("the presented user was not verified".into())),
    };
    Ok(EhrLaunch {
        ehr_client_id: ehr.id.clone(),
        app_client_id: app.id.clone(),
        identity,
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

fn asserted_identity(
    ehr: &Client,
    trust: &crate::domain::client::EhrLaunchTrust,
    user: AssertedUser,
    now: i64,
) -> Result<Identity, LaunchError> {
    if user.sub.is_empty() || user.sub.len() > 255 {
        return Err(LaunchError::Invalid("user.sub must be 1-255 characters".into()));
    }
    if let Some(reference) = &user.fhir_user {
        if !is_fhir_user_reference(reference) {
            return Err(LaunchError::Invalid(
                "user.fhir_user must be Practitioner/…, Patient/…, RelatedPerson/… or Person/…".into(),
            ));
        }
        // An EHR vouches for its own staff. Acting for a patient is a relationship carebroker
        // verifies itself (NHS login proxy access), never one an EHR asserts.
        if reference.starts_with("RelatedPerson/") {
            return Err(LaunchError::NotAllowed(
                "an EHR may not launch its user as a RelatedPerson: proxy relationships are verified by carebroker, \
                 not asserted"
                    .into(),
            ));
        }
    }
    let role_codes =
        user.role_codes
            .iter()
            .map(|code| {
                // CIS2's full form names the job role with its staff group; other codes pass as sent
                let role = if code.contains(':') { job_role(code) } else { Some(code.trim().to_owned()) };
                role.filter(|r| !r.is_empty() && r.len() <= 32 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
                    .ok_or_else(|| {
                        LaunchError::Invalid(format!(
                            "role code `{code}` is not a role code (R8000, or S8000:G8000:R8000 as CIS2 sends it)"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
    if !trust.may_assert_subject(&user.sub) {
        return Err(LaunchError::NotAllowed(format!("this EHR may not vouch for user `{}`", user.sub)));
    }
    if !trust.may_assert_org(&user.org) {
        return Err(LaunchError::NotAllowed(format!(
            "this EHR may not vouch for users of organisation `{}`",
            user.org
        )));
    }
    if let Some(role) = role_codes.iter().find(|r| !trust.may_assert_role(r)) {
        return Err(LaunchError::NotAllowed(format!("this EHR may not vouch for role `{role}`")));
    }
    Ok(Identity {
        provider: format!("ehr:{}", ehr.id),
        source: "ehr".into(),
        assurance: trust.assurance,
        subject: user.sub,
        name: user.name,
        fhir_user: user.fhir_user,
        org: Some(user.org),
        role_codes,
        activity_codes: user.activity_codes,
        amr: vec!["ehr".into()],
        auth_time: now,
        ..Default::default()
    })
}

/// Consumes a launch id: of concurrent callers, one gets it.
pub async fn take_launch(store: &dyn EphemeralStore, id: &str) -> Result<Option<EhrLaunch>, StoreError> {
    LAUNCHES.take(store, id).await
}
