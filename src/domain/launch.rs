//! SMART launch context: what a token response carries besides the token (SMART App Launch 2.2,
//! scopes-and-launch-context: `patient`, `encounter`, `fhirContext`, `need_patient_banner`,
//! `intent`, `smart_style_url`, `tenant`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::identity::is_fhir_id;
use super::scope::is_resource_type_name;

/// Launch context bound to a grant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LaunchContext {
    /// Patient id (the NHS number), bare, never `Patient/…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<String>,
    /// 2.2 object form: `{reference|canonical|identifier, type?, role?}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fhir_context: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub need_patient_banner: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smart_style_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl LaunchContext {
    /// The token-response parameters, exactly as registered.
    pub fn token_parameters(&self) -> Map<String, Value> {
        let mut out = Map::new();
        let mut put = |name: &str, value: Option<Value>| {
            if let Some(v) = value {
                out.insert(name.to_owned(), v);
            }
        };
        put("patient", self.patient.clone().map(Value::String));
        put("encounter", self.encounter.clone().map(Value::String));
        put("fhirContext", (!self.fhir_context.is_empty()).then(|| Value::Array(self.fhir_context.clone())));
        put("need_patient_banner", self.need_patient_banner.map(Value::Bool));
        put("intent", self.intent.clone().map(Value::String));
        put("smart_style_url", self.smart_style_url.clone().map(Value::String));
        put("tenant", self.tenant.clone().map(Value::String));
        out
    }
}

/// A launch registered by a trusted EHR: who the EHR says is signed in, and the context to open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EhrLaunch {
    pub ehr_client_id: String,
    pub app_client_id: String,
    pub identity: super::identity::Identity,
    pub context: LaunchContext,
    pub skip_consent: bool,
}

/// Checks one 2.2 `fhirContext` item: an object with a relative `reference`, a `canonical` or an
/// `identifier`; `type` a resource type; `role` a non-empty absolute URI (or an IG-defined word).
pub fn check_fhir_context_item(item: &Value) -> Result<(), String> {
    let Value::Object(fields) = item else { return Err("each fhirContext item is a JSON object".into()) };
    let reference = fields.get("reference").and_then(Value::as_str);
    let has_target = reference.is_some()
        || fields.get("canonical").is_some_and(Value::is_string)
        || fields.get("identifier").is_some_and(Value::is_object);
    if !has_target {
        return Err("a fhirContext item needs `reference`, `canonical` or `identifier`".into());
    }
    if let Some(reference) = reference {
        let valid = reference.split_once('/').is_some_and(|(t, id)| is_resource_type_name(t) && is_fhir_id(id));
        if !valid {
            return Err(format!("fhirContext reference `{reference}` is not a relative `Type/id`"));
        }
    }
    if let Some(kind) = fields.get("type") {
        if !kind.as_str().is_some_and(is_resource_type_name) {
            return Err("fhirContext `type` must be a resource type".into());
        }
    }
    if let Some(role) = fields.get("role") {
        if !role.as_str().is_some_and(|r| !r.is_empty() && !r.contains(char::is_whitespace)) {
            return Err("fhirContext `role` must be a non-empty URI".into());
        }
    }
    for name in fields.keys() {
        if !["reference", "canonical", "identifier", "type", "role"].contains(&name.as_str()) {
            return Err(format!("fhirContext item has unknown member `{name}`"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fhir_context_items_follow_the_2_2_object_form() {
        assert!(check_fhir_context_item(&json!({"reference": "CarePlan/123"})).is_ok());
        assert!(
            check_fhir_context_item(&json!({"reference": "Questionnaire/q1", "role": "https://example.org/role"}))
                .is_ok()
        );
        assert!(
            check_fhir_context_item(&json!({"canonical": "http://x/Questionnaire/q|1", "type": "Questionnaire"}))
                .is_ok()
        );
        assert!(check_fhir_context_item(&json!("CarePlan/123")).is_err(), "2.0 string form refused");
        assert!(check_fhir_context_item(&json!({"reference": "http://abs/CarePlan/1"})).is_err());
        assert!(check_fhir_context_item(&json!({"role": "x"})).is_err());
        assert!(check_fhir_context_item(&json!({"reference": "CarePlan/1", "role": ""})).is_err());
        assert!(check_fhir_context_item(&json!({"reference": "CarePlan/1", "extra": 1})).is_err());
    }

    #[test]
    fn token_parameters_are_exactly_what_was_registered() {
        let ctx = LaunchContext {
            patient: Some("9434765919".into()),
            need_patient_banner: Some(false),
            fhir_context: vec![json!({"reference": "CarePlan/1"})],
            ..Default::default()
        };
        assert_eq!(
            Value::Object(ctx.token_parameters()),
            json!({"patient": "9434765919", "need_patient_banner": false, "fhirContext": [{"reference": "CarePlan/1"}]})
        );
    }
}
