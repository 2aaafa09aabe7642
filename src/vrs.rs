//! The Validated Relationships Service (VRS) FHIR R4 API: who may act for whom. A proxy role is
//! a FHIR `Consent` (scope `patient-privacy`) whose `patient` is the person cared for and whose
//! `performer` is the proxy, both by NHS number; `provision.period` bounds it in time.
//! carebroker asks `GET {base}/Consent?performer:identifier=…&patient:identifier=…&status=active`
//! and takes a role only when every one of those facts says so (`docs/proxy-access.md` has the
//! wire format and its sources).

use std::time::Duration;

use serde_json::Value;

use crate::config::VrsConfig;
use crate::domain::nhs_number::{NHS_NUMBER_SYSTEM, NhsNumber};

/// An active proxy role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRole {
    /// The VRS Consent id.
    pub id: String,
    /// The legal basis (`policyRule`), e.g. `health-and-welfare-lasting-power-of-attorney`.
    pub legal_basis: Option<String>,
}

/// Why VRS gave no answer to rely on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the Validated Relationships Service {0}")]
pub struct VrsError(pub String);

/// The most roles read from one answer.
const MAX_ROLES: usize = 100;

#[derive(Debug, Clone)]
pub struct VrsClient {
    http: reqwest::Client,
    config: VrsConfig,
}

fn nhs_number_of(identifier: &Value) -> Option<&str> {
    (identifier["system"] == NHS_NUMBER_SYSTEM).then(|| identifier["value"].as_str()).flatten()
}

/// `YYYY-MM-DD` or an instant, as Unix seconds (a date counts from its start, UTC).
fn seconds_of(text: &str) -> Option<i64> {
    if let Ok(at) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return Some(at.unix_timestamp());
    }
    let date = time::Date::parse(text, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp())
}

/// The role a VRS Consent grants `proxy` for `patient` at `now`, if it grants one: active,
/// patient-privacy scope, these two people, a permitting provision whose period holds now.
pub fn role_in(consent: &Value, proxy: &str, patient: &str, now: i64) -> Option<ProxyRole> {
    let scoped =
        consent["scope"]["coding"].as_array().is_some_and(|c| c.iter().any(|c| c["code"] == "patient-privacy"));
    let performer =
        consent["performer"].as_array().and_then(|p| p.first()).and_then(|p| nhs_number_of(&p["identifier"]));
    let provision = &consent["provision"];
    let period = &provision["period"];
    let started = period["start"].as_str().is_none_or(|s| seconds_of(s).is_some_and(|s| s <= now));
    // an end date is the last day of the role: it ends when that day does
    let ongoing = period["end"].as_str().is_none_or(|e| seconds_of(e).is_some_and(|e| now < e + 86_400));
    let holds = consent["resourceType"] == "Consent"
        && consent["status"] == "active"
        && (scoped || consent["scope"].is_null())
        && nhs_number_of(&consent["patient"]["identifier"]) == Some(patient)
        && performer == Some(proxy)
        && matches!(provision["type"].as_str(), None | Some("permit"))
        && started
        && ongoing;
    holds.then(|| ProxyRole {
        id: consent["id"].as_str().unwrap_or_default().to_owned(),
        legal_basis: consent["policyRule"]["coding"][0]["code"].as_str().map(str::to_owned),
    })
}

impl VrsClient {
    pub fn new(config: &VrsConfig) -> Result<Self, reqwest::Error> {
        let http = crate::outbound::client_builder(Duration::from_secs(config.timeout_secs)).build()?;
        Ok(Self { http, config: config.clone() })
    }

    /// The active proxy role `proxy` holds for `patient` now, `None` when VRS holds none.
    pub async fn active_role(
        &self,
        proxy: &NhsNumber,
        patient: &NhsNumber,
        now: i64,
    ) -> Result<Option<ProxyRole>, VrsError> {
        let patient_param = format!("{NHS_NUMBER_SYSTEM}|{patient}");
        let roles = self.consents(proxy, Some(&patient_param)).await?;
        let (proxy, patient) = (proxy.to_string(), patient.to_string());
        Ok(roles.iter().find_map(|c| role_in(c, &proxy, &patient, now)))
    }

