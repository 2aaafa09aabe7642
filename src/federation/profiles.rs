//! From verified upstream claims to an [`Identity`], per kind of provider: generic OIDC (claim
//! names from config), NHS CIS2 (assurance, recent sign-in, the selected national RBAC role and
//! its organisation), NHS login (vectors of trust, NHS number, proofing level).
//! Facts: `reference/nhs-identity.md` §1 and §3.

use serde_json::Value;

use super::SignInError;
use super::oidc::{Claims, RoundTrip, number_claim};
use crate::config::idps::IdpConfig;
use crate::domain::identity::{Identity, is_fhir_user_reference, job_role};
use crate::domain::nhs_number::NhsNumber;

fn text(claims: &Claims, name: &str) -> Option<String> {
    claims.get(name).and_then(Value::as_str).map(str::to_owned).filter(|s| !s.is_empty())
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Some(Value::String(one)) => one.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn base_identity(config: &IdpConfig, claims: &Claims, subject: String) -> Identity {
    Identity {
        provider: config.id.clone(),
        source: config.kind.as_str().into(),
        issuer: Some(config.issuer.clone()),
        subject,
        acr: text(claims, "acr"),
        amr: strings(claims.get("amr")),
        auth_time: claims.get("auth_time").and_then(Value::as_i64).unwrap_or_default(),
        upstream_session: text(claims, "sid"),
        ..Default::default()
    }
}

fn fhir_user(config: &IdpConfig, claimed: Option<String>, subject: &str) -> Result<Option<String>, SignInError> {
    let from_template = || config.claims.fhir_user_template.as_ref().map(|t| t.replace("{sub}", subject));
    let value = claimed
        .map(|c| c.rsplit('/').take(2).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("/"))
        .or_else(from_template);
    match value {
        Some(v) if is_fhir_user_reference(&v) => Ok(Some(v)),
        Some(v) => Err(SignInError::Rejected(format!(
            "the provider's fhirUser `{v}` is not Practitioner/…, Patient/…, RelatedPerson/… or Person/…"
        ))),
        None => Ok(None),
    }
}

/// Generic OIDC: claim names from the provider's `[claims]` mapping.
pub fn generic(config: &IdpConfig, claims: &Claims, now: i64) -> Result<Identity, SignInError> {
    let map = &config.claims;
    let subject = text(claims, &map.subject)
        .ok_or_else(|| SignInError::Rejected(format!("the provider sent no `{}`", map.subject)))?;
    let mut identity = base_identity(config, claims, subject.clone());
    identity.name = text(claims, &map.name);
    identity.fhir_user = fhir_user(config, text(claims, &map.fhir_user), &subject)?;
    identity.org = text(claims, &map.org).or_else(|| map.default_org.clone());
    identity.role_codes = strings(claims.get(&map.roles));
    identity.activity_codes = strings(claims.get(&map.activities));
    if identity.auth_time == 0 {
        identity.auth_time = now;
    }
    identity.assurance = 2;
    Ok(identity)
}

/// NHS CIS2: assurance levels, an `auth_time` at most `max_auth_age` seconds ago, and the selected
/// role from `nhsid_nrbac_roles` (by `selected_roleid`, ID token first) with its organisation.
pub fn cis2(config: &IdpConfig, claims: &Claims, max_auth_age: i64, now: i64) -> Result<Identity, SignInError> {
    let reject = |why: String| Err(SignInError::Rejected(why));
    let subject = text(claims, "sub").unwrap_or_default();
    let aal = claims.get("authentication_assurance_level").and_then(number_claim).or_else(|| {
        // acr such as AAL3_ANY when the level claim is absent
        text(claims, "acr")
            .and_then(|acr| acr.strip_prefix("AAL").and_then(|r| r.get(..1)).and_then(|d| d.parse().ok()))
    });
    match aal {
        Some(level) if level >= i64::from(config.min_authentication_assurance_level) => {}
        Some(level) => {
            return reject(format!(
                "the sign-in was at assurance level AAL{level}; this service needs AAL{} (a smartcard)",
                config.min_authentication_assurance_level
            ));
        }
        None => {
            return reject(
                "the provider did not say how strongly the user signed in (authentication_assurance_level)".into(),
            );
        }
    }
    let ial = claims
        .get("id_assurance_level")
        .and_then(number_claim)
        .or_else(|| claims.get("idassurancelevel").and_then(number_claim));
    if ial.is_none_or(|l| l < i64::from(config.min_id_assurance_level)) {
        return reject(format!(
            "identity assurance level {} is below {}",
            ial.map_or("unknown".into(), |l| l.to_string()),
            config.min_id_assurance_level
        ));
    }
    let auth_time = claims
        .get("auth_time")
        .and_then(Value::as_i64)
        .ok_or_else(|| SignInError::Rejected("the provider sent no auth_time".into()))?;
    if now - auth_time > max_auth_age {
        return reject(format!(
            "the smartcard sign-in was {} s ago; at most {max_auth_age} s is accepted",
            now - auth_time
        ));
    }
    let roles = claims.get("nhsid_nrbac_roles").and_then(Value::as_array).cloned().unwrap_or_default();
    let selected = text(claims, "selected_roleid");
    let role = match (&selected, roles.as_slice()) {
        (Some(id), _) => roles.iter().find(|r| r["person_roleid"].as_str() == Some(id.as_str())),
        (None, [only]) => Some(only),
        (None, _) => None,
    };
    let Some(role) = role else {
        return reject(match selected {
            Some(id) => format!("the selected role `{id}` is not one of the user's roles"),
            None => "no role was selected, and the user has more than one (or none)".into(),
        });
    };
    let mut identity = base_identity(config, claims, subject.clone());
    identity.auth_time = auth_time;
    identity.assurance = u8::try_from(aal.unwrap_or(0).clamp(0, 3)).unwrap_or(0);
    identity.name = text(claims, "name").or_else(|| text(claims, "display_name"));
    identity.role_codes = role["role_code"].as_str().and_then(job_role).into_iter().collect();
    identity.activity_codes = strings(role.get("activity_codes"));
    identity.org = role["org_code"].as_str().map(str::to_owned);
    if let Some(org) = &identity.org {
        let known = claims
            .get("nhsid_user_orgs")
            .and_then(Value::as_array)
            .is_none_or(|orgs| orgs.iter().any(|o| o["org_code"].as_str() == Some(org)));
        if !known {
            return reject(format!("the role's organisation `{org}` is not among the user's organisations"));
        }
    }
    identity.fhir_user = fhir_user(config, None, &subject)?
        .or_else(|| Some(format!("Practitioner/{subject}")).filter(|r| is_fhir_user_reference(r)));
    Ok(identity)
}

/// NHS login: `vot` one of the requested vectors, a valid NHS number, the proofing level.
/// The claims `act` carries: an object (RFC 8693 §4.1), or the proxy's own ID token as NHS
/// login's composite token describes it ("base64 encoded identity token": a compact JWS, or
/// that text base64-encoded again). Its content is vouched for by the signature of the composite
/// token that carries it, which has been verified.
fn actor_claims(act: &Value) -> Option<Claims> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    match act {
        Value::Object(map) => Some(map.clone().into_iter().collect()),
        Value::String(text) if text.len() <= 16 * 1024 => {
            let jws = if text.matches('.').count() == 2 {
                text.clone()
            } else {
                String::from_utf8(STANDARD.decode(text).or_else(|_| URL_SAFE_NO_PAD.decode(text)).ok()?).ok()?
            };
            let payload = URL_SAFE_NO_PAD.decode(jws.split('.').nth(1)?).ok()?;
            serde_json::from_slice(&payload).ok()
        }
        _ => None,
    }
}

