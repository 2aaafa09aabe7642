//! OAuth 2.0 Token Exchange (RFC 8693), SMART-aware: a partner app turns an identity it already
//! holds into a carebroker access token for the FHIR API, narrowed to what the policy allows,
//! with the patient in context and a record of who acts for whom.
//!
//! Subject tokens: a carebroker access token (downscoping; the new token is never wider and never
//! outlives it) or an upstream provider's ID token (a provider file with `accept_exchange`,
//! checked exactly as an ID token an EHR presents), a SAML provider's signed assertion (verified
//! as the ACS verifies one, confirmed to our token endpoint, used once), or a trusted partner's
//! own JWT (`[[exchange.issuers]]`, `jti` once on every node). Patient context comes from the subject access
//! token, or from a `launch` a trusted EHR registered for this client and this user. An
//! `actor_token` makes the token delegated: an `act` claim (nested for a chain, §4.1), refused
//! when the subject token's `may_act` (§4.4) does not admit the actor.

use serde_json::{Value, json};

use super::GrantRequest;
use crate::config::ResourceServer;
use crate::domain::client::EXCHANGEABLE_TOKEN_TYPES;
use crate::domain::identity::Identity;
use crate::domain::launch::LaunchContext;
use crate::domain::scope::{Scope, ScopeContext, ScopeSet};
use crate::keyspaces::{LAUNCHES, PARTNER_JTIS};
use crate::oauth::error::{ErrorCode, OAuthError};
use crate::oauth::scope_policy::{self, Holder};
use crate::oauth::token_endpoint::{TokenResponse, confirmation, token_type};
use crate::token::access::{self, AccessTokenClaims, CheckError};
use crate::token::random_token;

pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const SAML2_TYPE: &str = "urn:ietf:params:oauth:token-type:saml2";

/// What a partner's JWT says about its user.
#[derive(Debug, serde::Deserialize)]
struct PartnerClaims {
    sub: Option<String>,
    exp: Option<i64>,
    iat: Option<i64>,
    jti: Option<String>,
    aud: Option<Value>,
    name: Option<String>,
    #[serde(rename = "fhirUser")]
    fhir_user: Option<String>,
    org: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    may_act: Option<Value>,
}

/// Who a subject or actor token speaks for.
struct Party {
    sub: String,
    iss: String,
    /// The policy's view of them (roles, organisation, assurance).
    holder: Holder,
    fhir_user: Option<String>,
    /// The scopes a subject access token carried: the new token is never wider.
    ceiling: Option<ScopeSet>,
    /// The subject access token's expiry: the new token never outlives it.
    expires: Option<i64>,
    context: LaunchContext,
    /// An existing `act` chain (a subject access token that was itself delegated).
    act: Option<Value>,
    /// RFC 8693 §4.4 `may_act` of the subject token.
    may_act: Option<Value>,
    identity: Option<Identity>,
    /// What the exchanged token's revocation hangs on: a user subject access token's grant (or
    /// its own `jti`), so that revoking the subject's grant ends what was derived from it; a
    /// fresh id for an upstream identity; none for a backend service (`grant_id` absent and no
    /// `fhirUser` is what marks a system token).
    chain: Option<String>,
}

fn invalid(what: &str, why: impl std::fmt::Display) -> OAuthError {
    OAuthError::invalid_request(format!("the {what} was refused: {why}"))
}

