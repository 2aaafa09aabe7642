//! The access policy: shipped fixtures, checks with file and line, the compiled evaluator held
//! to the interpreter by property tests, scopes narrowed at issuance, decisions at the FHIR
//! guard (deny audited with its rule, break-glass with obligations), and reload.

use std::path::Path;

use axum::http::Method;
use carebroker::domain::scope::Permissions;
use carebroker::policy::ast::{Condition, Effect, Origin, Policy, Rule};
use carebroker::policy::{AccessRequest, CompiledPolicy, interpret, load_dir};
use proptest::prelude::*;
use serde_json::json;

use crate::support::TestApp;
use crate::support::fhir::*;
use crate::support::smart::*;

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");

#[test]
fn the_shipped_policy_decides_every_fixture_with_both_evaluators() {
    let policy = load_dir(Path::new(SHIPPED)).unwrap_or_else(|e| panic!("{e:?}"));
    let outcomes = carebroker::policy::fixtures::run_dir(&policy, &Path::new(SHIPPED).join("tests")).unwrap();
    assert!(outcomes.len() >= 30, "fixtures cover the rules");
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.passed).map(|o| format!("{}: {}", o.name, o.detail)).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    // every rule is exercised by at least one fixture
    for rule in &policy.source.rules {
        assert!(
            outcomes.iter().any(|o| o.detail.contains(&format!("`{}`", rule.id))),
            "rule `{}` has no fixture",
            rule.id
        );
    }
}

#[path = "../../benches/cedar/model.rs"]
mod cedar_model;

/// The Cedar copy used by `benches/policy_decide.rs` must be the same policy, or its numbers
/// compare unlike with unlike.
#[test]
fn the_cedar_copy_for_the_benchmark_decides_every_fixture_as_the_shipped_policy() {
    let fixtures = cedar_model::Fixtures::load();
    let (policy, requests, names) = (&fixtures.policy, fixtures.requests(), fixtures.names());
    let cedar = cedar_model::CedarPolicy::load();
    let differences = cedar_model::disagreements(policy, &cedar, &requests, &names);
    assert!(differences.is_empty(), "{differences:#?}");
    // and the comparison notices a Cedar policy that has drifted: drop the students' forbid
    let start = cedar_model::POLICY.find("@id(\"students-never-write\")").unwrap();
    let end = start + cedar_model::POLICY[start..].find(';').unwrap() + 1;
    let drifted = format!("{}{}", &cedar_model::POLICY[..start], &cedar_model::POLICY[end..]);
    let differences = cedar_model::disagreements(policy, &cedar_model::CedarPolicy::parse(&drifted), &requests, &names);
    assert!(differences.iter().any(|d| d.contains("student")), "{differences:#?}");
}

fn broken(files: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    load_dir(dir.path()).expect_err("invalid policy").iter().map(|e| e.to_string()).collect()
}

const BASE: &str = "[roles]\nnurse = \"Nurses\"\nclerk = \"Clerks\"\n\n[[map]]\nrole = \"nurse\"\nsource = \"cis2\"\nrole_codes = [\"R8001\"]\n\n[[map]]\nrole = \"clerk\"\nsource = \"cis2\"\nrole_codes = [\"R8009\"]\n";

