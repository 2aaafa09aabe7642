//! CarePlan interactions: read, vread, history, search, create, update (with `If-Match`).

use serde_json::{Value, json};

use super::consent::{Choices, codings, refused_by};
use super::guard::{Access, Caller, Reach, Record, within_compartment};
use super::outcome::{FhirError, Issue};
use super::resources::{careplan_patient, managing_org_of, validate_careplan, with_meta};
use super::search::{Query, date_param, instant_of, paging, range_matches, searchset};
use super::{App, FhirResponse, parse_if_match, parse_json, single};
use crate::audit::AuditKind;
use crate::domain::nhs_number::{NHS_NUMBER_SYSTEM, NhsNumber};
use crate::domain::scope::Permissions;
use crate::store::{Criterion, StoredResource};

/// What is known of each patient already looked up in this request.
pub(super) type PatientMemo = std::collections::HashMap<String, PatientFacts>;

/// The facts about a patient that decisions on their records need.
#[derive(Debug, Clone, Default)]
pub(super) struct PatientFacts {
    /// A Patient record of theirs is held here.
    pub known: bool,
    /// The ODS code of the organisation managing the patient (for `same_organisation`).
    pub org: Option<String>,
    /// The patient's sharing choices in force (for `consent_refuses`).
    pub choices: Choices,
}

const TYPE: &str = "CarePlan";
const MAX_MATCHES: i64 = 1000;

impl App {
    /// The stored Patient `nhs`, if known here.
    /// Whether the Patient is on record, and if so its managing organisation.
    pub(super) async fn patient_org(&self, nhs: &str) -> Result<Option<Option<String>>, FhirError> {
        let stored = self.stores.durable.read_resource("Patient", nhs).await?;
        Ok(stored.map(|s| managing_org_of(&s.data)))
    }

    /// The managing organisation and sharing choices of `patient`, read once per request for
    /// each patient (`memo` remembers them across the plans of a search).
    pub(super) async fn patient_facts(
        &self,
        patient: Option<&str>,
        memo: &mut PatientMemo,
    ) -> Result<PatientFacts, FhirError> {
        let Some(patient) = patient else { return Ok(PatientFacts::default()) };
        if let Some(facts) = memo.get(patient) {
            return Ok(facts.clone());
        }
        let subject = self.patient_org(patient).await?;
        let facts = PatientFacts {
            known: subject.is_some(),
            org: subject.flatten(),
            choices: self.sharing_choices(patient).await?,
        };
        memo.insert(patient.to_owned(), facts.clone());
        Ok(facts)
    }

    /// Scope granularity, compartment and policy for one stored CarePlan. `only_notes_changed`
    /// describes the update being judged (false for anything else).
    #[expect(clippy::too_many_arguments, reason = "one check with its inputs and two request-wide memos")]
    async fn admit_careplan(
        &self,
        caller: &Caller,
        access: &Access,
        stored: &StoredResource,
        interaction: Permissions,
        only_notes_changed: bool,
        audit_patient: &mut Option<String>,
        orgs: &mut PatientMemo,
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
        let facts = self.patient_facts(patient.as_deref(), orgs).await?;
        let record = plan_record(caller, patient.as_deref(), &facts, &plan, only_notes_changed);
        caller.decide(&**self.policy.load_full(), TYPE, interaction, record)?;
        Ok(plan)
    }

    /// `GET /CarePlan/{id}`.
    pub async fn read_careplan(&self, caller: &Caller, id: &str) -> Result<FhirResponse, FhirError> {
        let mut patient = None;
        let result = async {
            let access = caller.access(TYPE, Permissions::READ)?;
            let stored = self.stores.durable.read_resource(TYPE, id).await?.ok_or(FhirError::NotFound)?;
            self.admit_careplan(
                caller,
                &access,
                &stored,
                Permissions::READ,
                false,
                &mut patient,
                &mut PatientMemo::new(),
            )
            .await?;
            Ok(single(&stored, 200))
        }
        .await;
        self.audited(caller, AuditKind::FhirRead, (TYPE, Some(id)), &Vec::from_iter(patient), result).await
    }

    /// `GET /CarePlan/{id}/_history/{version}`.
    pub async fn vread_careplan(&self, caller: &Caller, id: &str, version: &str) -> Result<FhirResponse, FhirError> {
        let mut patient = None;
        let result = async {
            let access = caller.access(TYPE, Permissions::READ)?;
            let version: i64 = version.parse().map_err(|_| FhirError::NotFound)?;
            let stored =
                self.stores.durable.read_resource_version(TYPE, id, version).await?.ok_or(FhirError::NotFound)?;
            self.admit_careplan(
                caller,
                &access,
                &stored,
                Permissions::READ,
                false,
                &mut patient,
                &mut PatientMemo::new(),
            )
            .await?;
            Ok(single(&stored, 200))
        }
        .await;
        self.audited(caller, AuditKind::FhirVread, (TYPE, Some(id)), &Vec::from_iter(patient), result).await
    }