/// An NHS login composite token: its subject and demographics are the patient's, and `act` is
/// the proxy, who is the one signed in. The identity is the proxy's, with `proxy_for` the
/// patient; the role still has to be confirmed with VRS before it is used.
fn nhs_login_proxy(config: &IdpConfig, claims: &Claims, vot: &str, now: i64) -> Result<Identity, SignInError> {
    let reject = |why: &str| Err(SignInError::Rejected(why.to_owned()));
    let Some(actor) = claims.get("act").and_then(actor_claims) else {
        return reject("the NHS login composite token's `act` is unreadable");
    };
    let patient = text(claims, "nhs_number").or_else(|| text(claims, "sub")).and_then(|n| NhsNumber::parse(&n).ok());
    let Some(patient) = patient else { return reject("the composite token names no patient by NHS number") };
    let proxy = text(&actor, "nhs_number").and_then(|n| NhsNumber::parse(&n).ok());
    let (Some(proxy), Some(subject)) = (proxy, text(&actor, "sub")) else {
        return reject("the composite token's `act` names no proxy (`sub` and NHS number)");
    };
    if proxy == patient {
        return reject("a composite token cannot name the same person as patient and proxy");
    }
    // the proxy, who signs in, must be proved to P9: they will see someone else's record
    if !vot.starts_with("P9") {
        return reject("acting for someone else needs high identity proofing (P9)");
    }
    let mut identity = base_identity(config, claims, subject);
    identity.assurance = 3;
    identity.acr = Some(vot.to_owned());
    identity.name = text(&actor, "family_name").map(|f| match text(&actor, "given_name") {
        Some(given) => format!("{given} {f}"),
        None => f,
    });
    identity.nhs_number = Some(proxy.to_string());
    identity.proxy_for = Some(patient.to_string());
    identity.fhir_user = None;
    if identity.auth_time == 0 {
        identity.auth_time = now;
    }
    Ok(identity)
}

