//! The guard in front of every FHIR request: verify the bearer token (our JWKS, `exp`, `aud` =
//! this FHIR base, grant not revoked), check SMART scopes (v1 and v2, granular `?category=`),
//! keep patient scopes inside the patient in context, then ask the access policy.

use serde_json::Value;

use super::App;
use super::outcome::FhirError;
use super::refusal::RequestLine;
use super::resources::matches_restriction;
use crate::audit::Actor;
use crate::domain::scope::{Permissions, ScopeContext, ScopeSet};
use crate::oauth::dpop::SenderRefusal;
use crate::policy::{AccessRequest, Decision, Obligations};
use crate::token::access::{AccessTokenClaims, CheckError};

/// A caller whose token verified.
#[derive(Debug)]
pub struct Caller {
    pub claims: AccessTokenClaims,
    pub scopes: ScopeSet,
    pub ip: Option<String>,
    /// Patients this caller is a verified proxy for (see [`verified_proxy_for`]).
    pub proxy_for: Vec<String>,
    /// `X-Break-Glass-Reason`: an emergency access with its stated reason.
    pub break_glass: Option<String>,
    /// Minutes since midnight, UK local time, when the request arrived.
    pub minute_of_day: u16,
    /// What the policy decided for this request, for the audit record.
    trail: std::sync::Mutex<Trail>,
}

/// The deciding rule and obligations of the request's policy decision.
#[derive(Debug, Clone, Default)]
pub struct Trail {
    pub rule: Option<std::sync::Arc<str>>,
    pub obligations: Obligations,
}

/// Facts about the record a request touches.
#[derive(Debug, Clone, Copy, Default)]
pub struct Record<'a> {
    pub patient: Option<&'a str>,
    pub org: Option<&'a str>,
    pub restricted: bool,
    pub only_notes_changed: bool,
    pub availability_check: bool,
    /// The patient's sharing choices exclude this caller from the record.
    pub consent_refuses: bool,
    /// The patient lets this caller add notes to their plan.
    pub patient_allows_notes: bool,
}

/// How a request is allowed, by the widest matching scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// A backend service (`system/`).
    System,
    /// A user over the records they may see (`user/`), subject to policy.
    User,
    /// Only the patient in context (`patient/`).
    Patient(String),
}

/// A permitted kind of access with its granular restrictions (any one set must hold; none = any).
#[derive(Debug, Clone)]
pub struct Access {
    pub reach: Reach,
    restrictions: Vec<Vec<(String, String)>>,
}

impl Access {
    /// Whether `resource` falls within the scopes' granular restrictions.
    pub fn admits(&self, resource: &Value) -> bool {
        self.restrictions.is_empty() || self.restrictions.iter().any(|r| matches_restriction(resource, r))
    }
}

/// What a request presents to the guard.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// `X-Break-Glass-Reason`.
    pub break_glass: Option<&'a str>,
    /// The peer address.
    pub ip: Option<&'a str>,
    /// The `DPoP` header(s).
    pub dpop: crate::oauth::dpop::DpopHeader<'a>,
    /// The URL the request was made to, as this server's public URL names it (a proof's `htu`).
    pub url: &'a str,
    pub line: RequestLine<'a>,
}

impl App {
    /// Verifies the request's bearer token. A request refused for its token is audited against
    /// what it was aimed at (rate-limited, no token material).
    pub async fn authenticate(&self, presented: Presented<'_>) -> Result<Caller, FhirError> {
        match self.verify_caller(&presented).await {
            Err(err @ (FhirError::NoToken | FhirError::InvalidToken(_) | FhirError::InvalidDpop { .. })) => {
                self.audit_refusal(&presented.line, presented.ip, &err).await;
                Err(err)
            }
            other => other,
        }
    }