/// Reads a subject or actor token of type `kind`.
async fn party(request: &GrantRequest<'_>, what: &str, token: &str, kind: &str) -> Result<Party, OAuthError> {
    let app = request.app;
    match kind {
        ACCESS_TOKEN_TYPE => {
            let claims = app.check_access_token(token, None).await.map_err(|e| match e {
                CheckError::Store(e) => e.into(),
                other => invalid(what, other),
            })?;
            // a DPoP-bound token is exchanged only by the holder of its key
            if let Some(bound) = claims.dpop_jkt() {
                if request.dpop_jkt != Some(bound) {
                    return Err(invalid(what, "it is DPoP-bound: send a DPoP proof made with its key"));
                }
            }
            Ok(party_of_access_token(app, claims))
        }
        ID_TOKEN_TYPE | SAML2_TYPE => {
            let (found, unreadable) = if kind == ID_TOKEN_TYPE {
                (app.federation.for_token(token), "it is not a signed JWT with an `iss`")
            } else {
                (app.federation.for_assertion(token), "it is not a base64url SAML 2.0 Assertion with an Issuer")
            };
            let provider = match found {
                Ok(provider) => provider,
                Err(None) => return Err(invalid(what, unreadable)),
                Err(Some(issuer)) => return Err(invalid(what, format!("`{issuer}` is not a configured provider"))),
            };
            let verified = if kind == ID_TOKEN_TYPE {
                provider.exchanged(token, request.now).await
            } else {
                provider.exchanged_assertion(token, &*app.stores.ephemeral, request.now).await
            };
            let identity = verified.map_err(|e| match e {
                crate::federation::SignInError::Upstream(m) => {
                    OAuthError::new(ErrorCode::TemporarilyUnavailable, format!("the {what} could not be checked: {m}"))
                }
                other => invalid(what, other),
            })?;
            let policy = app.policy.load_full();
            let holder = scope_policy::user_holder(&**policy, &identity, &request.client.client.id);
            Ok(Party {
                sub: identity.platform_subject(),
                iss: provider.config().issuer.clone(),
                holder,
                fhir_user: identity.fhir_user.clone(),
                ceiling: None,
                expires: None,
                context: LaunchContext::default(),
                act: None,
                may_act: None,
                identity: Some(identity),
                chain: Some(random_token(18)),
            })
        }
        JWT_TYPE => partner_jwt(request, what, token).await,
        other if EXCHANGEABLE_TOKEN_TYPES.contains(&other) => {
            Err(OAuthError::invalid_request(format!("`{other}` tokens cannot be exchanged here")))
        }
        other => Err(OAuthError::invalid_request(format!("`{other}` is not a token type this server knows"))),
    }
}

/// A partner's own signed JWT (`[[exchange.issuers]]`): its key, `iss`, `aud` (our token
/// endpoint or issuer), `exp` within the partner's `max_lifetime_secs`, and a `jti` used once on
/// every node. The user goes through the role mapping as source `partner`.
async fn partner_jwt(request: &GrantRequest<'_>, what: &str, token: &str) -> Result<Party, OAuthError> {
    use crate::token::jose::{self, Algorithm, VerifyingKey};
    let (app, now) = (request.app, request.now);
    let skew = app.config.tokens.clock_skew_secs;
    let issuer = crate::federation::unverified_issuer(token)
        .ok_or_else(|| invalid(what, "it is not a signed JWT with an `iss`"))?;
    let (partner, keys) = app
        .partners
        .iter()
        .find(|(p, _)| p.issuer == issuer)
        .ok_or_else(|| invalid(what, format!("`{issuer}` is not a trusted partner")))?;
    let jws = jose::decode(token, &Algorithm::ALL).map_err(|e| invalid(what, e))?;
    let key = keys
        .keys
        .iter()
        .filter(|k| k.is_for_verification())
        .find(|k| jws.header.kid.is_none() || k.kid == jws.header.kid)
        .ok_or_else(|| invalid(what, "no key of the partner matches its `kid`"))?;
    let key = VerifyingKey::from_jwk(key, jws.algorithm).map_err(|e| invalid(what, e))?;
    let payload = jws.verify(&key).map_err(|e| invalid(what, e))?;
    let claims: PartnerClaims = serde_json::from_slice(&payload).map_err(|e| invalid(what, e))?;
    let sub = claims.sub.filter(|s| !s.is_empty()).ok_or_else(|| invalid(what, "missing `sub`"))?;
    let exp = claims.exp.ok_or_else(|| invalid(what, "missing `exp`"))?;
    if exp + skew <= now {
        return Err(invalid(what, "it has expired"));
    }
    if exp > now + partner.max_lifetime_secs + skew {
        return Err(invalid(what, format!("`exp` is more than {} s ahead", partner.max_lifetime_secs)));
    }
    if claims.iat.is_some_and(|iat| iat > now + skew) {
        return Err(invalid(what, "`iat` is in the future"));
    }
    let aud = claims.aud.as_ref();
    if !(jose::audience_includes(aud, app.token_endpoint()) || jose::audience_includes(aud, app.issuer())) {
        return Err(invalid(what, "`aud` must name this server's token endpoint or issuer"));
    }
    let jti = claims.jti.filter(|j| !j.is_empty() && j.len() <= 256).ok_or_else(|| invalid(what, "missing `jti`"))?;
    let ttl = std::time::Duration::from_secs(u64::try_from(exp + skew - now).unwrap_or(1).max(1));
    if !PARTNER_JTIS.first_use(app.stores.ephemeral.as_ref(), &format!("{}:{jti}", partner.id), ttl).await? {
        return Err(invalid(what, "this `jti` was already used"));
    }
    let identity = Identity {
        provider: partner.id.clone(),
        source: "partner".into(),
        assurance: partner.assurance,
        issuer: Some(issuer.clone()),
        subject: sub,
        name: claims.name,
        fhir_user: claims.fhir_user,
        org: claims.org,
        role_codes: claims.roles,
        amr: vec!["token-exchange".into()],
        auth_time: claims.iat.unwrap_or(now),
        ..Identity::default()
    };
    let policy = app.policy.load_full();
    let holder = scope_policy::user_holder(&**policy, &identity, &request.client.client.id);
    Ok(Party {
        sub: identity.platform_subject(),
        iss: issuer,
        holder,
        fhir_user: identity.fhir_user.clone(),
        ceiling: None,
        expires: Some(exp),
        context: LaunchContext::default(),
        act: None,
        may_act: claims.may_act,
        identity: Some(identity),
        chain: Some(random_token(18)),
    })
}

