//! The patient's sharing choices: FHIR R4 `Consent` with scope `patient-privacy`. A patient (or
//! whoever the policy lets) records "do not share my plan with organisation X" or "do not share
//! this part of my plan (a category) except with my GP", and withdraws a choice by setting its
//! status to `inactive`. Choices in force become one fact for the access policy,
//! `consent_refuses`, computed per record from the caller's organisation and the plan's
//! categories; what follows from it (a refusal, or break-glass with its obligations) is policy.
//!
//! carebroker takes exactly the part of Consent it can enforce and refuses the rest with a 422
//! that names it, so a patient is never told a choice is in force that is not:
//!
//! ```json
//! {"resourceType": "Consent", "status": "active",
//!  "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
//!  "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
//!  "patient": {"reference": "Patient/9434765919"},
//!  "provision": {"type": "permit", "provision": [
//!    {"type": "deny", "actor": [{"reference": {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "B86011"}}}]},
//!    {"type": "deny", "code": [{"coding": [{"system": "…", "code": "psychosocial"}]}],
//!     "provision": [{"type": "permit", "actor": [{"reference": {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "A81001"}}}]}]}]}}
//! ```
//!
//! Each nested `deny` names organisations (`actor`), parts of the plan (`code`, matched against
//! `CarePlan.category`), or both, and may carry `permit` exceptions naming organisations. A deny
//! that names neither would hide the plan from every professional, which is an objection to the
//! shared record itself (the national data opt-out), not a sharing choice: it is refused.

use serde_json::{Value, json};

use super::careplan::{PatientFacts, PatientMemo};
use super::guard::{Access, Caller, Reach, Record, within_compartment};
use super::outcome::{FhirError, Issue};
use super::search::{Query, paging, searchset};
use super::{App, FhirResponse, parse_if_match, parse_json, single};
use crate::audit::AuditKind;
use crate::domain::nhs_number::NhsNumber;
use crate::domain::scope::Permissions;
use crate::store::Criterion;

pub const TYPE: &str = "Consent";
pub const SCOPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
pub const ODS_SYSTEM: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
/// The most choices (nested provisions) one Consent may carry, and organisations or codes in one.
const MAX_PROVISIONS: usize = 20;
const MAX_LIST: usize = 50;
/// The most Consents read for one patient.
const MAX_STORED: i64 = 200;

const ELEMENTS: &[&str] = &[
    "resourceType",
    "id",
    "meta",
    "text",
    "identifier",
    "status",
    "scope",
    "category",
    "patient",
    "dateTime",
    "performer",
    "organization",
    "sourceAttachment",
    "sourceReference",
    "policy",
    "policyRule",
    "verification",
    "provision",
];

/// One choice: who it excludes (no organisations: everyone) from what (no codes: the whole
/// plan), except these organisations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Choice {
    pub organisations: Vec<String>,
    pub codes: Vec<(String, String)>,
    pub except: Vec<String>,
}

impl Choice {
    /// Whether this choice keeps a record with `categories` from a caller of `org`.
    pub fn refuses(&self, org: Option<&str>, categories: &[(String, String)]) -> bool {
        let named = |list: &[String]| org.is_some_and(|o| list.iter().any(|x| x.eq_ignore_ascii_case(o)));
        (self.organisations.is_empty() || named(&self.organisations))
            && (self.codes.is_empty() || categories.iter().any(|c| self.codes.contains(c)))
            && !named(&self.except)
    }
}

/// A patient's choices in force: what they keep from whom, and which of their proxies (by
/// RelatedPerson id) may add notes to their plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Choices {
    pub deny: Vec<Choice>,
    pub notes_by: Vec<String>,
}

impl Choices {
    /// Whether the caller whose `fhirUser` this is may add notes (a proxy the patient named).
    pub fn allow_notes_by(&self, fhir_user: Option<&str>) -> bool {
        let id = fhir_user.and_then(|u| u.strip_prefix("RelatedPerson/"));
        id.is_some_and(|id| self.notes_by.iter().any(|n| n == id))
    }
}