    async fn verify_caller(&self, presented: &Presented<'_>) -> Result<Caller, FhirError> {
        let (scheme, token) = crate::token::credentials(presented.authorization)
            .filter(|(_, v)| !v.is_empty())
            .ok_or(FhirError::NoToken)?;
        let now = self.clock.now();
        let claims = self.check_access_token(token, Some(self.fhir_base())).await.map_err(|e| match e {
            CheckError::Store(e) => e.into(),
            // the challenge answers in the scheme the token came in (RFC 9449 §7.1)
            CheckError::Invalid(_) | CheckError::Revoked if scheme == crate::token::Scheme::Dpop => {
                FhirError::InvalidDpop { code: "invalid_token", why: e.to_string() }
            }
            CheckError::Invalid(_) | CheckError::Revoked => FhirError::InvalidToken(e.to_string()),
        })?;
        self.check_sender(scheme, token, &claims, presented.dpop, presented.line.method, presented.url).await.map_err(
            |refusal| match refusal {
                SenderRefusal::Store(e) => e.into(),
                refused @ SenderRefusal::Refused { code, .. } => {
                    FhirError::InvalidDpop { code: code.as_str(), why: refused.description() }
                }
            },
        )?;
        let scopes = ScopeSet::parse(&claims.scope).unwrap_or_default();
        let mut proxy_for = Vec::new();
        if let Some(id) = claims.fhir_user.as_deref().and_then(|u| u.strip_prefix("RelatedPerson/")) {
            if let Some(person) = self.stores.durable.read_resource("RelatedPerson", id).await? {
                let person: Value = serde_json::from_str(&person.data).unwrap_or_default();
                proxy_for.extend(verified_proxy_for(&person, &claims.sub));
            }
        }
        let minute_of_day = crate::clock::uk_minute_of_day(now);
        let break_glass = presented.break_glass.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
        Ok(Caller {
            claims,
            scopes,
            ip: presented.ip.map(str::to_owned),
            proxy_for,
            break_glass,
            minute_of_day,
            trail: std::sync::Mutex::new(Trail::default()),
        })
    }
}

impl Caller {
    /// A signed-in person acting through one of carebroker's own pages, judged exactly as a token
    /// with `claims` would be (scopes, compartment, policy, audit).
    pub fn on_page(claims: AccessTokenClaims, ip: Option<String>, now: i64) -> Self {
        let scopes = ScopeSet::parse(&claims.scope).unwrap_or_default();
        Self {
            claims,
            scopes,
            ip,
            proxy_for: Vec::new(),
            break_glass: None,
            minute_of_day: crate::clock::uk_minute_of_day(now),
            trail: std::sync::Mutex::new(Trail::default()),
        }
    }

    /// A backend service: no user behind the token.
    pub fn is_system(&self) -> bool {
        self.claims.grant_id.is_none() && self.claims.fhir_user.is_none()
    }

    /// The widest access the scopes give for `interaction` on `resource_type`.
    pub fn access(&self, resource_type: &str, interaction: Permissions) -> Result<Access, FhirError> {
        let order: [ScopeContext; 3] = [ScopeContext::System, ScopeContext::User, ScopeContext::Patient];
        for context in order {
            let matching: Vec<_> =
                self.scopes.resources().filter(|s| s.allows(context, resource_type, interaction)).collect();
            if matching.is_empty() {
                continue;
            }
            let reach = match context {
                ScopeContext::System if self.is_system() => Reach::System,
                ScopeContext::System => continue,
                ScopeContext::User if !self.is_system() => Reach::User,
                ScopeContext::User => continue,
                ScopeContext::Patient => match &self.claims.patient {
                    Some(patient) => Reach::Patient(patient.clone()),
                    None => {
                        return Err(FhirError::InsufficientScope("patient/ scopes need a patient in context".into()));
                    }
                },
            };
            let restrictions = if matching.iter().any(|s| s.params.is_empty()) {
                Vec::new()
            } else {
                matching.iter().map(|s| s.params.clone()).collect()
            };
            return Ok(Access { reach, restrictions });
        }
        Err(FhirError::InsufficientScope(format!("no granted scope allows `{}` on {resource_type}", interaction)))
    }

    /// The audit actor.
    pub fn actor(&self) -> Actor {
        Actor {
            subject: Some(self.claims.sub.clone()),
            name: None,
            roles: self.claims.roles.clone(),
            fhir_user: self.claims.fhir_user.clone(),
            org: self.claims.org.clone(),
            client_id: Some(self.claims.client_id.clone()),
            ip: self.ip.clone(),
        }
    }

