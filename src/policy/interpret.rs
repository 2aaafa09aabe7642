//! The reference interpreter: the policy as written, evaluated directly. Forbid wins (the first
//! matching forbid in file order decides), then the first matching permit, else default deny.
//! The compiled evaluator must agree with it on every request, rule included.

use std::sync::Arc;

use super::ast::{Condition, Effect, Obligation, Policy, Rule};
use super::conditions as c;
use super::request::{AccessRequest, DEFAULT_DENY, DEFAULT_DENY_REASON, Decision, Obligations};

fn holds(condition: &Condition, r: &AccessRequest<'_>) -> bool {
    match condition {
        Condition::PatientInContext => c::patient_in_context(r),
        Condition::SubjectIsPatient => c::subject_is_patient(r),
        Condition::SubjectIsProxy => c::subject_is_proxy(r),
        Condition::SameOrganisation => c::same_organisation(r),
        Condition::Restricted => r.restricted,
        Condition::BreakGlass => r.break_glass,
        Condition::HasRole(role) => r.roles.iter().any(|x| x == role),
        Condition::AssuranceAtLeast(n) => r.assurance >= *n,
        Condition::ClientIn(ids) => ids.iter().any(|id| id == r.client_id),
        Condition::Hours(a, b) => c::within_hours(r, *a, *b),
        Condition::OnlyNotesChanged => r.only_notes_changed,
        Condition::AvailabilityCheck => r.availability_check,
        Condition::Delegated => r.delegated,
        Condition::ConsentRefuses => r.consent_refuses,
        Condition::PatientAllowsNotes => r.patient_allows_notes,
        Condition::Not(inner) => !holds(inner, r),
    }
}

/// Whether `rule` applies to `r` (roles, resource, interaction, every condition).
pub fn matches(rule: &Rule, r: &AccessRequest<'_>) -> bool {
    rule.roles.iter().any(|role| r.roles.iter().any(|x| x == role))
        && rule.resources.iter().any(|t| t == "*" || t == r.resource_type)
        && !r.interaction.is_empty()
        && rule.interactions.contains(r.interaction)
        && rule.conditions.iter().all(|cond| holds(cond, r))
}

/// Evaluates `r` against `policy`.
pub fn decide(policy: &Policy, r: &AccessRequest<'_>) -> Decision {
    if let Some(rule) = policy.rules.iter().find(|rule| rule.effect == Effect::Forbid && matches(rule, r)) {
        return Decision::Deny { rule: Arc::from(rule.id.as_str()), reason: Arc::from(reason(rule).as_str()) };
    }
    if let Some(rule) = policy.rules.iter().find(|rule| rule.effect == Effect::Permit && matches(rule, r)) {
        return Decision::Permit { rule: Arc::from(rule.id.as_str()), obligations: obligations(&rule.obligations) };
    }
    Decision::Deny { rule: Arc::from(DEFAULT_DENY), reason: Arc::from(DEFAULT_DENY_REASON) }
}

/// The deny reason of a forbid rule.
pub fn reason(rule: &Rule) -> String {
    if rule.description.is_empty() { format!("forbidden by rule {}", rule.id) } else { rule.description.clone() }
}

pub fn obligations(list: &[Obligation]) -> Obligations {
    Obligations(list.iter().fold(0, |bits, o| {
        bits | match o {
            Obligation::AuditHigh => Obligations::AUDIT_HIGH,
            Obligation::AlertPrivacyOfficer => Obligations::ALERT_PRIVACY_OFFICER,
        }
    }))
}

/// Each condition of `rule` with its value for `r`, for `policy explain`.
pub fn explain_conditions(rule: &Rule, r: &AccessRequest<'_>) -> Vec<(String, bool)> {
    rule.conditions.iter().map(|cond| (cond.to_string(), holds(cond, r))).collect()
}
