//! Identity-provider files: `{federation.idps_dir}/*.toml`, one upstream provider each (`kind` =
//! `oidc`, `cis2` or `nhs_login`), the id being the file name. Checked here as data; keys are
//! parsed when the providers are built.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::load::ConfigProblem;
use super::{Config, Secret};
use crate::domain::url_rules::check_https_or_loopback;

/// Which claims carry which facts (generic OIDC; CIS2 and NHS login have fixed mappings).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimMapping {
    pub subject: String,
    pub name: String,
    pub fhir_user: String,
    pub org: String,
    pub roles: String,
    pub activities: String,
    /// `fhirUser` when the provider sends none; `{sub}` is replaced (e.g. `Practitioner/{sub}`).
    pub fhir_user_template: Option<String>,
    /// ODS code when the provider sends none (a care home's own IdP, say).
    pub default_org: Option<String>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            subject: "sub".into(),
            name: "name".into(),
            fhir_user: "fhirUser".into(),
            org: "org".into(),
            roles: "roles".into(),
            activities: "activities".into(),
            fhir_user_template: None,
            default_org: None,
        }
    }
}

/// What kind of provider a file describes, and so which rules apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdpKind {
    /// A generic OpenID Connect provider (a trust's or care home's own), claims as mapped.
    #[default]
    Oidc,
    /// NHS Care Identity Service 2: smartcard and other NHS staff authenticators, RBAC roles.
    Cis2,
    /// NHS login: patients and proxies, proofing levels (`vtr`/`vot`), `private_key_jwt` RS512.
    NhsLogin,
    /// A SAML 2.0 identity provider.
    Saml,
}

impl IdpKind {
    /// The name used in provider files and as an identity's `source` in the access policy.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oidc => "oidc",
            Self::Cis2 => "cis2",
            Self::NhsLogin => "nhs_login",
            Self::Saml => "saml",
        }
    }
}

impl std::str::FromStr for IdpKind {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        [Self::Oidc, Self::Cis2, Self::NhsLogin, Self::Saml]
            .into_iter()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| format!("`{name}` is not oidc, cis2, nhs_login or saml"))
    }
}

impl std::fmt::Display for IdpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One upstream identity provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdpConfig {
    #[serde(skip)]
    pub id: String,
    pub kind: IdpKind,
    pub name: String,
    /// Compared exactly with the discovery document and every ID token (CIS2's has `:443`).
    pub issuer: String,
    /// Our client id at an OpenID provider (not used for SAML).
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<Secret>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// PKCS#8 PEM private key for `private_key_jwt` at the provider's token endpoint.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    #[serde(default)]
    pub private_key_alg: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// ID-token signature algorithms accepted (never `none`, never HMAC).
    #[serde(default)]
    pub id_token_algs: Vec<String>,
    #[serde(default)]
    pub use_userinfo: Option<bool>,
    #[serde(default = "default_discovery_cache")]
    pub discovery_cache_secs: u64,
    #[serde(default)]
    pub dev_only: bool,
    #[serde(default)]
    pub claims: ClaimMapping,
    /// CIS2: `acr_values` to request (e.g. `AAL3_ANY` for smartcard-only apps).
    #[serde(default)]
    pub acr_values: Option<String>,
    #[serde(default = "default_min_aal")]
    pub min_authentication_assurance_level: u8,
    #[serde(default = "default_min_ial")]
    pub min_id_assurance_level: u8,
    /// CIS2: the sign-in must be this recent (`auth_time`).
    #[serde(default = "default_auth_age")]
    pub max_auth_age_secs: i64,
    /// CIS2: ask the user to choose a role (`selectedrole` scope with `prompt=login`).
    #[serde(default = "yes")]
    pub select_role: bool,
    /// NHS login: vectors of trust to request; the returned `vot` must be one of them.
    #[serde(default)]
    pub vtr: Vec<String>,
    /// Session limits for identities from this provider (NHS login: 30 min idle, 12 h).
    #[serde(default)]
    pub session_idle_secs: Option<i64>,
    #[serde(default)]
    pub session_absolute_secs: Option<i64>,
    /// Accept OIDC back-channel logout tokens at `/federation/backchannel-logout/{id}`.
    #[serde(default)]
    pub backchannel_logout: bool,
    /// Let trusted EHRs present this provider's ID tokens as the user in `POST /launch`.
    #[serde(default)]
    pub accept_presented_tokens: bool,
    /// Partner apps may exchange this provider's ID tokens (OIDC: `aud` must be `client_id` or
    /// one of `presented_audiences`) or signed assertions (SAML: Audience our entity ID,
    /// Recipient our token endpoint) for ours at the token endpoint (RFC 8693).
    #[serde(default)]
    pub accept_exchange: bool,
    /// Our other client ids at this provider whose ID tokens an EHR may present (the
    /// `client_id` above is always accepted).
    #[serde(default)]
    pub presented_audiences: Vec<String>,
    /// A presented token's sign-in (`auth_time`) may be this old: a CIS2 session lasts a shift.
    #[serde(default = "default_presented_age")]
    pub presented_max_auth_age_secs: i64,
    /// `kind = "saml"`: the identity provider's metadata and our rules for it. `issuer` is its
    /// entity ID; `[claims]` names its attributes (`subject` = `NameID` unless an attribute).
    #[serde(default)]
    pub saml: SamlIdpSettings,
}

