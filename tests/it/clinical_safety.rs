//! The clinical-safety defects found from outside, one test each: no path from one patient's
//! record to another's reader, every disclosure audited against its patient, bounded input, and
//! the conformance defects integrators met. The hazard log (`docs/hazard-log.md`) names these.

use axum::http::Method;
use carebroker::token::jose::Algorithm;
use serde_json::{Value, json};

use crate::support::fhir::*;
use crate::support::keys::{ClientKey, backend_client, backend_form};
use crate::support::smart::*;
use crate::support::{INITIAL_ACCESS_TOKEN, TestApp};

const PETER: &str = "9434765919";
const JANE: &str = "9000000009";
/// A valid NHS number with no record here.
const UNKNOWN: &str = "9876543210";

async fn safety_app() -> TestApp {
    TestApp::builder()
        .with_client(public_app())
        .with_client(trusted_ehr())
        .with_dev_users()
        .with_shipped_policy()
        .build()
        .await
}

/// A clinician (nurse at A9A5A) as the policy maps her, with `patient` open.
fn clinician(app: &TestApp, scope: &str, patient: Option<&str>) -> String {
    let mut claims = user_claims(app, scope, patient);
    claims.roles = vec!["clinician".into()];
    token(app, &claims)
}

/// Jane's carer, a RelatedPerson that names the platform subject it belongs to.
fn janes_carer(subject: &str) -> Value {
    json!({
        "resourceType": "RelatedPerson", "id": "rp-jane-carer", "active": true,
        "patient": {"reference": format!("Patient/{JANE}")},
        "identifier": [{"system": carebroker::fhir::guard::SUBJECT_SYSTEM, "value": subject}],
        "name": [{"family": "Carer", "given": ["Colin"]}]
    })
}

fn proxy_token(app: &TestApp, subject: &str, patient: &str) -> String {
    let mut claims = user_claims(app, "patient/*.rs", Some(patient));
    claims.sub = subject.into();
    claims.fhir_user = Some("RelatedPerson/rp-jane-carer".into());
    claims.roles = vec!["proxy".into()];
    claims.org = None;
    token(app, &claims)
}

fn patients_of(records: &[(Option<String>, Value)]) -> Vec<String> {
    records.iter().filter_map(|(p, _)| p.clone()).collect()
}

// 1 -------------------------------------------------------------------------------------------------
#[tokio::test]
async fn a_related_person_is_read_only_within_its_patients_compartment_and_audited_against_them() {
    let app = safety_app().await;
    put_resource(&app, &janes_carer("nhs-login:carer-1")).await;
    let path = "/fhir/RelatedPerson/rp-jane-carer";

    let before = audit_head(&app).await;
    let peters = get(&app, &clinician(&app, "patient/*.rs", Some(PETER)), path).await;
    assert_eq!(peters.status, 404, "another patient's RelatedPerson is hidden: {}", peters.text());
    assert!(!peters.text().contains("Colin"));
    let records = audit_after(&app, before).await;
    assert_eq!(patients_of(&records), vec![JANE], "the refusal is filed against the patient it concerns");
    assert_eq!(records[0].1["outcome"], "denied");

    let user_scope = get(&app, &clinician(&app, "user/*.rs", Some(PETER)), path).await;
    assert_eq!(user_scope.status, 403, "a user/ scope is still judged by the policy against Jane");

    let before = audit_head(&app).await;
    let janes = get(&app, &clinician(&app, "patient/*.rs", Some(JANE)), path).await;
    assert_eq!(janes.status, 200, "{}", janes.text());
    assert_eq!(patients_of(&audit_after(&app, before).await), vec![JANE]);
}

