//! The guard in front of every FHIR request: verify the bearer token (our JWKS, `exp`, `aud` =
//! this FHIR base, grant not revoked), check SMART scopes (v1 and v2, granular `?category=`),
//! keep patient scopes inside the patient in context, then ask the access policy.

use serde_json::Value;

use super::FhirApi;
use super::outcome::FhirError;
use super::resources::matches_restriction;
use crate::audit::Actor;
use crate::domain::scope::{Permissions, ScopeContext, ScopeSet};
use crate::policy::{AccessRequest, Decision};
use crate::token::access::{self, AccessTokenClaims};

/// A caller whose token verified.
#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: AccessTokenClaims,
    pub scopes: ScopeSet,
    pub ip: Option<String>,
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

fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, value) = header?.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| value.trim()).filter(|v| !v.is_empty())
}

impl FhirApi {
    /// Verifies the request's bearer token.
    pub async fn authenticate(&self, authorization: Option<&str>, ip: Option<String>) -> Result<Caller, FhirError> {
        let token = bearer(authorization).ok_or(FhirError::NoToken)?;
        let now = self.clock.now();
        let claims = access::verify(&self.keys.ring(), token, &self.issuer, Some(&self.fhir_base), now)
            .map_err(|e| FhirError::InvalidToken(e.to_string()))?;
        let mut ids = vec![claims.jti.as_str()];
        if let Some(grant) = &claims.grant_id {
            ids.push(grant);
        }
        if self.stores.durable.is_revoked(&ids).await? {
            return Err(FhirError::InvalidToken("the token has been revoked".into()));
        }
        let scopes = ScopeSet::parse(&claims.scope).unwrap_or_default();
        Ok(Caller { claims, scopes, ip })
    }
}

impl Caller {
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
        record_patient: Option<&'a str>,
        record_org: Option<&'a str>,
        restricted: bool,
    ) -> AccessRequest<'a> {
        AccessRequest {
            roles: &self.claims.roles,
            org: self.claims.org.as_deref(),
            client_id: &self.claims.client_id,
            fhir_user: self.claims.fhir_user.as_deref(),
            context_patient: self.claims.patient.as_deref(),
            resource_type,
            interaction,
            record_patient,
            record_org,
            restricted,
            system: self.is_system(),
        }
    }
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
pub fn enforce(decision: Decision) -> Result<String, FhirError> {
    match decision {
        Decision::Permit { rule } => Ok(rule),
        Decision::Deny { reason, rule } => Err(FhirError::Denied { reason: format!("{reason} (rule {rule})") }),
    }
}