/// The consentaction code of "add notes to the plan" (correct: update).
const NOTES_ACTION: &str = "correct";

/// Whether any of `choices` keeps a record with `categories` from a caller of `org`.
pub fn refused_by(choices: &[Choice], org: Option<&str>, categories: &[(String, String)]) -> bool {
    choices.iter().any(|c| c.refuses(org, categories))
}

/// `(system, code)` of every coding in a list of CodeableConcepts.
pub fn codings(concepts: &Value) -> Vec<(String, String)> {
    concepts
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["coding"].as_array().into_iter().flatten())
        .filter_map(|c| Some((c["system"].as_str()?.to_owned(), c["code"].as_str()?.to_owned())))
        .collect()
}

/// The patient a Consent is about (`patient.reference` = `Patient/{nhs}`).
pub fn consent_patient(consent: &Value) -> Option<String> {
    consent["patient"]["reference"].as_str()?.strip_prefix("Patient/").map(str::to_owned)
}

fn issue(code: &'static str, expression: impl Into<String>, diagnostics: impl Into<String>) -> Issue {
    Issue { severity: "error", code, diagnostics: diagnostics.into(), expression: Some(expression.into()) }
}

/// The ODS codes an `actor` list names, or the issue with it.
fn named_organisations(actors: &Value, at: &str, issues: &mut Vec<Issue>) -> Vec<String> {
    let mut out = Vec::new();
    let list = actors.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.len() > MAX_LIST {
        issues.push(issue("too-costly", at, format!("at most {MAX_LIST} organisations in one choice")));
        return out;
    }
    for (i, actor) in list.iter().enumerate() {
        let identifier = &actor["reference"]["identifier"];
        match (identifier["system"].as_str(), identifier["value"].as_str()) {
            (Some(ODS_SYSTEM), Some(code)) if is_ods_code(code) => out.push(code.to_ascii_uppercase()),
            _ => issues.push(issue(
                "not-supported",
                format!("{at}[{i}].reference"),
                format!("an actor must name an organisation by its ODS code (identifier system {ODS_SYSTEM})"),
            )),
        }
    }
    out
}