// 2 -------------------------------------------------------------------------------------------------
#[tokio::test]
async fn an_ehr_cannot_assert_a_proxy_and_an_unverified_related_person_reaches_no_patient() {
    let app = safety_app().await;
    put_resource(&app, &janes_carer("nhs-login:carer-1")).await;
    let plan = create_plan(&app, &care_plan(JANE, ADVANCE, "2026-01-01")).await;

    let mut body = launch_body();
    body["patient"] = json!(PETER);
    body["user"]["fhir_user"] = json!("RelatedPerson/rp-jane-carer");
    body["user"]["role_codes"] = json!([]);
    let reply = post_launch(&app, &body).await;
    reply.assert_error(403, "access_denied");
    assert!(reply.json()["error_description"].as_str().unwrap().contains("RelatedPerson"));
    assert!(reply.json().get("launch").is_none(), "no launch was registered");

    // a token that claims the RelatedPerson without being the person it names reaches nothing
    let impostor = proxy_token(&app, "ehr:ehr:u-555", JANE);
    let read = get(&app, &impostor, &format!("/fhir/CarePlan/{plan}")).await;
    assert_eq!(read.status, 403, "{}", read.text());
    // the person the relationship names does
    let carer = proxy_token(&app, "nhs-login:carer-1", JANE);
    assert_eq!(get(&app, &carer, &format!("/fhir/CarePlan/{plan}")).await.status, 200);
    // and an inactive relationship reaches nothing
    let mut ended = janes_carer("nhs-login:carer-2");
    ended["id"] = json!("rp-ended");
    ended["active"] = json!(false);
    put_resource(&app, &ended).await;
    let mut claims = user_claims(&app, "patient/*.rs", Some(JANE));
    claims.sub = "nhs-login:carer-2".into();
    claims.fhir_user = Some("RelatedPerson/rp-ended".into());
    claims.roles = vec!["proxy".into()];
    assert_eq!(get(&app, &token(&app, &claims), &format!("/fhir/CarePlan/{plan}")).await.status, 403);
}

// 3 -------------------------------------------------------------------------------------------------
#[tokio::test]
async fn a_care_plans_subject_is_fixed_at_creation() {
    let app = safety_app().await;
    let id = create_plan(&app, &care_plan(PETER, ADVANCE, "2026-01-01")).await;
    let writer = writer_token(&app);
    let mut moved = care_plan(JANE, ADVANCE, "2026-01-01");
    moved["id"] = json!(id);
    let before = audit_head(&app).await;
    let reply = send(&app, Method::PUT, &writer, &format!("/fhir/CarePlan/{id}"), &moved, Some("W/\"1\"")).await;
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert_eq!(reply.json()["issue"][0]["code"], "business-rule");
    let records = audit_after(&app, before).await;
    assert_eq!(patients_of(&records), vec![PETER], "the attempt is filed against the plan's patient");
    assert!(!records[0].1.to_string().contains(JANE), "and names no other patient in Peter's history");
    let stored = get(&app, &writer, &format!("/fhir/CarePlan/{id}")).await.json();
    assert_eq!(stored["meta"]["versionId"], "1", "nothing was written");
    assert_eq!(stored["subject"]["reference"], format!("Patient/{PETER}"));
    // Jane's clinicians see nothing of Peter's plan, at any version
    let janes_nurse = clinician(&app, "patient/*.rs", Some(JANE));
    assert_eq!(get(&app, &janes_nurse, &format!("/fhir/CarePlan/{id}/_history/1")).await.status, 404);
    assert_eq!(get(&app, &janes_nurse, &format!("/fhir/CarePlan/{id}/_history")).await.status, 404);
}