    /// `GET /CarePlan/{id}/_history`: every version, each judged on its own (a version the caller
    /// may not see refuses the whole history).
    pub async fn history_careplan(&self, caller: &Caller, id: &str) -> Result<FhirResponse, FhirError> {
        let mut patients: Vec<String> = Vec::new();
        let result = async {
            let access = caller.access(TYPE, Permissions::READ)?;
            let versions = self.stores.durable.resource_history(TYPE, id).await?;
            let mut entries = Vec::new();
            let mut orgs = PatientMemo::new();
            for stored in &versions {
                let mut patient = None;
                let admitted = self
                    .admit_careplan(caller, &access, stored, Permissions::READ, false, &mut patient, &mut orgs)
                    .await;
                patients.extend(patient);
                admitted?;
                let method = if stored.version == 1 { "POST" } else { "PUT" };
                entries.push(json!({
                    "fullUrl": format!("{}/{TYPE}/{id}/_history/{}", self.fhir_base(), stored.version),
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
        self.audited(caller, AuditKind::FhirHistory, (TYPE, Some(id)), &patients, result).await
    }

    /// `GET /CarePlan?…`: patient, subject, subject:identifier, status, category, date,
    /// _lastUpdated, _count. The audit names the patient searched for and every patient whose
    /// plan the page shows.
    pub async fn search_careplans(&self, caller: &Caller, raw_query: Option<&str>) -> Result<FhirResponse, FhirError> {
        let mut audit_patients: Vec<String> = Vec::new();
        let result = async {
            let query = &Query::parse(raw_query)?;
            let access = caller.access(TYPE, Permissions::SEARCH)?;
            caller.may_search(&**self.policy.load_full(), TYPE)?;
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
            patients.sort_unstable();
            patients.dedup();
            if patients.len() > 1 {
                return Err(FhirError::bad_request("search one patient at a time"));
            }
            if let Some(named) = patients.first().filter(|p| NhsNumber::parse(p).is_ok()) {
                audit_patients.push(named.clone());
            }
            if let Reach::Patient(own) = &access.reach {
                // A patient-context search is always within that patient.
                if patients.first().is_some_and(|p| p != own) {
                    return Ok(FhirResponse::ok(searchset(self.fhir_base(), TYPE, query, &[], count, offset)));
                }
                patients = vec![own.clone()];
            }
            if patients.is_empty() && matches!(access.reach, Reach::User) {
                return Err(FhirError::bad_request("a user's CarePlan search must name the patient (`patient=`)"));
            }
            let mut criteria = Vec::new();
            if let Some(p) = patients.first() {
                criteria.push(Criterion { key: "patient".into(), values: vec![p.clone()] });
            }
            for values in query.lists("status")? {
                criteria.push(Criterion { key: "status".into(), values });
            }
            for values in query.lists("category")? {
                criteria.push(Criterion { key: "category".into(), values });
            }
            let dates = query.all("date").into_iter().map(date_param).collect::<Result<Vec<_>, _>>()?;
            let updated = query.all("_lastUpdated").into_iter().map(date_param).collect::<Result<Vec<_>, _>>()?;
            let candidates = self.stores.durable.search_resources(TYPE, &criteria, MAX_MATCHES).await?;
            let mut matches = Vec::new();
            let mut orgs = PatientMemo::new();
            for stored in candidates {
                let plan = match self
                    .admit_careplan(caller, &access, &stored, Permissions::SEARCH, false, &mut None, &mut orgs)
                    .await
                {
                    Ok(plan) => plan,
                    Err(FhirError::Hidden(_) | FhirError::PolicyDenied { .. }) => continue,
                    Err(e) => return Err(e),
                };
                let start = plan["period"]["start"].as_str().and_then(instant_of);
                let end = plan["period"]["end"].as_str().and_then(instant_of);
                let in_dates = dates.iter().all(|(p, at, day)| range_matches(start, end, *p, *at, *day));
                let in_updated = updated.iter().all(|(p, at, day)| {
                    range_matches(Some(stored.last_updated), Some(stored.last_updated), *p, *at, *day)
                });
                if in_dates && in_updated {
                    matches.push((stored, careplan_patient(&plan)));
                }
            }
            audit_patients.extend(matches.iter().skip(offset).take(count).filter_map(|(_, p)| p.clone()));
            let matches: Vec<StoredResource> = matches.into_iter().map(|(stored, _)| stored).collect();
            Ok(FhirResponse::ok(searchset(self.fhir_base(), TYPE, query, &matches, count, offset)))
        }
        .await;
        self.audited(caller, AuditKind::FhirSearch, (TYPE, None), &audit_patients, result).await
    }

    /// Checks a new or changed CarePlan: valid, within the caller's scopes and compartment,
    /// permitted by the policy, and about a known patient, in that order, so that whether an NHS
    /// number is known here is told only to a caller the policy would let write for it.
    async fn accept_careplan(
        &self,
        caller: &Caller,
        access: &Access,
        plan: &Value,
        id: Option<&str>,
        interaction: Permissions,
        only_notes_changed: bool,
    ) -> Result<(), FhirError> {
        let issues = validate_careplan(plan, id);
        if !issues.is_empty() {
            let structural = issues.iter().any(|i| i.code == "structure");
            return Err(if structural { FhirError::BadRequest(issues) } else { FhirError::Unprocessable(issues) });
        }
        let patient = careplan_patient(plan).unwrap_or_default();
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
        let facts = self.patient_facts(Some(&patient), &mut PatientMemo::new()).await?;
        let record = plan_record(caller, Some(&patient), &facts, plan, only_notes_changed);
        caller.decide(&**self.policy.load_full(), TYPE, interaction, record)?;
        if !facts.known {
            return Err(FhirError::Unprocessable(vec![Issue {
                severity: "error",
                code: "not-found",
                diagnostics: format!("the subject Patient/{patient} is not known here"),
                expression: Some("CarePlan.subject".into()),
            }]));
        }
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
            patient = careplan_patient(&plan).filter(|p| NhsNumber::parse(p).is_ok());
            self.accept_careplan(caller, &access, &plan, None, Permissions::CREATE, false).await?;
            let (id, response) = self.store_new(TYPE, &plan).await?;
            created_id = Some(id);
            Ok(response)
        }
        .await;
        self.audited(caller, AuditKind::FhirCreate, (TYPE, created_id.as_deref()), &Vec::from_iter(patient), result)
            .await
    }

    /// `PUT /CarePlan/{id}` with `If-Match: W/"{version}"`. A plan's subject is fixed when it is
    /// created: moving a plan to another patient is a clinical act of its own, not an update.
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
            let mut orgs = PatientMemo::new();
            // Refuse early a caller no update of this plan could be permitted to (a notes-only
            // change is judged on its own, so ask both ways); the body is judged below.
            let previous = match self
                .admit_careplan(caller, &access, &current, Permissions::UPDATE, false, &mut patient, &mut orgs)
                .await
            {
                Err(FhirError::PolicyDenied { .. }) => {
                    self.admit_careplan(caller, &access, &current, Permissions::UPDATE, true, &mut patient, &mut orgs)
                        .await?
                }
                other => other?,
            };
            let mut plan = parse_json(body)?;
            if let Value::Object(map) = &mut plan {
                map.remove("meta");
            }
            let issues = validate_careplan(&plan, Some(id));
            if issues.is_empty() && careplan_patient(&plan) != patient {
                return Err(FhirError::Unprocessable(vec![Issue {
                    severity: "error",
                    code: "business-rule",
                    diagnostics: "the subject of a care plan cannot be changed; a plan for another patient is a new \
                                  plan"
                        .into(),
                    expression: Some("CarePlan.subject".into()),
                }]));
            }
            let notes_only = only_notes_added(&previous, &plan);
            self.accept_careplan(caller, &access, &plan, Some(id), Permissions::UPDATE, notes_only).await?;
            self.store_version(TYPE, id, &plan, expected).await
        }
        .await;
        self.audited(caller, AuditKind::FhirUpdate, (TYPE, Some(id)), &Vec::from_iter(patient), result).await
    }
}

/// The policy's facts about `plan` of `patient` for `caller`: the patient's organisation, and
/// whether their sharing choices keep the plan from the caller or let the caller add notes.
fn plan_record<'a>(
    caller: &Caller,
    patient: Option<&'a str>,
    facts: &'a PatientFacts,
    plan: &Value,
    only_notes_changed: bool,
) -> Record<'a> {
    Record {
        patient,
        org: facts.org.as_deref(),
        only_notes_changed,
        consent_refuses: refused_by(&facts.choices.deny, caller.claims.org.as_deref(), &codings(&plan["category"])),
        patient_allows_notes: facts.choices.allow_notes_by(caller.claims.fhir_user.as_deref()),
        ..Record::default()
    }
}

