//! Patient (read and search, verified with PDS when a patient is opened), Practitioner and
//! RelatedPerson (read), AuditEvent (search).

use serde_json::{Value, json};

use super::guard::{Caller, Reach, Record, within_compartment};
use super::outcome::FhirError;
use super::resources::{managing_org, normalise_phone, with_meta};
use super::search::{Query, date_param, paging, searchset};
use super::{App, FhirResponse};
use crate::audit::fhir::to_audit_event;
use crate::audit::filed_as_hashed;
use crate::audit::{AuditKind, AuditOutcome};
use crate::domain::nhs_number::{NHS_NUMBER_SYSTEM, NhsNumber};
use crate::domain::scope::{Permissions, Scope};
use crate::pds::PdsVerdict;
use crate::store::{Criterion, StoredResource};

/// Elements PDS withholds for a restricted (`R`) patient.
const RESTRICTED_ELEMENTS: [&str; 3] = ["address", "telecom", "generalPractitioner"];

/// The patient a stored `RelatedPerson` belongs to (`RelatedPerson.patient`).
fn related_patient(stored: &StoredResource) -> Result<Option<String>, FhirError> {
    let person: Value = serde_json::from_str(&stored.data)
        .map_err(|_| FhirError::Unavailable("a stored record is unreadable".into()))?;
    Ok(person["patient"]["reference"].as_str().and_then(|r| r.strip_prefix("Patient/")).map(str::to_owned))
}