fn is_ods_code(code: &str) -> bool {
    (3..=10).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Checks a Consent and reads its choices; the issues name everything carebroker cannot enforce.
pub fn read_choices(consent: &Value) -> Result<Choices, Vec<Issue>> {
    let mut issues = Vec::new();
    let Value::Object(fields) = consent else {
        return Err(vec![issue("structure", TYPE, "the body must be a JSON object")]);
    };
    if consent["resourceType"] != TYPE {
        issues.push(issue("invalid", "Consent.resourceType", "resourceType must be Consent"));
    }
    for name in fields.keys().filter(|n| !ELEMENTS.contains(&n.as_str())) {
        issues.push(issue("structure", format!("Consent.{name}"), format!("`{name}` is not a Consent element")));
    }
    match consent["status"].as_str() {
        Some("active" | "inactive") => {}
        Some(other) => issues.push(issue(
            "code-invalid",
            "Consent.status",
            format!("`{other}`: a sharing choice is `active`, or `inactive` once withdrawn"),
        )),
        None => issues.push(issue("required", "Consent.status", "status is required")),
    }
    if !codings(&Value::Array(vec![consent["scope"].clone()]))
        .contains(&(SCOPE_SYSTEM.into(), "patient-privacy".into()))
    {
        issues.push(issue("code-invalid", "Consent.scope", format!("scope must be {SCOPE_SYSTEM}|patient-privacy")));
    }
    if codings(&consent["category"]).is_empty() {
        issues.push(issue("required", "Consent.category", "at least one coded category is required"));
    }
    if consent_patient(consent).is_none_or(|p| NhsNumber::parse(&p).is_err()) {
        issues.push(issue("required", "Consent.patient", "patient must be Patient/{NHS number}"));
    }
    let provision = &consent["provision"];
    if !matches!(provision["type"].as_str(), None | Some("permit")) {
        issues.push(issue("not-supported", "Consent.provision.type", "the base rule must be `permit` (share)"));
    }
    for key in provision.as_object().into_iter().flat_map(|m| m.keys()) {
        if !["type", "provision"].contains(&key.as_str()) {
            issues.push(issue(
                "not-supported",
                format!("Consent.provision.{key}"),
                "the base rule carries only its nested choices",
            ));
        }
    }
    let nested = provision["provision"].as_array().map(Vec::as_slice).unwrap_or_default();
    if nested.is_empty() {
        issues.push(issue("required", "Consent.provision.provision", "name at least one choice (a `deny` provision)"));
    }
    if nested.len() > MAX_PROVISIONS {
        issues.push(issue("too-costly", "Consent.provision.provision", format!("at most {MAX_PROVISIONS} choices")));
    }
    let mut choices = Choices::default();
    for (i, deny) in nested.iter().take(MAX_PROVISIONS).enumerate() {
        let at = format!("Consent.provision.provision[{i}]");
        if deny["type"] == "permit" {
            choices.notes_by.extend(notes_permission(deny, &at, &mut issues));
            continue;
        }
        if deny["type"] != "deny" {
            issues.push(issue("not-supported", format!("{at}.type"), "each choice is a `deny` provision"));
        }
        for key in deny.as_object().into_iter().flat_map(|m| m.keys()) {
            if !["type", "actor", "code", "provision"].contains(&key.as_str()) {
                issues.push(issue(
                    "not-supported",
                    format!("{at}.{key}"),
                    format!("`{key}` cannot be enforced here: a choice names organisations (actor), parts of the plan (code) and exceptions"),
                ));
            }
        }
        let organisations = named_organisations(&deny["actor"], &format!("{at}.actor"), &mut issues);
        let codes = codings(&deny["code"]);
        if codes.len() > MAX_LIST {
            issues.push(issue("too-costly", format!("{at}.code"), format!("at most {MAX_LIST} codes in one choice")));
        }
        if organisations.is_empty() && codes.is_empty() {
            issues.push(issue(
                "business-rule",
                at.clone(),
                "a choice names the organisations it excludes, the parts of the plan, or both; keeping the whole \
                 plan from everyone is the national data opt-out, not a sharing choice",
            ));
        }
        let mut except = Vec::new();
        let exceptions = deny["provision"].as_array().map(Vec::as_slice).unwrap_or_default();
        for (j, permit) in exceptions.iter().take(MAX_PROVISIONS).enumerate() {
            let at = format!("{at}.provision[{j}]");
            let only_actors = permit.as_object().is_some_and(|m| m.keys().all(|k| k == "type" || k == "actor"));
            if permit["type"] != "permit" || !only_actors {
                issues.push(issue("not-supported", at.clone(), "an exception is a `permit` naming organisations"));
            }
            except.extend(named_organisations(&permit["actor"], &format!("{at}.actor"), &mut issues));
        }
        choices.deny.push(Choice { organisations, codes, except });
    }
    if issues.is_empty() { Ok(choices) } else { Err(issues) }
}

/// A `permit` provision letting proxies add notes: action `correct`, actors by
/// `RelatedPerson/{id}`; the RelatedPerson ids, or issues.
fn notes_permission(permit: &Value, at: &str, issues: &mut Vec<Issue>) -> Vec<String> {
    let keys_ok =
        permit.as_object().is_some_and(|m| m.keys().all(|k| ["type", "action", "actor"].contains(&k.as_str())));
    let actions = codings(&permit["action"]);
    if !keys_ok || actions.len() != 1 || actions[0].1 != NOTES_ACTION {
        issues.push(issue(
            "not-supported",
            at,
            "a `permit` choice lets the people it names add notes: action `correct`, actors by RelatedPerson",
        ));
        return Vec::new();
    }
    let mut ids = Vec::new();
    for (j, actor) in permit["actor"].as_array().into_iter().flatten().take(MAX_LIST).enumerate() {
        match actor["reference"]["reference"].as_str().and_then(|r| r.strip_prefix("RelatedPerson/")) {
            Some(id) if !id.is_empty() && id.len() <= 64 => ids.push(id.to_owned()),
            _ => {
                issues.push(issue("not-supported", format!("{at}.actor[{j}]"), "name the proxy as RelatedPerson/{id}"))
            }
        }
    }
    if ids.is_empty() {
        issues.push(issue("required", format!("{at}.actor"), "name at least one proxy (RelatedPerson)"));
    }
    ids
}

/// A Consent the caller sent, checked: its choices, or the 400/422 to answer.
pub fn accept(consent: &Value) -> Result<Choices, FhirError> {
    read_choices(consent).map_err(|issues| {
        if issues.iter().any(|i| i.code == "structure") {
            FhirError::BadRequest(issues)
        } else {
            FhirError::Unprocessable(issues)
        }
    })
}

impl App {
    /// The sharing choices `patient` has in force (their active Consents), as the policy sees them.
    pub async fn sharing_choices(&self, patient: &str) -> Result<Choices, FhirError> {
        let criteria = [
            Criterion { key: "patient".into(), values: vec![patient.to_owned()] },
            Criterion { key: "status".into(), values: vec!["active".into()] },
        ];
        let mut choices = Choices::default();
        for stored in self.stores.durable.search_resources(TYPE, &criteria, MAX_STORED).await? {
            let consent: Value = serde_json::from_str(&stored.data).unwrap_or_default();
            // checked when written: one that no longer reads is damage, and nothing is shown past it
            let read = read_choices(&consent)
                .map_err(|_| FhirError::Unavailable(format!("the patient's Consent {} is unreadable", stored.id)))?;
            choices.deny.extend(read.deny);
            choices.notes_by.extend(read.notes_by);
        }
        Ok(choices)
    }

    /// Scopes, compartment and policy for a Consent about `patient`.
    async fn admit_consent(
        &self,
        caller: &Caller,
        access: &Access,
        patient: &str,
        interaction: Permissions,
    ) -> Result<PatientFacts, FhirError> {
        within_compartment(access, Some(patient))?;
        let facts = self.patient_facts(Some(patient), &mut PatientMemo::new()).await?;
        let record = Record { patient: Some(patient), org: facts.org.as_deref(), ..Record::default() };
        caller.decide(&**self.policy.load_full(), TYPE, interaction, record)?;
        Ok(facts)
    }

    /// Checks a new or changed Consent: enforceable, within the caller's compartment, permitted,
    /// about a known patient, in that order (whether an NHS number is known here is told only
    /// to a caller the policy would let record a choice for it).
    async fn accept_consent(
        &self,
        caller: &Caller,
        access: &Access,
        consent: &Value,
        interaction: Permissions,
    ) -> Result<String, FhirError> {
        accept(consent)?;
        let patient = consent_patient(consent).unwrap_or_default();
        if matches!(&access.reach, Reach::Patient(own) if *own != patient) {
            return Err(FhirError::Denied {
                reason: "a patient/ token records choices only for its own patient".into(),
            });
        }
        if !self.admit_consent(caller, access, &patient, interaction).await?.known {
            return Err(FhirError::Unprocessable(vec![issue(
                "not-found",
                "Consent.patient",
                format!("Patient/{patient} is not known here"),
            )]));
        }
        Ok(patient)
    }

    /// `POST /Consent`: records a sharing choice.
    pub async fn create_consent(&self, caller: &Caller, body: &[u8]) -> Result<FhirResponse, FhirError> {
        let (mut patient, mut created) = (None, None);
        let result = async {
            let access = caller.access(TYPE, Permissions::CREATE)?;
            let mut consent = parse_json(body)?;
            if let Value::Object(map) = &mut consent {
                map.remove("id");
                map.remove("meta");
            }
            patient = consent_patient(&consent).filter(|p| NhsNumber::parse(p).is_ok());
            self.accept_consent(caller, &access, &consent, Permissions::CREATE).await?;
            let (id, response) = self.store_new(TYPE, &consent).await?;
            created = Some(id);
            Ok(response)
        }
        .await;
        self.audited(caller, AuditKind::FhirCreate, (TYPE, created.as_deref()), &Vec::from_iter(patient), result).await
    }

    /// `PUT /Consent/{id}` with `If-Match`: changes or withdraws (`status: inactive`) a choice.
    /// The patient it is about never changes.
    pub async fn update_consent(
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
            let stored: Value = serde_json::from_str(&current.data).unwrap_or_default();
            patient = consent_patient(&stored);
            self.admit_consent(caller, &access, patient.as_deref().unwrap_or_default(), Permissions::UPDATE).await?;
            let mut consent = parse_json(body)?;
            if let Value::Object(map) = &mut consent {
                map.remove("meta");
            }
            if consent["id"].as_str() != Some(id) {
                return Err(FhirError::Unprocessable(vec![issue(
                    "invalid",
                    "Consent.id",
                    "the body must carry the id in the URL",
                )]));
            }
            if consent_patient(&consent) != patient {
                return Err(FhirError::Unprocessable(vec![issue(
                    "business-rule",
                    "Consent.patient",
                    "a choice stays with the patient who made it; record a new one for another patient",
                )]));
            }
            self.accept_consent(caller, &access, &consent, Permissions::UPDATE).await?;
            self.store_version(TYPE, id, &consent, expected).await
        }
        .await;
        self.audited(caller, AuditKind::FhirUpdate, (TYPE, Some(id)), &Vec::from_iter(patient), result).await
    }

    /// `GET /Consent/{id}`.
    pub async fn read_consent(&self, caller: &Caller, id: &str) -> Result<FhirResponse, FhirError> {
        let mut patient = None;
        let result = async {
            let access = caller.access(TYPE, Permissions::READ)?;
            let stored = self.stores.durable.read_resource(TYPE, id).await?.ok_or(FhirError::NotFound)?;
            patient = consent_patient(&serde_json::from_str(&stored.data).unwrap_or_default());
            self.admit_consent(caller, &access, patient.as_deref().unwrap_or_default(), Permissions::READ).await?;
            Ok(single(&stored, 200))
        }
        .await;
        self.audited(caller, AuditKind::FhirRead, (TYPE, Some(id)), &Vec::from_iter(patient), result).await
    }

    /// `GET /Consent?patient=…[&status=…]`: one patient's choices (a `patient/` token: its own).
    pub async fn search_consents(&self, caller: &Caller, raw_query: Option<&str>) -> Result<FhirResponse, FhirError> {
        let mut audited_patient = None;
        let result = async {
            let query = &Query::parse(raw_query)?;
            query.only(&["patient", "status", "_count", "_offset"])?;
            let access = caller.access(TYPE, Permissions::SEARCH)?;
            let (count, offset) = paging(query)?;
            let named = query.all("patient");
            let patient = match (&access.reach, named.as_slice()) {
                (Reach::Patient(own), []) => own.clone(),
                (_, [one]) => one.strip_prefix("Patient/").unwrap_or(one).to_owned(),
                _ => return Err(FhirError::bad_request("name one patient (`patient=`)")),
            };
            NhsNumber::parse(&patient).map_err(|_| FhirError::bad_request("`patient` must be an NHS number"))?;
            if matches!(&access.reach, Reach::Patient(own) if *own != patient) {
                // a patient-context search is always within that patient
                return Ok(FhirResponse::ok(searchset(self.fhir_base(), TYPE, query, &[], count, offset)));
            }
            audited_patient = Some(patient.clone());
            self.admit_consent(caller, &access, &patient, Permissions::SEARCH).await?;
            let mut criteria = vec![Criterion { key: "patient".into(), values: vec![patient] }];
            for values in query.lists("status")? {
                criteria.push(Criterion { key: "status".into(), values });
            }
            let found = self.stores.durable.search_resources(TYPE, &criteria, MAX_STORED).await?;
            Ok(FhirResponse::ok(searchset(self.fhir_base(), TYPE, query, &found, count, offset)))
        }
        .await;
        self.audited(caller, AuditKind::FhirSearch, (TYPE, None), &Vec::from_iter(audited_patient), result).await
    }
}

