//! The authorization endpoint (RFC 6749 §4.1, SMART App Launch 2.2 §"Obtain authorization code",
//! OpenID Connect Core §3.1.2). A request is checked in a fixed order: client and redirect URI
//! (failures are shown to the user, never redirected to), then everything else (failures are
//! redirected with `error`, `error_description`, `state` and `iss`, RFC 9207). A valid request
//! becomes a pending authorization that advances through sign-in, patient selection and consent
//! until a single-use code is issued.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{ErrorCode, OAuthError};
use super::issue::token_hash;
use super::params::Params;
use crate::app::App;
use crate::domain::client::{Client, GrantType};
use crate::domain::identity::Identity;
use crate::domain::launch::{EhrLaunch, LaunchContext};
use crate::domain::pkce;
use crate::domain::scope::{Scope, ScopeContext, ScopeSet};
use crate::keyspaces::{AUTHORIZATIONS, CODES, SIGN_INS};
use crate::token::random_token;

/// What the browser's sign-in session contributes.
#[derive(Debug, Clone, Default)]
pub struct SessionView {
    pub identity: Option<Identity>,
    pub session_id: Option<String>,
}

/// The next thing the user has to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    SignIn,
    PickPatient,
    Consent,
}

/// Where an authorization request goes next.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Show an error page: the client or redirect URI cannot be trusted with a redirect.
    ErrorPage { message: String },
    /// Send the browser to the client's redirect URI (a code, or an error).
    Redirect { location: String },
    /// The user must act; the pending authorization is stored under `pending_id`.
    Interact { pending_id: String, step: Step },
}

/// An authorization in progress (ephemeral, single browser).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub state: String,
    pub code_challenge: String,
    pub nonce: Option<String>,
    /// Requested scope narrowed to what the client may have: what consent offers.
    pub scope: String,
    pub max_age: Option<i64>,
    pub prompt_none: bool,
    /// `prompt=login` (or `max_age` exceeded) and no fresh sign-in yet.
    pub needs_login: bool,
    pub identity: Option<Identity>,
    pub session_id: Option<String>,
    pub context: LaunchContext,
    pub needs_patient: bool,
    pub skip_consent: bool,
    pub granted_scope: Option<String>,
    /// `idp_hint`: the identity provider to use without the chooser.
    #[serde(default)]
    pub idp_hint: Option<String>,
    /// The people (NHS numbers) the signed-in patient may also act for, as VRS said at sign-in:
    /// when there are any, the picker offers "you" or each of them instead of choosing the
    /// patient themselves.
    #[serde(default)]
    pub acting_for: Vec<String>,
}

/// What a code stands for (ephemeral, single use).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeRecord {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub scope: String,
    pub identity: Identity,
    pub context: LaunchContext,
    pub nonce: Option<String>,
    pub session_id: Option<String>,
    pub grant_id: String,
    pub expires_at: i64,
}

fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = match url::Url::parse(base) {
        Ok(url) => url,
        Err(_) => return base.to_owned(),
    };
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in pairs {
            query.append_pair(k, v);
        }
    }
    url.to_string()
}

/// The error redirect of RFC 6749 §4.1.2.1 with RFC 9207 `iss`.
fn error_redirect(app: &App, redirect_uri: &str, state: Option<&str>, err: &OAuthError) -> Outcome {
    let mut pairs = vec![("error", err.code.as_str()), ("error_description", err.description.as_str())];
    if let Some(state) = state {
        pairs.push(("state", state));
    }
    pairs.push(("iss", app.issuer()));
    Outcome::Redirect { location: with_query(redirect_uri, &pairs) }
}

/// Starts an authorization from the request parameters (GET query or POST form, already parsed
/// with repeated parameters refused). `launch` is the EHR launch named by the `launch`
/// parameter, already consumed by the caller (`Err` when the parameter named nothing usable).
pub async fn begin(
    app: &App,
    params: &Params,
    launch: Option<Result<EhrLaunch, String>>,
    session: &SessionView,
    pushed: bool,
) -> Result<Outcome, OAuthError> {
    // 1. Who to answer: failures here are shown, never redirected.
    let Some(client_id) = params.get("client_id") else {
        return Ok(Outcome::ErrorPage {
            message: "The request does not say which app is asking (no client_id).".into(),
        });
    };
    let Some(client) = app.clients.get(client_id).await? else {
        return Ok(Outcome::ErrorPage { message: format!("The app `{client_id}` is not registered here.") });
    };
    let Some(redirect_uri) = params.get("redirect_uri") else {
        return Ok(Outcome::ErrorPage { message: "The request has no redirect_uri.".into() });
    };
    if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
        return Ok(Outcome::ErrorPage {
            message: format!(
                "The redirect_uri is not one registered for `{}`, so carebroker will not send you there.",
                client.name
            ),
        });
    }
    let state = params.get("state");
    let fail = |err: OAuthError| Ok(error_redirect(app, redirect_uri, state, &err));

    // 2. Everything else is redirected.
    match check_request(app, &client, params, launch, session, pushed) {
        Ok(pending) => advance(app, &client, pending).await,
        Err(err) => fail(err),
    }
}