// 4 -------------------------------------------------------------------------------------------------
#[tokio::test]
async fn a_subject_naming_two_patients_is_refused_naming_both_and_nothing_is_stored() {
    let app = safety_app().await;
    let writer = writer_token(&app);
    let mut plan = care_plan(PETER, ADVANCE, "2026-01-01");
    plan["subject"]["identifier"] = json!({"system": "https://fhir.nhs.uk/Id/nhs-number", "value": JANE});
    let reply = send(&app, Method::POST, &writer, "/fhir/CarePlan", &plan, None).await;
    assert_eq!(reply.status, 422, "{}", reply.text());
    let diagnostics = reply.json()["issue"][0]["diagnostics"].as_str().unwrap().to_owned();
    assert!(diagnostics.contains(PETER) && diagnostics.contains(JANE), "{diagnostics}");
    let search = get(&app, &writer, "/fhir/CarePlan").await.json();
    assert_eq!(search["total"], 0, "nothing was stored");
}

// 5 -------------------------------------------------------------------------------------------------
#[tokio::test]
async fn whether_an_nhs_number_is_known_is_told_only_to_a_caller_who_may_write_for_it() {
    let app = safety_app().await;
    let patient_token = clinician(&app, "patient/CarePlan.cruds", Some(PETER));
    for other in [JANE, UNKNOWN] {
        let reply =
            send(&app, Method::POST, &patient_token, "/fhir/CarePlan", &care_plan(other, ADVANCE, "2026-01-01"), None)
                .await;
        assert_eq!(reply.status, 403, "{other}: {}", reply.text());
    }
    // a clinician with Jane open, writing through a user/ scope, is judged by the policy first
    let janes_nurse = clinician(&app, "user/CarePlan.cruds", Some(JANE));
    let known_elsewhere =
        send(&app, Method::POST, &janes_nurse, "/fhir/CarePlan", &care_plan(PETER, ADVANCE, "2026-01-01"), None).await;
    let unknown =
        send(&app, Method::POST, &janes_nurse, "/fhir/CarePlan", &care_plan(UNKNOWN, ADVANCE, "2026-01-01"), None)
            .await;
    assert_eq!(
        (known_elsewhere.status, unknown.status),
        (axum::http::StatusCode::FORBIDDEN, axum::http::StatusCode::FORBIDDEN)
    );
    assert_eq!(known_elsewhere.body, unknown.body, "the same answer whether or not the patient is known");
    // a clinician with the unknown patient open may write for them, so is told
    let opened = clinician(&app, "patient/CarePlan.cruds", Some(UNKNOWN));
    let reply =
        send(&app, Method::POST, &opened, "/fhir/CarePlan", &care_plan(UNKNOWN, ADVANCE, "2026-01-01"), None).await;
    assert_eq!(reply.status, 422, "{}", reply.text());
}

// 6 -------------------------------------------------------------------------------------------------
#[tokio::test]
async fn fhir_answers_are_never_cached() {
    let app = safety_app().await;
    let id = create_plan(&app, &care_plan(PETER, ADVANCE, "2026-01-01")).await;
    let nurse = clinician(&app, "patient/*.rs", Some(PETER));
    let system = token(&app, &{
        let mut c = system_claims(&app, "system/CarePlan.s");
        c.roles = vec!["availability".into()];
        c
    });
    for (token, path) in [
        (nurse.as_str(), format!("/fhir/CarePlan/{id}")),
        (nurse.as_str(), format!("/fhir/CarePlan?patient={PETER}")),
        (nurse.as_str(), format!("/fhir/Patient/{PETER}")),
        (nurse.as_str(), "/fhir/CarePlan/missing".to_owned()),
        ("", format!("/fhir/CarePlan/{id}")),
        (system.as_str(), format!("/availability?nhs_number={PETER}")),
    ] {
        let reply = get(&app, token, &path).await;
        assert_eq!(reply.header("cache-control"), Some("no-store"), "{path} ({})", reply.status);
        assert_eq!(reply.header("pragma"), Some("no-cache"), "{path}");
    }
}