/// A choice as a person asks for it on the sharing page: `kind` `organisation` (keep the plan
/// from `organisation`) or `part` (keep the plan category `part`, `system|code`, from everyone
/// but `except`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ChoiceRequest<'a> {
    pub kind: Option<&'a str>,
    pub organisation: Option<&'a str>,
    pub part: Option<&'a str>,
    pub except: Option<&'a str>,
}

impl ChoiceRequest<'_> {
    /// The patient's Consent recording this choice, or what is wrong with the request, in words.
    pub fn consent(&self, patient: &str, now_ms: i64) -> Result<Value, String> {
        let ods = |value: Option<&str>| -> Result<Option<Value>, String> {
            match value.map(str::trim).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(code) if code.len() <= 10 && code.bytes().all(|b| b.is_ascii_alphanumeric()) => Ok(Some(
                    json!([{"reference": {"identifier": {"system": ODS_SYSTEM, "value": code.to_ascii_uppercase()}}}]),
                )),
                Some(_) => Err("An organisation code is 3 to 10 letters and numbers, like B86011.".into()),
            }
        };
        let deny = match self.kind {
            Some("organisation") => {
                let actor = ods(self.organisation)?.ok_or("Enter the code of the organisation.")?;
                json!({"type": "deny", "actor": actor})
            }
            Some("part") => {
                let (system, code) = self.part.and_then(|p| p.rsplit_once('|')).ok_or("Choose a part of your plan.")?;
                let mut deny = json!({"type": "deny", "code": [{"coding": [{"system": system, "code": code}]}]});
                if let Some(gp) = ods(self.except)? {
                    deny["provision"] = json!([{"type": "permit", "actor": gp}]);
                }
                deny
            }
            _ => return Err("Choose what you want to keep private.".into()),
        };
        Ok(json!({
            "resourceType": "Consent",
            "status": "active",
            "scope": {"coding": [{"system": SCOPE_SYSTEM, "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Consent Document"}]}],
            "patient": {"reference": format!("Patient/{patient}")},
            "dateTime": crate::audit::fhir::instant(now_ms),
            "provision": {"type": "permit", "provision": [deny]}
        }))
    }
}

