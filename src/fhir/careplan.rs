//! CarePlan interactions: read, vread, history, search, create, update (with `If-Match`).

use serde_json::{Value, json};

use super::guard::{Access, Caller, Reach, Record, within_compartment};
use super::outcome::{FhirError, Issue};
use super::resources::{careplan_patient, index_of, managing_org, new_id, validate_careplan, with_meta};
use super::search::{Query, date_param, instant_of, paging, range_matches, searchset};
use super::{FhirApi, FhirResponse};
use crate::audit::AuditKind;
use crate::domain::nhs_number::{NHS_NUMBER_SYSTEM, NhsNumber};
use crate::domain::scope::Permissions;
use crate::store::{Criterion, ResourceWrite, StoredResource, UpdateOutcome};

/// Organisations of patients already looked up in this request.
type OrgMemo = std::collections::HashMap<String, Option<String>>;

const TYPE: &str = "CarePlan";
const MAX_MATCHES: i64 = 1000;

fn parse_json(body: &[u8]) -> Result<Value, FhirError> {
    serde_json::from_slice(body).map_err(|e| FhirError::bad_request(format!("the body is not JSON: {e}")))
}

fn single(stored: &StoredResource, status: u16) -> FhirResponse {
    FhirResponse {
        status,
        body: with_meta(stored),
        version: Some(stored.version),
        last_modified: Some(stored.last_updated),
        location: None,
    }
}

impl FhirApi {
    /// The stored Patient `nhs`, if known here.
    async fn patient_resource(&self, nhs: &str) -> Result<Option<Value>, FhirError> {
        let stored = self.stores.durable.read_resource("Patient", nhs).await?;
        Ok(stored.map(|s| serde_json::from_str(&s.data).unwrap_or_default()))
    }

    /// The ODS code of the organisation managing `patient` (for `same_organisation`), read once
    /// per request for each patient (`orgs` remembers them across the plans of a search).
    async fn patient_org(&self, patient: Option<&str>, orgs: &mut OrgMemo) -> Result<Option<String>, FhirError> {
        let Some(patient) = patient else { return Ok(None) };
        if let Some(org) = orgs.get(patient) {
            return Ok(org.clone());
        }
        let org = self.patient_resource(patient).await?.and_then(|p| managing_org(&p).map(str::to_owned));
        orgs.insert(patient.to_owned(), org.clone());
        Ok(org)
    }

    /// Scope granularity, compartment and policy for one stored CarePlan.
    async fn admit_careplan(
        &self,
        caller: &Caller,
        access: &Access,
        stored: &StoredResource,
        interaction: Permissions,
        audit_patient: &mut Option<String>,
        orgs: &mut OrgMemo,
    ) -> Result<Value, FhirError> {
        let plan: Value = serde_json::from_str(&stored.data)
            .map_err(|_| FhirError::Unavailable("a stored record is unreadable".into()))?;
        let patient = careplan_patient(&plan);
        // Known before any decision, so a refused access is audited against the record's patient too.
        audit_patient.clone_from(&patient);
        within_compartment(access, patient.as_deref())?;
        if !access.admits(&plan) {
            return Err(FhirError::Hidden("the record is outside the granted granular scope".into()));
        }
        let org = self.patient_org(patient.as_deref(), orgs).await?;
        let record = Record { patient: patient.as_deref(), org: org.as_deref(), ..Record::default() };
        caller.decide(&**self.policy.load_full(), TYPE, interaction, record)?;
        Ok(plan)
    }

    /// `GET /CarePlan/{id}`.
    pub async fn read_careplan(&self, caller: &Caller, id: &str) -> Result<FhirResponse, FhirError> {
        let mut patient = None;
        let result = async {
            let access = caller.access(TYPE, Permissions::READ)?;
            let stored = self.stores.durable.read_resource(TYPE, id).await?.ok_or(FhirError::NotFound)?;
            self.admit_careplan(caller, &access, &stored, Permissions::READ, &mut patient, &mut OrgMemo::new()).await?;
            Ok(single(&stored, 200))
        }
        .await;
        self.audited(caller, AuditKind::FhirRead, (TYPE, Some(id)), patient.as_deref(), result).await
    }