/// A SAML 2.0 identity provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamlIdpSettings {
    /// The provider's metadata (its signing certificates and endpoints): a file, or a URL fetched
    /// and cached for `discovery_cache_secs`.
    pub metadata_file: Option<PathBuf>,
    pub metadata_url: Option<String>,
    /// This provider requires signed AuthnRequests: a missing `federation.saml.key_file` is then a
    /// startup error. (With a key, every request is signed anyway.)
    pub sign_requests: bool,
    /// Signature algorithms accepted on responses (`rsa-sha256`, `rsa-sha384`, `rsa-sha512`,
    /// `ecdsa-sha256`, `ecdsa-sha384`, `ecdsa-sha512`); SHA-1 never.
    pub signature_algorithms: Vec<String>,
    /// Clock skew allowed on `IssueInstant`, `NotBefore` and `NotOnOrAfter`.
    pub max_skew_secs: i64,
    /// The response and assertion must have been issued this recently.
    pub max_issue_delay_secs: i64,
    /// Ask the provider to sign the user in again (`ForceAuthn`).
    pub force_authn: bool,
    /// Assurance of identities from this provider on the 0-3 scale (a care home's own IdP: 2).
    pub assurance: u8,
}

impl Default for SamlIdpSettings {
    fn default() -> Self {
        Self {
            metadata_file: None,
            metadata_url: None,
            sign_requests: false,
            signature_algorithms: vec!["rsa-sha256".into(), "rsa-sha512".into(), "ecdsa-sha256".into()],
            max_skew_secs: 120,
            max_issue_delay_secs: 300,
            force_authn: false,
            assurance: 2,
        }
    }
}

/// The accepted names of SAML signature algorithms.
pub const SAML_ALGS: [&str; 6] =
    ["rsa-sha256", "rsa-sha384", "rsa-sha512", "ecdsa-sha256", "ecdsa-sha384", "ecdsa-sha512"];

fn default_discovery_cache() -> u64 {
    3600
}
fn default_min_aal() -> u8 {
    2
}
fn default_min_ial() -> u8 {
    3
}
fn default_auth_age() -> i64 {
    300
}
fn default_presented_age() -> i64 {
    43_200
}
fn yes() -> bool {
    true
}

impl Default for IdpConfig {
    /// A generic OIDC provider with the same defaults a provider file gets.
    fn default() -> Self {
        Self {
            id: String::new(),
            kind: IdpKind::Oidc,
            name: String::new(),
            issuer: String::new(),
            client_id: String::new(),
            client_secret: None,
            client_secret_file: None,
            private_key_file: None,
            private_key_alg: None,
            scopes: Vec::new(),
            id_token_algs: Vec::new(),
            use_userinfo: None,
            discovery_cache_secs: default_discovery_cache(),
            dev_only: false,
            claims: ClaimMapping::default(),
            acr_values: None,
            min_authentication_assurance_level: default_min_aal(),
            min_id_assurance_level: default_min_ial(),
            max_auth_age_secs: default_auth_age(),
            select_role: true,
            vtr: Vec::new(),
            session_idle_secs: None,
            session_absolute_secs: None,
            backchannel_logout: false,
            accept_presented_tokens: false,
            accept_exchange: false,
            presented_audiences: Vec::new(),
            presented_max_auth_age_secs: default_presented_age(),
            saml: SamlIdpSettings::default(),
        }
    }
}