// 7 -------------------------------------------------------------------------------------------------
#[tokio::test]
async fn the_availability_role_reaches_the_availability_check_and_nothing_else() {
    let key = ClientKey::generate(Algorithm::ES256);
    let app = TestApp::builder()
        .with_client(backend_client("nhs111", &key, "system/CarePlan.s system/Patient.rs"))
        .with_dev_users()
        .with_shipped_policy()
        .build()
        .await;
    create_plan(&app, &care_plan(PETER, CRISIS, "2026-01-01")).await;
    let reply =
        app.post_form("/token", &backend_form(&key.assertion("nhs111", app.now()), "system/CarePlan.s"), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let nhs111 = reply.json()["access_token"].as_str().unwrap().to_owned();
    let exists = get(&app, &nhs111, &format!("/availability?nhs_number={PETER}")).await;
    assert_eq!(exists.status, 200, "{}", exists.text());
    assert_eq!(exists.json()["care_plan_exists"], true);
    for path in [format!("/fhir/CarePlan?patient={PETER}"), "/fhir/CarePlan".to_owned()] {
        let search = get(&app, &nhs111, &path).await;
        assert_eq!(search.status, 403, "{path}: {}", search.text());
        assert!(!search.text().contains("Call the community matron"));
    }
}

// 8 -------------------------------------------------------------------------------------------------
#[tokio::test]
async fn a_policy_refusal_tells_the_caller_nothing_of_the_rule_or_the_record() {
    let app = safety_app().await;
    let mut student = user_claims(&app, "user/CarePlan.cruds", Some(PETER));
    student.roles = vec!["student".into()];
    let before = audit_head(&app).await;
    let reply = send(
        &app,
        Method::POST,
        &token(&app, &student),
        "/fhir/CarePlan",
        &care_plan(PETER, ADVANCE, "2026-01-01"),
        None,
    )
    .await;
    assert_eq!(reply.status, 403);
    for secret in ["students-never-write", "rule", "B1611", "restricted"] {
        assert!(!reply.text().contains(secret), "`{secret}` in {}", reply.text());
    }
    let records = audit_after(&app, before).await;
    assert!(records[0].1["detail"].as_str().unwrap().contains("students-never-write"), "the audit keeps the rule");
}

// 9 -------------------------------------------------------------------------------------------------
#[tokio::test]
async fn every_patient_a_search_or_check_discloses_gets_an_audit_record() {
    let app = safety_app().await;
    create_plan(&app, &care_plan(PETER, ADVANCE, "2026-01-01")).await;
    create_plan(&app, &care_plan(JANE, ADVANCE, "2026-01-01")).await;
    create_plan(&app, &care_plan("9449306621", CRISIS, "2026-01-01")).await;

    // a Patient search that shows two patients
    let admin = {
        let mut claims = user_claims(&app, "user/Patient.rs", None);
        claims.roles = vec!["admin".into()];
        token(&app, &claims)
    };
    let before = audit_head(&app).await;
    let found = get(&app, &admin, "/fhir/Patient?birthdate=1942-03-14").await;
    assert_eq!(found.json()["total"], 1, "{}", found.text());
    let by_family = get(&app, &admin, "/fhir/Patient?family=smith").await.json();
    let shown: Vec<String> = by_family["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
        .collect();
    let mut audited = patients_of(&audit_after(&app, before).await);
    audited.sort();
    let mut expected = shown.clone();
    expected.push(PETER.into());
    expected.sort();
    assert_eq!(audited, expected, "one record per patient shown");

    // a system search with no patient shows everyone's plans: each patient shown is audited
    let system = writer_token(&app);
    let before = audit_head(&app).await;
    let all = get(&app, &system, "/fhir/CarePlan?_count=2").await.json();
    assert_eq!(all["total"], 3);
    let mut on_page: Vec<String> = all["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["subject"]["reference"].as_str().unwrap().trim_start_matches("Patient/").to_owned())
        .collect();
    on_page.sort();
    let mut audited = patients_of(&audit_after(&app, before).await);
    audited.sort();
    assert_eq!(audited, on_page, "the page's patients, and only they");

    // the availability check by phone names the patients it found
    let nhs111 = token(&app, &{
        let mut c = system_claims(&app, "system/CarePlan.s");
        c.roles = vec!["availability".into()];
        c
    });
    let before = audit_head(&app).await;
    let by_phone = get(&app, &nhs111, "/availability?phone=07700900456").await.json();
    assert_eq!(by_phone["matches"][0]["nhs_number"], JANE);
    assert_eq!(patients_of(&audit_after(&app, before).await), vec![JANE]);
}

// 10 ------------------------------------------------------------------------------------------------
#[tokio::test]
async fn an_audit_record_re_filed_under_another_patient_is_caught() {
    let app = safety_app().await;
    let nurse = clinician(&app, "patient/*.rs", Some(PETER));
    for _ in 0..3 {
        assert_eq!(get(&app, &nurse, &format!("/fhir/Patient/{PETER}")).await.status, 200);
    }
    let path = app.dir.path().join("carebroker.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(&format!("UPDATE audit_log SET patient = '{JANE}' WHERE seq = 2"))
        .unwrap();
    let verdict = carebroker::audit::verify(app.state.stores.durable.as_ref()).await.unwrap();
    assert!(
        matches!(&verdict, carebroker::audit::Verification::Broken { seq: 2, reason } if reason.contains("re-filed")),
        "{verdict:?}"
    );
    // and an auditor searching Jane's history is not shown Peter's record
    let auditor = {
        let mut claims = user_claims(&app, "user/AuditEvent.rs", None);
        claims.roles = vec!["auditor".into()];
        token(&app, &claims)
    };
    let janes = get(&app, &auditor, &format!("/fhir/AuditEvent?patient={JANE}")).await.json();
    assert_eq!(janes["total"], 0, "{janes}");
}

// 11 ------------------------------------------------------------------------------------------------
#[tokio::test]
async fn requests_refused_for_their_token_are_audited_against_the_patient_rate_limited_without_the_token() {
    let app = safety_app().await;
    let id = create_plan(&app, &care_plan(PETER, ADVANCE, "2026-01-01")).await;
    let forged = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2VjcmV0LXNpZ25hdHVyZS1tYXRlcmlhbA";
    let before = audit_head(&app).await;
    for i in 0..10 {
        let token = if i % 2 == 0 { "" } else { forged };
        assert_eq!(get(&app, token, &format!("/fhir/CarePlan/{id}")).await.status, 401);
    }
    let records = audit_after(&app, before).await;
    assert_eq!(records.len(), carebroker::audit::limiter::PER_KEY as usize, "a burst is recorded a few times");
    for (patient, event) in &records {
        assert_eq!(patient.as_deref(), Some(PETER), "filed against the plan's patient");
        assert_eq!(event["outcome"], "denied");
        let text = event.to_string();
        assert!(!text.contains(forged) && !text.contains("c2VjcmV0") && !text.contains("mallory"), "{text}");
    }
    // the rest is counted, and written as a summary once the window ends
    app.clock.advance(61);
    app.state.audit_refusal_summaries().await;
    let summary = audit_after(&app, before + records.len() as i64).await;
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0].0.as_deref(), Some(PETER));
    assert!(summary[0].1["detail"].as_str().unwrap().starts_with("7 further requests"), "{}", summary[0].1);
    // a search names its patient too
    let before = audit_head(&app).await;
    get(&app, "", &format!("/fhir/CarePlan?patient={JANE}")).await;
    assert_eq!(patients_of(&audit_after(&app, before).await), vec![JANE]);
}

// 12 ------------------------------------------------------------------------------------------------
#[tokio::test]
async fn unbounded_searches_are_refused_with_400_and_the_store_stays_healthy() {
    let app = safety_app().await;
    create_plan(&app, &care_plan(PETER, ADVANCE, "2026-01-01")).await;
    let system = writer_token(&app);
    // 9,000 values: the longest query string an in-process request can carry (the http crate's URI
    // limit); the bound refuses it as it would 40,000 over a socket
    let statuses = vec!["active"; 9_000].join(",");
    let repeated_family = vec!["family=smith"; 1200].join("&");
    let repeated_status = vec!["status=active"; 1200].join("&");
    let sixteen_plus = vec!["active"; 17].join(",");
    for path in [
        format!("/fhir/CarePlan?status={statuses}"),
        format!("/fhir/Patient?{repeated_family}"),
        format!("/fhir/CarePlan?{repeated_status}"),
        format!("/fhir/CarePlan?status={sixteen_plus}"),
        format!("/fhir/Patient?{}", (0..40).map(|i| format!("x{i}=1")).collect::<Vec<_>>().join("&")),
    ] {
        let reply = get(&app, &system, &path).await;
        assert_eq!(reply.status, 400, "{}…: {}", &path[..40], reply.text());
        assert_eq!(reply.json()["resourceType"], "OperationOutcome");
    }
    let healthy = get(&app, &system, &format!("/fhir/CarePlan?patient={PETER}&status=active,on-hold")).await;
    assert_eq!(healthy.status, 200);
    assert_eq!(healthy.json()["total"], 1);
}

// 13 ------------------------------------------------------------------------------------------------
#[tokio::test]
async fn revoking_a_refresh_token_ends_it_and_its_grant() {
    let app = smart_app().await;
    let launch = register_launch(&app, launch_body()).await;
    let (verifier, challenge) = pkce_pair();
    let reply = app
        .get(&authorize_path(&challenge, &[("launch", &launch), ("scope", "launch patient/*.rs offline_access")]))
        .await;
    let tokens = exchange(&app, &code_from(&reply, "st-123"), &verifier).await.json();
    let (access, refresh) = (tokens["access_token"].as_str().unwrap(), tokens["refresh_token"].as_str().unwrap());
    let revoked = app
        .post_form("/revoke", &[("token", refresh), ("token_type_hint", "refresh_token"), ("client_id", APP)], &[])
        .await;
    assert_eq!(revoked.status, 200);
    app.post_form("/token", &[("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", APP)], &[])
        .await
        .assert_error(400, "invalid_grant");
    assert!(
        matches!(app.state.check_access_token(access, None).await, Err(carebroker::token::access::CheckError::Revoked)),
        "the grant's access tokens end with it"
    );
    // another client's revocation of it changes nothing
    let other = smart_app().await;
    let launch = register_launch(&other, launch_body()).await;
    let (verifier, challenge) = pkce_pair();
    let reply = other
        .get(&authorize_path(&challenge, &[("launch", &launch), ("scope", "launch patient/*.rs offline_access")]))
        .await;
    let tokens = exchange(&other, &code_from(&reply, "st-123"), &verifier).await.json();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let auth = ehr_basic();
    assert_eq!(other.post_form("/revoke", &[("token", refresh)], &[("authorization", &auth)]).await.status, 200);
    let still = other
        .post_form("/token", &[("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", APP)], &[])
        .await;
    assert_eq!(still.status, 200, "{}", still.text());
}

// 14 ------------------------------------------------------------------------------------------------
#[tokio::test]
async fn invalid_client_without_credentials_still_challenges() {
    let app = smart_app().await;
    for path in ["/token", "/introspect", "/revoke"] {
        let reply = app.post_form(path, &[("grant_type", "client_credentials"), ("token", "x")], &[]).await;
        reply.assert_error(401, "invalid_client");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Basic realm=\"carebroker\", error=\"invalid_client\""),
            "{path}"
        );
    }
}