    /// Every patient (NHS number) `proxy` holds an active role for now: the people they may act
    /// for, as VRS lists them.
    pub async fn patients_of(&self, proxy: &NhsNumber, now: i64) -> Result<Vec<String>, VrsError> {
        let roles = self.consents(proxy, None).await?;
        let proxy = proxy.to_string();
        let mut patients: Vec<String> = roles
            .iter()
            .filter_map(|c| {
                let patient = nhs_number_of(&c["patient"]["identifier"])?;
                role_in(c, &proxy, patient, now).map(|_| patient.to_owned())
            })
            .collect();
        patients.sort();
        patients.dedup();
        Ok(patients)
    }

    /// `GET /Consent` for `proxy` (and `patient:identifier`, when given), active roles only.
    async fn consents(&self, proxy: &NhsNumber, patient: Option<&str>) -> Result<Vec<Value>, VrsError> {
        let url = format!("{}/Consent", self.config.base_url.trim_end_matches('/'));
        let mut query = vec![("performer:identifier", format!("{NHS_NUMBER_SYSTEM}|{proxy}"))];
        if let Some(patient) = patient {
            query.push(("patient:identifier", patient.to_owned()));
        }
        query.push(("status", "active".to_owned()));
        let mut request = self
            .http
            .get(&url)
            .query(&query)
            .header("X-Request-ID", crate::pds::uuid_v4())
            .header("Accept", "application/fhir+json");
        if let Some(token) = &self.config.access_token {
            request = request.bearer_auth(token.expose());
        }
        let started = std::time::Instant::now();
        let response = request.send().await;
        crate::telemetry::upstream("vrs", response.as_ref().is_ok_and(|r| r.status().is_success()), started.elapsed());
        let response = response.map_err(|e| VrsError(format!("did not answer: {e}")))?;
        let status = response.status().as_u16();
        let body: Value =
            response.json().await.map_err(|_| VrsError(format!("answered HTTP {status} without FHIR JSON")))?;
        if status != 200 {
            let code = body["issue"][0]["details"]["coding"][0]["code"].as_str().unwrap_or("error");
            return Err(VrsError(format!("answered HTTP {status} ({code})")));
        }
        if body["resourceType"] != "Bundle" {
            return Err(VrsError("answered with something other than a Bundle".into()));
        }
        Ok(body["entry"].as_array().into_iter().flatten().map(|e| e["resource"].clone()).take(MAX_ROLES).collect())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn consent() -> Value {
        json!({"resourceType": "Consent", "id": "WWCC67T1", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "patient": {"identifier": {"system": NHS_NUMBER_SYSTEM, "value": "9000000009"}},
            "performer": [{"identifier": {"system": NHS_NUMBER_SYSTEM, "value": "9434765919"}}],
            "policyRule": {"coding": [{"code": "health-and-welfare-lasting-power-of-attorney"}]},
            "provision": {"type": "permit", "period": {"start": "2025-02-11", "end": "2026-02-11"}}})
    }

    #[test]
    fn a_role_holds_only_for_its_two_people_while_active_and_in_its_period() {
        let during = seconds_of("2025-06-01").unwrap();
        let role = role_in(&consent(), "9434765919", "9000000009", during).unwrap();
        assert_eq!(role.legal_basis.as_deref(), Some("health-and-welfare-lasting-power-of-attorney"));
        assert!(role_in(&consent(), "9000000009", "9434765919", during).is_none(), "the other way round");
        assert!(role_in(&consent(), "9434765919", "9000000009", seconds_of("2025-02-10").unwrap()).is_none());
        assert!(role_in(&consent(), "9434765919", "9000000009", seconds_of("2026-02-11T23:00:00Z").unwrap()).is_some());
        assert!(role_in(&consent(), "9434765919", "9000000009", seconds_of("2026-02-12").unwrap()).is_none());
        for (path, value) in [("status", json!("inactive")), ("provision", json!({"type": "deny"}))] {
            let mut changed = consent();
            changed[path] = value;
            assert!(role_in(&changed, "9434765919", "9000000009", during).is_none(), "{path}");
        }
    }
}