/// NHS login's default: P9 with any strong credential.
pub const DEFAULT_VTR: [&str; 3] = ["P9.Cp.Cd", "P9.Cp.Ck", "P9.Cm"];

const ALGS: [&str; 5] = ["RS256", "RS384", "RS512", "ES256", "ES384"];

impl IdpConfig {
    /// The accepted ID-token algorithms, with the kind's default.
    pub fn id_token_algs(&self) -> Vec<String> {
        if !self.id_token_algs.is_empty() {
            return self.id_token_algs.clone();
        }
        vec![if self.kind == IdpKind::NhsLogin { "RS512" } else { "RS256" }.to_owned()]
    }

    /// Session limits (idle, absolute) for identities from this provider: as configured, else
    /// NHS login's 30 minutes idle and 12 hours.
    pub fn session_limits(&self) -> (Option<i64>, Option<i64>) {
        let nhs_login = self.kind == IdpKind::NhsLogin;
        (
            self.session_idle_secs.or(nhs_login.then_some(1800)),
            self.session_absolute_secs.or(nhs_login.then_some(43_200)),
        )
    }

    /// The requested vectors of trust (NHS login).
    pub fn vtr(&self) -> Vec<String> {
        if self.vtr.is_empty() { DEFAULT_VTR.iter().map(|s| (*s).to_owned()).collect() } else { self.vtr.clone() }
    }
}

/// Loads every provider file; problems are reported as `{file}: {field}`.
pub(super) fn load_idps(config: &Config, problems: &mut Vec<ConfigProblem>) -> Vec<IdpConfig> {
    let dir = &config.federation.idps_dir;
    let paths = match super::toml_files(dir) {
        Ok(paths) => paths,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            problems.push(ConfigProblem::new("federation.idps_dir", format!("cannot read `{}`: {e}", dir.display())));
            return Vec::new();
        }
    };
    let loopback = config.public_url_is_loopback();
    let mut out = Vec::new();
    for path in paths {
        if let Some(idp) = read_idp(&path, problems) {
            if idp.dev_only && !loopback {
                continue;
            }
            out.push(idp);
        }
    }
    out
}

/// A SAML provider: an entity ID, one metadata source, known algorithms, sane limits.
fn check_saml(idp: &mut IdpConfig, base: &Path, push: &mut impl FnMut(&str, String)) {
    if idp.issuer.is_empty() {
        push("issuer", "the provider's entity ID is required".into());
    }
    let saml = &mut idp.saml;
    match (&saml.metadata_file, &saml.metadata_url) {
        (Some(file), None) => {
            let full = base.join(file);
            match std::fs::read_to_string(&full) {
                Ok(xml) if xml.contains("EntityDescriptor") => saml.metadata_file = Some(full),
                Ok(_) => push("saml.metadata_file", format!("`{}` is not SAML metadata", file.display())),
                Err(e) => push("saml.metadata_file", format!("cannot read `{}`: {e}", file.display())),
            }
        }
        (None, Some(url)) => {
            if let Err(why) = check_https_or_loopback(url) {
                push("saml.metadata_url", why);
            }
        }
        _ => push("saml.metadata_file", "give metadata_file or metadata_url (one)".into()),
    }
    for (i, alg) in saml.signature_algorithms.iter().enumerate() {
        if !SAML_ALGS.contains(&alg.as_str()) {
            push(
                &format!("saml.signature_algorithms[{i}]"),
                format!("`{alg}` is not one of {} (SHA-1 is never accepted)", SAML_ALGS.join(", ")),
            );
        }
    }
    if saml.signature_algorithms.is_empty() {
        push("saml.signature_algorithms", "at least one algorithm is needed".into());
    }
    if !(0..=600).contains(&saml.max_skew_secs) || !(1..=3600).contains(&saml.max_issue_delay_secs) {
        push("saml.max_skew_secs", "skew is 0-600 s and the issue delay 1-3600 s".into());
    }
    if saml.assurance > 3 {
        push("saml.assurance", "assurance is 0 to 3".into());
    }
    if idp.accept_presented_tokens {
        push("accept_presented_tokens", "only OIDC providers' ID tokens can be presented".into());
    }
}