#[test]
fn every_policy_mistake_is_reported_with_file_line_and_what_was_expected() {
    let rules = r#"
[[rule]]
id = "a"
effect = "permit"
roles = ["nures"]
resources = ["CarePlan"]
interactions = "rs"

[[rule]]
id = "b"
effect = "permit"
roles = ["nurse"]
resources = ["Observation"]
interactions = "rx"
when = ["moon_is_full"]

[[rule]]
id = "c"
effect = "permit"
roles = ["nurse"]
resources = ["CarePlan"]
interactions = "r"
when = ["restricted", "not restricted"]

[[rule]]
id = "d"
effect = "forbid"
roles = ["nurse", "clerk"]
resources = ["*"]
interactions = "cruds"

[[rule]]
id = "e"
effect = "permit"
roles = ["nurse"]
resources = ["Patient"]
interactions = "r"
when = ["same_organisation"]

[[rule]]
id = "e"
effect = "maybe"
roles = []
resources = ["Patient"]
interactions = "r"
"#;
    let errors = broken(&[("base.toml", BASE), ("rules.toml", rules)]);
    let text = errors.join("\n");
    // the line of the n-th `[[rule]]` in `text`
    let nth_rule = |text: &str, n: usize| {
        text.lines().enumerate().filter(|(_, l)| *l == "[[rule]]").nth(n).map(|(i, _)| i + 1).unwrap()
    };
    let line = |n: usize| nth_rule(rules, n);
    for expected in [
        format!("rules.toml:{}: rule `a`: role `nures` is not declared", line(0)),
        format!("rules.toml:{}: rule `b`: `x` is not an interaction", line(1)),
        format!("rules.toml:{}: rule `b`: `moon_is_full` is not a condition", line(1)),
        format!("rules.toml:{}: rule `c` can never fire: it requires `restricted` and `not restricted`", line(2)),
        format!("rules.toml:{}: effect `maybe` is not permit or forbid", line(5)),
    ] {
        assert!(text.contains(&expected), "missing `{expected}` in:\n{text}");
    }
    // checks that need the whole policy run once the files parse
    let parsed_ok = rules
        .replace("interactions = \"rx\"\nwhen = [\"moon_is_full\"]", "interactions = \"r\"")
        .replace("effect = \"maybe\"", "effect = \"permit\"");
    let errors = broken(&[("base.toml", BASE), ("rules.toml", &parsed_ok)]);
    let text = errors.join("\n");
    let line = |n: usize| nth_rule(&parsed_ok, n);
    for expected in [
        format!("rules.toml:{}: rule `b`: `Observation` is not a resource type", line(1)),
        format!("rules.toml:{}: permit `e` can never decide: forbid `d`", line(4)),
        format!("rules.toml:{}: rule id `e` is used twice", line(5)),
        format!("rules.toml:{}: rule `e` names no role", line(5)),
    ] {
        assert!(text.contains(&expected), "missing `{expected}` in:\n{text}");
    }
    let unmapped = broken(&[(
        "p.toml",
        "[roles]\nghost = \"nobody gets this\"\n\n[[rule]]\nid = \"g\"\neffect = \"permit\"\nroles = [\"ghost\"]\nresources = [\"CarePlan\"]\ninteractions = \"r\"\n",
    )]);
    assert!(
        unmapped
            .iter()
            .any(|e| e.contains("p.toml:4: rule `g` can never fire: no [[map]] entry gives any of its roles")),
        "{unmapped:?}"
    );
    let syntax = broken(&[("bad.toml", "[roles]\nnurse = \"x\"\n[[rule]\n")]);
    assert!(syntax[0].contains("bad.toml:3: not valid policy TOML"), "{syntax:?}");
}

// --- differential: compiled vs interpreter ------------------------------------------------------

const ROLES: [&str; 5] = ["r0", "r1", "r2", "r3", "r4"];
const TYPES: [&str; 4] = ["CarePlan", "Patient", "AuditEvent", "*"];
const PATIENTS: [&str; 3] = ["p1", "p2", "p3"];

fn condition() -> impl Strategy<Value = Condition> {
    let leaf = prop_oneof![
        Just(Condition::PatientInContext),
        Just(Condition::SubjectIsPatient),
        Just(Condition::SubjectIsProxy),
        Just(Condition::SameOrganisation),
        Just(Condition::Restricted),
        Just(Condition::BreakGlass),
        Just(Condition::OnlyNotesChanged),
        Just(Condition::AvailabilityCheck),
        Just(Condition::Delegated),
        Just(Condition::ConsentRefuses),
        Just(Condition::PatientAllowsNotes),
        (0usize..5).prop_map(|i| Condition::HasRole(ROLES[i].into())),
        (0u8..4).prop_map(Condition::AssuranceAtLeast),
        proptest::sample::subsequence(vec!["c1", "c2", "c3"], 1..3)
            .prop_map(|ids| Condition::ClientIn(ids.into_iter().map(str::to_owned).collect())),
        (0u16..1400, 1u16..40).prop_map(|(a, len)| Condition::Hours(a, a + len)),
    ];
    leaf.prop_flat_map(|c| prop_oneof![Just(c.clone()), Just(Condition::Not(Box::new(c)))])
}

