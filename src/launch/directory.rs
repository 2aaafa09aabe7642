//! Which patients a signed-in user may pick in a standalone launch: a patient only themselves;
//! staff the patients managed by their own organisation. (The policy evaluator will refine this.)

use serde_json::Value;

use crate::domain::identity::Identity;
use crate::store::{ResourceStore, StoreError};

/// One row of the patient picker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientSummary {
    pub id: String,
    pub name: String,
    pub birth_date: Option<String>,
    /// Someone the user cares for (a proxy role VRS confirmed), not the user themselves.
    pub acting_for: bool,
}

const MAX_PATIENTS: i64 = 500;

pub use crate::fhir::resources::display_name;

fn managed_by(patient: &Value, org: &str) -> bool {
    crate::fhir::resources::managing_org(patient) == Some(org)
}

/// The patients `identity` may choose from.
pub async fn patients_for(store: &dyn ResourceStore, identity: &Identity) -> Result<Vec<PatientSummary>, StoreError> {
    let own = identity.own_patient_id();
    let mut out = Vec::new();
    for stored in store.list_resources("Patient", MAX_PATIENTS).await? {
        let Ok(patient) = serde_json::from_str::<Value>(&stored.data) else { continue };
        let visible = match (own, &identity.org) {
            (Some(own), _) => stored.id == own,
            // a proxy (verified with VRS at sign-in) picks only the person they act for
            (None, _) if identity.proxy_for.is_some() => identity.proxy_for.as_deref() == Some(stored.id.as_str()),
            (None, Some(org)) => managed_by(&patient, org),
            (None, None) => false,
        };
        if visible {
            out.push(PatientSummary {
                id: stored.id.clone(),
                name: display_name(&patient),
                birth_date: patient["birthDate"].as_str().map(str::to_owned),
                acting_for: false,
            });
        }
    }
    Ok(out)
}

impl crate::app::App {
    /// The picker's rows: [`patients_for`], then each of `acting_for` (the people VRS said at
    /// sign-in the user may act for) who has a record here.
    pub async fn patient_choices(
        &self,
        identity: &Identity,
        acting_for: &[String],
    ) -> Result<Vec<PatientSummary>, StoreError> {
        let mut out = patients_for(self.stores.durable.as_ref(), identity).await?;
        for nhs in acting_for {
            if let Some(stored) = self.stores.durable.read_resource("Patient", nhs).await? {
                let Ok(patient) = serde_json::from_str::<Value>(&stored.data) else { continue };
                out.push(PatientSummary {
                    id: stored.id.clone(),
                    name: display_name(&patient),
                    birth_date: patient["birthDate"].as_str().map(str::to_owned),
                    acting_for: true,
                });
            }
        }
        Ok(out)
    }
}