/// The longest value of an authorization request parameter (a `state` or `scope` is far shorter).
pub const MAX_PARAMETER_LEN: usize = 2048;
/// The longest authorization request, all values together.
pub const MAX_REQUEST_LEN: usize = 8192;

/// Every check of an authorization request after its client and redirect URI (made again at
/// `/par` push time); `pushed` says the parameters came from a pushed request.
pub(crate) fn check_request(
    app: &App,
    client: &Client,
    params: &Params,
    launch: Option<Result<EhrLaunch, String>>,
    session: &SessionView,
    pushed: bool,
) -> Result<Pending, OAuthError> {
    let invalid = OAuthError::invalid_request;
    // every value is kept while the user signs in (and a pushed request for a minute): bounded
    if let Some(name) = params.longer_than(MAX_PARAMETER_LEN) {
        return Err(OAuthError::invalid_request(format!("`{name}` is longer than {MAX_PARAMETER_LEN} characters")));
    }
    if params.total_len() > MAX_REQUEST_LEN {
        return Err(OAuthError::invalid_request(format!("the request is longer than {MAX_REQUEST_LEN} characters")));
    }
    if !app.authorizations.admit(&client.id, app.clock.now_millis()) {
        return Err(OAuthError::new(
            ErrorCode::TemporarilyUnavailable,
            "this app has started too many authorizations in the last minute; try again shortly",
        )
        .with_status(429));
    }
    if client.require_pushed_authorization_requests && !pushed {
        return Err(invalid("this client must push its authorization requests to the PAR endpoint first"));
    }
    match params.get("response_type") {
        Some("code") => {}
        Some(other) => {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedResponseType,
                format!("response_type `{other}` is not supported; use `code`"),
            ));
        }
        None => return Err(invalid("missing `response_type`")),
    }
    if params.get("response_mode").is_some_and(|m| m != "query") {
        return Err(invalid("only response_mode `query` is supported"));
    }
    if params.contains("request") || params.contains("request_uri") {
        return Err(invalid("request objects are not supported"));
    }
    if !client.allows_grant(GrantType::AuthorizationCode) {
        return Err(OAuthError::unauthorized_client("this client may not use the authorization code flow"));
    }
    let state = params.get("state").ok_or_else(|| invalid("missing `state`"))?;
    let challenge =
        params.get("code_challenge").ok_or_else(|| invalid("missing `code_challenge` (PKCE S256 is required)"))?;
    match params.get("code_challenge_method") {
        Some("S256") => {}
        Some(other) => {
            return Err(OAuthError::invalid_request(format!(
                "code_challenge_method `{other}` is not supported; use S256"
            )));
        }
        None => return Err(invalid("missing `code_challenge_method` (PKCE S256 is required)")),
    }
    if !pkce::is_valid_s256_challenge(challenge) {
        return Err(invalid("`code_challenge` is not a base64url SHA-256 value"));
    }
    // `aud` (SMART) and any `resource` (RFC 8707, repeatable) must all name our FHIR API
    let targets: Vec<&str> = params.get("aud").into_iter().chain(params.all("resource")).collect();
    if targets.is_empty() {
        return Err(invalid("missing `aud`: name the FHIR server this token is for"));
    }
    if let Some(other) = targets.iter().find(|t| !app.names_fhir_base(t)) {
        let why = format!("`{other}` is not a FHIR server of this authorization server");
        // an unacceptable RFC 8707 `resource` is `invalid_target` (RFC 8707 §2); SMART names no
        // code for a wrong `aud`, and carebroker has always answered `invalid_request` for it
        return Err(if params.get("aud") == Some(*other) {
            OAuthError::invalid_request(why)
        } else {
            OAuthError::new(crate::oauth::error::ErrorCode::InvalidTarget, why)
        });
    }

    let requested = ScopeSet::parse(params.get("scope").unwrap_or_default())
        .map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
    if requested.resources().any(|r| r.context == ScopeContext::System) {
        return Err(OAuthError::invalid_scope("system/ scopes are for backend services, not user authorization"));
    }
    let mut scope = requested.narrow_to(&client.scope);
    let ehr = match launch {
        Some(Ok(launch)) if launch.app_client_id == client.id => Some(launch),
        Some(_) => return Err(invalid("the `launch` value is unknown, expired, already used or for another app")),
        None => None,
    };
    if ehr.is_none() {
        // `launch` (EHR launch) cannot be honoured without an EHR launch.
        scope = scope.iter().filter(|s| **s != Scope::Launch).cloned().collect();
    }
    if scope.is_empty() {
        return Err(OAuthError::invalid_scope("none of the requested scopes is allowed for this app"));
    }

    let prompt: Vec<&str> = params.get("prompt").map(|p| p.split(' ').collect()).unwrap_or_default();
    let prompt_none = prompt.contains(&"none");
    if prompt_none && prompt.len() > 1 {
        return Err(invalid("prompt=none cannot be combined with other prompt values"));
    }
    let max_age = match params.get("max_age") {
        Some(text) => Some(
            text.parse::<i64>()
                .ok()
                .filter(|v| *v >= 0)
                .ok_or_else(|| invalid("`max_age` must be a non-negative integer"))?,
        ),
        None => None,
    };
    let needs_patient = scope.contains(&Scope::LaunchContext { resource: "patient".into(), role: None })
        || scope.resources().any(|r| r.context == ScopeContext::Patient);

    let now = app.clock.now();
    let (identity, session_id, context, skip_consent) = match ehr {
        Some(launch) => {
            let skip = launch.skip_consent || client.skip_consent;
            (Some(launch.identity), Some(random_token(16)), launch.context, skip)
        }
        None => {
            let fresh = |id: &Identity| max_age.is_none_or(|age| id.auth_time + age >= now);
            let identity = session.identity.clone().filter(|id| !prompt.contains(&"login") && fresh(id));
            let sid = identity.as_ref().and(session.session_id.clone());
            (identity, sid, LaunchContext::default(), client.skip_consent)
        }
    };
    Ok(Pending {
        id: random_token(18),
        client_id: client.id.clone(),
        redirect_uri: params.get("redirect_uri").unwrap_or_default().to_owned(),
        state: state.to_owned(),
        code_challenge: challenge.to_owned(),
        nonce: params.get("nonce").map(str::to_owned),
        scope: scope.to_string(),
        max_age,
        prompt_none,
        needs_login: identity.is_none(),
        identity,
        session_id,
        context,
        needs_patient,
        skip_consent: skip_consent && !prompt.contains(&"consent"),
        granted_scope: None,
        idp_hint: params.get("idp_hint").map(str::to_owned),
        acting_for: Vec::new(),
    })
}

