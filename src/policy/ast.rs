//! The policy language as parsed from `policies/*.toml`: platform roles, role mapping and access
//! rules, each remembering the file and line it came from. Conditions are a small fixed
//! vocabulary written as short phrases (`patient_in_context`, `assurance >= 3`,
//! `client in [nhs111, ehr-flag]`, `not restricted`).

use std::path::Path;

use serde::Deserialize;

use crate::domain::scope::Permissions;

/// Where something was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A policy error: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub origin: Origin,
    pub message: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

/// One condition of the fixed vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Condition {
    /// The record's patient is the patient in the launch context.
    PatientInContext,
    /// The caller is the record's patient (`fhirUser` = `Patient/{id}`).
    SubjectIsPatient,
    /// The caller is a registered proxy (RelatedPerson) of the record's patient.
    SubjectIsProxy,
    /// The caller's organisation manages the record.
    SameOrganisation,
    /// The record is PDS-restricted (sensitive).
    Restricted,
    /// The request states a break-glass reason.
    BreakGlass,
    /// The caller also holds a platform role.
    HasRole(String),
    /// Assurance at least N (0-3).
    AssuranceAtLeast(u8),
    /// The client is one of these ids.
    ClientIn(Vec<String>),
    /// Local time of day within [start, end) minutes.
    Hours(u16, u16),
    /// An update only adds notes (`CarePlan.note`) and changes nothing else.
    OnlyNotesChanged,
    /// The request is the availability check: it learns whether a plan exists, never its content.
    AvailabilityCheck,
    /// The token is delegated: someone acts for its subject (an RFC 8693 `act` claim).
    Delegated,
    /// A sharing choice the record's patient has made (an active FHIR `Consent`) excludes this
    /// caller's organisation from this record.
    ConsentRefuses,
    /// The record's patient lets this caller (their proxy's RelatedPerson) add notes to their plan.
    PatientAllowsNotes,
    Not(Box<Condition>),
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PatientInContext => f.write_str("patient_in_context"),
            Self::SubjectIsPatient => f.write_str("subject_is_patient"),
            Self::SubjectIsProxy => f.write_str("subject_is_proxy"),
            Self::SameOrganisation => f.write_str("same_organisation"),
            Self::Restricted => f.write_str("restricted"),
            Self::BreakGlass => f.write_str("break_glass"),
            Self::HasRole(r) => write!(f, "has_role {r}"),
            Self::AssuranceAtLeast(n) => write!(f, "assurance >= {n}"),
            Self::ClientIn(ids) => write!(f, "client in [{}]", ids.join(", ")),
            Self::Hours(a, b) => write!(f, "hours {:02}:{:02}-{:02}:{:02}", a / 60, a % 60, b / 60, b % 60),
            Self::OnlyNotesChanged => f.write_str("only_notes_changed"),
            Self::AvailabilityCheck => f.write_str("availability_check"),
            Self::Delegated => f.write_str("delegated"),
            Self::ConsentRefuses => f.write_str("consent_refuses"),
            Self::PatientAllowsNotes => f.write_str("patient_allows_notes"),
            Self::Not(c) => write!(f, "not {c}"),
        }
    }
}

