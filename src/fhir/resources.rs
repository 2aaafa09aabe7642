//! Resource rules for the care-plan API: structural validation of CarePlan (R4 element names,
//! required elements, value sets, the subject), the search keys each resource is indexed by, and
//! `meta` on the way out.

use serde_json::{Map, Value, json};

use super::outcome::Issue;
use crate::audit::fhir::instant;
use crate::domain::nhs_number::{NHS_NUMBER_SYSTEM, NhsNumber};
use crate::store::StoredResource;

/// CarePlan elements in FHIR R4.
const CAREPLAN_ELEMENTS: &[&str] = &[
    "resourceType",
    "id",
    "meta",
    "implicitRules",
    "language",
    "text",
    "contained",
    "extension",
    "modifierExtension",
    "identifier",
    "instantiatesCanonical",
    "instantiatesUri",
    "basedOn",
    "replaces",
    "partOf",
    "status",
    "intent",
    "category",
    "title",
    "description",
    "subject",
    "encounter",
    "period",
    "created",
    "author",
    "contributor",
    "careTeam",
    "addresses",
    "supportingInfo",
    "goal",
    "activity",
    "note",
];
const CAREPLAN_STATUS: &[&str] = &["draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"];
const CAREPLAN_INTENT: &[&str] = &["proposal", "plan", "order", "option", "directive"];

fn issue(code: &'static str, expression: &str, diagnostics: impl Into<String>) -> Issue {
    Issue { severity: "error", code, diagnostics: diagnostics.into(), expression: Some(expression.to_owned()) }
}

/// The ODS code of the organisation managing a Patient.
pub fn managing_org(patient: &Value) -> Option<&str> {
    patient["managingOrganization"]["identifier"]["value"].as_str()
}

/// [`managing_org`] of a stored Patient's JSON, read without building the whole resource (the
/// policy asks for it on every guarded read of a patient's record). Anything else than a string
/// there, or JSON that does not read, is no organisation, as with [`managing_org`].
pub fn managing_org_of(patient_json: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Patient {
        #[serde(rename = "managingOrganization")]
        managing_organization: Option<Reference>,
    }
    #[derive(serde::Deserialize)]
    struct Reference {
        identifier: Option<Identifier>,
    }
    #[derive(serde::Deserialize)]
    struct Identifier {
        value: Option<String>,
    }
    let patient: Patient = serde_json::from_str(patient_json).ok()?;
    patient.managing_organization?.identifier?.value
}

/// The patient a CarePlan is about: `subject.reference` = `Patient/{nhs}`, or `subject.identifier`
/// with the NHS number system. [`validate_careplan`] refuses a plan whose two name different
/// patients, so for a stored plan this is its one subject.
pub fn careplan_patient(plan: &Value) -> Option<String> {
    let subject = &plan["subject"];
    if let Some(reference) = subject["reference"].as_str() {
        return reference.strip_prefix("Patient/").map(str::to_owned);
    }
    (subject["identifier"]["system"] == NHS_NUMBER_SYSTEM)
        .then(|| subject["identifier"]["value"].as_str().map(str::to_owned))
        .flatten()
}

/// A subject whose `reference` and `identifier` could name different patients: a care plan is
/// about one patient, so the identifier must be the NHS number of the patient referenced.
fn subject_conflict(subject: &Value) -> Option<Issue> {
    let reference = subject["reference"].as_str()?;
    let identifier = subject.get("identifier")?;
    let referenced = reference.strip_prefix("Patient/").unwrap_or(reference);
    let identified = (identifier["system"] == NHS_NUMBER_SYSTEM).then(|| identifier["value"].as_str()).flatten();
    match identified {
        Some(nhs) if nhs == referenced => None,
        Some(nhs) => Some(issue(
            "invalid",
            "CarePlan.subject.identifier",
            format!(
                "`subject.reference` names `{reference}` but `subject.identifier` names NHS number `{nhs}`: a care \
                 plan is about one patient, so both must name the same one"
            ),
        )),
        None => Some(issue(
            "invalid",
            "CarePlan.subject.identifier",
            format!(
                "`subject.identifier` beside `subject.reference` `{reference}` must be that patient's NHS number \
                 (system {NHS_NUMBER_SYSTEM})"
            ),
        )),
    }
}