fn rule(i: usize) -> impl Strategy<Value = Rule> {
    (
        any::<bool>(),
        proptest::sample::subsequence(ROLES.to_vec(), 1..3),
        proptest::sample::subsequence(TYPES.to_vec(), 1..3),
        1u8..32,
        proptest::collection::vec(condition(), 0..3),
    )
        .prop_map(move |(permit, roles, types, bits, conditions)| Rule {
            id: format!("rule-{i}"),
            effect: if permit { Effect::Permit } else { Effect::Forbid },
            roles: roles.into_iter().map(str::to_owned).collect(),
            resources: types.into_iter().map(str::to_owned).collect(),
            interactions: Permissions::from_bits(bits),
            conditions,
            obligations: Vec::new(),
            description: String::new(),
            origin: Origin::default(),
        })
}

fn policy() -> impl Strategy<Value = Policy> {
    (1usize..12).prop_flat_map(|n| {
        let rules: Vec<_> = (0..n).map(rule).collect();
        rules.prop_map(|rules| Policy {
            roles: ROLES.iter().map(|r| ((*r).to_owned(), String::new(), Origin::default())).collect(),
            mappings: Vec::new(),
            rules,
        })
    })
}

#[derive(Debug, Clone)]
struct Req {
    roles: Vec<String>,
    org: Option<String>,
    client: String,
    fhir_user: Option<String>,
    context: Option<String>,
    assurance: u8,
    proxy_for: Vec<String>,
    break_glass: bool,
    minute: u16,
    resource: String,
    interaction: u8,
    record_patient: Option<String>,
    record_org: Option<String>,
    restricted: bool,
    notes: bool,
    availability: bool,
    delegated: bool,
    consent_refuses: bool,
    allows_notes: bool,
}

