//! The Cedar side of the policy benchmark: `careplan.cedar` and the entities, request and
//! context it expects, built from one of our `AccessRequest`s. Shared by the benchmark and by
//! the test that holds the Cedar translation to the shipped policy's decisions.

use std::collections::HashMap;
use std::str::FromStr;

use carebroker::domain::scope::Permissions;
use carebroker::policy::fixtures::{Case, load_cases};
use carebroker::policy::{AccessRequest, LoadedPolicy, interpret, load_dir};
use cedar_policy::{Authorizer, Context, Decision, Entities, EntityUid, PolicyId, PolicySet, Request};
use serde_json::json;

pub const POLICY: &str = include_str!("careplan.cedar");

/// The shipped policy (`policies/`) and its decision fixtures with each case's roles mapped.
pub struct Fixtures {
    pub policy: LoadedPolicy,
    pub cases: Vec<Case>,
    roles: Vec<Vec<String>>,
}

impl Fixtures {
    pub fn load() -> Self {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let policy = load_dir(&dir).unwrap_or_else(|e| panic!("policies/ loads: {e:?}"));
        let cases: Vec<Case> =
            load_cases(&dir.join("tests")).expect("fixtures load").into_iter().map(|(_, case)| case).collect();
        let roles = cases.iter().map(|c| c.roles(&policy)).collect();
        Self { policy, cases, roles }
    }

    /// Each case's request, in fixture order.
    pub fn requests(&self) -> Vec<AccessRequest<'_>> {
        self.cases.iter().zip(&self.roles).map(|(c, r)| c.request(r).expect("fixture request")).collect()
    }

    pub fn names(&self) -> Vec<&str> {
        self.cases.iter().map(|c| c.name.as_str()).collect()
    }
}

/// The policy set with a map from Cedar's policy ids to our rule ids (the `@id` annotations).
pub struct CedarPolicy {
    pub set: PolicySet,
    rule_ids: HashMap<PolicyId, String>,
}

/// One question, prepared for Cedar ahead of timing.
pub struct CedarQuestion {
    pub request: Request,
    pub entities: Entities,
}

impl CedarPolicy {
    pub fn load() -> Self {
        Self::parse(POLICY)
    }

    pub fn parse(text: &str) -> Self {
        let set = PolicySet::from_str(text).expect("the Cedar policy parses");
        let rule_ids = set
            .policies()
            .map(|p| (p.id().clone(), p.annotation("id").expect("every Cedar policy has @id").to_owned()))
            .collect();
        Self { set, rule_ids }
    }

    /// Permit or deny, and the rule ids Cedar gives as reasons.
    pub fn decide(&self, authorizer: &Authorizer, q: &CedarQuestion) -> (bool, Vec<String>) {
        let response = authorizer.is_authorized(&q.request, &self.set, &q.entities);
        let errors: Vec<String> = response.diagnostics().errors().map(ToString::to_string).collect();
        assert!(errors.is_empty(), "Cedar evaluation errors: {errors:?}");
        let mut reasons: Vec<String> = response.diagnostics().reason().map(|id| self.rule_ids[id].clone()).collect();
        reasons.sort();
        (response.decision() == Decision::Allow, reasons)
    }
}

fn action(p: Permissions) -> &'static str {
    match p.bits() {
        1 => "c",
        2 => "r",
        4 => "u",
        8 => "d",
        _ => "s",
    }
}

fn uid(text: &str) -> EntityUid {
    EntityUid::from_str(text).expect("entity uid")
}

/// The Cedar request and entities for `r`.
pub fn question(r: &AccessRequest<'_>) -> CedarQuestion {
    let patient_id = r.fhir_user.and_then(|u| u.strip_prefix("Patient/")).unwrap_or("");
    let mut entities = vec![
        json!({
            "uid": {"type": "User", "id": "caller"},
            "attrs": {
                "org": r.org.unwrap_or(""),
                "client": r.client_id,
                "patientId": patient_id,
                "contextPatient": r.context_patient.unwrap_or(""),
                "assurance": r.assurance,
                "proxyFor": r.proxy_for,
            },
            "parents": r.roles.iter().map(|role| json!({"type": "Role", "id": role})).collect::<Vec<_>>(),
        }),
        json!({
            "uid": {"type": r.resource_type, "id": "record"},
            "attrs": {
                "patient": r.record_patient.unwrap_or(""),
                "org": r.record_org.unwrap_or(""),
                "restricted": r.restricted,
            },
            "parents": [],
        }),
    ];
    entities
        .extend(r.roles.iter().map(|role| json!({"uid": {"type": "Role", "id": role}, "attrs": {}, "parents": []})));
    let entities = Entities::from_json_value(json!(entities), None).expect("entities");
    let context = Context::from_json_value(
        json!({
            "breakGlass": r.break_glass,
            "onlyNotesChanged": r.only_notes_changed,
            "availabilityCheck": r.availability_check,
            "consentRefuses": r.consent_refuses,
            "patientAllowsNotes": r.patient_allows_notes,
            "minute": r.minute_of_day,
        }),
        None,
    )
    .expect("context");
    let request = Request::new(
        uid("User::\"caller\""),
        uid(&format!("Action::\"{}\"", action(r.interaction))),
        uid(&format!("{}::\"record\"", r.resource_type)),
        context,
        None,
    )
    .expect("request");
    CedarQuestion { request, entities }
}

/// Every request on which the compiled evaluator, the interpreter and Cedar do not give the same
/// answer (for Cedar: the same effect, with our deciding rule among its reasons), named by `names`.
pub fn disagreements(
    loaded: &LoadedPolicy,
    cedar: &CedarPolicy,
    requests: &[AccessRequest<'_>],
    names: &[&str],
) -> Vec<String> {
    let authorizer = Authorizer::new();
    let mut out = Vec::new();
    for (request, name) in requests.iter().zip(names) {
        let compiled = loaded.compiled.decide(request);
        let reference = interpret::decide(&loaded.source, request);
        let (allow, reasons) = cedar.decide(&authorizer, &question(request));
        let ours = compiled.rule();
        if compiled != reference {
            out.push(format!("`{name}`: compiled `{ours}`, interpreter `{}`", reference.rule()));
        } else if allow != compiled.is_permit() {
            out.push(format!("`{name}`: Cedar allow={allow} {reasons:?}, ours permit={} by `{ours}`", !allow));
        } else if !(reasons.iter().any(|r| r == ours) || ours == "default-deny" && reasons.is_empty()) {
            out.push(format!("`{name}`: Cedar reasons {reasons:?} lack our `{ours}`"));
        }
    }
    out
}
