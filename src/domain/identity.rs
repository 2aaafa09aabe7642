//! Who signed in: the raw facts every later decision needs, whichever identity provider (or
//! trusted EHR) vouched for them.

use serde::{Deserialize, Serialize};

/// A signed-in person.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// Which provider vouched: `dev`, `ehr:<client_id>`, an IdP id from `config/idps/`.
    pub provider: String,
    /// The kind of source, for role mapping: `dev`, `ehr`, `oidc`, `cis2`, `nhs_login`.
    #[serde(default)]
    pub source: String,
    /// Assurance on a 0-3 scale: CIS2 AAL, NHS login P0/P5/P9 as 1/2/3, EHR trust's level.
    #[serde(default)]
    pub assurance: u8,
    /// The provider's own issuer, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The subject at that provider.
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A relative FHIR reference: `Practitioner/…`, `Patient/…`, `RelatedPerson/…` or `Person/…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    /// ODS code of the organisation the person acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// National RBAC job role codes (`R8000`…) of the selected role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub role_codes: Vec<String>,
    /// National RBAC activity codes (`B0360`…) of the selected role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activity_codes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// When the person authenticated (Unix seconds).
    pub auth_time: i64,
    /// NHS number, for patients (and, for a proxy, the proxy's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nhs_number: Option<String>,
    /// The patient (NHS number) this person acts for as a proxy: from an NHS login composite
    /// token, and only once the Validated Relationships Service confirmed the role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_for: Option<String>,
    /// The provider's own session id (OIDC `sid`, SAML `SessionIndex`), for provider logout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_session: Option<String>,
    /// The SAML `NameID` (value, format) exactly as issued, for single logout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_name_id: Option<(String, Option<String>)>,
}

impl Identity {
    /// The `sub` carebroker issues: unique across providers.
    pub fn platform_subject(&self) -> String {
        format!("{}:{}", self.provider, self.subject)
    }

    /// The patient this identity is, when it is a patient (`fhirUser` = `Patient/…`).
    pub fn own_patient_id(&self) -> Option<&str> {
        self.fhir_user.as_deref().and_then(|r| r.strip_prefix("Patient/"))
    }
}

/// The national RBAC job role (`R…`) of a CIS2 role code, in either form CIS2 uses: the bare job
/// role (`R8001`) or the full `role_code` with staff group and sub-group (`S8000:G8000:R8001`).
pub fn job_role(role_code: &str) -> Option<String> {
    let part = role_code.trim().split(':').find(|p| p.starts_with('R'))?;
    (part.len() >= 2 && part.len() <= 16 && part[1..].bytes().all(|b| b.is_ascii_digit())).then(|| part.to_owned())
}

/// The resource types `fhirUser` may name (SMART App Launch 2.2; Inferno accepts these four).
pub const FHIR_USER_TYPES: [&str; 4] = ["Practitioner", "Patient", "RelatedPerson", "Person"];

/// True for `Type/id` with a `fhirUser` type and a FHIR id (`[A-Za-z0-9.-]{1,64}`).
pub fn is_fhir_user_reference(reference: &str) -> bool {
    reference.split_once('/').is_some_and(|(kind, id)| FHIR_USER_TYPES.contains(&kind) && is_fhir_id(id))
}

/// A FHIR logical id.
pub fn is_fhir_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_roles_in_both_cis2_forms() {
        assert_eq!(job_role("R8000").as_deref(), Some("R8000"));
        assert_eq!(job_role("S8000:G8000:R8001").as_deref(), Some("R8001"));
        assert_eq!(job_role("S8000:G8000"), None);
        assert_eq!(job_role("Rabbit"), None);
        assert_eq!(job_role(""), None);
    }
}
