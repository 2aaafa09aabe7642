//! The thin FHIR R4 care-plan API at `{public_url}/fhir`: CarePlan (read, vread, history, search,
//! create, update with versioning), Patient (read and search, verified with PDS), Practitioner
//! and RelatedPerson (read, so every `fhirUser` resolves), AuditEvent (search, for auditors), the
//! availability check and the CapabilityStatement. Every interaction passes the guard and is
//! audited, denies included.

pub mod availability;
pub mod capability;
pub mod careplan;
pub mod consent;
pub mod guard;
pub mod outcome;
pub mod patient;
pub mod refusal;
pub mod resources;
pub mod search;
pub mod seed;

use serde_json::Value;

use crate::app::App;
use crate::audit::{AuditEvent, AuditKind, AuditOutcome};
use guard::Caller;
use outcome::FhirError;

/// A successful FHIR answer.
#[derive(Debug, Clone, PartialEq)]
pub struct FhirResponse {
    pub status: u16,
    pub body: Value,
    /// `ETag: W/"{version}"`.
    pub version: Option<i64>,
    /// Unix milliseconds, for `Last-Modified`.
    pub last_modified: Option<i64>,
    pub location: Option<String>,
}

impl FhirResponse {
    pub fn ok(body: Value) -> Self {
        Self { status: 200, body, version: None, last_modified: None, location: None }
    }
}

impl App {
    /// Stores `resource` as a new `resource_type` with a server-assigned id: its id and the 201
    /// answer (Location and ETag of version 1).
    async fn store_new(&self, resource_type: &str, resource: &Value) -> Result<(String, FhirResponse), FhirError> {
        let (id, data, now) = (resources::new_id(), resource.to_string(), self.clock.now_millis());
        let index = resources::index_of(resource_type, resource);
        let write = crate::store::ResourceWrite { resource_type, id: &id, data: &data, index: &index, now };
        self.stores.durable.create_resource_if_absent(write).await?;
        let stored = crate::store::StoredResource {
            resource_type: resource_type.into(),
            id: id.clone(),
            version: 1,
            last_updated: now,
            data,
        };
        let mut response = single(&stored, 201);
        response.location = Some(format!("{}/{resource_type}/{id}/_history/1", self.fhir_base()));
        Ok((id, response))
    }

    /// Stores `resource` as the next version of `resource_type/id` if `expected` is the current
    /// one (the compare-and-set of `If-Match`): the 200 answer, 412 on a conflict, 404 if gone.
    async fn store_version(
        &self,
        resource_type: &str,
        id: &str,
        resource: &Value,
        expected: i64,
    ) -> Result<FhirResponse, FhirError> {
        let data = resource.to_string();
        let index = resources::index_of(resource_type, resource);
        let now = self.clock.now_millis();
        let write = crate::store::ResourceWrite { resource_type, id, data: &data, index: &index, now };
        match self.stores.durable.update_resource(write, expected).await? {
            crate::store::UpdateOutcome::Updated(stored) => Ok(single(&stored, 200)),
            crate::store::UpdateOutcome::VersionConflict { current } => Err(FhirError::PreconditionFailed(format!(
                "If-Match names version {expected} but the {resource_type} is at version {current}"
            ))),
            crate::store::UpdateOutcome::NotFound => Err(FhirError::NotFound),
        }
    }
}

/// A request body as JSON, or 400.
fn parse_json(body: &[u8]) -> Result<Value, FhirError> {
    serde_json::from_slice(body).map_err(|e| FhirError::bad_request(format!("the body is not JSON: {e}")))
}

/// One stored resource as the answer, with its version and time.
fn single(stored: &crate::store::StoredResource, status: u16) -> FhirResponse {
    FhirResponse {
        status,
        body: resources::with_meta(stored),
        version: Some(stored.version),
        last_modified: Some(stored.last_updated),
        location: None,
    }
}

/// `W/"3"` or `"3"` → 3.
fn parse_if_match(header: Option<&str>) -> Result<i64, FhirError> {
    let text = header.ok_or(FhirError::PreconditionRequired)?.trim();
    let text = text.strip_prefix("W/").unwrap_or(text);
    text.trim_matches('"')
        .parse::<i64>()
        .map_err(|_| FhirError::PreconditionFailed(format!("If-Match `{text}` is not a version such as W/\"3\"")))
}

impl App {
    /// Records the outcome of an interaction and passes the result on: one audit record for each
    /// patient the interaction concerns or disclosed (a search that shows five patients leaves five
    /// records, each filed against its patient), or one record with no patient. A success that
    /// cannot be audited is turned into an error: nothing is disclosed unaudited.
    pub(crate) async fn audited(
        &self,
        caller: &Caller,
        kind: AuditKind,
        target: (&str, Option<&str>),
        patients: &[String],
        result: Result<FhirResponse, FhirError>,
    ) -> Result<FhirResponse, FhirError> {
        let outcome = match &result {
            Ok(_) => AuditOutcome::Success,
            Err(e) if e.is_refusal() => AuditOutcome::Denied,
            Err(_) => AuditOutcome::Failed,
        };
        let version = result.as_ref().ok().and_then(|r| r.version);
        let mut event = AuditEvent::new(kind, outcome, caller.actor()).target(target.0, target.1, version);
        let mut notes: Vec<String> = Vec::new();
        if let Err(e) = &result {
            notes.push(e.audit_detail());
        }
        let trail = caller.trail();
        if let Some(rule) = &trail.rule {
            notes.push(format!("rule {rule}"));
        }
        if let Some(reason) = &caller.break_glass {
            notes.push(format!("break-glass: {reason}"));
        }
        if trail.obligations.audit_high() {
            notes.push("importance: high".into());
        }
        if trail.obligations.alert_privacy_officer() && result.is_ok() {
            notes.push("privacy officer alerted".into());
            tracing::warn!(
                target: "privacy_officer",
                subject = %caller.claims.sub,
                patients = ?patients,
                reason = ?caller.break_glass,
                rule = ?trail.rule,
                "access needing the privacy officer's review"
            );
        }
        if !notes.is_empty() {
            event = event.detail(notes.join("; "));
        }
        let mut events = Vec::with_capacity(patients.len().max(1));
        for patient in patients {
            if !events.iter().any(|e: &AuditEvent| e.patient.as_deref() == Some(patient)) {
                events.push(event.clone().patient(Some(patient)));
            }
        }
        if events.is_empty() {
            events.push(event);
        }
        self.audit.record_all(&events).await?;
        result
    }
}