fn request() -> impl Strategy<Value = Req> {
    let patient = || proptest::option::of(proptest::sample::select(PATIENTS.to_vec()).prop_map(str::to_owned));
    let org = || proptest::option::of(proptest::sample::select(vec!["A", "B"]).prop_map(str::to_owned));
    (
        proptest::sample::subsequence(ROLES.to_vec(), 0..4)
            .prop_map(|v| v.into_iter().map(str::to_owned).collect::<Vec<_>>()),
        org(),
        proptest::sample::select(vec!["c1", "c2", "c9"]).prop_map(str::to_owned),
        prop_oneof![Just(None), patient().prop_map(|p| p.map(|p| format!("Patient/{p}")))],
        patient(),
        0u8..4,
        proptest::collection::vec(proptest::sample::select(PATIENTS.to_vec()).prop_map(str::to_owned), 0..2),
        (any::<bool>(), 0u16..1440),
        proptest::sample::select(vec!["CarePlan", "Patient", "AuditEvent", "Practitioner"]).prop_map(str::to_owned),
        proptest::sample::select(vec![1u8, 2, 4, 8, 16]),
        (patient(), org(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                roles,
                org,
                client,
                fhir_user,
                context,
                assurance,
                proxy_for,
                (break_glass, minute),
                resource,
                interaction,
                (record_patient, record_org, restricted, notes, availability, delegated, consent_refuses, allows_notes),
            )| Req {
                roles,
                org,
                client,
                fhir_user,
                context,
                assurance,
                proxy_for,
                break_glass,
                minute,
                resource,
                interaction,
                record_patient,
                record_org,
                restricted,
                notes,
                availability,
                delegated,
                consent_refuses,
                allows_notes,
            },
        )
}

impl Req {
    fn as_request(&self) -> AccessRequest<'_> {
        AccessRequest {
            roles: &self.roles,
            org: self.org.as_deref(),
            client_id: &self.client,
            fhir_user: self.fhir_user.as_deref(),
            context_patient: self.context.as_deref(),
            assurance: self.assurance,
            proxy_for: &self.proxy_for,
            break_glass: self.break_glass,
            minute_of_day: self.minute,
            system: false,
            resource_type: &self.resource,
            interaction: Permissions::from_bits(self.interaction),
            record_patient: self.record_patient.as_deref(),
            record_org: self.record_org.as_deref(),
            restricted: self.restricted,
            only_notes_changed: self.notes,
            availability_check: self.availability,
            delegated: self.delegated,
            consent_refuses: self.consent_refuses,
            patient_allows_notes: self.allows_notes,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn the_compiled_evaluator_decides_exactly_as_the_interpreter(policy in policy(), requests in proptest::collection::vec(request(), 1..24)) {
        let compiled = CompiledPolicy::compile(&policy);
        for r in &requests {
            let request = r.as_request();
            prop_assert_eq!(compiled.decide(&request), interpret::decide(&policy, &request), "request {:?}", r);
        }
    }
}

// --- wired in -------------------------------------------------------------------------------------

async fn policy_app() -> TestApp {
    TestApp::builder()
        .with_client(public_app())
        .with_client({
            let mut ehr = trusted_ehr();
            if let Some(t) = ehr.ehr_launch.as_mut() {
                t.role_codes = vec!["R8000".into(), "R8001".into(), "R8004".into()];
                t.assurance = 3;
            }
            ehr
        })
        .with_dev_users()
        .with_config(|c| c.policy.dir = Some(SHIPPED.into()))
        .build()
        .await
}

async fn ehr_tokens(app: &TestApp, role: &str, scope: &str) -> serde_json::Value {
    let mut body = launch_body();
    body["user"]["role_codes"] = json!([role]);
    let launch = register_launch(app, body).await;
    let (verifier, challenge) = pkce_pair();
    let reply = app.get(&authorize_path(&challenge, &[("launch", &launch), ("scope", scope)])).await;
    let code = code_from(&reply, "st-123");
    let reply = exchange(app, &code, &verifier).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

#[tokio::test]
async fn token_scopes_are_narrowed_to_what_the_policy_permits() {
    let app = policy_app().await;
    let nurse = ehr_tokens(&app, "R8001", "launch openid patient/*.cruds").await;
    let granted: Vec<&str> = nurse["scope"].as_str().unwrap().split(' ').collect();
    assert!(granted.contains(&"patient/CarePlan.cruds") && granted.contains(&"patient/Patient.cruds"), "{granted:?}");
    assert!(granted.contains(&"patient/Practitioner.rs"), "{granted:?}");
    assert!(!granted.iter().any(|s| s.contains("AuditEvent")), "a nurse gets no audit access: {granted:?}");
    let (_, access) = crate::support::jwt_parts(nurse["access_token"].as_str().unwrap());
    assert_eq!(access["roles"], json!(["clinician"]));
    assert_eq!(access["assurance"], 3);

    let student = ehr_tokens(&app, "R8004", "launch openid patient/*.cruds").await;
    let granted: Vec<&str> = student["scope"].as_str().unwrap().split(' ').collect();
    assert!(granted.contains(&"patient/CarePlan.rs"), "{granted:?}");
    let resources: Vec<&&str> = granted.iter().filter(|s| s.starts_with("patient/")).collect();
    assert!(resources.iter().all(|s| s.ends_with(".rs")), "students read only: {granted:?}");
}

#[tokio::test]
async fn the_guard_asks_the_policy_and_audits_the_deciding_rule() {
    let app = policy_app().await;
    let mut maintainer = system_claims(&app, "system/CarePlan.cruds");
    maintainer.client_id = "backend-demo".into();
    maintainer.roles = vec!["plan-maintainer".into()];
    let created = send(
        &app,
        Method::POST,
        &token(&app, &maintainer),
        "/fhir/CarePlan",
        &care_plan("9434765919", ADVANCE, "2026-01-01"),
        None,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();
    // a student token that somehow carries write scope is still refused by the policy
    let mut claims = user_claims(&app, "user/CarePlan.cruds", Some("9434765919"));
    claims.roles = vec!["student".into()];
    let student = token(&app, &claims);
    let read = get(&app, &student, &format!("/fhir/CarePlan/{id}")).await;
    assert_eq!(read.status, 200, "{}", read.text());
    let mut plan = read.json();
    plan["status"] = json!("revoked");
    let write = send(&app, Method::PUT, &student, &format!("/fhir/CarePlan/{id}"), &plan, Some("W/\"1\"")).await;
    assert_eq!(write.status, 403);
    assert!(!write.text().contains("students-never-write"), "rule ids stay out of what a client sees");
    let records =
        app.state.stores.durable.search_audit(Some("9434765919"), Some("dev:nurse"), None, None, 5).await.unwrap();
    let last: serde_json::Value = serde_json::from_str(&records[0].data).unwrap();
    assert_eq!(last["outcome"], "denied");
    assert!(last["detail"].as_str().unwrap().contains("rule students-never-write"), "{last}");

    // a clinician with another patient in context: no
    let mut claims = user_claims(&app, "user/CarePlan.rs", Some("9000000009"));
    claims.roles = vec!["clinician".into()];
    claims.assurance = Some(3);
    let clinician = token(&app, &claims);
    assert_eq!(get(&app, &clinician, &format!("/fhir/CarePlan/{id}")).await.status, 403);
    // ...unless the glass is broken, which is audited at high importance and alerts the privacy officer
    let auth = format!("Bearer {clinician}");
    let glass = app
        .request(
            Method::GET,
            &format!("/fhir/CarePlan/{id}"),
            &[("authorization", &auth), ("x-break-glass-reason", "unconscious in ED, no EHR access")],
            Vec::new(),
        )
        .await;
    assert_eq!(glass.status, 200, "{}", glass.text());
    let records =
        app.state.stores.durable.search_audit(Some("9434765919"), Some("dev:nurse"), None, None, 1).await.unwrap();
    let last: serde_json::Value = serde_json::from_str(&records[0].data).unwrap();
    let detail = last["detail"].as_str().unwrap();
    for part in ["rule break-glass", "break-glass: unconscious in ED", "importance: high", "privacy officer alerted"] {
        assert!(detail.contains(part), "{part} missing from {detail}");
    }
}

#[tokio::test]
async fn backend_services_get_only_what_their_role_permits() {
    let key = crate::support::keys::ClientKey::generate(carebroker::token::jose::Algorithm::ES256);
    let app = TestApp::builder()
        .with_client(crate::support::keys::backend_client("nhs111", &key, "system/CarePlan.rs system/Patient.rs"))
        .with_config(|c| c.policy.dir = Some(SHIPPED.into()))
        .build()
        .await;
    let assertion = key.assertion("nhs111", app.now());
    let reply = app
        .post_form(
            "/token",
            &crate::support::keys::backend_form(&assertion, "system/CarePlan.rs system/Patient.rs"),
            &[],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["scope"], "system/CarePlan.s", "NHS 111 may only ask whether a plan exists");
    let assertion = key.assertion("nhs111", app.now());
    app.post_form("/token", &crate::support::keys::backend_form(&assertion, "system/Patient.rs"), &[])
        .await
        .assert_error(400, "invalid_scope");
}

#[tokio::test]
async fn a_changed_policy_is_reloaded_and_a_broken_one_keeps_the_running_policy() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(format!("{SHIPPED}/careplan.toml")).unwrap();
    std::fs::write(dir.path().join("careplan.toml"), &shipped).unwrap();
    let folder = dir.path().to_path_buf();
    let app = TestApp::builder().with_dev_users().with_config(move |c| c.policy.dir = Some(folder)).build().await;
    let probe = || carebroker::policy::fixtures::Case {
        name: "probe".into(),
        roles: Some(vec!["auditor".into()]),
        source: String::new(),
        provider: String::new(),
        role_codes: Vec::new(),
        activity_codes: Vec::new(),
        vot: None,
        fhir_user: None,
        client_id: String::new(),
        org: None,
        assurance: 3,
        context_patient: None,
        proxy_for: Vec::new(),
        break_glass: false,
        time: None,
        at: None,
        system: false,
        resource: "AuditEvent".into(),
        interaction: "s".into(),
        record_patient: None,
        record_org: None,
        restricted: false,
        only_notes_changed: false,
        availability_check: false,
        delegated: false,
        consent_refuses: false,
        patient_allows_notes: false,
        expect: String::new(),
        rule: String::new(),
    };
    let decide = |app: &TestApp| {
        let case = probe();
        let roles = case.roles.clone().unwrap();
        let request = case.request(&roles).unwrap();
        app.state.policy.load().decide(&request).rule().to_owned()
    };
    assert_eq!(decide(&app), "auditors-review");
    std::fs::write(
        dir.path().join("careplan.toml"),
        shipped.replace(
            "interactions = \"rs\"\ndescription = \"Information governance",
            "interactions = \"r\"\ndescription = \"Information governance",
        ),
    )
    .unwrap();
    assert!(app.state.reload_policy());
    assert_eq!(decide(&app), "default-deny", "the new policy is in force");
    std::fs::write(dir.path().join("careplan.toml"), "[[rule]]\nid = \"broken\"").unwrap();
    assert!(!app.state.reload_policy());
    assert_eq!(decide(&app), "default-deny", "a broken file keeps the running policy");
}
