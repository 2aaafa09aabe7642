//! "Does a care plan exist?" for systems (an EHR's care-plan flag, NHS 111 by phone number):
//! existence, last update and the link to open it, and never any clinical content. Backend
//! services only (`system/` scope allowing CarePlan search), asked of the policy as the
//! `availability_check`, which is all the availability role reaches: it cannot search plans.
//! Every patient an answer names is audited.

use serde_json::{Value, json};

use super::guard::{Caller, Reach};
use super::outcome::FhirError;
use super::resources::normalise_phone;
use super::search::Query;
use super::{App, FhirResponse};
use crate::audit::AuditKind;
use crate::audit::fhir::instant;
use crate::domain::nhs_number::{NHS_NUMBER_SYSTEM, NhsNumber};
use crate::domain::scope::Permissions;
use crate::store::Criterion;

impl App {
    /// `GET /availability?nhs_number=…` or `?phone=…`.
    pub async fn availability(&self, caller: &Caller, raw_query: Option<&str>) -> Result<FhirResponse, FhirError> {
        let mut patients: Vec<String> = Vec::new();
        let result = async {
            let query = &Query::parse(raw_query)?;
            let access = caller.access("CarePlan", Permissions::SEARCH)?;
            if access.reach != Reach::System {
                return Err(FhirError::InsufficientScope(
                    "the availability check is for backend services (system/ scope)".into(),
                ));
            }
            query.only(&["nhs_number", "phone"])?;
            let record = super::guard::Record { availability_check: true, ..Default::default() };
            caller.decide(&**self.policy.load_full(), "CarePlan", Permissions::SEARCH, record)?;
            let found: Vec<String> = match (query.one("nhs_number")?, query.one("phone")?) {
                (Some(nhs), None) => {
                    let nhs = NhsNumber::parse(nhs).map_err(|e| FhirError::bad_request(e.to_string()))?;
                    vec![nhs.to_string()]
                }
                (None, Some(phone)) => {
                    let phone = normalise_phone(phone);
                    if phone.len() < 10 {
                        return Err(FhirError::bad_request("`phone` must be a full telephone number"));
                    }
                    let found = self
                        .stores
                        .durable
                        .search_resources("Patient", &[Criterion { key: "phone".into(), values: vec![phone] }], 20)
                        .await?;
                    found.into_iter().map(|p| p.id).collect()
                }
                _ => return Err(FhirError::bad_request("give exactly one of `nhs_number` or `phone`")),
            };
            patients.clone_from(&found);
            let mut matches = Vec::new();
            for nhs in &found {
                let plans = self
                    .stores
                    .durable
                    .search_resources("CarePlan", &[Criterion { key: "patient".into(), values: vec![nhs.clone()] }], 1)
                    .await?;
                // the store answers the most recently updated first: one row says both facts
                let last = plans.first().map(|p| p.last_updated);
                let mut entry = json!({
                    "nhs_number": nhs,
                    "identifier": {"system": NHS_NUMBER_SYSTEM, "value": nhs},
                    "care_plan_exists": !plans.is_empty(),
                });
                if let Some(last) = last {
                    entry["last_updated"] = instant(last).into();
                    entry["launch_url"] =
                        self.config.availability.launch_url_template.replace("{nhs_number}", nhs).into();
                }
                matches.push(entry);
            }
            let exists = matches.iter().any(|m| m["care_plan_exists"] == Value::Bool(true));
            Ok(FhirResponse::ok(json!({"care_plan_exists": exists, "matches": matches})))
        }
        .await;
        self.audited(caller, AuditKind::AvailabilityCheck, ("CarePlan", None), &patients, result).await
    }
}
