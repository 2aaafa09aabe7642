//! Meaning of each condition against a request: one definition, used by the interpreter and (in
//! compiled form) by the compiled evaluator.

use super::request::AccessRequest;

/// `subject_is_patient`: the caller's `fhirUser` is `Patient/{record patient}`.
pub fn subject_is_patient(r: &AccessRequest<'_>) -> bool {
    match (r.fhir_user.and_then(|u| u.strip_prefix("Patient/")), r.record_patient) {
        (Some(me), Some(patient)) => me == patient,
        _ => false,
    }
}

pub fn patient_in_context(r: &AccessRequest<'_>) -> bool {
    matches!((r.context_patient, r.record_patient), (Some(c), Some(p)) if c == p)
}

pub fn subject_is_proxy(r: &AccessRequest<'_>) -> bool {
    r.record_patient.is_some_and(|p| r.proxy_for.iter().any(|x| x == p))
}

pub fn same_organisation(r: &AccessRequest<'_>) -> bool {
    matches!((r.org, r.record_org), (Some(a), Some(b)) if a == b)
}

pub fn within_hours(r: &AccessRequest<'_>, start: u16, end: u16) -> bool {
    r.minute_of_day >= start && r.minute_of_day < end
}