impl App {
    /// Withdraws Consent `id` (status `inactive`) at the version it has now.
    pub async fn withdraw_consent(&self, caller: &Caller, id: &str) -> Result<FhirResponse, FhirError> {
        let current = self.read_consent(caller, id).await?;
        let mut consent = current.body;
        consent["status"] = json!("inactive");
        let version = format!("W/\"{}\"", current.version.unwrap_or_default());
        self.update_consent(caller, id, Some(&version), consent.to_string().as_bytes()).await
    }

    /// The parts of `patient`'s plans a choice can name: each category (system, code, and a name
    /// where the plan gives one), read through the caller's own CarePlan search.
    pub async fn plan_parts(&self, caller: &Caller, patient: &str) -> Result<Vec<(String, String, String)>, FhirError> {
        let plans = self.search_careplans(caller, Some(&format!("patient={patient}"))).await?;
        let mut parts: Vec<(String, String, String)> = Vec::new();
        for plan in plans.body["entry"].as_array().into_iter().flatten().map(|e| &e["resource"]) {
            let codings = plan["category"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["coding"].as_array().into_iter().flatten());
            for coding in codings {
                let (Some(system), Some(code)) = (coding["system"].as_str(), coding["code"].as_str()) else { continue };
                if !parts.iter().any(|(s, c, _)| s == system && c == code) {
                    let name = coding["display"].as_str().or_else(|| plan["title"].as_str()).unwrap_or(code);
                    parts.push((system.to_owned(), code.to_owned(), name.to_owned()));
                }
            }
        }
        Ok(parts)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ods(code: &str) -> Value {
        json!({"reference": {"identifier": {"system": ODS_SYSTEM, "value": code}}})
    }

    fn consent(provisions: Value) -> Value {
        json!({
            "resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": SCOPE_SYSTEM, "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": "Patient/9434765919"},
            "provision": {"type": "permit", "provision": provisions}
        })
    }