/// Marks a Patient restricted and removes what a restricted record must not show.
fn restrict(patient: &mut Value) {
    if let Value::Object(map) = patient {
        for element in RESTRICTED_ELEMENTS {
            map.remove(element);
        }
        map.entry("meta").or_insert_with(|| json!({}))["security"] = json!([{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R", "display": "restricted"}]);
    }
}

impl App {
    /// Verifies `nhs` with PDS (when configured). Returns the current NHS number, whether the
    /// record is restricted, and PDS's resource.
    async fn verify_with_pds(&self, nhs: &NhsNumber) -> Result<(String, bool, Option<Value>), FhirError> {
        let Some(pds) = &self.pds else { return Ok((nhs.to_string(), false, None)) };
        match pds.verify(nhs).await {
            PdsVerdict::Verified { id, restricted, resource } => Ok((id, restricted, Some(resource))),
            PdsVerdict::NotFound => Err(FhirError::UnknownPatient(format!("NHS number {nhs} is not known to PDS"))),
            PdsVerdict::Invalidated => {
                Err(FhirError::Invalidated(format!("NHS number {nhs} has been invalidated in PDS")))
            }
            PdsVerdict::Unavailable(why) if pds.fails_open() => {
                tracing::warn!(nhs = %nhs, reason = %why, "PDS unavailable; serving local data (fail_open)");
                Ok((nhs.to_string(), false, None))
            }
            PdsVerdict::Unavailable(why) => {
                tracing::warn!(nhs = %nhs, reason = %why, "PDS unavailable; refusing (fail_closed)");
                Err(FhirError::Unavailable("the patient could not be verified with PDS; try again shortly".into()))
            }
        }
    }

    /// `GET /Patient/{nhs_number}`.
    pub async fn read_patient(&self, caller: &Caller, id: &str) -> Result<FhirResponse, FhirError> {
        // the NHS number asked for, and (when PDS says it was superseded) the one shown
        let mut patients: Vec<String> = NhsNumber::parse(id).map(|n| vec![n.to_string()]).unwrap_or_default();
        let result = async {
            let access = caller.access("Patient", Permissions::READ)?;
            let nhs = NhsNumber::parse(id).map_err(|_| FhirError::NotFound)?;
            within_compartment(&access, Some(nhs.as_str()))?;
            let (current, restricted, pds_resource) = self.verify_with_pds(&nhs).await?;
            patients.push(current.clone());
            let local = self.stores.durable.read_resource("Patient", &current).await?;
            let mut resource = match (&local, pds_resource) {
                (Some(stored), _) => with_meta(stored),
                (None, Some(pds)) => pds,
                (None, None) => return Err(FhirError::NotFound),
            };
            let record =
                Record { patient: Some(nhs.as_str()), org: managing_org(&resource), restricted, ..Record::default() };
            caller.decide(&**self.policy.load_full(), "Patient", Permissions::READ, record)?;
            resource["id"] = current.clone().into();
            if restricted {
                restrict(&mut resource);
            }
            Ok(FhirResponse {
                status: 200,
                body: resource,
                version: local.as_ref().map(|s| s.version),
                last_modified: local.as_ref().map(|s| s.last_updated),
                location: None,
            })
        }
        .await;
        self.audited(caller, AuditKind::FhirRead, ("Patient", Some(id)), &patients, result).await
    }

    /// `GET /Patient?identifier=…|family=…|birthdate=…|phone=…`.
    pub async fn search_patients(&self, caller: &Caller, raw_query: Option<&str>) -> Result<FhirResponse, FhirError> {
        // the NHS numbers asked for, and every patient the page shows
        let mut patients: Vec<String> = Vec::new();
        let result = async {
            let query = &Query::parse(raw_query)?;
            let access = caller.access("Patient", Permissions::SEARCH)?;
            caller.may_search(&**self.policy.load_full(), "Patient")?;
            query.only(&["_id", "identifier", "family", "birthdate", "phone", "_count", "_offset"])?;
            let (count, offset) = paging(query)?;
            let mut criteria = Vec::new();
            for id in query.all("_id") {
                patients.extend(NhsNumber::parse(id).ok().map(|n| n.to_string()));
                criteria
                    .push(Criterion { key: "identifier".into(), values: vec![format!("{NHS_NUMBER_SYSTEM}|{id}")] });
            }
            for value in query.all("identifier") {
                let token = if value.contains('|') { value.to_owned() } else { format!("{NHS_NUMBER_SYSTEM}|{value}") };
                let asked = token.strip_prefix(&format!("{NHS_NUMBER_SYSTEM}|")).and_then(|v| NhsNumber::parse(v).ok());
                patients.extend(asked.map(|n| n.to_string()));
                criteria.push(Criterion { key: "identifier".into(), values: vec![token] });
            }
            for value in query.all("family") {
                criteria.push(Criterion { key: "family".into(), values: vec![value.to_lowercase()] });
            }
            for value in query.all("birthdate") {
                criteria.push(Criterion { key: "birthdate".into(), values: vec![value.to_owned()] });
            }
            for value in query.all("phone") {
                criteria.push(Criterion { key: "phone".into(), values: vec![normalise_phone(value)] });
            }
            if let Reach::Patient(own) = &access.reach {
                criteria
                    .push(Criterion { key: "identifier".into(), values: vec![format!("{NHS_NUMBER_SYSTEM}|{own}")] });
            } else if criteria.is_empty() {
                return Err(FhirError::bad_request(
                    "a Patient search needs at least one of identifier, family, birthdate, phone",
                ));
            }
            let candidates = self.stores.durable.search_resources("Patient", &criteria, 1000).await?;
            let policy = self.policy.load_full();
            let matches: Vec<StoredResource> = candidates
                .into_iter()
                .filter(|stored| {
                    let resource: Value = serde_json::from_str(&stored.data).unwrap_or_default();
                    let record =
                        Record { patient: Some(&stored.id), org: managing_org(&resource), ..Record::default() };
                    caller.decide(&**policy, "Patient", Permissions::SEARCH, record).is_ok()
                })
                .collect();
            patients.extend(matches.iter().skip(offset).take(count).map(|m| m.id.clone()));
            Ok(FhirResponse::ok(searchset(self.fhir_base(), "Patient", query, &matches, count, offset)))
        }
        .await;
        self.audited(caller, AuditKind::FhirSearch, ("Patient", None), &patients, result).await
    }

    /// `GET /Practitioner/{id}` and `GET /RelatedPerson/{id}`: the caller's own `fhirUser` (with
    /// `openid`/`fhirUser`), or with a scope for the type. A RelatedPerson is part of its
    /// patient's record: it is in that patient's compartment, judged by the policy against that
    /// patient, and audited against them.
    pub async fn read_person(&self, caller: &Caller, resource_type: &str, id: &str) -> Result<FhirResponse, FhirError> {
        let mut patients: Vec<String> = Vec::new();
        let result = async {
            let reference = format!("{resource_type}/{id}");
            let own = caller.claims.fhir_user.as_deref() == Some(reference.as_str())
                && (caller.scopes.contains(&Scope::FhirUser) || caller.scopes.contains(&Scope::OpenId));
            let access = if own { None } else { Some(caller.access(resource_type, Permissions::READ)?) };
            let stored = self.stores.durable.read_resource(resource_type, id).await?.ok_or(FhirError::NotFound)?;
            let patient = if resource_type == "RelatedPerson" { related_patient(&stored)? } else { None };
            patients.extend(patient.clone());
            if let Some(access) = access {
                if resource_type == "RelatedPerson" {
                    within_compartment(&access, patient.as_deref())?;
                }
                let org = match &patient {
                    Some(p) => self.patient_org(p).await?.flatten(),
                    None => None,
                };
                let record = Record { patient: patient.as_deref(), org: org.as_deref(), ..Record::default() };
                caller.decide(&**self.policy.load_full(), resource_type, Permissions::READ, record)?;
            }
            Ok(FhirResponse {
                status: 200,
                body: with_meta(&stored),
                version: Some(stored.version),
                last_modified: Some(stored.last_updated),
                location: None,
            })
        }
        .await;
        self.audited(caller, AuditKind::FhirRead, (resource_type, Some(id)), &patients, result).await
    }

    /// `GET /AuditEvent?patient=&agent=&date=` for auditors.
    pub async fn search_audit_events(
        &self,
        caller: &Caller,
        raw_query: Option<&str>,
    ) -> Result<FhirResponse, FhirError> {
        // who was looked at is itself about each patient: the page's patients are audited too
        let mut patients: Vec<String> = Vec::new();
        let result = async {
            let query = &Query::parse(raw_query)?;
            let access = caller.access("AuditEvent", Permissions::SEARCH)?;
            query.only(&["patient", "agent", "date", "_count", "_offset"])?;
            let (count, offset) = paging(query)?;
            let mut patient = query.one("patient")?.map(|p| p.strip_prefix("Patient/").unwrap_or(p).to_owned());
            if let Reach::Patient(own) = &access.reach {
                if patient.as_deref().is_some_and(|p| p != own) {
                    return Ok(FhirResponse::ok(json!({"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []})));
                }
                patient = Some(own.clone());
            }
            let agent = query.one("agent")?;
            let (mut since, mut until) = (None, None);
            for value in query.all("date") {
                let (prefix, at, day) = date_param(value)?;
                let end = if day { at + 86_400_000 } else { at + 1 };
                match prefix {
                    super::search::Prefix::Ge => since = Some(at),
                    super::search::Prefix::Gt => since = Some(end),
                    super::search::Prefix::Le => until = Some(end),
                    super::search::Prefix::Lt => until = Some(at),
                    super::search::Prefix::Eq => {
                        since = Some(at);
                        until = Some(end);
                    }
                }
            }
            caller.decide(&**self.policy.load_full(), "AuditEvent", Permissions::SEARCH, Record { patient: patient.as_deref(), ..Record::default() })?;
            let records = self.filed_audit_records(patient.as_deref(), agent, since, until, 1000).await?;
            patients.extend(patient.clone());
            let shown: Vec<(Option<String>, Value)> =
                records.iter().filter_map(|r| to_audit_event(r).map(|e| (r.patient.clone(), e))).collect();
            for (patient, event) in shown.iter().skip(offset).take(count) {
                patients.extend(patient.clone());
                // a patient who acted (read their own record, or tried another's) is shown too
                let actor = event["agent"][0]["who"]["reference"].as_str().and_then(|r| r.strip_prefix("Patient/"));
                patients.extend(actor.map(str::to_owned));
            }
            let total = shown.len();
            let mut page: Vec<Value> = shown.into_iter().skip(offset).take(count).map(|(_, e)| e).collect();
            if let Reach::Patient(own) = &access.reach {
                page = self.as_patient_sees_them(page, own).await?;
            }
            let entries: Vec<Value> = page
                .iter()
                .map(|e| json!({"fullUrl": format!("{}/AuditEvent/{}", self.fhir_base(), e["id"].as_str().unwrap_or_default()), "resource": e, "search": {"mode": "match"}}))
                .collect();
            Ok(FhirResponse::ok(json!({"resourceType": "Bundle", "type": "searchset", "total": total, "entry": entries})))
        }
        .await;
        self.audited(caller, AuditKind::FhirSearch, ("AuditEvent", None), &patients, result).await
    }

    /// Gives each agent named only by reference (`Practitioner/…`, `RelatedPerson/…`) the name on
    /// that resource, so that a patient's view can say who looked without saying their id.
    async fn name_the_agents(&self, events: &mut [Value]) -> Result<(), FhirError> {
        let mut names: std::collections::HashMap<String, Option<String>> = std::collections::HashMap::new();
        for event in events.iter_mut() {
            let who = &mut event["agent"][0]["who"];
            if who.get("display").is_some() {
                continue;
            }
            let Some(reference) = who["reference"].as_str().map(str::to_owned) else { continue };
            if !names.contains_key(&reference) {
                let name = match reference.split_once('/') {
                    Some((kind @ ("Practitioner" | "RelatedPerson"), id)) => self
                        .stores
                        .durable
                        .read_resource(kind, id)
                        .await?
                        .and_then(|stored| serde_json::from_str::<Value>(&stored.data).ok())
                        .map(|person| super::resources::display_name(&person)),
                    _ => None,
                };
                names.insert(reference.clone(), name);
            }
            if let Some(Some(name)) = names.get(&reference) {
                who["display"] = name.clone().into();
            }
        }
        Ok(())
    }

    /// The access history of `patient`'s own record, newest first, as the patient sees it (see
    /// [`crate::audit::fhir::patient_view`]), at most `limit` entries, for `reader` (the patient,
    /// signed in). Reading it is itself a disclosure about the patient, audited as one before it is
    /// answered. Each entry comes with its record's time (Unix milliseconds).
    pub async fn patient_access_history(
        &self,
        reader: &crate::domain::identity::Identity,
        patient: &str,
        limit: i64,
    ) -> Result<Vec<(i64, Value)>, FhirError> {
        let result = async {
            let records = self.filed_audit_records(Some(patient), None, None, None, limit).await?;
            let (times, events): (Vec<i64>, Vec<Value>) =
                records.iter().filter_map(|r| to_audit_event(r).map(|e| (r.time, e))).unzip();
            let events = self.as_patient_sees_them(events, patient).await?;
            Ok(times.into_iter().zip(events).collect())
        }
        .await;
        let actor = crate::audit::Actor {
            subject: Some(reader.platform_subject()),
            name: reader.name.clone(),
            fhir_user: reader.fhir_user.clone(),
            ..Default::default()
        };
        let outcome = if result.is_ok() { AuditOutcome::Success } else { AuditOutcome::Failed };
        let event = crate::audit::AuditEvent::new(AuditKind::FhirSearch, outcome, actor)
            .target("AuditEvent", None, None)
            .patient(Some(patient))
            .detail("access history page");
        self.audit.record(&event).await?;
        result
    }

    /// Audit records by the indexed columns, newest first, keeping only those whose columns agree
    /// with their hashed content (a re-filed record is left out, and logged).
    async fn filed_audit_records(
        &self,
        patient: Option<&str>,
        agent: Option<&str>,
        since: Option<i64>,
        until: Option<i64>,
        limit: i64,
    ) -> Result<Vec<crate::store::AuditRecord>, FhirError> {
        let records = self.stores.durable.search_audit(patient, agent, since, until, limit).await?;
        Ok(records
            .into_iter()
            .filter(|r| match filed_as_hashed(r) {
                Ok(()) => true,
                Err(problem) => {
                    tracing::error!(seq = r.seq, %problem, "audit record left out of a search: run `carebroker audit verify`");
                    false
                }
            })
            .collect())
    }

    /// `events` as the patient `own` may see them: who looked named, identifiers removed.
    async fn as_patient_sees_them(&self, mut events: Vec<Value>, own: &str) -> Result<Vec<Value>, FhirError> {
        self.name_the_agents(&mut events).await?;
        Ok(events.iter().map(|e| crate::audit::fhir::patient_view(e, own)).collect())
    }
}