fn read_idp(path: &Path, problems: &mut Vec<ConfigProblem>) -> Option<IdpConfig> {
    let label = path.display().to_string();
    let mut push =
        |field: &str, message: String| problems.push(ConfigProblem::new(format!("{label}: {field}"), message));
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            push("(file)", format!("cannot read the file: {e}"));
            return None;
        }
    };
    let mut idp: IdpConfig = match toml::from_str::<toml::Value>(&text)
        .map_err(|e| e.to_string())
        .and_then(|v| serde_path_to_error::deserialize(v).map_err(|e| format!("{}: {}", e.path(), e.inner())))
    {
        Ok(idp) => idp,
        Err(e) => {
            push("(file)", e);
            return None;
        }
    };
    idp.id = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
    let before = problems.len();
    let mut push =
        |field: &str, message: String| problems.push(ConfigProblem::new(format!("{label}: {field}"), message));
    if !idp.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') || idp.id.is_empty() {
        push("(file name)", "a provider id (the file name) is letters, digits, - and _".into());
    }
    let base = path.parent().unwrap_or(Path::new("."));
    if idp.kind == IdpKind::Saml {
        check_saml(&mut idp, base, &mut push);
        return (problems.len() == before).then_some(idp);
    }
    if let Err(why) = check_https_or_loopback(&idp.issuer) {
        push("issuer", why);
    }
    if idp.client_id.is_empty() {
        push("client_id", "is required".into());
    }
    if let Some(file) = idp.client_secret_file.take() {
        if idp.client_secret.is_some() {
            push("client_secret_file", "give client_secret or client_secret_file, not both".into());
        }
        match std::fs::read_to_string(base.join(&file)) {
            Ok(s) => idp.client_secret = Some(Secret::new(s.trim_end_matches(['\r', '\n']))),
            Err(e) => push("client_secret_file", format!("cannot read `{}`: {e}", file.display())),
        }
    }
    if let Some(file) = &idp.private_key_file {
        let full = base.join(file);
        match std::fs::read_to_string(&full) {
            Ok(pem) if pem.contains("BEGIN PRIVATE KEY") => idp.private_key_file = Some(full),
            Ok(_) => push("private_key_file", format!("`{}` is not a PKCS#8 PEM private key", file.display())),
            Err(e) => push("private_key_file", format!("cannot read `{}`: {e}", file.display())),
        }
    }
    match (&idp.client_secret, &idp.private_key_file) {
        (Some(_), Some(_)) => push("private_key_file", "give a client secret or a private key, not both".into()),
        (None, None) => push("client_secret", "a provider needs a client secret or a private_key_file".into()),
        _ => {}
    }
    if idp.kind == IdpKind::NhsLogin && idp.private_key_file.is_none() {
        push("private_key_file", "NHS login requires private_key_jwt client authentication".into());
    }
    if let Some(alg) = &idp.private_key_alg {
        if !ALGS.contains(&alg.as_str()) {
            push("private_key_alg", format!("`{alg}` is not one of {}", ALGS.join(", ")));
        }
    }
    for (i, alg) in idp.id_token_algs.iter().enumerate() {
        if !ALGS.contains(&alg.as_str()) {
            push(
                &format!("id_token_algs[{i}]"),
                format!("`{alg}` is not one of {} (none and HMAC are never accepted)", ALGS.join(", ")),
            );
        }
    }
    for (i, v) in idp.vtr.iter().enumerate() {
        let valid = v.split('.').next().is_some_and(|p| matches!(p, "P0" | "P5" | "P9"))
            && v.split('.').skip(1).all(|c| matches!(c, "Cp" | "Cd" | "Ck" | "Cm"));
        if !valid {
            push(&format!("vtr[{i}]"), format!("`{v}` is not a vector of trust such as P9.Cp.Cd"));
        }
    }
    if idp.accept_presented_tokens && idp.kind == IdpKind::NhsLogin {
        push(
            "accept_presented_tokens",
            "EHRs present staff identities; NHS login tokens are not accepted in a launch".into(),
        );
    }
    if idp.presented_max_auth_age_secs <= 0 {
        push("presented_max_auth_age_secs", "must be positive".into());
    }
    if !(1..=3).contains(&idp.min_authentication_assurance_level) || !(0..=3).contains(&idp.min_id_assurance_level) {
        push("min_authentication_assurance_level", "assurance levels are 1 to 3".into());
    }
    (problems.len() == before).then_some(idp)
}