/// Moves a pending authorization on: the first step still open, or the code.
async fn advance(app: &App, client: &Client, mut pending: Pending) -> Result<Outcome, OAuthError> {
    let interact = |pending: &Pending, step: Step, prompt_error: ErrorCode| {
        if pending.prompt_none {
            let description = match step {
                Step::SignIn => "the user is not signed in",
                Step::PickPatient => "a patient must be chosen",
                Step::Consent => "the user must consent",
            };
            return Err(OAuthError::new(prompt_error, description));
        }
        Ok(step)
    };
    let next = if pending.needs_login || pending.identity.is_none() {
        Some(interact(&pending, Step::SignIn, ErrorCode::LoginRequired))
    } else if pending.needs_patient && pending.context.patient.is_none() {
        match pending.identity.as_ref().and_then(Identity::own_patient_id).filter(|_| pending.acting_for.is_empty()) {
            Some(own) => {
                pending.context.patient = Some(own.to_owned());
                None
            }
            None => Some(interact(&pending, Step::PickPatient, ErrorCode::InteractionRequired)),
        }
    } else {
        None
    };
    if next.is_none() {
        // Offer (and grant) only what the access policy could ever permit this person.
        if let Some(identity) = &pending.identity {
            let policy = app.policy.load_full();
            let holder = super::scope_policy::user_holder(&**policy, identity, &client.id);
            let offered = ScopeSet::parse(&pending.scope).unwrap_or_default();
            pending.scope = super::scope_policy::narrow(&**policy, &holder, &offered).to_string();
        }
    }
    let next = match next {
        Some(step) => Some(step),
        None if pending.granted_scope.is_none() && !pending.skip_consent => {
            Some(interact(&pending, Step::Consent, ErrorCode::ConsentRequired))
        }
        None => None,
    };
    match next {
        Some(Err(err)) => {
            AUTHORIZATIONS.delete(app.stores.ephemeral.as_ref(), &pending.id).await?;
            Ok(error_redirect(app, &pending.redirect_uri, Some(&pending.state), &err))
        }
        Some(Ok(step)) => {
            let ttl = Duration::from_secs(app.config.launch.interaction_lifetime_secs);
            AUTHORIZATIONS.put(app.stores.ephemeral.as_ref(), &pending.id, &pending, ttl).await?;
            Ok(Outcome::Interact { pending_id: pending.id, step })
        }
        None => issue_code(app, client, pending).await,
    }
}