fn is_date(text: &str) -> bool {
    let parsed = time::Date::parse(text, time::macros::format_description!("[year]-[month]-[day]")).is_ok();
    parsed
        || (text.len() > 10
            && time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok())
}

/// Checks a CarePlan; an empty list means valid. `id` is the id the URL names (update) or none.
pub fn validate_careplan(plan: &Value, id: Option<&str>) -> Vec<Issue> {
    let mut issues = Vec::new();
    let Value::Object(fields) = plan else {
        return vec![issue("structure", "CarePlan", "the body must be a JSON object")];
    };
    if plan["resourceType"] != "CarePlan" {
        issues.push(issue("invalid", "CarePlan.resourceType", "resourceType must be CarePlan"));
    }
    for name in fields.keys() {
        if !CAREPLAN_ELEMENTS.contains(&name.as_str()) {
            issues.push(issue("structure", &format!("CarePlan.{name}"), format!("`{name}` is not a CarePlan element")));
        }
    }
    match (id, plan["id"].as_str()) {
        (Some(url), Some(body)) if url != body => issues.push(issue(
            "invalid",
            "CarePlan.id",
            format!("the body's id `{body}` is not the id in the URL `{url}`"),
        )),
        (Some(_), None) => issues.push(issue("required", "CarePlan.id", "an update must carry the resource id")),
        _ => {}
    }
    match plan["status"].as_str() {
        Some(s) if CAREPLAN_STATUS.contains(&s) => {}
        Some(s) => issues.push(issue("code-invalid", "CarePlan.status", format!("`{s}` is not a CarePlan status"))),
        None => issues.push(issue("required", "CarePlan.status", "status is required")),
    }
    match plan["intent"].as_str() {
        Some(s) if CAREPLAN_INTENT.contains(&s) => {}
        Some(s) => issues.push(issue("code-invalid", "CarePlan.intent", format!("`{s}` is not a CarePlan intent"))),
        None => issues.push(issue("required", "CarePlan.intent", "intent is required")),
    }
    match careplan_patient(plan) {
        Some(nhs) => {
            if let Err(e) = NhsNumber::parse(&nhs) {
                issues.push(issue("value", "CarePlan.subject", e.to_string()));
            }
        }
        None => issues.push(issue("required", "CarePlan.subject", "subject must be Patient/{NHS number}")),
    }
    if let Some(conflict) = subject_conflict(&plan["subject"]) {
        issues.push(conflict);
    }
    if let Some(category) = fields.get("category") {
        let ok = category.as_array().is_some_and(|cs| cs.iter().all(|c| c.is_object()));
        if !ok {
            issues.push(issue("structure", "CarePlan.category", "category is a list of CodeableConcepts"));
        }
    }
    for bound in ["start", "end"] {
        if let Some(v) = plan["period"].get(bound) {
            if !v.as_str().is_some_and(is_date) {
                issues.push(issue("value", &format!("CarePlan.period.{bound}"), "must be a FHIR date or dateTime"));
            }
        }
    }
    for list in [
        "identifier",
        "activity",
        "note",
        "goal",
        "addresses",
        "author",
        "contributor",
        "careTeam",
        "supportingInfo",
        "basedOn",
        "replaces",
        "partOf",
        "extension",
        "modifierExtension",
        "contained",
    ] {
        if fields.get(list).is_some_and(|v| !v.is_array()) {
            issues.push(issue("structure", &format!("CarePlan.{list}"), format!("`{list}` must be a list")));
        }
    }
    if let Some(text) = plan.get("text") {
        if !text.is_object() || !text["div"].as_str().is_some_and(|d| d.starts_with("<div")) {
            issues.push(issue("structure", "CarePlan.text", "text is a Narrative with a `div`"));
        }
    }
    issues
}

