//! Legacy CIS ("CIS1") smartcard sessions. A desktop client holding the Identity Agent's SSO
//! token presents it; carebroker asks the Spine Security Broker for the session's role assertion
//! (`GET {ssb}/saml/RoleAssertion?token=…`, a SAML 1.1 `samlp:Response`) and takes the user's
//! uid and name, the session's selected role (`ssbSessionRoleUid`) with its job role code, ODS
//! code and business functions, at smartcard assurance. Facts: `reference/nhs-identity.md` §2.
//!
//! The assertion is unsigned: its authenticity is the TLS connection to the configured SSB.

use std::time::Duration;

use super::SignInError;
use super::xml::{has_dtd, is};
use crate::config::CisSsoConfig;
use crate::config::idps::IdpKind;
use crate::domain::identity::Identity;
use crate::domain::identity::job_role;
use crate::domain::xml_time::parse_utc;

const SAML1_PROTOCOL: &str = "urn:oasis:names:tc:SAML:1.0:protocol";
const SAML1_ASSERTION: &str = "urn:oasis:names:tc:SAML:1.0:assertion";
/// The provider id of identities from a CIS smartcard session.
pub const PROVIDER: &str = "cis-sso";

/// The SSB client.
#[derive(Debug)]
pub struct SsbClient {
    config: CisSsoConfig,
    http: reqwest::Client,
}

/// One role profile block of the assertion.
#[derive(Debug, Default, Clone)]
struct RoleBlock {
    ods: Option<String>,
    profile_id: Option<String>,
    job_role_code: Option<String>,
    business_functions: Vec<String>,
}

impl SsbClient {
    pub fn new(config: CisSsoConfig) -> Result<Self, String> {
        let mut builder = crate::outbound::client_builder(Duration::from_secs(config.timeout_secs));
        if let Some(file) = &config.ca_file {
            let pem = std::fs::read(file).map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string())? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self { config, http: builder.build().map_err(|e| e.to_string())? })
    }

    /// Checks `token` at the SSB and returns the session's identity.
    pub async fn identity(&self, token: &str, now: i64) -> Result<Identity, SignInError> {
        if token.is_empty() || token.len() > 512 || token.chars().any(char::is_control) {
            return Err(SignInError::Rejected("the smartcard session token is malformed".into()));
        }
        let mut url =
            url::Url::parse(&format!("{}/saml/RoleAssertion", self.config.role_assertion_url.trim_end_matches('/')))
                .map_err(|e| SignInError::Upstream(e.to_string()))?;
        url.query_pairs_mut().append_pair("token", token);
        let response = self.http.get(url).send().await.map_err(|e| {
            // the URL carries the session token: never in a message or a log
            SignInError::Upstream(format!("the Spine Security Broker could not be reached: {}", e.without_url()))
        })?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| SignInError::Upstream(e.without_url().to_string()))?;
        if status >= 500 {
            return Err(SignInError::Upstream(format!("the Spine Security Broker answered HTTP {status}")));
        }
        if status != 200 {
            return Err(SignInError::Rejected(format!(
                "the Spine Security Broker does not know this smartcard session (HTTP {status})"
            )));
        }
        parse_role_assertion(&body, &self.config, now)
    }
}

