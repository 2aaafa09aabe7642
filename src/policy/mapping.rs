//! Role mapping: from the facts of a signed-in identity (or a system client) to platform roles.

use super::ast::{Mapping, Policy};

/// The facts a mapping looks at.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    /// `cis2`, `nhs_login`, `oidc`, `ehr`, `dev`, or `system` for a backend service.
    pub source: &'a str,
    pub provider: &'a str,
    pub issuer: Option<&'a str>,
    pub role_codes: &'a [String],
    pub activity_codes: &'a [String],
    /// NHS login proofing level (0, 5 or 9) when known.
    pub proofing: Option<u8>,
    pub fhir_user: Option<&'a str>,
    pub client_id: &'a str,
}

fn any_of(wanted: &[String], have: &[String]) -> bool {
    wanted.is_empty() || wanted.iter().any(|w| have.contains(w))
}

fn applies(m: &Mapping, f: &Facts<'_>) -> bool {
    (m.source == "any" || m.source == f.source)
        && (m.providers.is_empty() || m.providers.iter().any(|p| p == f.provider))
        && (m.issuers.is_empty() || f.issuer.is_some_and(|i| m.issuers.iter().any(|x| x == i)))
        && any_of(&m.role_codes, f.role_codes)
        && any_of(&m.activity_codes, f.activity_codes)
        && m.min_proofing.is_none_or(|min| f.proofing.is_some_and(|p| p >= min))
        && m.fhir_user_type.as_deref().is_none_or(|t| f.fhir_user.is_some_and(|u| u.split('/').next() == Some(t)))
        && (m.clients.is_empty() || m.clients.iter().any(|c| c == f.client_id))
}

/// The platform roles `facts` map to, in declaration order, without duplicates.
pub fn roles_for(policy: &Policy, facts: &Facts<'_>) -> Vec<String> {
    policy
        .roles
        .iter()
        .filter(|(name, _, _)| policy.mappings.iter().any(|m| m.role == *name && applies(m, facts)))
        .map(|(name, _, _)| name.clone())
        .collect()
}

/// NHS login proofing level from a vector of trust (`P9.Cp.Cd` → 9).
pub fn proofing_of(vot: Option<&str>) -> Option<u8> {
    vot?.strip_prefix('P')?.get(..1)?.parse().ok()
}