// 15 and 16 -------------------------------------------------------------------------------------------
#[tokio::test]
async fn a_registered_backend_client_defaults_response_types_and_is_told_it_needs_a_role() {
    let key = ClientKey::generate(Algorithm::ES256);
    let app = TestApp::builder().with_registration().with_shipped_policy().build().await;
    let body = json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt", "jwks": key.jwks(), "scope": "system/CarePlan.rs"});
    let auth = format!("Bearer {INITIAL_ACCESS_TOKEN}");
    let reply = app
        .request(
            Method::POST,
            "/register",
            &[("content-type", "application/json"), ("authorization", &auth)],
            body.to_string().into_bytes(),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(reply.json()["response_types"], json!([]));
    let id = reply.json()["client_id"].as_str().unwrap().to_owned();
    let token = app.post_form("/token", &backend_form(&key.assertion(&id, app.now()), "system/CarePlan.rs"), &[]).await;
    token.assert_error(400, "invalid_scope");
    let why = token.json()["error_description"].as_str().unwrap().to_owned();
    assert!(
        why.contains(&format!("`{id}` has no role")) && why.contains("policies") && why.contains("[[map]]"),
        "{why}"
    );
}

// 17 ------------------------------------------------------------------------------------------------
#[tokio::test]
async fn an_ehr_may_send_cis2_role_codes_in_the_form_cis2_uses() {
    let app = safety_app().await;
    let mut body = launch_body();
    body["user"]["role_codes"] = json!(["S8000:G8000:R8001"]);
    let launch = register_launch(&app, body).await;
    let (verifier, challenge) = pkce_pair();
    let reply = app.get(&authorize_path(&challenge, &[("launch", &launch), ("scope", "launch patient/*.rs")])).await;
    let tokens = exchange(&app, &code_from(&reply, "st-123"), &verifier).await.json();
    let (_, claims) = crate::support::jwt_parts(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["roles"], json!(["clinician"]), "R8001 mapped as if sent bare");
    // the trust list still applies to the job role inside
    let mut body = launch_body();
    body["user"]["role_codes"] = json!(["S8000:G8000:R8004"]);
    post_launch(&app, &body).await.assert_error(403, "access_denied");
    let mut body = launch_body();
    body["user"]["role_codes"] = json!(["S8000:G8000"]);
    post_launch(&app, &body).await.assert_error(400, "invalid_request");
}

// 18 ------------------------------------------------------------------------------------------------
const DAY_SHIFT_RULES: &str = r#"
[[rule]]
id = "day-shift"
effect = "permit"
roles = ["clinician"]
resources = ["CarePlan"]
interactions = "rs"
when = ["patient_in_context", "hours 08:00-18:00"]
"#;

/// (name, instant, whether the day shift permits a read then)
const DAY_SHIFT_CASES: [(&str, &str, bool); 5] = [
    ("08:30 BST on a summer morning is within the day shift", "2026-07-01T07:30:00Z", true),
    ("07:30 GMT on a winter morning is before it", "2026-12-01T07:30:00Z", false),
    ("the last minute before the clocks go forward is GMT", "2026-03-29T00:59:00Z", false),
    ("17:30 UTC in summer is 18:30 BST, after the shift", "2026-07-01T17:30:00Z", false),
    ("17:30 UTC in winter is 17:30 GMT, within it", "2026-12-01T17:30:00Z", true),
];

fn day_shift_fixtures() -> String {
    DAY_SHIFT_CASES
        .iter()
        .map(|(name, at, permit)| {
            let (expect, rule) = if *permit { ("permit", "day-shift") } else { ("deny", "default-deny") };
            format!(
                "[[case]]\nname = \"{name}\"\nroles = [\"clinician\"]\nat = \"{at}\"\n\
                 context_patient = \"9434765919\"\nrecord_patient = \"9434765919\"\n\
                 resource = \"CarePlan\"\ninteraction = \"r\"\nexpect = \"{expect}\"\nrule = \"{rule}\"\n\n"
            )
        })
        .collect()
}

#[tokio::test]
async fn the_hours_condition_keeps_uk_time_across_the_clock_changes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        format!("{}{DAY_SHIFT_RULES}", crate::support::CLINICIAN_POLICY_HEAD),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(dir.path().join("tests/hours.toml"), day_shift_fixtures()).unwrap();
    let policy = carebroker::policy::load_dir(dir.path()).unwrap();
    let outcomes = carebroker::policy::fixtures::run_dir(&policy, &dir.path().join("tests")).unwrap();
    assert_eq!(outcomes.len(), DAY_SHIFT_CASES.len());
    assert!(outcomes.iter().all(|o| o.passed), "{outcomes:#?}");

    // and the guard reads the same UK time from its clock
    let folder = dir.path().to_path_buf();
    let summer_morning = 1_782_891_000; // 2026-07-01T07:30:00Z, 08:30 BST
    let app = TestApp::builder()
        .with_dev_users()
        .with_clock(summer_morning)
        .with_config(move |c| c.policy.dir = Some(folder))
        .build()
        .await;
    let mut plan = care_plan(PETER, ADVANCE, "2026-01-01");
    plan["id"] = json!("day-plan");
    put_resource(&app, &plan).await;
    let id = "day-plan";
    let path = format!("/fhir/CarePlan/{id}");
    let t = clinician(&app, "patient/CarePlan.rs", Some(PETER));
    assert_eq!(get(&app, &t, &path).await.status, 200, "08:30 BST");
    app.clock.set(1_796_110_200); // 2026-12-01T07:30:00Z, 07:30 GMT
    let t = clinician(&app, "patient/CarePlan.rs", Some(PETER));
    assert_eq!(get(&app, &t, &path).await.status, 403, "07:30 GMT");
}