/// Reads an SSB role assertion into an [`Identity`].
pub fn parse_role_assertion(xml: &str, config: &CisSsoConfig, now: i64) -> Result<Identity, SignInError> {
    let bad = |why: &str| SignInError::Upstream(format!("the role assertion {why}"));
    if has_dtd(xml) {
        return Err(bad("carries a document type declaration, which is never accepted"));
    }
    let doc = roxmltree::Document::parse(xml).map_err(|_| bad("is not well-formed XML"))?;
    let root = doc.root_element();
    if !is(root, SAML1_PROTOCOL, "Response") {
        return Err(bad("is not a SAML 1.1 Response"));
    }
    let status = root
        .children()
        .find(|n| is(*n, SAML1_PROTOCOL, "Status"))
        .and_then(|s| s.children().find(|n| is(*n, SAML1_PROTOCOL, "StatusCode")))
        .and_then(|c| c.attribute("Value"));
    if !status.is_some_and(|v| v == "samlp:Success" || v.ends_with(":Success")) {
        return Err(SignInError::Rejected(format!(
            "the smartcard session is not active (the Spine Security Broker answered `{}`)",
            status.unwrap_or("no status")
        )));
    }
    let assertions: Vec<_> = root.children().filter(|n| is(*n, SAML1_ASSERTION, "Assertion")).collect();
    let [assertion] = assertions.as_slice() else {
        return Err(bad("must hold exactly one assertion"));
    };
    if let Some(expected) = &config.issuer {
        if assertion.attribute("Issuer") != Some(expected.as_str()) {
            return Err(bad(&format!("was issued by `{}`", assertion.attribute("Issuer").unwrap_or("?"))));
        }
    }
    let conditions = assertion.children().find(|n| is(*n, SAML1_ASSERTION, "Conditions"));
    let instant = |name: &str| conditions.and_then(|c| c.attribute(name)).and_then(parse_utc);
    let (Some(not_before), Some(not_on_or_after)) = (instant("NotBefore"), instant("NotOnOrAfter")) else {
        return Err(bad("has no validity period"));
    };
    let skew = config.max_skew_secs;
    if now + skew < not_before || now - skew >= not_on_or_after {
        return Err(SignInError::Rejected("the smartcard session's role assertion is not valid now".into()));
    }
    let statements: Vec<_> = assertion.children().filter(|n| is(*n, SAML1_ASSERTION, "AttributeStatement")).collect();
    let [statement] = statements.as_slice() else {
        return Err(bad("must hold exactly one attribute statement"));
    };
    // A flat list: the header and person attributes, then one block per role profile, each
    // starting at `nhsIdCode`.
    let mut person: Vec<(String, Vec<String>)> = Vec::new();
    let mut roles: Vec<RoleBlock> = Vec::new();
    for attribute in statement.children().filter(|n| is(*n, SAML1_ASSERTION, "Attribute")) {
        let name = attribute.attribute("AttributeName").unwrap_or_default();
        let values: Vec<String> = attribute
            .children()
            .filter(|n| is(*n, SAML1_ASSERTION, "AttributeValue"))
            .map(|v| v.text().unwrap_or_default().trim().to_owned())
            .collect();
        let first = values.first().cloned().filter(|v| !v.is_empty());
        match name {
            "nhsIdCode" => roles.push(RoleBlock { ods: first, ..RoleBlock::default() }),
            "uniqueIdentifier" | "nhsJobRoleCode" | "nhsBusinessFunctionsCodes" if roles.is_empty() => {
                return Err(bad(&format!("has `{name}` outside a role profile")));
            }
            "uniqueIdentifier" => roles.last_mut().into_iter().for_each(|r| r.profile_id = first.clone()),
            "nhsJobRoleCode" => roles.last_mut().into_iter().for_each(|r| r.job_role_code = first.clone()),
            "nhsBusinessFunctionsCodes" => {
                roles.last_mut().into_iter().for_each(|r| r.business_functions = values.clone())
            }
            _ if roles.is_empty() => person.push((name.to_owned(), values)),
            _ => {}
        }
    }
    let person_value = |name: &str| {
        person.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.first().cloned()).filter(|v| !v.is_empty())
    };
    let uid = person_value("uid").ok_or_else(|| bad("has no uid"))?;
    if !uid.bytes().all(|b| b.is_ascii_alphanumeric()) || uid.len() > 64 {
        return Err(bad("has a malformed uid"));
    }
    if person_value("ssbMode").is_some_and(|m| m != "0") && !config.allow_training_mode {
        return Err(SignInError::Rejected("the smartcard session is in training mode".into()));
    }
    let selected = person_value("ssbSessionRoleUid").ok_or_else(|| bad("names no session role (ssbSessionRoleUid)"))?;
    let role = roles.iter().find(|r| r.profile_id.as_deref() == Some(selected.as_str())).ok_or_else(|| {
        SignInError::Rejected(format!("the session role `{selected}` is not one of the user's role profiles"))
    })?;
    let job_role = role
        .job_role_code
        .as_deref()
        .and_then(job_role)
        .ok_or_else(|| bad("gives the session role no job role code"))?;
    let ods = role.ods.clone().ok_or_else(|| bad("gives the session role no organisation (nhsIdCode)"))?;
    // The card sign-in time, from the SSO token's own assertion nested in the subject.
    let auth_time = assertion
        .descendants()
        .find(|n| is(*n, SAML1_ASSERTION, "AuthenticationStatement"))
        .and_then(|n| n.attribute("AuthenticationInstant"))
        .and_then(parse_utc)
        .unwrap_or(now);
    Ok(Identity {
        provider: PROVIDER.into(),
        source: IdpKind::Cis2.as_str().into(),
        issuer: assertion.attribute("Issuer").map(str::to_owned),
        subject: uid.clone(),
        name: person_value("cn"),
        fhir_user: Some(format!("Practitioner/{uid}")),
        org: Some(ods),
        role_codes: vec![job_role],
        activity_codes: role.business_functions.iter().filter(|b| !b.is_empty()).cloned().collect(),
        assurance: 3,
        acr: Some("AAL3_ANY".into()),
        amr: vec!["sc".into(), "cis-sso".into()],
        auth_time,
        ..Default::default()
    })
}