    /// `GET /CarePlan/{id}/_history/{version}`.
    pub async fn vread_careplan(&self, caller: &Caller, id: &str, version: &str) -> Result<FhirResponse, FhirError> {
        let mut patient = None;
        let result = async {
            let access = caller.access(TYPE, Permissions::READ)?;
            let version: i64 = version.parse().map_err(|_| FhirError::NotFound)?;
            let stored =
                self.stores.durable.read_resource_version(TYPE, id, version).await?.ok_or(FhirError::NotFound)?;
            self.admit_careplan(caller, &access, &stored, Permissions::READ, &mut patient, &mut OrgMemo::new()).await?;
            Ok(single(&stored, 200))
        }
        .await;
        self.audited(caller, AuditKind::FhirVread, (TYPE, Some(id)), patient.as_deref(), result).await
    }

    /// `GET /CarePlan/{id}/_history`.
    pub async fn history_careplan(&self, caller: &Caller, id: &str) -> Result<FhirResponse, FhirError> {
        let mut patient = None;
        let result = async {
            let access = caller.access(TYPE, Permissions::READ)?;
            let versions = self.stores.durable.resource_history(TYPE, id).await?;
            let mut entries = Vec::new();
            let mut orgs = OrgMemo::new();
            for stored in &versions {
                self.admit_careplan(caller, &access, stored, Permissions::READ, &mut patient, &mut orgs).await?;
                let method = if stored.version == 1 { "POST" } else { "PUT" };
                entries.push(json!({
                    "fullUrl": format!("{}/{TYPE}/{id}/_history/{}", self.fhir_base, stored.version),
                    "resource": with_meta(stored),
                    "request": {"method": method, "url": if stored.version == 1 { TYPE.to_owned() } else { format!("{TYPE}/{id}") }},
                    "response": {"status": if stored.version == 1 { "201" } else { "200" }, "etag": format!("W/\"{}\"", stored.version)}
                }));
            }
            if entries.is_empty() {
                return Err(FhirError::NotFound);
            }
            Ok(FhirResponse::ok(json!({"resourceType": "Bundle", "type": "history", "total": entries.len(), "entry": entries})))
        }
        .await;
        self.audited(caller, AuditKind::FhirHistory, (TYPE, Some(id)), patient.as_deref(), result).await
    }

