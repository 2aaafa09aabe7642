//! FHIR errors and their OperationOutcome bodies. The HTTP layer maps [`FhirError`] to a status
//! (and `WWW-Authenticate` per RFC 6750 for 401/403).

use serde_json::{Value, json};

/// One OperationOutcome issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: &'static str,
    /// FHIR issue-type code (`invalid`, `required`, `not-found`, ...).
    pub code: &'static str,
    pub diagnostics: String,
    /// FHIRPath of the offending element.
    pub expression: Option<String>,
}

/// Why a FHIR request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FhirError {
    /// No bearer token (401, `WWW-Authenticate: Bearer` without an error).
    NoToken,
    /// The token is not valid here (401 `invalid_token`).
    InvalidToken(String),
    /// A DPoP-bound token without a valid proof of its key, or a DPoP proof that does not hold
    /// (401, `WWW-Authenticate: DPoP` with `error` = `code`: `invalid_dpop_proof` or
    /// `invalid_token`).
    InvalidDpop { code: &'static str, why: String },
    /// The token's scopes do not cover the request (403 `insufficient_scope`).
    InsufficientScope(String),
    /// Refused for a reason the caller may read, such as a patient/ token writing another
    /// patient's plan (403).
    Denied { reason: String },
    /// The access policy said no (403). The caller reads only that the policy refused; the rule
    /// and its reason go to the audit record and `carebroker policy explain`, since a reason can
    /// itself disclose something (that a record is restricted, say).
    PolicyDenied { rule: String, reason: String },
    /// Missing (404).
    NotFound,
    /// Present but outside what the caller may see (patient in context, granular scope): also
    /// 404, indistinguishable from missing to the caller, but audited as a deny with `reason`.
    Hidden(String),
    /// PDS does not know the patient (404, saying so).
    UnknownPatient(String),
    /// PDS has invalidated the record (410).
    Invalidated(String),
    /// 400 with issues.
    BadRequest(Vec<Issue>),
    /// 422: well-formed but not a valid resource.
    Unprocessable(Vec<Issue>),
    /// 412: `If-Match` names another version.
    PreconditionFailed(String),
    /// 428: `If-Match` is required.
    PreconditionRequired,
    /// 415: the body is not FHIR JSON.
    UnsupportedMediaType,
    /// 503: a service carebroker depends on did not answer (PDS, the database, the audit log).
    Unavailable(String),
}

impl FhirError {
    pub fn bad_request(diagnostics: impl Into<String>) -> Self {
        Self::BadRequest(vec![Issue {
            severity: "error",
            code: "invalid",
            diagnostics: diagnostics.into(),
            expression: None,
        }])
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::NoToken | Self::InvalidToken(_) | Self::InvalidDpop { .. } => 401,
            Self::InsufficientScope(_) | Self::Denied { .. } | Self::PolicyDenied { .. } => 403,
            Self::NotFound | Self::Hidden(_) | Self::UnknownPatient(_) => 404,
            Self::Invalidated(_) => 410,
            Self::BadRequest(_) => 400,
            Self::Unprocessable(_) => 422,
            Self::PreconditionFailed(_) => 412,
            Self::PreconditionRequired => 428,
            Self::UnsupportedMediaType => 415,
            Self::Unavailable(_) => 503,
        }
    }

    /// The issues of this error.
    pub fn issues(&self) -> Vec<Issue> {
        let one = |code: &'static str, text: &str| {
            vec![Issue { severity: "error", code, diagnostics: text.to_owned(), expression: None }]
        };
        match self {
            Self::NoToken => one("login", "a bearer access token is required"),
            Self::InvalidToken(why) | Self::InvalidDpop { why, .. } => one("login", why),
            Self::InsufficientScope(why) => one("forbidden", why),
            Self::Denied { reason } => one("forbidden", reason),
            Self::PolicyDenied { .. } => one("forbidden", "the access policy does not permit this request"),
            Self::NotFound | Self::Hidden(_) => one("not-found", "no such resource"),
            Self::UnknownPatient(why) | Self::Invalidated(why) => one("not-found", why),
            Self::BadRequest(issues) | Self::Unprocessable(issues) => issues.clone(),
            Self::PreconditionFailed(why) => one("conflict", why),
            Self::PreconditionRequired => {
                one("required", "an update needs If-Match with the version it replaces, e.g. W/\"3\"")
            }
            Self::UnsupportedMediaType => one("not-supported", "send application/fhir+json"),
            Self::Unavailable(why) => one("transient", why),
        }
    }

    /// What the audit record says about this refusal: everything the caller is told, and for a
    /// policy refusal or a hidden record, the reason the caller is not told.
    pub fn audit_detail(&self) -> String {
        match self {
            Self::Hidden(reason) => reason.clone(),
            Self::PolicyDenied { rule, reason } => format!("{reason} (rule {rule})"),
            other => other.issues().into_iter().map(|i| i.diagnostics).collect::<Vec<_>>().join("; "),
        }
    }

    /// A refusal of access (scope, compartment, policy, token), as opposed to a bad request or a
    /// failure.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::InsufficientScope(_)
                | Self::Denied { .. }
                | Self::PolicyDenied { .. }
                | Self::Hidden(_)
                | Self::NoToken
                | Self::InvalidToken(_)
                | Self::InvalidDpop { .. }
        )
    }

    /// The OperationOutcome body.
    pub fn outcome(&self) -> Value {
        let issues: Vec<Value> = self
            .issues()
            .into_iter()
            .map(|i| {
                let mut v = json!({"severity": i.severity, "code": i.code, "diagnostics": i.diagnostics});
                if let Some(e) = i.expression {
                    v["expression"] = json!([e]);
                }
                v
            })
            .collect();
        json!({"resourceType": "OperationOutcome", "issue": issues})
    }
}

impl From<crate::store::StoreError> for FhirError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "store failure in the FHIR API");
        Self::Unavailable("the record store is unavailable; try again".into())
    }
}

impl From<crate::audit::AuditError> for FhirError {
    fn from(e: crate::audit::AuditError) -> Self {
        tracing::error!(error = %e, "audit failure in the FHIR API");
        Self::Unavailable("the access could not be audited, so it was not performed; try again".into())
    }
}