fn party_of_access_token(app: &crate::app::App, claims: AccessTokenClaims) -> Party {
    let system = claims.grant_id.is_none() && claims.fhir_user.is_none() && claims.act.is_none();
    let context = LaunchContext {
        patient: claims.patient.clone(),
        encounter: claims.encounter.clone(),
        fhir_context: claims.fhir_context.as_ref().and_then(Value::as_array).cloned().unwrap_or_default(),
        ..LaunchContext::default()
    };
    Party {
        holder: Holder {
            roles: claims.roles.clone(),
            org: claims.org.clone(),
            fhir_user: claims.fhir_user.clone(),
            assurance: claims.assurance.unwrap_or(0),
            client_id: claims.client_id.clone(),
            system,
            delegated: claims.act.is_some(),
        },
        sub: claims.sub,
        iss: app.issuer().to_owned(),
        fhir_user: claims.fhir_user,
        ceiling: Some(ScopeSet::parse(&claims.scope).unwrap_or_default()),
        expires: Some(claims.exp),
        context,
        chain: if system { None } else { claims.grant_id.clone().or_else(|| Some(claims.jti.clone())) },
        act: claims.act,
        may_act: claims.may_act,
        identity: None,
    }
}

/// Every `resource` and `audience` (each may repeat, RFC 8693 §2.1) must name our FHIR API or a
/// configured resource server, and all the same one, else `invalid_target`; the answer is that
/// server (`None`: our FHIR API).
fn check_target<'a>(request: &'a GrantRequest<'_>) -> Result<Option<&'a ResourceServer>, OAuthError> {
    let app = request.app;
    let mut target: Option<Option<&ResourceServer>> = None;
    let named = ["resource", "audience"].into_iter().flat_map(|name| request.params.all(name).map(move |v| (name, v)));
    for (name, value) in named {
        let named = if app.names_fhir_base(value) {
            None
        } else {
            let server = app.config.exchange.resource_servers.iter().find(|s| s.audience == value);
            Some(server.ok_or_else(|| {
                OAuthError::new(
                    ErrorCode::InvalidTarget,
                    format!("`{name}` `{value}` is not a resource server of this authorization server"),
                )
            })?)
        };
        if target.is_some_and(|t| t.map(|s| &s.audience) != named.map(|s| &s.audience)) {
            return Err(OAuthError::new(
                ErrorCode::InvalidTarget,
                "the `resource` and `audience` values name different servers: one token is issued for one server",
            ));
        }
        target = Some(named);
    }
    Ok(target.flatten())
}

