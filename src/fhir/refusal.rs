//! Requests refused before anyone was identified (no bearer token, or one that does not verify)
//! are audited too, against the patient they were aimed at where the request shows it: a burst
//! of bad tokens against one patient's plan is what an information-governance team needs to
//! see. The records are rate-limited ([`crate::audit::limiter`]) and hold no token material:
//! only what was asked for, from where, and why it was refused.

use super::App;
use super::outcome::FhirError;
use super::search::Query;
use crate::audit::limiter::Admit;
use crate::audit::{Actor, AuditEvent, AuditKind, AuditOutcome};
use crate::domain::identity::is_fhir_id;
use crate::domain::nhs_number::NhsNumber;

/// The request as the guard saw it, before any token was accepted.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestLine<'a> {
    pub method: &'a str,
    /// The path as routed (`/fhir/CarePlan/123`, `/availability`).
    pub path: &'a str,
    pub query: Option<&'a str>,
}

/// What a request was aimed at.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Aim {
    kind: AuditKind,
    resource_type: String,
    id: Option<String>,
    /// The patient, when the request names them.
    patient: Option<String>,
}

/// Reads the FHIR interaction, the resource and (where the URL names one) the patient from a
/// request line. Anything unrecognised is kept as a resource type of `unknown`.
fn aim_of(line: &RequestLine<'_>) -> Aim {
    let query = Query::parse(line.query).unwrap_or_default();
    let named_patient = ["patient", "subject", "subject:identifier", "identifier", "_id", "nhs_number"]
        .iter()
        .flat_map(|name| query.all(name))
        .map(|v| v.rsplit(['/', '|']).next().unwrap_or(v))
        .find_map(|v| NhsNumber::parse(v).ok().map(|n| n.to_string()));
    let segments: Vec<&str> = line.path.trim_start_matches('/').split('/').collect();
    let write = line.method.eq_ignore_ascii_case("POST") || line.method.eq_ignore_ascii_case("PUT");
    let (kind, resource_type, id) = match segments.as_slice() {
        ["availability"] => (AuditKind::AvailabilityCheck, "CarePlan", None),
        ["fhir", kind] if write => (AuditKind::FhirCreate, *kind, None),
        ["fhir", kind] => (AuditKind::FhirSearch, *kind, None),
        ["fhir", kind, id] if write => (AuditKind::FhirUpdate, *kind, Some(*id)),
        ["fhir", kind, id] => (AuditKind::FhirRead, *kind, Some(*id)),
        ["fhir", kind, id, "_history"] => (AuditKind::FhirHistory, *kind, Some(*id)),
        ["fhir", kind, id, "_history", _] => (AuditKind::FhirVread, *kind, Some(*id)),
        _ => (AuditKind::FhirRead, "unknown", None),
    };
    let resource_type =
        if crate::domain::scope::is_resource_type_name(resource_type) { resource_type } else { "unknown" };
    let id = id.filter(|id| is_fhir_id(id)).map(str::to_owned);
    let patient = match (resource_type, &id) {
        ("Patient", Some(id)) => NhsNumber::parse(id).ok().map(|n| n.to_string()),
        _ => named_patient,
    };
    Aim { kind, resource_type: resource_type.to_owned(), id, patient }
}

impl App {
    /// Audits a request refused for its token (rate-limited). Never fails the request: the
    /// refusal stands whether or not the record could be written.
    pub(crate) async fn audit_refusal(&self, line: &RequestLine<'_>, ip: Option<&str>, err: &FhirError) {
        let mut aim = aim_of(line);
        let source = ip.unwrap_or("unknown address");
        let target = match &aim.id {
            Some(id) => format!("{}/{id}", aim.resource_type),
            None => aim.resource_type.clone(),
        };
        let key = format!("{source}|{}|{target}", aim.patient.as_deref().unwrap_or("-"));
        let Admit::Record { suppressed_before } = self.refusals.admit(&key, self.clock.now_millis()) else { return };
        // the patient a plan or RelatedPerson belongs to: read only for the few refusals recorded
        if aim.patient.is_none() {
            if let (Some(id), "CarePlan" | "RelatedPerson") = (&aim.id, aim.resource_type.as_str()) {
                aim.patient = self.patient_of_stored(&aim.resource_type, id).await;
            }
        }
        let mut detail = format!("refused before the caller was identified: {}", err.audit_detail());
        if suppressed_before > 0 {
            detail.push_str(&format!(
                "; {suppressed_before} earlier refusals from this address for this target were counted, not recorded \
                 one by one"
            ));
        }
        let actor = Actor { ip: ip.map(str::to_owned), ..Actor::default() };
        let event = AuditEvent::new(aim.kind, AuditOutcome::Denied, actor)
            .target(&aim.resource_type, aim.id.as_deref(), None)
            .patient(aim.patient.as_deref())
            .detail(detail);
        self.audit.record_or_log(&event).await;
    }