    /// The policy request for this caller and a record.
    pub fn policy_request<'a>(
        &'a self,
        resource_type: &'a str,
        interaction: Permissions,
        record: Record<'a>,
    ) -> AccessRequest<'a> {
        AccessRequest {
            roles: &self.claims.roles,
            org: self.claims.org.as_deref(),
            client_id: &self.claims.client_id,
            fhir_user: self.claims.fhir_user.as_deref(),
            context_patient: self.claims.patient.as_deref(),
            assurance: self.claims.assurance.unwrap_or(0),
            proxy_for: &self.proxy_for,
            break_glass: self.break_glass.is_some(),
            minute_of_day: self.minute_of_day,
            system: self.is_system(),
            resource_type,
            interaction,
            record_patient: record.patient,
            record_org: record.org,
            restricted: record.restricted,
            only_notes_changed: record.only_notes_changed,
            availability_check: record.availability_check,
            delegated: self.claims.act.is_some(),
            consent_refuses: record.consent_refuses,
            patient_allows_notes: record.patient_allows_notes,
        }
    }

    /// Remembers a decision for the audit record.
    pub fn note(&self, decision: &Decision) {
        if let Ok(mut trail) = self.trail.lock() {
            trail.rule = Some(match decision {
                Decision::Permit { rule, .. } | Decision::Deny { rule, .. } => rule.clone(),
            });
            if let Decision::Permit { obligations, .. } = decision {
                trail.obligations = *obligations;
            }
        }
    }

    /// The last decision noted.
    pub fn trail(&self) -> Trail {
        self.trail.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Refuses a search the policy could permit on no record at all to this caller (the
    /// availability role, say, which reaches only the availability check), before anything is
    /// read: such a caller is told the policy refused, not shown an empty result.
    pub fn may_search(&self, policy: &dyn crate::policy::AccessPolicy, resource_type: &str) -> Result<(), FhirError> {
        if policy.may_permit(&self.policy_request(resource_type, Permissions::SEARCH, Record::default())) {
            return Ok(());
        }
        let rule = crate::policy::request::DEFAULT_DENY;
        if let Ok(mut trail) = self.trail.lock() {
            trail.rule = Some(std::sync::Arc::from(rule));
        }
        Err(FhirError::PolicyDenied {
            rule: rule.into(),
            reason: format!("no rule could permit a {resource_type} search"),
        })
    }

    /// Asks `policy` and records the decision.
    pub fn decide(
        &self,
        policy: &dyn crate::policy::AccessPolicy,
        resource_type: &str,
        interaction: Permissions,
        record: Record<'_>,
    ) -> Result<(), FhirError> {
        let decision = policy.decide(&self.policy_request(resource_type, interaction, record));
        crate::telemetry::policy_decision(decision.is_permit());
        self.note(&decision);
        enforce(decision).map(|_| ())
    }
}

/// The identifier system under which a `RelatedPerson` names the platform subject (`sub`) of the
/// person it describes. carebroker writes it when it verifies a relationship.
pub const SUBJECT_SYSTEM: &str = "https://carebroker.nhs.uk/Id/subject";

/// The patient a `RelatedPerson` acts for, if it is active and names `subject` as the person: a
/// proxy relationship is carebroker's own verified record, so a token that merely claims a
/// `RelatedPerson` fhirUser (an EHR's or an identity provider's assertion) reaches no patient.
pub fn verified_proxy_for(person: &Value, subject: &str) -> Option<String> {
    let active = person["active"].as_bool().unwrap_or(true);
    let names_subject = person["identifier"]
        .as_array()
        .is_some_and(|ids| ids.iter().any(|i| i["system"] == SUBJECT_SYSTEM && i["value"] == subject));
    let patient = person["patient"]["reference"].as_str().and_then(|r| r.strip_prefix("Patient/"))?;
    (active && names_subject).then(|| patient.to_owned())
}

/// The patient compartment: a `patient/` caller sees only its patient's records; anything else
/// is reported as not found.
pub fn within_compartment(access: &Access, record_patient: Option<&str>) -> Result<(), FhirError> {
    match &access.reach {
        Reach::Patient(patient) if record_patient != Some(patient.as_str()) => {
            Err(FhirError::Hidden("the record is outside the patient in context".into()))
        }
        _ => Ok(()),
    }
}

/// Turns a policy decision into a result.
pub fn enforce(decision: Decision) -> Result<std::sync::Arc<str>, FhirError> {
    match decision {
        Decision::Permit { rule, .. } => Ok(rule),
        Decision::Deny { reason, rule } => {
            Err(FhirError::PolicyDenied { rule: rule.to_string(), reason: reason.to_string() })
        }
    }
}