pub fn nhs_login(config: &IdpConfig, claims: &Claims, trip: &RoundTrip, now: i64) -> Result<Identity, SignInError> {
    let reject = |why: String| Err(SignInError::Rejected(why));
    let vot = text(claims, "vot").unwrap_or_default();
    if !trip.requested_vtr.contains(&vot) {
        return reject(format!(
            "NHS login returned vector of trust `{vot}`, which was not requested ({})",
            trip.requested_vtr.join(", ")
        ));
    }
    if claims.contains_key("act") {
        return nhs_login_proxy(config, claims, &vot, now);
    }
    let Some(raw) = text(claims, "nhs_number") else {
        return reject("NHS login did not send an NHS number".into());
    };
    let nhs = NhsNumber::parse(&raw)
        .map_err(|e| SignInError::Rejected(format!("NHS login sent an invalid NHS number: {e}")))?;
    // The user's proofing level must be at least the vector's (P9 ≥ P5 ≥ P0).
    let rank = |p: &str| p.strip_prefix('P').and_then(|d| d.get(..1)).and_then(|d| d.parse::<u8>().ok());
    let level = text(claims, "identity_proofing_level").unwrap_or_default();
    if rank(&level).is_none_or(|l| rank(&vot).is_none_or(|v| l < v)) {
        return reject(format!("identity proofing level `{level}` does not meet the vector of trust `{vot}`"));
    }
    let subject = text(claims, "sub").unwrap_or_default();
    let mut identity = base_identity(config, claims, subject);
    identity.assurance = match rank(&level) {
        Some(9) => 3,
        Some(5) => 2,
        Some(_) => 1,
        None => 0,
    };
    identity.acr = Some(vot);
    identity.name = text(claims, "family_name").map(|f| match text(claims, "given_name") {
        Some(given) => format!("{given} {f}"),
        None => f,
    });
    identity.fhir_user = Some(format!("Patient/{nhs}"));
    identity.nhs_number = Some(nhs.to_string());
    if identity.auth_time == 0 {
        identity.auth_time = now;
    }
    Ok(identity)
}
