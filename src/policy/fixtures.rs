//! Decision fixtures (`policies/tests/*.toml`): each case is an identity (mapped to roles by the
//! policy, or roles given directly), a request, and the expected decision and deciding rule. The
//! runner asks both the compiled evaluator and the interpreter.

use std::path::Path;

use serde::Deserialize;

use super::ast::{minutes, parse_interactions};
use super::mapping::{Facts, proofing_of, roles_for};
use super::{AccessRequest, LoadedPolicy, interpret};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub role_codes: Vec<String>,
    #[serde(default)]
    pub activity_codes: Vec<String>,
    /// NHS login vector of trust, e.g. `P9.Cp.Cd`.
    #[serde(default)]
    pub vot: Option<String>,
    #[serde(default)]
    pub fhir_user: Option<String>,
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub org: Option<String>,
    #[serde(default)]
    pub assurance: u8,
    #[serde(default)]
    pub context_patient: Option<String>,
    #[serde(default)]
    pub proxy_for: Vec<String>,
    #[serde(default)]
    pub break_glass: bool,
    /// `HH:MM` UK local time; default 10:00.
    #[serde(default)]
    pub time: Option<String>,
    /// An instant (RFC 3339, e.g. `2026-03-29T07:30:00Z`), turned into UK local time as the
    /// guard does: for fixtures across the clock changes. Give `time` or `at`, not both.
    #[serde(default)]
    pub at: Option<String>,
    #[serde(default)]
    pub system: bool,
    pub resource: String,
    pub interaction: String,
    #[serde(default)]
    pub record_patient: Option<String>,
    #[serde(default)]
    pub record_org: Option<String>,
    #[serde(default)]
    pub restricted: bool,
    #[serde(default)]
    pub only_notes_changed: bool,
    #[serde(default)]
    pub availability_check: bool,
    #[serde(default)]
    pub delegated: bool,
    /// The patient's sharing choices exclude this caller from the record.
    #[serde(default)]
    pub consent_refuses: bool,
    /// The patient lets this caller add notes to their plan.
    #[serde(default)]
    pub patient_allows_notes: bool,
    /// `permit` or `deny`.
    pub expect: String,
    /// The rule expected to decide.
    pub rule: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureFile {
    case: Vec<Case>,
}

/// One fixture's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub file: String,
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

impl Case {
    /// The roles this case's caller has.
    pub fn roles(&self, policy: &LoadedPolicy) -> Vec<String> {
        self.roles.clone().unwrap_or_else(|| {
            let facts = Facts {
                source: &self.source,
                provider: &self.provider,
                issuer: None,
                role_codes: &self.role_codes,
                activity_codes: &self.activity_codes,
                proofing: proofing_of(self.vot.as_deref()),
                fhir_user: self.fhir_user.as_deref(),
                client_id: &self.client_id,
            };
            roles_for(&policy.source, &facts)
        })
    }

    /// The request, borrowing from the case and `roles`.
    pub fn request<'a>(&'a self, roles: &'a [String]) -> Result<AccessRequest<'a>, String> {
        let interaction = parse_interactions(&self.interaction)?;
        let minute = match (self.time.as_deref(), self.at.as_deref()) {
            (None, None) => 600,
            (Some(t), None) => minutes(t).ok_or("time is HH:MM")?,
            (None, Some(at)) => {
                let at = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| "at is an RFC 3339 instant such as 2026-03-29T07:30:00Z")?;
                crate::clock::uk_minute_of_day(at.unix_timestamp())
            }
            (Some(_), Some(_)) => return Err("give `time` or `at`, not both".into()),
        };
        Ok(AccessRequest {
            roles,
            org: self.org.as_deref(),
            client_id: &self.client_id,
            fhir_user: self.fhir_user.as_deref(),
            context_patient: self.context_patient.as_deref(),
            assurance: self.assurance,
            proxy_for: &self.proxy_for,
            break_glass: self.break_glass,
            minute_of_day: minute,
            system: self.system,
            resource_type: &self.resource,
            interaction,
            record_patient: self.record_patient.as_deref(),
            record_org: self.record_org.as_deref(),
            restricted: self.restricted,
            only_notes_changed: self.only_notes_changed,
            availability_check: self.availability_check,
            delegated: self.delegated,
            consent_refuses: self.consent_refuses,
            patient_allows_notes: self.patient_allows_notes,
        })
    }
}

/// Reads every fixture file in `dir`, in file-name order, with the file each case came from.
pub fn load_cases(dir: &Path) -> Result<Vec<(String, Case)>, String> {
    let paths = crate::config::toml_files(dir).map_err(|e| format!("cannot read `{}`: {e}", dir.display()))?;
    let mut cases = Vec::new();
    for path in paths {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{file}: {e}"))?;
        let parsed: FixtureFile = toml::from_str(&text).map_err(|e| format!("{file}: {}", e.message()))?;
        cases.extend(parsed.case.into_iter().map(|case| (file.clone(), case)));
    }
    Ok(cases)
}

/// Runs every fixture file in `dir`.
pub fn run_dir(policy: &LoadedPolicy, dir: &Path) -> Result<Vec<Outcome>, String> {
    let mut out = Vec::new();
    for (file, case) in load_cases(dir)? {
        let roles = case.roles(policy);
        let (passed, detail) = match case.request(&roles) {
            Err(e) => (false, e),
            Ok(request) => {
                let compiled = policy.compiled.decide(&request);
                let reference = interpret::decide(&policy.source, &request);
                let effect = if compiled.is_permit() { "permit" } else { "deny" };
                if compiled != reference {
                    (
                        false,
                        format!(
                            "compiled says {effect} by `{}`, the interpreter {} by `{}`",
                            compiled.rule(),
                            if reference.is_permit() { "permit" } else { "deny" },
                            reference.rule()
                        ),
                    )
                } else if effect != case.expect || compiled.rule() != case.rule {
                    (
                        false,
                        format!(
                            "expected {} by `{}`, got {effect} by `{}` (roles {roles:?})",
                            case.expect,
                            case.rule,
                            compiled.rule()
                        ),
                    )
                } else {
                    (true, format!("{effect} by `{}`", compiled.rule()))
                }
            }
        };
        out.push(Outcome { file, name: case.name.clone(), passed, detail });
    }
    Ok(out)
}
