//! The NHS App journeys: after a silent NHS login, the patient opens the journey's app with
//! themselves in context (no picker), through a launch carebroker registers for them.

use crate::app::App;
use crate::domain::identity::Identity;
use crate::domain::launch::{EhrLaunch, LaunchContext};
use crate::store::StoreError;

/// Why a journey could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum JourneyError {
    #[error("This NHS App journey is not known here.")]
    Unknown,
    #[error("The journey's app is not registered.")]
    NotRegistered,
    #[error("The journey cannot be opened.")]
    CannotOpen,
    #[error("The journey's app is misconfigured.")]
    Misconfigured,
    #[error("Try again later.")]
    Unavailable,
}

impl App {
    /// Registers a launch of `journey`'s app for the patient `identity` signed in as, and
    /// returns the app's launch URL.
    pub async fn open_journey(&self, journey: &str, identity: Identity) -> Result<String, JourneyError> {
        let journey = self.config.nhs_app.journeys.get(journey).ok_or(JourneyError::Unknown)?;
        let client = match self.clients.get(&journey.client_id).await {
            Ok(Some(client)) => client,
            _ => return Err(JourneyError::NotRegistered),
        };
        // the patient is the person the journey is about: a proxy's is the person they act for
        // (verified with VRS), never their own NHS number
        let patient = match &identity.proxy_for {
            Some(cared_for) => Some(cared_for.clone()),
            None => identity.own_patient_id().map(str::to_owned),
        };
        let (Some(launch_uri), Some(patient)) = (client.launch_uri.clone(), patient) else {
            return Err(JourneyError::CannotOpen);
        };
        let launch = EhrLaunch {
            ehr_client_id: "nhs-app".into(),
            app_client_id: client.id.clone(),
            identity,
            context: LaunchContext { patient: Some(patient), need_patient_banner: Some(false), ..Default::default() },
            skip_consent: client.skip_consent,
        };
        let stored = super::register::store_launch(
            self.stores.ephemeral.as_ref(),
            &launch,
            &launch_uri,
            self.fhir_base(),
            self.config.launch.lifetime_secs,
        )
        .await;
        match stored {
            Ok((_, url)) => Ok(url.into()),
            Err(StoreError::Corrupt(_)) => Err(JourneyError::Misconfigured),
            Err(StoreError::Unavailable(_)) => Err(JourneyError::Unavailable),
        }
    }
}