/// `HH:MM` as minutes since midnight.
pub(crate) fn minutes(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    let (h, m) = (h.parse::<u16>().ok()?, m.parse::<u16>().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl Condition {
    /// Whether this condition is `other`, or `not other`.
    pub fn mentions(&self, other: &Condition) -> bool {
        match self {
            Self::Not(inner) => inner.mentions(other),
            this => this == other,
        }
    }

    /// Parses one condition phrase.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("not ") {
            return Ok(Self::Not(Box::new(Self::parse(rest)?)));
        }
        match text {
            "patient_in_context" => return Ok(Self::PatientInContext),
            "subject_is_patient" => return Ok(Self::SubjectIsPatient),
            "subject_is_proxy" => return Ok(Self::SubjectIsProxy),
            "same_organisation" => return Ok(Self::SameOrganisation),
            "restricted" => return Ok(Self::Restricted),
            "break_glass" => return Ok(Self::BreakGlass),
            "only_notes_changed" => return Ok(Self::OnlyNotesChanged),
            "availability_check" => return Ok(Self::AvailabilityCheck),
            "delegated" => return Ok(Self::Delegated),
            "consent_refuses" => return Ok(Self::ConsentRefuses),
            "patient_allows_notes" => return Ok(Self::PatientAllowsNotes),
            _ => {}
        }
        if let Some(role) = text.strip_prefix("has_role ") {
            return Ok(Self::HasRole(role.trim().to_owned()));
        }
        if let Some(level) = text.strip_prefix("assurance >= ") {
            return level
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= 3)
                .map(Self::AssuranceAtLeast)
                .ok_or_else(|| "assurance is 0 to 3".to_owned());
        }
        if let Some(list) = text.strip_prefix("client in ") {
            let inner =
                list.trim().strip_prefix('[').and_then(|l| l.strip_suffix(']')).ok_or("write `client in [id, id]`")?;
            let ids: Vec<String> = inner.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
            return if ids.is_empty() {
                Err("`client in` needs at least one client id".into())
            } else {
                Ok(Self::ClientIn(ids))
            };
        }
        if let Some(range) = text.strip_prefix("hours ") {
            let (a, b) = range.trim().split_once('-').ok_or("write `hours 08:00-18:00`")?;
            return match (minutes(a), minutes(b)) {
                (Some(a), Some(b)) if a < b => Ok(Self::Hours(a, b)),
                _ => Err("write `hours 08:00-18:00` (start before end)".into()),
            };
        }
        Err(format!(
            "`{text}` is not a condition; expected one of patient_in_context, subject_is_patient, subject_is_proxy, \
             same_organisation, restricted, break_glass, only_notes_changed, availability_check, delegated, has_role R, \
             assurance >= N, \
             client in [..], hours HH:MM-HH:MM, or `not` before one of them"
        ))
    }

    /// Whether the condition depends only on who asks (not on the record): used to decide which
    /// scopes a token may carry at all.
    pub fn is_about_caller(&self) -> bool {
        match self {
            Self::HasRole(_) | Self::AssuranceAtLeast(_) | Self::ClientIn(_) => true,
            Self::Not(inner) => inner.is_about_caller(),
            _ => false,
        }
    }
}

/// Effect of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Permit,
    Forbid,
}

/// Something a permit asks the guard to do as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Obligation {
    /// Audit the access as high importance.
    AuditHigh,
    /// Tell the privacy officer.
    AlertPrivacyOfficer,
}

/// An access rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: String,
    pub effect: Effect,
    pub roles: Vec<String>,
    /// Resource types; `*` is any.
    pub resources: Vec<String>,
    pub interactions: Permissions,
    pub conditions: Vec<Condition>,
    pub obligations: Vec<Obligation>,
    pub description: String,
    pub origin: Origin,
}

/// A role-mapping entry: facts about a signed-in identity (or a system client) -> a role.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mapping {
    pub role: String,
    /// `cis2`, `nhs_login`, `oidc`, `ehr`, `dev`, `system`, or `any`.
    pub source: String,
    pub providers: Vec<String>,
    pub issuers: Vec<String>,
    /// National RBAC role codes (any of).
    pub role_codes: Vec<String>,
    /// National RBAC activity codes (any of).
    pub activity_codes: Vec<String>,
    /// NHS login: at least this proofing level (`P5`, `P9`).
    pub min_proofing: Option<u8>,
    /// `fhirUser` resource type (`Patient`, `RelatedPerson`, `Practitioner`).
    pub fhir_user_type: Option<String>,
    /// System clients by id.
    pub clients: Vec<String>,
    pub origin: Origin,
}

/// A whole policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// Role name -> description, in declaration order.
    pub roles: Vec<(String, String, Origin)>,
    pub mappings: Vec<Mapping>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    id: String,
    effect: String,
    roles: Vec<String>,
    resources: Vec<String>,
    interactions: String,
    #[serde(default)]
    when: Vec<String>,
    #[serde(default)]
    obligations: Vec<String>,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    role: String,
    source: String,
    #[serde(default)]
    providers: Vec<String>,
    #[serde(default)]
    issuers: Vec<String>,
    #[serde(default)]
    role_codes: Vec<String>,
    #[serde(default)]
    activity_codes: Vec<String>,
    #[serde(default)]
    min_proofing: Option<String>,
    #[serde(default)]
    fhir_user_type: Option<String>,
    #[serde(default)]
    clients: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    roles: Option<toml::Spanned<toml::Table>>,
    #[serde(default)]
    map: Vec<toml::Spanned<toml::Value>>,
    #[serde(default)]
    rule: Vec<toml::Spanned<toml::Value>>,
}

