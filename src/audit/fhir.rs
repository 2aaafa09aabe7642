//! Audit records as FHIR R4 `AuditEvent` resources, for auditors.

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{AuditEvent, AuditKind, AuditOutcome};
use crate::store::AuditRecord;

/// RFC 3339 UTC for Unix milliseconds.
pub fn instant(millis: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn subtype(kind: AuditKind) -> Value {
    let (system, code) = match kind {
        AuditKind::FhirRead => ("http://hl7.org/fhir/restful-interaction", "read"),
        AuditKind::FhirVread => ("http://hl7.org/fhir/restful-interaction", "vread"),
        AuditKind::FhirHistory => ("http://hl7.org/fhir/restful-interaction", "history-instance"),
        AuditKind::FhirSearch | AuditKind::AvailabilityCheck => {
            ("http://hl7.org/fhir/restful-interaction", "search-type")
        }
        AuditKind::FhirCreate => ("http://hl7.org/fhir/restful-interaction", "create"),
        AuditKind::FhirUpdate => ("http://hl7.org/fhir/restful-interaction", "update"),
        AuditKind::SignIn => ("http://dicom.nema.org/resources/ontology/DCM", "110122"),
        AuditKind::SignOut => ("http://dicom.nema.org/resources/ontology/DCM", "110123"),
        _ => ("https://carebroker.nhs.uk/CodeSystem/audit-event", ""),
    };
    let code = if code.is_empty() {
        serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    } else {
        code.to_owned()
    };
    json!({"system": system, "code": code})
}

/// What a patient (or someone acting for them) sees of an access to their record: who looked by
/// name, role and organisation only (no identifier, no network address, no platform subject),
/// what and when, and an emergency (break-glass) access with its stated reason as the event's
/// purpose. The patient's own identity is shown as it is.
pub fn patient_view(event: &Value, patient: &str) -> Value {
    let mut view = event.clone();
    if let Some(agents) = view.get_mut("agent").and_then(Value::as_array_mut) {
        for agent in agents {
            let own = agent["who"]["reference"].as_str() == Some(format!("Patient/{patient}").as_str());
            if let Some(who) = agent.get_mut("who").and_then(Value::as_object_mut) {
                who.remove("identifier");
                if !own {
                    who.remove("reference");
                }
            }
            if let Some(agent) = agent.as_object_mut() {
                agent.remove("network");
            }
        }
    }
    let detail = view.get("outcomeDesc").and_then(Value::as_str).unwrap_or_default().to_owned();
    if let Some(object) = view.as_object_mut() {
        object.remove("outcomeDesc");
        if let Some(observer) =
            object.get_mut("source").and_then(|s| s.get_mut("observer")).and_then(Value::as_object_mut)
        {
            observer.remove("identifier");
        }
    }
    let reason = detail.split("; ").find_map(|part| part.strip_prefix("break-glass: "));
    if let Some(reason) = reason {
        view["purposeOfEvent"] = json!([{
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "ETREAT", "display": "Emergency Treatment"}],
            "text": format!("Emergency access: {reason}"),
        }]);
    }
    view
}

/// Whether the record behind an AuditEvent verifies against its hash (see
/// [`super::record_verifies`]).
pub const VERIFIED_EXTENSION: &str = "https://carebroker.nhs.uk/StructureDefinition/audit-record-verifies";

/// The FHIR AuditEvent for a stored record.
pub fn to_audit_event(record: &AuditRecord) -> Option<Value> {
    let event: AuditEvent = serde_json::from_str(&record.data).ok()?;
    let rest = matches!(
        event.kind,
        AuditKind::FhirRead
            | AuditKind::FhirVread
            | AuditKind::FhirHistory
            | AuditKind::FhirSearch
            | AuditKind::FhirCreate
            | AuditKind::FhirUpdate
            | AuditKind::AvailabilityCheck
    );
    let kind = if rest {
        json!({"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"})
    } else {
        json!({"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110114", "display": "User Authentication"})
    };
    let outcome = match event.outcome {
        AuditOutcome::Success => "0",
        AuditOutcome::Denied => "4",
        AuditOutcome::Failed => "8",
    };
    let mut agent =
        json!({"requestor": true, "who": {"identifier": {"value": event.actor.subject.clone().unwrap_or_default()}}});
    if let Some(name) = &event.actor.name {
        agent["who"]["display"] = name.clone().into();
    }
    if let Some(user) = &event.actor.fhir_user {
        agent["who"]["reference"] = user.clone().into();
    }
    if !event.actor.roles.is_empty() {
        agent["role"] = event
            .actor
            .roles
            .iter()
            .map(|r| json!({"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/NHSDigital-SDS-JobRoleCode", "code": r}]}))
            .collect();
    }
    if let Some(ip) = &event.actor.ip {
        agent["network"] = json!({"address": ip, "type": "2"});
    }
    let mut entities = Vec::new();
    if let Some(target) = &event.target {
        let reference = match (&target.id, target.version) {
            (Some(id), Some(v)) => format!("{}/{id}/_history/{v}", target.resource_type),
            (Some(id), None) => format!("{}/{id}", target.resource_type),
            (None, _) => target.resource_type.clone(),
        };
        entities.push(json!({"what": {"reference": reference}}));
    }
    if let Some(patient) = &event.patient {
        entities.push(json!({"what": {"reference": format!("Patient/{patient}")}, "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"}}));
    }
    let mut resource = json!({
        "resourceType": "AuditEvent",
        "id": record.seq.to_string(),
        "type": kind,
        "subtype": [subtype(event.kind)],
        "action": event.kind.action(),
        "recorded": instant(record.time),
        "outcome": outcome,
        "agent": [agent],
        "source": {"observer": {"display": "carebroker"}},
    });
    if let Some(org) = event.actor.org.as_deref() {
        resource["source"]["site"] = org.into();
    }
    if let Some(client) = &event.actor.client_id {
        resource["source"]["observer"]["identifier"] = json!({"value": client});
    }
    if let Some(detail) = &event.detail {
        resource["outcomeDesc"] = detail.clone().into();
    }
    if !entities.is_empty() {
        resource["entity"] = Value::Array(entities);
    }
    resource["extension"] = json!([{"url": VERIFIED_EXTENSION, "valueBoolean": super::record_verifies(record)}]);
    Some(resource)
}