/// The `act` claim for `actor` acting for the subject, and whether the subject admits it.
fn delegation(subject: &Party, actor: &Party) -> Result<Value, OAuthError> {
    if let Some(may_act) = &subject.may_act {
        let admits = may_act.get("sub").and_then(Value::as_str) == Some(actor.sub.as_str())
            && may_act.get("iss").and_then(Value::as_str).is_none_or(|iss| iss == actor.iss);
        if !admits {
            return Err(invalid("actor_token", "the subject token's `may_act` does not admit this actor"));
        }
    }
    let mut act = json!({"sub": actor.sub, "iss": actor.iss});
    // prior actors: those the subject token already records (RFC 8693 §4.1 nesting)
    if let Some(previous) = subject.act.as_ref().or(actor.act.as_ref()) {
        act["act"] = previous.clone();
    }
    Ok(act)
}

/// The launch named by `launch`, registered by a trusted EHR for this client and this user.
async fn launched_context(request: &GrantRequest<'_>, subject: &Party) -> Result<Option<LaunchContext>, OAuthError> {
    let Some(id) = request.params.get("launch") else { return Ok(None) };
    let store = request.app.stores.ephemeral.as_ref();
    let refused = || OAuthError::invalid_request("the `launch` is unknown, expired, already used or for another app");
    // checked before it is consumed: a launch that is not this client's and user's stays usable
    let launch =
        LAUNCHES.get(store, id).await?.filter(|l| l.app_client_id == request.client.client.id).ok_or_else(refused)?;
    let same_user = launch.identity.platform_subject() == subject.sub
        || (launch.identity.fhir_user.is_some() && launch.identity.fhir_user == subject.fhir_user);
    if !same_user {
        return Err(OAuthError::invalid_request("the `launch` was registered for another user"));
    }
    if subject.context.patient.is_some() {
        return Err(OAuthError::invalid_request("the subject token already carries a patient context"));
    }
    let launch = LAUNCHES.take(store, id).await?.ok_or_else(refused)?;
    Ok(Some(launch.context))
}