    /// Writes a summary record for each source and target whose refusals in a window that has
    /// ended were counted but not recorded one by one (housekeeping calls this).
    pub async fn audit_refusal_summaries(&self) {
        for (key, count) in self.refusals.take_summaries(self.clock.now_millis()) {
            let mut parts = key.splitn(3, '|');
            let (source, patient, target) = (parts.next(), parts.next(), parts.next());
            let (resource_type, id) = match target.and_then(|t| t.split_once('/')) {
                Some((kind, id)) => (kind, Some(id)),
                None => (target.unwrap_or("unknown"), None),
            };
            let mut patient = patient.filter(|p| NhsNumber::parse(p).is_ok()).map(str::to_owned);
            if let (None, Some(id), "CarePlan" | "RelatedPerson") = (&patient, id, resource_type) {
                patient = self.patient_of_stored(resource_type, id).await;
            }
            let actor = Actor { ip: source.filter(|s| *s != "unknown address").map(str::to_owned), ..Actor::default() };
            let event = AuditEvent::new(AuditKind::FhirRead, AuditOutcome::Denied, actor)
                .target(resource_type, id, None)
                .patient(patient.as_deref())
                .detail(format!(
                    "{count} further requests from this address for this target were refused before the caller was \
                     identified (counted, not recorded one by one)"
                ));
            self.audit.record_or_log(&event).await;
        }
    }

    async fn patient_of_stored(&self, resource_type: &str, id: &str) -> Option<String> {
        let stored = self.stores.durable.read_resource(resource_type, id).await.ok()??;
        let resource: serde_json::Value = serde_json::from_str(&stored.data).ok()?;
        match resource_type {
            "CarePlan" => super::resources::careplan_patient(&resource),
            _ => resource["patient"]["reference"].as_str().and_then(|r| r.strip_prefix("Patient/")).map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aim(method: &str, path: &str, query: Option<&str>) -> Aim {
        aim_of(&RequestLine { method, path, query })
    }

    #[test]
    fn the_aim_of_a_request_is_read_from_its_url() {
        let read = aim("GET", "/fhir/CarePlan/abc", None);
        assert_eq!(
            (read.kind, read.resource_type.as_str(), read.id.as_deref()),
            (AuditKind::FhirRead, "CarePlan", Some("abc"))
        );
        assert_eq!(aim("GET", "/fhir/Patient/9434765919", None).patient.as_deref(), Some("9434765919"));
        let search = aim("GET", "/fhir/CarePlan", Some("patient=Patient/9434765919&status=active"));
        assert_eq!((search.kind, search.patient.as_deref()), (AuditKind::FhirSearch, Some("9434765919")));
        let by_identifier =
            aim("GET", "/fhir/CarePlan", Some("subject:identifier=https://fhir.nhs.uk/Id/nhs-number|9000000009"));
        assert_eq!(by_identifier.patient.as_deref(), Some("9000000009"));
        assert_eq!(aim("GET", "/availability", Some("nhs_number=9434765919")).kind, AuditKind::AvailabilityCheck);
        assert_eq!(aim("PUT", "/fhir/CarePlan/abc", None).kind, AuditKind::FhirUpdate);
        assert_eq!(aim("POST", "/fhir/CarePlan", None).kind, AuditKind::FhirCreate);
        assert_eq!(aim("GET", "/fhir/CarePlan/abc/_history/2", None).kind, AuditKind::FhirVread);
        let hostile = aim("GET", "/fhir/Care|Plan/a|b", Some("patient=1234567890"));
        assert_eq!((hostile.resource_type.as_str(), hostile.id, hostile.patient), ("unknown", None, None));
    }
}
