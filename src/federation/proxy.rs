//! Proxies: someone acting for a patient (a carer, a relative with lasting power of attorney).
//! NHS login vouches for who the two people are (a composite token: the patient as subject, the
//! proxy in `act`); the Validated Relationships Service says whether the proxy role is active.
//! Only then does carebroker record the relationship as its own verified `RelatedPerson`, which
//! the FHIR guard checks on every request, and the proxy signs in as that RelatedPerson with the
//! patient in context. A refresh asks VRS again: a role that has ended ends the access.

use serde_json::{Value, json};

use super::SignInError;
use crate::app::App;
use crate::domain::identity::Identity;
use crate::domain::nhs_number::{NHS_NUMBER_SYSTEM, NhsNumber};
use crate::fhir::guard::SUBJECT_SYSTEM;
use crate::store::ResourceWrite;

/// The legal-basis code system of VRS proxy roles.
const LEGAL_BASIS_SYSTEM: &str = "https://fhir.nhs.uk/England/CodeSystem/England-NHSProxyLegalBasis";

/// carebroker's RelatedPerson id for `subject` acting for `patient` (the same pair, the same id).
fn related_person_id(subject: &str, patient: &str) -> String {
    use aws_lc_rs::digest::{SHA256, digest};
    let hash = digest(&SHA256, format!("{subject}\u{0}{patient}").as_bytes());
    format!("rp-{}", hash.as_ref()[..12].iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Why a proxy cannot (or can no longer) act.
fn refused(why: impl Into<String>) -> SignInError {
    SignInError::Rejected(why.into())
}

impl App {
    /// The active VRS role behind `identity`'s claim to act for a patient, or why there is none.
    async fn proxy_role(&self, identity: &Identity) -> Result<(NhsNumber, crate::vrs::ProxyRole), SignInError> {
        let (Some(proxy), Some(patient)) = (identity.nhs_number.as_deref(), identity.proxy_for.as_deref()) else {
            return Err(refused("this sign-in does not act for anyone"));
        };
        let (Ok(proxy), Ok(patient)) = (NhsNumber::parse(proxy), NhsNumber::parse(patient)) else {
            return Err(refused("the proxy or the patient has no valid NHS number"));
        };
        let vrs = self.vrs.as_ref().ok_or_else(|| {
            refused("acting for someone else needs the Validated Relationships Service, which is not configured here")
        })?;
        match vrs.active_role(&proxy, &patient, self.clock.now()).await {
            Ok(Some(role)) => Ok((patient, role)),
            Ok(None) => Err(refused("there is no active proxy role for you and this person")),
            Err(e) => Err(SignInError::Upstream(e.to_string())),
        }
    }

    /// The people a signed-in NHS login user may act for (VRS), for the patient picker's
    /// "someone you care for". None when VRS is not configured, the user is already acting for
    /// someone, or VRS cannot say (the user can still act for themselves).
    pub async fn may_act_for(&self, identity: &Identity) -> Vec<String> {
        let (Some(vrs), None, Some(own)) =
            (self.vrs.as_ref(), identity.proxy_for.as_ref(), identity.nhs_number.as_deref())
        else {
            return Vec::new();
        };
        if identity.source != crate::config::idps::IdpKind::NhsLogin.as_str() {
            return Vec::new();
        }
        let Ok(own) = NhsNumber::parse(own) else { return Vec::new() };
        match vrs.patients_of(&own, self.clock.now()).await {
            Ok(patients) => patients.into_iter().filter(|p| *p != own.as_str()).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not list whom the user may act for");
                Vec::new()
            }
        }
    }

    /// The signed-in user chose, in the picker, to act for `patient`: confirmed with VRS again
    /// and made a proxy identity (their verified RelatedPerson) for this authorization.
    pub async fn act_for(&self, identity: &Identity, patient: &str) -> Result<Identity, SignInError> {
        let acting = Identity { proxy_for: Some(patient.to_owned()), fhir_user: None, ..identity.clone() };
        self.verify_proxy(acting).await
    }

    /// Confirms a proxy sign-in with VRS and records the relationship as carebroker's own
    /// verified RelatedPerson; the identity comes back as that RelatedPerson.
    pub async fn verify_proxy(&self, mut identity: Identity) -> Result<Identity, SignInError> {
        let (patient, role) = self.proxy_role(&identity).await?;
        let subject = identity.platform_subject();
        let id = related_person_id(&subject, patient.as_str());
        let mut person = json!({
            "resourceType": "RelatedPerson",
            "id": id,
            "active": true,
            "identifier": [
                {"system": SUBJECT_SYSTEM, "value": subject},
                {"system": NHS_NUMBER_SYSTEM, "value": identity.nhs_number},
            ],
            "patient": {"reference": format!("Patient/{patient}")},
            "relationship": [{"coding": [{"system": LEGAL_BASIS_SYSTEM, "code": role.legal_basis.as_deref().unwrap_or("UNK")}]}],
            "meta": {"source": format!("vrs:Consent/{}", role.id)},
        });
        if let Some(name) = &identity.name {
            person["name"] = json!([{"text": name}]);
        }
        self.put_related_person(&id, &person).await?;
        identity.fhir_user = Some(format!("RelatedPerson/{id}"));
        Ok(identity)
    }

    /// Asks VRS again whether a proxy may still act (at every refresh). When the role has ended
    /// the RelatedPerson is made inactive, so tokens already issued stop reaching the patient at
    /// the FHIR guard too.
    pub async fn recheck_proxy(&self, identity: &Identity) -> Result<(), SignInError> {
        match self.proxy_role(identity).await {
            Ok(_) => Ok(()),
            Err(SignInError::Rejected(why)) => {
                if let Some(id) = identity.fhir_user.as_deref().and_then(|u| u.strip_prefix("RelatedPerson/")) {
                    if let Ok(Some(stored)) = self.stores.durable.read_resource("RelatedPerson", id).await {
                        let mut person: Value = serde_json::from_str(&stored.data).unwrap_or_default();
                        person["active"] = json!(false);
                        self.put_related_person(id, &person).await?;
                    }
                }
                Err(SignInError::Rejected(why))
            }
            Err(other) => Err(other),
        }
    }

    async fn put_related_person(&self, id: &str, person: &Value) -> Result<(), SignInError> {
        let data = person.to_string();
        let index = crate::fhir::resources::index_of("RelatedPerson", person);
        let now = self.clock.now_millis();
        let write = ResourceWrite { resource_type: "RelatedPerson", id, data: &data, index: &index, now };
        let store = &self.stores.durable;
        if store.create_resource_if_absent(write).await.map_err(SignInError::upstream)? {
            return Ok(());
        }
        let current = store.read_resource("RelatedPerson", id).await.map_err(SignInError::upstream)?;
        let version = current.map_or(1, |c| c.version);
        let write = ResourceWrite { resource_type: "RelatedPerson", id, data: &data, index: &index, now };
        store.update_resource(write, version).await.map_err(SignInError::upstream)?;
        Ok(())
    }
}
