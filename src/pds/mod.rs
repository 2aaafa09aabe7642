//! Client of the NHS Personal Demographics Service FHIR API (`reference/nhs-identity.md` §4):
//! `GET {base}/Patient/{nhs_number}` with `X-Request-ID` (a UUID, echoed back) on every call.
//! Superseded numbers come back under their new id, restricted (`R`) records are flagged,
//! invalidated and unknown numbers are refused, and answers are cached for a configured time.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::PdsConfig;
use crate::domain::nhs_number::NhsNumber;
use crate::keyspaces::PDS_VERDICTS;
use crate::store::EphemeralStore;

/// What PDS says about an NHS number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PdsVerdict {
    /// Known and current. `id` differs from the number asked for when it was superseded.
    Verified {
        id: String,
        restricted: bool,
        resource: Value,
    },
    NotFound,
    Invalidated,
    /// PDS could not answer (network, 5xx, 429, unexpected data): not cached.
    Unavailable(String),
}

/// The PDS client.
#[derive(Debug, Clone)]
pub struct PdsClient {
    http: reqwest::Client,
    config: PdsConfig,
    cache: Arc<dyn EphemeralStore>,
}

/// A random (version 4) UUID.
pub fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    // INVARIANT: the system RNG does not fail on Linux once the process has started.
    if SystemRandom::new().fill(&mut b).is_err() {
        panic!("the system random number generator failed");
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn spine_code(outcome: &Value) -> Option<String> {
    outcome["issue"][0]["details"]["coding"][0]["code"].as_str().map(str::to_owned)
}

impl PdsClient {
    pub fn new(config: &PdsConfig, cache: Arc<dyn EphemeralStore>) -> Result<Self, reqwest::Error> {
        let http = crate::outbound::client_builder(Duration::from_secs(config.timeout_secs)).build()?;
        Ok(Self { http, config: config.clone(), cache })
    }

    /// Whether an unavailable PDS should still let the patient be opened.
    pub fn fails_open(&self) -> bool {
        self.config.on_unavailable == "fail_open"
    }

    /// Checks `nhs_number` with PDS (or the cache).
    pub async fn verify(&self, nhs_number: &NhsNumber) -> PdsVerdict {
        let key = nhs_number.to_string();
        if let Ok(Some(verdict)) = PDS_VERDICTS.get(self.cache.as_ref(), &key).await {
            return verdict;
        }
        let verdict = self.fetch(nhs_number).await;
        if !matches!(verdict, PdsVerdict::Unavailable(_)) {
            let ttl = Duration::from_secs(self.config.cache_secs.max(1));
            if let Err(e) = PDS_VERDICTS.put(self.cache.as_ref(), &key, &verdict, ttl).await {
                tracing::warn!(error = %e, "PDS answer not cached");
            }
        }
        verdict
    }

    async fn fetch(&self, nhs_number: &NhsNumber) -> PdsVerdict {
        let request_id = uuid_v4();
        let url = format!("{}/Patient/{nhs_number}", self.config.base_url.trim_end_matches('/'));
        let mut request =
            self.http.get(&url).header("X-Request-ID", &request_id).header("Accept", "application/fhir+json");
        if let Some(token) = &self.config.access_token {
            request = request.bearer_auth(token.expose());
        }
        if let Some(ods) = &self.config.end_user_org_ods {
            request = request.header("NHSD-End-User-Organisation-ODS", ods);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return PdsVerdict::Unavailable(format!("PDS did not answer: {e}")),
        };
        let status = response.status().as_u16();
        let echoed = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body: Value = match response.json().await {
            Ok(v) => v,
            Err(e) => return PdsVerdict::Unavailable(format!("PDS answered HTTP {status} without FHIR JSON: {e}")),
        };
        if echoed.as_deref() != Some(request_id.as_str()) {
            tracing::warn!(request_id = %request_id, echoed = ?echoed, "PDS did not echo X-Request-ID");
        }
        match status {
            200 => {
                let Some(id) = body["id"].as_str().map(str::to_owned) else {
                    return PdsVerdict::Unavailable("PDS returned a Patient without an id".into());
                };
                if id != nhs_number.as_str() {
                    tracing::info!(requested = %nhs_number, current = %id, "PDS: superseded NHS number followed");
                }
                let restricted = body["meta"]["security"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|c| matches!(c["code"].as_str(), Some("R" | "V" | "REDACTED"))));
                PdsVerdict::Verified { id, restricted, resource: body }
            }
            404 if spine_code(&body).as_deref() == Some("INVALIDATED_RESOURCE") => PdsVerdict::Invalidated,
            404 => PdsVerdict::NotFound,
            400 => PdsVerdict::NotFound,
            other => PdsVerdict::Unavailable(format!(
                "PDS answered HTTP {other} ({})",
                spine_code(&body).unwrap_or_else(|| "no error code".into())
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_are_version_4() {
        let id = super::uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(id, super::uuid_v4());
    }
}