async fn issue_code(app: &App, client: &Client, pending: Pending) -> Result<Outcome, OAuthError> {
    AUTHORIZATIONS.delete(app.stores.ephemeral.as_ref(), &pending.id).await?;
    let Some(identity) = pending.identity else { return Err(OAuthError::server_error()) };
    let code = random_token(32);
    let now = app.clock.now();
    let lifetime = app.config.launch.code_lifetime_secs;
    let record = CodeRecord {
        client_id: client.id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        code_challenge: pending.code_challenge,
        scope: pending.granted_scope.unwrap_or(pending.scope),
        identity,
        context: pending.context,
        nonce: pending.nonce,
        session_id: pending.session_id,
        grant_id: random_token(18),
        expires_at: now + lifetime as i64,
    };
    if let Some(sid) = &record.session_id {
        // An EHR launch starts its own sign-in session; a browser session is already registered.
        let ttl = Duration::from_secs(app.config.sessions.absolute_timeout_secs.unsigned_abs());
        SIGN_INS.put_if_absent(app.stores.ephemeral.as_ref(), sid, &(), ttl).await?;
    }
    CODES.put(app.stores.ephemeral.as_ref(), &token_hash(&code), &record, Duration::from_secs(lifetime)).await?;
    tracing::info!(client_id = %client.id, subject = %record.identity.platform_subject(), "authorization code issued");
    let location =
        with_query(&pending.redirect_uri, &[("code", &code), ("state", &pending.state), ("iss", app.issuer())]);
    Ok(Outcome::Redirect { location })
}

/// Loads a pending authorization and its client.
pub async fn load_pending(app: &App, pending_id: &str) -> Result<Option<(Pending, Arc<Client>)>, OAuthError> {
    let Some(pending) = AUTHORIZATIONS.get(app.stores.ephemeral.as_ref(), pending_id).await? else { return Ok(None) };
    let Some(client) = app.clients.get(&pending.client_id).await? else { return Ok(None) };
    Ok(Some((pending, client)))
}

/// After sign-in: the user is `identity` in session `session_id`.
pub async fn signed_in(
    app: &App,
    mut pending: Pending,
    client: &Client,
    identity: Identity,
    session_id: String,
) -> Result<Outcome, OAuthError> {
    pending.identity = Some(identity);
    pending.session_id = Some(session_id);
    pending.needs_login = false;
    advance(app, client, pending).await
}

/// After the patient picker: `patient` must be one of `allowed`.
pub async fn patient_chosen(
    app: &App,
    mut pending: Pending,
    client: &Client,
    patient: &str,
    allowed: &[String],
) -> Result<Result<Outcome, String>, OAuthError> {
    if !allowed.iter().any(|p| p == patient) {
        return Ok(Err("Choose one of the patients listed.".into()));
    }
    pending.context.patient = Some(patient.to_owned());
    advance(app, client, pending).await.map(Ok)
}

/// The consent decision: `allow` with the scopes left ticked, or `deny`.
pub async fn consent_given(
    app: &App,
    mut pending: Pending,
    client: &Client,
    allow: bool,
    ticked: &[String],
) -> Result<Outcome, OAuthError> {
    let offered = ScopeSet::parse(&pending.scope).unwrap_or_default();
    let chosen: ScopeSet = offered.iter().filter(|s| ticked.iter().any(|t| *t == s.to_string())).cloned().collect();
    if !allow || chosen.is_empty() {
        AUTHORIZATIONS.delete(app.stores.ephemeral.as_ref(), &pending.id).await?;
        let description =
            if allow { "the user allowed none of the requested access" } else { "the user denied access" };
        return Ok(error_redirect(
            app,
            &pending.redirect_uri,
            Some(&pending.state),
            &OAuthError::new(ErrorCode::AccessDenied, description),
        ));
    }
    pending.granted_scope = Some(chosen.to_string());
    advance(app, client, pending).await
}