/// Codings of `element` (a CodeableConcept list) as `system|code` and bare `code` tokens.
fn coding_tokens(element: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for concept in element.as_array().into_iter().flatten() {
        for coding in concept["coding"].as_array().into_iter().flatten() {
            if let Some(code) = coding["code"].as_str() {
                if let Some(system) = coding["system"].as_str() {
                    out.push(format!("{system}|{code}"));
                }
                out.push(code.to_owned());
            }
        }
    }
    out
}

/// True when `resource` satisfies a granular scope restriction (`category=system|code`).
pub fn matches_restriction(resource: &Value, params: &[(String, String)]) -> bool {
    params.iter().all(|(key, value)| match key.as_str() {
        "category" => coding_tokens(&resource["category"]).iter().any(|t| t == value),
        "status" => resource["status"].as_str() == Some(value.as_str()),
        _ => false,
    })
}

/// A phone number as digits, UK international form folded to national (`+44 7700…` → `07700…`).
pub fn normalise_phone(text: &str) -> String {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    match digits.strip_prefix("44") {
        Some(rest) if digits.len() == 12 => format!("0{rest}"),
        _ => digits,
    }
}

/// The search keys of a resource.
pub fn index_of(resource_type: &str, resource: &Value) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    let mut put = |k: &str, v: String| {
        let pair = (k.to_owned(), v);
        if !keys.contains(&pair) {
            keys.push(pair);
        }
    };
    match resource_type {
        "CarePlan" => {
            if let Some(patient) = careplan_patient(resource) {
                put("patient", patient);
            }
            if let Some(status) = resource["status"].as_str() {
                put("status", status.to_owned());
            }
            for token in coding_tokens(&resource["category"]) {
                put("category", token);
            }
        }
        "Consent" => {
            if let Some(patient) = super::consent::consent_patient(resource) {
                put("patient", patient);
            }
            if let Some(status) = resource["status"].as_str() {
                put("status", status.to_owned());
            }
        }
        "Patient" => {
            for identifier in resource["identifier"].as_array().into_iter().flatten() {
                if let (Some(system), Some(value)) = (identifier["system"].as_str(), identifier["value"].as_str()) {
                    put("identifier", format!("{system}|{value}"));
                }
            }
            for telecom in resource["telecom"].as_array().into_iter().flatten() {
                if telecom["system"] == "phone" {
                    if let Some(value) = telecom["value"].as_str() {
                        put("phone", normalise_phone(value));
                    }
                }
            }
            for name in resource["name"].as_array().into_iter().flatten() {
                if let Some(family) = name["family"].as_str() {
                    put("family", family.to_lowercase());
                }
            }
            if let Some(birth) = resource["birthDate"].as_str() {
                put("birthdate", birth.to_owned());
            }
            if let Some(org) = managing_org(resource) {
                put("organization", org.to_owned());
            }
        }
        _ => {}
    }
    keys
}

/// The resource JSON with `id` and `meta` (versionId, lastUpdated) set.
pub fn with_meta(stored: &StoredResource) -> Value {
    let mut resource: Value = serde_json::from_str(&stored.data).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut resource {
        map.insert("id".into(), stored.id.clone().into());
        let mut meta = map
            .remove("meta")
            .and_then(|m| if let Value::Object(m) = m { Some(m) } else { None })
            .unwrap_or_else(Map::new);
        meta.insert("versionId".into(), stored.version.to_string().into());
        meta.insert("lastUpdated".into(), instant(stored.last_updated).into());
        map.insert("meta".into(), Value::Object(meta));
    }
    resource
}

/// A new server-assigned FHIR id: 32 hex digits.
pub fn new_id() -> String {
    crate::pds::uuid_v4().replace('-', "")
}

