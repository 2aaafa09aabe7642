//! Access decisions: who (roles, organisation, assurance, client) may do what (SMART interaction)
//! to which resource. The guard of every FHIR request and token issuance asks an
//! [`AccessPolicy`]. The compiled policy language from `policies/` implements it (policy issue);
//! until then [`ScopeOnly`] permits whatever the token's scopes and patient context allow.

use crate::domain::scope::Permissions;

/// What is being asked.
#[derive(Debug, Clone)]
pub struct AccessRequest<'a> {
    /// Platform roles / national RBAC role codes of the caller.
    pub roles: &'a [String],
    /// ODS code of the caller's organisation.
    pub org: Option<&'a str>,
    pub client_id: &'a str,
    /// `fhirUser` of the caller (`Practitioner/…`, `Patient/…`), if any.
    pub fhir_user: Option<&'a str>,
    /// `patient` in the launch context, if any.
    pub context_patient: Option<&'a str>,
    /// FHIR resource type.
    pub resource_type: &'a str,
    /// One SMART interaction (`c`, `r`, `u`, `d` or `s`).
    pub interaction: Permissions,
    /// The patient the record is about, when known.
    pub record_patient: Option<&'a str>,
    /// ODS code of the organisation managing the record, when known.
    pub record_org: Option<&'a str>,
    /// The record is PDS-restricted (sensitive).
    pub restricted: bool,
    /// A system (backend-services) caller with no user.
    pub system: bool,
}

/// The answer, with the rule that decided (for audit and `policy explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Permit { rule: String },
    Deny { rule: String, reason: String },
}

impl Decision {
    pub fn is_permit(&self) -> bool {
        matches!(self, Self::Permit { .. })
    }
}

/// Decides access requests. Implementations must not allocate on the hot path where avoidable.
pub trait AccessPolicy: Send + Sync + std::fmt::Debug {
    fn decide(&self, request: &AccessRequest<'_>) -> Decision;
}

/// Permits every request (scopes and the patient compartment are enforced by the guard itself).
#[derive(Debug, Default, Clone, Copy)]
pub struct ScopeOnly;

impl AccessPolicy for ScopeOnly {
    fn decide(&self, _request: &AccessRequest<'_>) -> Decision {
        Decision::Permit { rule: "scope-only".into() }
    }
}