// 19 ------------------------------------------------------------------------------------------------
#[tokio::test]
async fn a_patient_adds_notes_to_their_own_plan_and_changes_nothing_else() {
    let app = safety_app().await;
    let id = create_plan(&app, &care_plan(PETER, ADVANCE, "2026-01-01")).await;
    let mut claims = user_claims(&app, "patient/CarePlan.rus", Some(PETER));
    claims.sub = "dev:patient".into();
    claims.fhir_user = Some(format!("Patient/{PETER}"));
    claims.roles = vec!["patient".into()];
    claims.org = None;
    let peter = token(&app, &claims);
    let path = format!("/fhir/CarePlan/{id}");
    let mut plan = get(&app, &peter, &path).await.json();
    plan["note"] = json!([{"text": "I would like my daughter called first"}]);
    let added = send(&app, Method::PUT, &peter, &path, &plan, Some("W/\"1\"")).await;
    assert_eq!(added.status, 200, "{}", added.text());
    let mut plan = added.json();
    plan["note"] = json!([{"text": "I would like my daughter called first"}, {"text": "and no hospital at night"}]);
    assert_eq!(send(&app, Method::PUT, &peter, &path, &plan, Some("W/\"2\"")).await.status, 200);

    let current = get(&app, &peter, &path).await.json();
    let mut status = current.clone();
    status["status"] = json!("revoked");
    assert_eq!(send(&app, Method::PUT, &peter, &path, &status, Some("W/\"3\"")).await.status, 403, "the plan itself");
    let mut removed = current.clone();
    removed["note"] = json!([{"text": "and no hospital at night"}]);
    assert_eq!(send(&app, Method::PUT, &peter, &path, &removed, Some("W/\"3\"")).await.status, 403, "an earlier note");
    // Jane's plan is not Peter's to annotate
    let janes = create_plan(&app, &care_plan(JANE, ADVANCE, "2026-01-01")).await;
    let mut other = care_plan(JANE, ADVANCE, "2026-01-01");
    other["id"] = json!(janes);
    other["note"] = json!([{"text": "x"}]);
    assert_eq!(
        send(&app, Method::PUT, &peter, &format!("/fhir/CarePlan/{janes}"), &other, Some("W/\"1\"")).await.status,
        404
    );
}