/// A person resource's `name[0]` (Patient, Practitioner, RelatedPerson) as "Given Family".
pub fn display_name(person: &Value) -> String {
    let name = &person["name"][0];
    if let Some(text) = name["text"].as_str() {
        return text.to_owned();
    }
    let given: Vec<&str> =
        name["given"].as_array().map(|g| g.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let family = name["family"].as_str().unwrap_or_default();
    let full = format!("{} {family}", given.join(" "));
    if full.trim().is_empty() { "(no name)".to_owned() } else { full.trim().to_owned() }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_organisation_read_from_stored_json_is_the_one_read_from_the_resource() {
        for json in [
            r#"{"resourceType":"Patient","managingOrganization":{"identifier":{"system":"x","value":"Y12345"}}}"#,
            r#"{"resourceType":"Patient","managingOrganization":{"identifier":{"value":42}}}"#,
            r#"{"resourceType":"Patient","managingOrganization":{"reference":"Organization/1"}}"#,
            r#"{"resourceType":"Patient","managingOrganization":"Y12345"}"#,
            r#"{"resourceType":"Patient","name":[{"family":"Smith"}]}"#,
            r#"{"resourceType":"Patient","managingOrganization":null}"#,
            "not json",
        ] {
            let value: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
            assert_eq!(super::managing_org_of(json).as_deref(), super::managing_org(&value), "{json}");
        }
        assert_eq!(
            super::managing_org_of(r#"{"managingOrganization":{"identifier":{"value":"Y12345"}}}"#).as_deref(),
            Some("Y12345")
        );
    }

    use super::*;

    fn plan() -> Value {
        json!({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/9434765919"},
               "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "734163000"}]}], "period": {"start": "2026-01-01"}})
    }

    #[test]
    fn a_valid_plan_has_no_issues_and_is_indexed() {
        assert_eq!(validate_careplan(&plan(), None), vec![]);
        let index = index_of("CarePlan", &plan());
        assert!(index.contains(&("patient".into(), "9434765919".into())));
        assert!(index.contains(&("category".into(), "http://snomed.info/sct|734163000".into())));
        assert!(index.contains(&("category".into(), "734163000".into())));
    }

    #[test]
    fn every_problem_is_named_with_its_path() {
        let bad = json!({"resourceType": "CarePlan", "status": "sleeping", "subject": {"reference": "Patient/123"}, "colour": "red", "period": {"start": "soon"}});
        let paths: Vec<String> = validate_careplan(&bad, None).into_iter().filter_map(|i| i.expression).collect();
        for p in ["CarePlan.status", "CarePlan.intent", "CarePlan.subject", "CarePlan.colour", "CarePlan.period.start"]
        {
            assert!(paths.iter().any(|x| x == p), "{p} missing from {paths:?}");
        }
        assert!(!validate_careplan(&json!([1]), None).is_empty());
        assert!(!validate_careplan(&plan(), Some("x")).is_empty(), "an update must carry its id");
    }

    #[test]
    fn a_subject_naming_two_patients_is_refused_naming_both() {
        let mut two = plan();
        two["subject"]["identifier"] = json!({"system": NHS_NUMBER_SYSTEM, "value": "9000000009"});
        let issues = validate_careplan(&two, None);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].code, "invalid", "a content error (422), not structure");
        assert!(issues[0].diagnostics.contains("Patient/9434765919") && issues[0].diagnostics.contains("9000000009"));
        let mut same = plan();
        same["subject"]["identifier"] = json!({"system": NHS_NUMBER_SYSTEM, "value": "9434765919"});
        assert_eq!(validate_careplan(&same, None), vec![]);
        let mut other_system = plan();
        other_system["subject"]["identifier"] = json!({"system": "urn:local", "value": "9434765919"});
        assert_eq!(validate_careplan(&other_system, None).len(), 1);
    }

    #[test]
    fn phones_fold_to_national_form() {
        assert_eq!(normalise_phone("+44 7700 900123"), "07700900123");
        assert_eq!(normalise_phone("07700 900123"), "07700900123");
    }
}
