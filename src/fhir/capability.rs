//! The CapabilityStatement at `/fhir/metadata`, with the SMART `oauth-uris` extension.

use serde_json::{Value, json};

use crate::config::Config;

pub fn capability_statement(config: &Config) -> Value {
    let e = |path: &str| config.endpoint(path);
    let interaction = |codes: &[&str]| -> Value { codes.iter().map(|c| json!({"code": c})).collect() };
    let params = |list: &[(&str, &str)]| -> Value { list.iter().map(|(n, t)| json!({"name": n, "type": t})).collect() };
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-22",
        "kind": "instance",
        "software": {"name": "carebroker", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Shared care record care-plan API", "url": config.fhir_base()},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "security": {
                "cors": true,
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}],
                             "text": "OAuth2 using SMART-on-FHIR profile (see /.well-known/smart-configuration)"}],
                "extension": [{
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": [
                        {"url": "authorize", "valueUri": e("/authorize")},
                        {"url": "token", "valueUri": e("/token")},
                        {"url": "introspect", "valueUri": e("/introspect")},
                        {"url": "revoke", "valueUri": e("/revoke")}
                    ]
                }]
            },
            "resource": [
                {"type": "CarePlan", "versioning": "versioned-update", "readHistory": true, "updateCreate": false, "conditionalCreate": false,
                 "interaction": interaction(&["read", "vread", "history-instance", "search-type", "create", "update"]),
                 "searchParam": params(&[("patient", "reference"), ("subject", "reference"), ("status", "token"), ("category", "token"), ("date", "date"), ("_lastUpdated", "date")])},
                {"type": "Consent", "versioning": "versioned-update", "updateCreate": false,
                 "interaction": interaction(&["read", "search-type", "create", "update"]),
                 "searchParam": params(&[("patient", "reference"), ("status", "token")])},
                {"type": "Patient", "interaction": interaction(&["read", "search-type"]),
                 "searchParam": params(&[("_id", "token"), ("identifier", "token"), ("family", "string"), ("birthdate", "date"), ("phone", "token")])},
                {"type": "Practitioner", "interaction": interaction(&["read"])},
                {"type": "RelatedPerson", "interaction": interaction(&["read"])},
                {"type": "AuditEvent", "interaction": interaction(&["search-type"]),
                 "searchParam": params(&[("patient", "reference"), ("agent", "reference"), ("date", "date")])}
            ]
        }]
    })
}
