//! What the evaluators are asked and what they answer.

use std::sync::Arc;

use crate::domain::scope::Permissions;

/// One access question.
#[derive(Debug, Clone, Default)]
pub struct AccessRequest<'a> {
    /// Platform roles of the caller (from the role mapping, carried in the token).
    pub roles: &'a [String],
    /// ODS code of the caller's organisation.
    pub org: Option<&'a str>,
    pub client_id: &'a str,
    /// `fhirUser` of the caller (`Practitioner/…`, `Patient/…`, `RelatedPerson/…`).
    pub fhir_user: Option<&'a str>,
    /// `patient` in the launch context.
    pub context_patient: Option<&'a str>,
    /// Assurance 0-3.
    pub assurance: u8,
    /// Patients the caller is a registered proxy for.
    pub proxy_for: &'a [String],
    /// The request states a break-glass reason.
    pub break_glass: bool,
    /// Minutes since midnight, UK local time (Europe/London: GMT in winter, BST in summer).
    pub minute_of_day: u16,
    /// A backend service with no user.
    pub system: bool,
    pub resource_type: &'a str,
    /// One SMART interaction (`c`, `r`, `u`, `d` or `s`).
    pub interaction: Permissions,
    /// The patient the record is about.
    pub record_patient: Option<&'a str>,
    /// ODS code of the organisation managing the record.
    pub record_org: Option<&'a str>,
    /// PDS-restricted record.
    pub restricted: bool,
    /// An update that only adds `CarePlan.note` entries and changes nothing else.
    pub only_notes_changed: bool,
    /// The availability check (`/availability`): existence and last update, never content.
    pub availability_check: bool,
    /// Someone acts for the token's subject (RFC 8693 `act`).
    pub delegated: bool,
    /// The record's patient has a sharing choice in force that excludes this caller from it.
    pub consent_refuses: bool,
    /// The record's patient lets this caller add notes to their plan (a Consent naming them).
    pub patient_allows_notes: bool,
}

/// Obligations of a permit as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Obligations(pub u8);

impl Obligations {
    pub const AUDIT_HIGH: u8 = 1;
    pub const ALERT_PRIVACY_OFFICER: u8 = 2;
    pub fn audit_high(self) -> bool {
        self.0 & Self::AUDIT_HIGH != 0
    }
    pub fn alert_privacy_officer(self) -> bool {
        self.0 & Self::ALERT_PRIVACY_OFFICER != 0
    }
}

/// The answer, naming the rule that decided. Rule ids are shared strings: cloning one does not
/// allocate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Permit { rule: Arc<str>, obligations: Obligations },
    Deny { rule: Arc<str>, reason: Arc<str> },
}

impl Decision {
    pub fn is_permit(&self) -> bool {
        matches!(self, Self::Permit { .. })
    }
    pub fn rule(&self) -> &str {
        match self {
            Self::Permit { rule, .. } | Self::Deny { rule, .. } => rule,
        }
    }
}

/// The rule id of the default decision.
pub const DEFAULT_DENY: &str = "default-deny";
/// Its reason (both evaluators give it: decisions compare equal only if they do).
pub const DEFAULT_DENY_REASON: &str = "no rule permits this";