    /// `GET /CarePlan?…`: patient, subject, subject:identifier, status, category, date,
    /// _lastUpdated, _count.
    pub async fn search_careplans(&self, caller: &Caller, query: &Query) -> Result<FhirResponse, FhirError> {
        let mut audited_patient = None;
        let result = async {
            let access = caller.access(TYPE, Permissions::SEARCH)?;
            query.only(&[
                "patient",
                "subject",
                "subject:identifier",
                "status",
                "category",
                "date",
                "_lastUpdated",
                "_count",
                "_offset",
            ])?;
            let (count, offset) = paging(query)?;
            let mut patients: Vec<String> = Vec::new();
            for value in query.all("patient") {
                patients.push(value.strip_prefix("Patient/").unwrap_or(value).to_owned());
            }
            for value in query.all("subject") {
                patients.push(
                    value
                        .strip_prefix("Patient/")
                        .ok_or_else(|| FhirError::bad_request("`subject` must be Patient/{id}"))?
                        .to_owned(),
                );
            }
            for value in query.all("subject:identifier") {
                let nhs = value.strip_prefix(&format!("{NHS_NUMBER_SYSTEM}|")).ok_or_else(|| {
                    FhirError::bad_request(format!("`subject:identifier` must be {NHS_NUMBER_SYSTEM}|{{NHS number}}"))
                })?;
                patients.push(nhs.to_owned());
            }
            patients.dedup();
            if patients.len() > 1 {
                return Err(FhirError::bad_request("search one patient at a time"));
            }
            if let Reach::Patient(own) = &access.reach {
                // A patient-context search is always within that patient.
                if patients.first().is_some_and(|p| p != own) {
                    return Ok(FhirResponse::ok(searchset(&self.fhir_base, TYPE, query, &[], count, offset)));
                }
                patients = vec![own.clone()];
            }
            if patients.is_empty() && matches!(access.reach, Reach::User) {
                return Err(FhirError::bad_request("a user's CarePlan search must name the patient (`patient=`)"));
            }
            audited_patient = patients.first().cloned();
            let mut criteria = Vec::new();
            if let Some(p) = patients.first() {
                criteria.push(Criterion { key: "patient".into(), values: vec![p.clone()] });
            }
            for status in query.all("status") {
                criteria
                    .push(Criterion { key: "status".into(), values: status.split(',').map(str::to_owned).collect() });
            }
            for category in query.all("category") {
                criteria.push(Criterion {
                    key: "category".into(),
                    values: category.split(',').map(str::to_owned).collect(),
                });
            }
            let dates = query.all("date").into_iter().map(date_param).collect::<Result<Vec<_>, _>>()?;
            let updated = query.all("_lastUpdated").into_iter().map(date_param).collect::<Result<Vec<_>, _>>()?;
            let candidates = self.stores.durable.search_resources(TYPE, &criteria, MAX_MATCHES).await?;
            let mut matches = Vec::new();
            let mut orgs = OrgMemo::new();
            for stored in candidates {
                let plan = match self
                    .admit_careplan(caller, &access, &stored, Permissions::SEARCH, &mut None, &mut orgs)
                    .await
                {
                    Ok(plan) => plan,
                    Err(FhirError::Hidden(_) | FhirError::Denied { .. }) => continue,
                    Err(e) => return Err(e),
                };
                let start = plan["period"]["start"].as_str().and_then(instant_of);
                let end = plan["period"]["end"].as_str().and_then(instant_of);
                let in_dates = dates.iter().all(|(p, at, day)| range_matches(start, end, *p, *at, *day));
                let in_updated = updated.iter().all(|(p, at, day)| {
                    range_matches(Some(stored.last_updated), Some(stored.last_updated), *p, *at, *day)
                });
                if in_dates && in_updated {
                    matches.push(stored);
                }
            }
            Ok(FhirResponse::ok(searchset(&self.fhir_base, TYPE, query, &matches, count, offset)))
        }
        .await;
        self.audited(caller, AuditKind::FhirSearch, (TYPE, None), audited_patient.as_deref(), result).await
    }

    /// Checks a new or changed CarePlan: valid, about a known patient, within the caller's reach.
    async fn accept_careplan(
        &self,
        caller: &Caller,
        access: &Access,
        plan: &Value,
        id: Option<&str>,
        interaction: Permissions,
        previous: Option<&Value>,
    ) -> Result<(), FhirError> {
        let only_notes_changed = previous.is_some_and(|old| only_notes_changed(old, plan));
        let issues = validate_careplan(plan, id);
        if !issues.is_empty() {
            let structural = issues.iter().any(|i| i.code == "structure");
            return Err(if structural { FhirError::BadRequest(issues) } else { FhirError::Unprocessable(issues) });
        }
        let patient = careplan_patient(plan).unwrap_or_default();
        let subject = match NhsNumber::parse(&patient) {
            Ok(_) => self.patient_resource(&patient).await?,
            Err(_) => None,
        };
        let Some(subject) = subject else {
            return Err(FhirError::Unprocessable(vec![Issue {
                severity: "error",
                code: "not-found",
                diagnostics: format!("the subject Patient/{patient} is not known here"),
                expression: Some("CarePlan.subject".into()),
            }]));
        };
        if let Reach::Patient(own) = &access.reach {
            if *own != patient {
                return Err(FhirError::Denied {
                    reason: "a patient/ token may only write the patient in context's plans".into(),
                });
            }
        }
        if !access.admits(plan) {
            return Err(FhirError::Denied { reason: "the plan is outside the granted granular scope".into() });
        }
        let record =
            Record { patient: Some(&patient), org: managing_org(&subject), only_notes_changed, restricted: false };
        caller.decide(&**self.policy.load_full(), TYPE, interaction, record)?;
        Ok(())
    }