/// True when `new` only adds notes to `old`: every other element is unchanged and the old notes
/// are still there, in order, unaltered (a patient adds their preferences; nobody's earlier note
/// is changed or removed this way).
fn only_notes_added(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Value::Object(map) = &mut v {
            for key in ["note", "meta", "id"] {
                map.remove(key);
            }
        }
        v
    };
    let notes = |v: &Value| v["note"].as_array().cloned().unwrap_or_default();
    let (before, after) = (notes(old), notes(new));
    strip(old) == strip(new) && after.len() >= before.len() && after[..before.len()] == before[..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_may_only_be_added() {
        let old = json!({"resourceType": "CarePlan", "id": "a", "status": "active", "note": [{"text": "clinician"}]});
        let mut added = old.clone();
        added["note"] = json!([{"text": "clinician"}, {"text": "I prefer tea"}]);
        assert!(only_notes_added(&old, &added));
        let mut first_note = old.clone();
        first_note.as_object_mut().unwrap().remove("note");
        assert!(only_notes_added(&first_note, &old));
        let mut removed = old.clone();
        removed["note"] = json!([]);
        assert!(!only_notes_added(&old, &removed), "removing someone's note");
        let mut edited = old.clone();
        edited["note"] = json!([{"text": "changed"}, {"text": "mine"}]);
        assert!(!only_notes_added(&old, &edited), "changing someone's note");
        let mut status = added.clone();
        status["status"] = json!("revoked");
        assert!(!only_notes_added(&old, &status), "changing the plan itself");
    }
}