pub async fn grant(request: GrantRequest<'_>) -> Result<TokenResponse, OAuthError> {
    let (app, client, params, now) = (request.app, &request.client.client, request.params, request.now);
    let subject_type = params.require("subject_token_type")?;
    let subject_token = params.require("subject_token")?;
    if !EXCHANGEABLE_TOKEN_TYPES.contains(&subject_type) {
        return Err(OAuthError::invalid_request(format!(
            "`{subject_type}` is not a subject token type this server exchanges"
        )));
    }
    if !client.token_exchange_subject_token_types.iter().any(|t| t == subject_type) {
        return Err(OAuthError::unauthorized_client(format!("this client may not exchange `{subject_type}` tokens")));
    }
    if params.get("requested_token_type").is_some_and(|t| t != ACCESS_TOKEN_TYPE) {
        return Err(OAuthError::invalid_request("only access tokens are issued (`requested_token_type`)"));
    }
    let target = check_target(&request)?;
    let subject = party(&request, "subject_token", subject_token, subject_type).await?;
    let act = match (params.get("actor_token"), params.get("actor_token_type")) {
        (Some(token), Some(kind)) => {
            let actor = party(&request, "actor_token", token, kind).await?;
            Some(delegation(&subject, &actor)?)
        }
        (None, None) => subject.act.clone(),
        _ => return Err(OAuthError::invalid_request("`actor_token` and `actor_token_type` come together")),
    };
    let context = match launched_context(&request, &subject).await? {
        Some(launched) => launched,
        None => subject.context.clone(),
    };

    // Never wider: what was asked (or the subject's scopes, or the client's), within the client's,
    // within the subject access token's, within what the policy could permit.
    let asked = match &request.requested_scope {
        Some(scope) => scope.clone(),
        None => subject.ceiling.clone().unwrap_or_else(|| client.scope.clone()),
    };
    let mut scope = asked.narrow_to(&client.scope);
    if let Some(ceiling) = &subject.ceiling {
        scope = scope.narrow_to(ceiling);
    }
    if !subject.holder.system && scope.resources().any(|r| r.context == ScopeContext::System) {
        return Err(OAuthError::invalid_scope("system/ scopes cannot be exchanged for a user's token"));
    }
    if context.patient.is_none() {
        // patient/ scopes need a patient in context
        scope = scope
            .iter()
            .filter(|s| !matches!(s, Scope::Resource(r) if r.context == ScopeContext::Patient))
            .cloned()
            .collect();
    }
    let policy = app.policy.load_full();
    let mut holder = subject.holder.clone();
    holder.client_id = client.id.clone();
    holder.delegated = act.is_some();
    let scope = match target {
        // another resource server: only what it accepts (our access policy decides our FHIR API)
        Some(server) => scope.narrow_to(&ScopeSet::parse(&server.scope).unwrap_or_default()),
        None => scope_policy::narrow(&**policy, &holder, &scope),
    };
    if scope.resources().next().is_none() {
        return Err(OAuthError::invalid_scope("nothing the subject may do with this client is left to grant"));
    }

    let lifetime = i64::from(client.access_token_lifetime_secs.unwrap_or(app.config.tokens.access_token_lifetime_secs));
    let exp = subject.expires.map_or(now + lifetime, |e| e.min(now + lifetime));
    let identity = subject.identity.as_ref();
    let claims = AccessTokenClaims {
        iss: app.issuer().to_owned(),
        sub: subject.sub.clone(),
        aud: target.map_or_else(|| app.fhir_base().to_owned(), |s| s.audience.clone()),
        exp,
        iat: now,
        jti: random_token(18),
        client_id: client.id.clone(),
        scope: scope.to_string(),
        grant_id: subject.chain.clone(),
        auth_time: identity.map(|i| i.auth_time),
        acr: identity.and_then(|i| i.acr.clone()),
        amr: identity.map(|i| i.amr.clone()).filter(|amr| !amr.is_empty()),
        fhir_user: subject.fhir_user.clone(),
        patient: context.patient.clone(),
        encounter: context.encounter.clone(),
        fhir_context: (!context.fhir_context.is_empty()).then(|| Value::Array(context.fhir_context.clone())),
        roles: holder.roles.clone(),
        org: holder.org.clone(),
        assurance: Some(holder.assurance),
        act: act.clone(),
        cnf: confirmation(request.dpop_jkt),
        ..Default::default()
    };
    let access_token = access::mint(&app.keys.ring(), &claims).map_err(|e| {
        tracing::error!(error = %e, "access token signing failed");
        OAuthError::server_error()
    })?;
    let mut launch_context = serde_json::Map::new();
    if let Some(patient) = &claims.patient {
        launch_context.insert("patient".into(), patient.clone().into());
    }
    if let Some(encounter) = &claims.encounter {
        launch_context.insert("encounter".into(), encounter.clone().into());
    }
    if let Some(fhir_context) = &claims.fhir_context {
        launch_context.insert("fhirContext".into(), fhir_context.clone());
    }
    launch_context.insert("issued_token_type".into(), ACCESS_TOKEN_TYPE.into());
    let actors = act.as_ref().map(|a| format!(" act={a}")).unwrap_or_default();
    tracing::info!(client_id = %client.id, subject = %claims.sub, subject_token_type = %subject_type, "token exchanged");
    Ok(TokenResponse {
        access_token,
        token_type: token_type(request.dpop_jkt),
        expires_in: exp - now,
        scope: claims.scope.clone(),
        refresh_token: None,
        id_token: None,
        context: launch_context,
        subject: claims.sub.clone(),
        dpop_nonce: None,
        audit_note: Some(format!("subject_token_type={subject_type} iss={} aud={}{actors}", subject.iss, claims.aud)),
    })
}