    /// `POST /CarePlan`: the server assigns the id; answers 201 with Location and ETag.
    pub async fn create_careplan(&self, caller: &Caller, body: &[u8]) -> Result<FhirResponse, FhirError> {
        let mut patient = None;
        let mut created_id = None;
        let result = async {
            let access = caller.access(TYPE, Permissions::CREATE)?;
            let mut plan = parse_json(body)?;
            if let Value::Object(map) = &mut plan {
                map.remove("id");
                map.remove("meta");
            }
            patient = careplan_patient(&plan);
            self.accept_careplan(caller, &access, &plan, None, Permissions::CREATE, None).await?;
            let id = new_id();
            let data = plan.to_string();
            let index = index_of(TYPE, &plan);
            let now = self.clock.now_millis();
            self.stores
                .durable
                .create_resource_if_absent(ResourceWrite {
                    resource_type: TYPE,
                    id: &id,
                    data: &data,
                    index: &index,
                    now,
                })
                .await?;
            let stored =
                StoredResource { resource_type: TYPE.into(), id: id.clone(), version: 1, last_updated: now, data };
            created_id = Some(id.clone());
            let mut response = single(&stored, 201);
            response.location = Some(format!("{}/{TYPE}/{id}/_history/1", self.fhir_base));
            Ok(response)
        }
        .await;
        self.audited(caller, AuditKind::FhirCreate, (TYPE, created_id.as_deref()), patient.as_deref(), result).await
    }

    /// `PUT /CarePlan/{id}` with `If-Match: W/"{version}"`.
    pub async fn update_careplan(
        &self,
        caller: &Caller,
        id: &str,
        if_match: Option<&str>,
        body: &[u8],
    ) -> Result<FhirResponse, FhirError> {
        let mut patient = None;
        let result = async {
            let access = caller.access(TYPE, Permissions::UPDATE)?;
            let expected = parse_if_match(if_match)?;
            let current = self.stores.durable.read_resource(TYPE, id).await?.ok_or(FhirError::NotFound)?;
            let previous = self
                .admit_careplan(caller, &access, &current, Permissions::UPDATE, &mut patient, &mut OrgMemo::new())
                .await?;
            let mut plan = parse_json(body)?;
            if let Value::Object(map) = &mut plan {
                map.remove("meta");
            }
            patient = careplan_patient(&plan);
            self.accept_careplan(caller, &access, &plan, Some(id), Permissions::UPDATE, Some(&previous)).await?;
            let data = plan.to_string();
            let index = index_of(TYPE, &plan);
            let write =
                ResourceWrite { resource_type: TYPE, id, data: &data, index: &index, now: self.clock.now_millis() };
            match self.stores.durable.update_resource(write, expected).await? {
                UpdateOutcome::Updated(stored) => Ok(single(&stored, 200)),
                UpdateOutcome::VersionConflict { current } => Err(FhirError::PreconditionFailed(format!(
                    "If-Match names version {expected} but the plan is at version {current}"
                ))),
                UpdateOutcome::NotFound => Err(FhirError::NotFound),
            }
        }
        .await;
        self.audited(caller, AuditKind::FhirUpdate, (TYPE, Some(id)), patient.as_deref(), result).await
    }
}

/// True when `new` differs from `old` in `note` only (a patient adding their own preferences).
fn only_notes_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Value::Object(map) = &mut v {
            for key in ["note", "meta", "id"] {
                map.remove(key);
            }
        }
        v
    };
    strip(old) == strip(new)
}

/// `W/"3"` or `"3"` → 3.
fn parse_if_match(header: Option<&str>) -> Result<i64, FhirError> {
    let text = header.ok_or(FhirError::PreconditionRequired)?.trim();
    let text = text.strip_prefix("W/").unwrap_or(text);
    text.trim_matches('"')
        .parse::<i64>()
        .map_err(|_| FhirError::PreconditionFailed(format!("If-Match `{text}` is not a version such as W/\"3\"")))
}
