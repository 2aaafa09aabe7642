//! The development identity provider: users with roles, organisation and `fhirUser` from config.
//! Allowed only when the public URL is loopback (config validation refuses it otherwise).

use subtle::ConstantTimeEq as _;

use crate::config::DevIdpConfig;
use crate::domain::identity::Identity;

/// Checks a username and password; `None` for any mismatch (no hint which part was wrong).
pub fn authenticate(config: &DevIdpConfig, username: &str, password: &str, now: i64) -> Option<Identity> {
    if !config.enabled {
        return None;
    }
    let user = config.users.iter().find(|u| u.username == username)?;
    let matches: bool = user.password.expose().as_bytes().ct_eq(password.as_bytes()).into();
    matches.then(|| Identity {
        provider: "dev".into(),
        source: "dev".into(),
        assurance: 1,
        subject: user.username.clone(),
        name: Some(user.name.clone()),
        fhir_user: Some(user.fhir_user.clone()),
        org: user.org.clone(),
        role_codes: user.role_codes.clone(),
        activity_codes: user.activity_codes.clone(),
        amr: vec!["pwd".into()],
        auth_time: now,
        nhs_number: user.nhs_number.clone(),
        ..Default::default()
    })
}