    #[test]
    fn an_organisation_and_a_part_of_the_plan_except_the_gp() {
        let psych = ("https://example.org/cat".to_owned(), "psychosocial".to_owned());
        let choices = read_choices(&consent(json!([
            {"type": "deny", "actor": [ods("B86011")]},
            {"type": "deny", "code": [{"coding": [{"system": psych.0, "code": psych.1}]}],
             "provision": [{"type": "permit", "actor": [ods("A81001")]}]}
        ])))
        .unwrap()
        .deny;
        let other = ("https://example.org/cat".to_owned(), "medical".to_owned());
        assert!(
            refused_by(&choices, Some("B86011"), std::slice::from_ref(&other)),
            "the excluded organisation, any part"
        );
        assert!(refused_by(&choices, Some("b86011"), &[]), "ODS codes compare without case");
        assert!(!refused_by(&choices, Some("X26"), std::slice::from_ref(&other)), "others see the rest of the plan");
        assert!(refused_by(&choices, Some("X26"), &[psych.clone(), other]), "but not the psychosocial part");
        assert!(refused_by(&choices, None, std::slice::from_ref(&psych)), "nor a caller with no organisation");
        assert!(!refused_by(&choices, Some("A81001"), &[psych]), "except the GP");
    }

    #[test]
    fn a_patient_lets_named_proxies_add_notes() {
        let permit = json!({"type": "permit", "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "correct"}]}],
            "actor": [{"reference": {"reference": "RelatedPerson/rp-mark"}}]});
        let choices = read_choices(&consent(json!([permit]))).unwrap();
        assert!(choices.deny.is_empty());
        assert!(choices.allow_notes_by(Some("RelatedPerson/rp-mark")));
        assert!(!choices.allow_notes_by(Some("RelatedPerson/rp-other")));
        assert!(!choices.allow_notes_by(Some("Practitioner/rp-mark")));
        assert!(!choices.allow_notes_by(None));
    }