const SOURCES: [&str; 9] = ["cis2", "nhs_login", "oidc", "ehr", "dev", "system", "saml", "partner", "any"];

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// Parses `interactions` such as `rs` or `cruds`.
pub fn parse_interactions(text: &str) -> Result<Permissions, String> {
    let mut bits = 0u8;
    for ch in text.chars() {
        let bit = match ch {
            'c' => Permissions::CREATE,
            'r' => Permissions::READ,
            'u' => Permissions::UPDATE,
            'd' => Permissions::DELETE,
            's' => Permissions::SEARCH,
            other => return Err(format!("`{other}` is not an interaction; use letters of cruds")),
        };
        bits |= bit.bits();
    }
    if bits == 0 {
        Err("interactions must name at least one of c r u d s".into())
    } else {
        Ok(Permissions::from_bits(bits))
    }
}

/// Parses one policy file, adding to `policy`; every problem found goes to `errors`.
pub fn parse_file(path: &Path, text: &str, policy: &mut Policy, errors: &mut Vec<PolicyError>) {
    let file = path.display().to_string();
    let at = |offset: usize| Origin { file: file.clone(), line: line_of(text, offset) };
    let parsed: PolicyFile = match toml::from_str(text) {
        Ok(p) => p,
        Err(e) => {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            errors.push(PolicyError {
                origin: Origin { file: file.clone(), line },
                message: format!("not valid policy TOML: {}", e.message()),
            });
            return;
        }
    };
    let (roles_start, roles) = parsed.roles.map(|r| (r.span().start, r.into_inner())).unwrap_or_default();
    for (name, description) in roles {
        let origin = at(roles_start);
        match description.as_str() {
            Some(d) => policy.roles.push((name, d.to_owned(), origin)),
            None => errors.push(PolicyError { origin, message: format!("role `{name}` needs a description string") }),
        }
    }
    for entry in parsed.map {
        let origin = at(entry.span().start);
        let raw: MappingFile = match entry.into_inner().try_into() {
            Ok(m) => m,
            Err(e) => {
                errors.push(PolicyError { origin, message: format!("a [[map]] entry is not valid: {e}") });
                continue;
            }
        };
        if !SOURCES.contains(&raw.source.as_str()) {
            errors.push(PolicyError {
                origin: origin.clone(),
                message: format!("source `{}` is not one of {}", raw.source, SOURCES.join(", ")),
            });
        }
        let min_proofing = match raw.min_proofing.as_deref() {
            None => None,
            Some("P0") => Some(0),
            Some("P5") => Some(5),
            Some("P9") => Some(9),
            Some(other) => {
                errors.push(PolicyError {
                    origin: origin.clone(),
                    message: format!("min_proofing `{other}` is not P0, P5 or P9"),
                });
                None
            }
        };
        policy.mappings.push(Mapping {
            role: raw.role,
            source: raw.source,
            providers: raw.providers,
            issuers: raw.issuers,
            role_codes: raw.role_codes,
            activity_codes: raw.activity_codes,
            min_proofing,
            fhir_user_type: raw.fhir_user_type,
            clients: raw.clients,
            origin,
        });
    }
    for entry in parsed.rule {
        let origin = at(entry.span().start);
        let raw: RuleFile = match entry.into_inner().try_into() {
            Ok(r) => r,
            Err(e) => {
                errors.push(PolicyError { origin, message: format!("a [[rule]] is not valid: {e}") });
                continue;
            }
        };
        let effect = match raw.effect.as_str() {
            "permit" => Effect::Permit,
            "forbid" => Effect::Forbid,
            other => {
                errors.push(PolicyError {
                    origin: origin.clone(),
                    message: format!("effect `{other}` is not permit or forbid"),
                });
                Effect::Forbid
            }
        };
        let interactions = parse_interactions(&raw.interactions).unwrap_or_else(|e| {
            errors.push(PolicyError { origin: origin.clone(), message: format!("rule `{}`: {e}", raw.id) });
            Permissions::default()
        });
        let mut conditions = Vec::new();
        for phrase in &raw.when {
            match Condition::parse(phrase) {
                Ok(c) => conditions.push(c),
                Err(e) => {
                    errors.push(PolicyError { origin: origin.clone(), message: format!("rule `{}`: {e}", raw.id) })
                }
            }
        }
        let mut obligations = Vec::new();
        for o in &raw.obligations {
            match o.as_str() {
                "audit_high" => obligations.push(Obligation::AuditHigh),
                "alert_privacy_officer" => obligations.push(Obligation::AlertPrivacyOfficer),
                other => errors.push(PolicyError {
                    origin: origin.clone(),
                    message: format!(
                        "rule `{}`: obligation `{other}` is not audit_high or alert_privacy_officer",
                        raw.id
                    ),
                }),
            }
        }
        policy.rules.push(Rule {
            id: raw.id,
            effect,
            roles: raw.roles,
            resources: raw.resources,
            interactions,
            conditions,
            obligations,
            description: raw.description,
            origin,
        });
    }
}