    #[test]
    fn what_cannot_be_enforced_is_refused_and_named() {
        let cases = [
            (json!([{"type": "deny"}]), "national data opt-out"),
            (json!([{"type": "deny", "actor": [{"reference": {"reference": "Organization/x"}}]}]), "ODS code"),
            (json!([{"type": "deny", "actor": [ods("B86011")], "period": {"end": "2027-01-01"}}]), "`period`"),
            (json!([{"type": "permit", "actor": [ods("B86011")]}]), "`permit` choice"),
            (
                json!([{"type": "permit", "action": [{"coding": [{"code": "correct"}]}], "actor": [ods("B86011")]}]),
                "RelatedPerson",
            ),
            (json!([{"type": "allow", "actor": [ods("B86011")]}]), "`deny` provision"),
            (json!([]), "at least one choice"),
            (json!([{"type": "deny", "actor": [ods("B86011")], "provision": [{"type": "deny"}]}]), "exception"),
        ];
        for (provisions, says) in cases {
            let issues = read_choices(&consent(provisions.clone())).unwrap_err();
            assert!(issues.iter().any(|i| i.diagnostics.contains(says)), "{provisions}: {issues:?}");
        }
        let mut wrong_scope = consent(json!([{"type": "deny", "actor": [ods("B86011")]}]));
        wrong_scope["scope"]["coding"][0]["code"] = json!("research");
        assert!(read_choices(&wrong_scope).is_err());
        let mut unknown = consent(json!([{"type": "deny", "actor": [ods("B86011")]}]));
        unknown["hidden"] = json!(true);
        assert!(matches!(accept(&unknown), Err(FhirError::BadRequest(_))));
        let many: Vec<Value> =
            (0..=MAX_PROVISIONS).map(|_| json!({"type": "deny", "actor": [ods("B86011")]})).collect();
        assert!(read_choices(&consent(Value::Array(many))).is_err());
    }
}
