//! The FHIR care-plan API: the guard on every request, CarePlan interactions with versioning and
//! search, Patient/Practitioner reads, and invalid resources.

use axum::http::Method;
use serde_json::json;

use crate::support::FHIR_BASE;
use crate::support::fhir::*;

const PETER: &str = "9434765919";
const JANE: &str = "9000000009";

#[tokio::test]
async fn metadata_is_a_capability_statement_with_smart_oauth_uris() {
    let app = fhir_app().await;
    let reply = app.request(Method::GET, "/fhir/metadata", &[("origin", "https://any.example")], Vec::new()).await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-type").unwrap().starts_with("application/fhir+json"));
    let cs = reply.json();
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    let ext = &cs["rest"][0]["security"]["extension"][0];
    assert_eq!(ext["url"], "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris");
    assert!(
        ext["extension"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["url"] == "token" && e["valueUri"] == format!("{}/token", crate::support::ISSUER))
    );
    assert_eq!(cs["rest"][0]["security"]["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn the_guard_refuses_every_bad_token_with_rfc6750_challenges() {
    let app = fhir_app().await;
    let id = create_plan(&app, &care_plan(PETER, ADVANCE, "2026-01-01")).await;
    let path = format!("/fhir/CarePlan/{id}");

    let none = app.get(&path).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), Some("Bearer realm=\"carebroker\""));
    assert_eq!(none.json()["resourceType"], "OperationOutcome");

    let mut claims = user_claims(&app, "patient/CarePlan.rs", Some(PETER));
    claims.aud = "https://other.example/fhir".into();
    let wrong_audience = get(&app, &token(&app, &claims), &path).await;
    assert_eq!(wrong_audience.status, 401);
    assert!(wrong_audience.header("www-authenticate").unwrap().contains("error=\"invalid_token\""));

    let mut claims = user_claims(&app, "patient/CarePlan.rs", Some(PETER));
    claims.exp = app.now() - 1;
    assert_eq!(get(&app, &token(&app, &claims), &path).await.status, 401, "expired");

    let forger = carebroker::token::jose::SigningKey::from_pkcs8(
        carebroker::token::jose::Algorithm::ES256,
        &carebroker::token::jose::SigningKey::generate_pkcs8(carebroker::token::jose::Algorithm::ES256).unwrap(),
    )
    .unwrap();
    let forged = forger.sign("at+jwt", &user_claims(&app, "patient/CarePlan.rs", Some(PETER))).unwrap();
    assert_eq!(get(&app, &forged, &path).await.status, 401, "not signed by us");

    let claims = user_claims(&app, "patient/CarePlan.rs", Some(PETER));
    let revoked = token(&app, &claims);
    assert_eq!(get(&app, &revoked, &path).await.status, 200);
    app.state.stores.durable.revoke(claims.grant_id.as_deref().unwrap(), app.now() + 4000).await.unwrap();
    assert_eq!(get(&app, &revoked, &path).await.status, 401, "a revoked grant's tokens stop at once");

    for scope in ["patient/Patient.rs", "patient/CarePlan.s", "patient/CarePlan.c", "openid fhirUser"] {
        let reply = get(&app, &token(&app, &user_claims(&app, scope, Some(PETER))), &path).await;
        assert_eq!(reply.status, 403, "{scope}");
        assert!(reply.header("www-authenticate").unwrap().contains("insufficient_scope"), "{scope}");
    }
    // patient/ scopes without a patient in context cannot be used
    assert_eq!(get(&app, &token(&app, &user_claims(&app, "patient/CarePlan.rs", None)), &path).await.status, 403);
}

#[tokio::test]
async fn v1_and_v2_scopes_both_work() {
    let app = fhir_app().await;
    let id = create_plan(&app, &care_plan(PETER, ADVANCE, "2026-01-01")).await;
    for scope in ["patient/CarePlan.read", "patient/CarePlan.r", "patient/*.rs", "user/CarePlan.read", "user/*.cruds"] {
        let reply =
            get(&app, &token(&app, &user_claims(&app, scope, Some(PETER))), &format!("/fhir/CarePlan/{id}")).await;
        assert_eq!(reply.status, 200, "{scope}: {}", reply.text());
    }
}

#[tokio::test]
async fn another_patients_plan_is_indistinguishable_from_a_missing_one() {
    let app = fhir_app().await;
    let janes = create_plan(&app, &care_plan(JANE, ADVANCE, "2026-01-01")).await;
    let peter = token(&app, &user_claims(&app, "patient/CarePlan.rs patient/Patient.rs", Some(PETER)));
    let other = get(&app, &peter, &format!("/fhir/CarePlan/{janes}")).await;
    let missing = get(&app, &peter, "/fhir/CarePlan/does-not-exist").await;
    assert_eq!((other.status.as_u16(), missing.status.as_u16()), (404, 404));
    assert_eq!(other.json(), missing.json(), "same body");
    assert_eq!(get(&app, &peter, &format!("/fhir/Patient/{JANE}")).await.status, 404);
    assert_eq!(get(&app, &peter, &format!("/fhir/Patient/{PETER}")).await.status, 200);
    // a search for another patient is simply empty
    let search = get(&app, &peter, &format!("/fhir/CarePlan?patient={JANE}")).await.json();
    assert_eq!(search["total"], 0);
}

#[tokio::test]
async fn granular_category_scopes_limit_reads_and_searches() {
    let app = fhir_app().await;
    let crisis = create_plan(&app, &care_plan(PETER, CRISIS, "2026-01-01")).await;
    let advance = create_plan(&app, &care_plan(PETER, ADVANCE, "2026-01-01")).await;
    let scope = format!("patient/CarePlan.rs?category={}|{}", CRISIS.0, CRISIS.1);
    let t = token(&app, &user_claims(&app, &scope, Some(PETER)));
    assert_eq!(get(&app, &t, &format!("/fhir/CarePlan/{crisis}")).await.status, 200);
    assert_eq!(get(&app, &t, &format!("/fhir/CarePlan/{advance}")).await.status, 404);
    let found = get(&app, &t, "/fhir/CarePlan").await.json();
    assert_eq!(found["total"], 1);
    assert_eq!(found["entry"][0]["resource"]["id"], crisis);
}

#[tokio::test]
async fn a_policy_deny_is_403_and_audited_with_its_rule() {
    #[derive(Debug)]
    struct StudentsReadOnly;
    impl carebroker::policy::AccessPolicy for StudentsReadOnly {
        fn decide(&self, r: &carebroker::policy::AccessRequest<'_>) -> carebroker::policy::Decision {
            if r.roles.iter().any(|x| x == "R8004") && r.interaction != carebroker::domain::scope::Permissions::READ {
                carebroker::policy::Decision::Deny {
                    rule: "students-read-only".into(),
                    reason: "students may only read".into(),
                }
            } else {
                carebroker::policy::Decision::Permit { rule: "default".into(), obligations: Default::default() }
            }
        }
        fn may_permit(&self, _: &carebroker::policy::AccessRequest<'_>) -> bool {
            true
        }
        fn roles_for(&self, _: &carebroker::policy::Facts<'_>) -> Option<Vec<String>> {
            None
        }
        fn resource_types(&self) -> Vec<String> {
            Vec::new()
        }
    }
    let app = fhir_app().await;
    app.state.policy.store(std::sync::Arc::new(Box::new(StudentsReadOnly)));
    let id = create_plan(&app, &care_plan(PETER, ADVANCE, "2026-01-01")).await;
    let mut student = user_claims(&app, "user/CarePlan.cruds", Some(PETER));
    student.roles = vec!["R8004".into()];
    let t = token(&app, &student);
    assert_eq!(get(&app, &t, &format!("/fhir/CarePlan/{id}")).await.status, 200);
    let denied = send(&app, Method::POST, &t, "/fhir/CarePlan", &care_plan(PETER, ADVANCE, "2026-02-01"), None).await;
    assert_eq!(denied.status, 403, "{}", denied.text());
    // the rule is for the audit and `policy explain`, not for the caller
    assert!(!denied.text().contains("students-read-only"), "{}", denied.text());
    assert_eq!(denied.json()["issue"][0]["diagnostics"], "the access policy does not permit this request");
    let records = app.state.stores.durable.search_audit(Some(PETER), Some("dev:nurse"), None, None, 10).await.unwrap();
    let last: serde_json::Value = serde_json::from_str(&records[0].data).unwrap();
    assert_eq!(last["outcome"], "denied");
    assert!(last["detail"].as_str().unwrap().contains("students-read-only"));
}

#[tokio::test]
async fn create_read_update_vread_history_with_versioning() {
    let app = fhir_app().await;
    let t = token(&app, &user_claims(&app, "patient/CarePlan.cruds", Some(PETER)));
    let created = send(&app, Method::POST, &t, "/fhir/CarePlan", &care_plan(PETER, ADVANCE, "2026-01-01"), None).await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("etag"), Some("W/\"1\""));
    let id = created.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(created.header("location").unwrap(), format!("{FHIR_BASE}/CarePlan/{id}/_history/1"));
    assert!(created.header("last-modified").is_some());

    let read = get(&app, &t, &format!("/fhir/CarePlan/{id}")).await;
    assert_eq!(read.json()["meta"]["versionId"], "1");
    let mut changed = read.json();
    changed["status"] = json!("on-hold");

    let path = format!("/fhir/CarePlan/{id}");
    assert_eq!(send(&app, Method::PUT, &t, &path, &changed, None).await.status, 428, "If-Match required");
    let stale = send(&app, Method::PUT, &t, &path, &changed, Some("W/\"7\"")).await;
    assert_eq!(stale.status, 412);
    assert_eq!(stale.json()["resourceType"], "OperationOutcome");
    let updated = send(&app, Method::PUT, &t, &path, &changed, Some("W/\"1\"")).await;
    assert_eq!(updated.status, 200, "{}", updated.text());
    assert_eq!(updated.header("etag"), Some("W/\"2\""));
    assert_eq!(
        send(&app, Method::PUT, &t, &path, &changed, Some("W/\"1\"")).await.status,
        412,
        "a lost update is refused"
    );

    let v1 = get(&app, &t, &format!("/fhir/CarePlan/{id}/_history/1")).await;
    assert_eq!(v1.json()["status"], "active");
    let history = get(&app, &t, &format!("/fhir/CarePlan/{id}/_history")).await.json();
    assert_eq!(history["type"], "history");
    assert_eq!(history["total"], 2);
    assert_eq!(history["entry"][0]["resource"]["meta"]["versionId"], "2");
    assert_eq!(get(&app, &t, &format!("/fhir/CarePlan/{id}/_history/9")).await.status, 404);
}

#[tokio::test]
async fn invalid_resources_are_refused_with_an_outcome_and_nothing_is_stored() {
    let app = fhir_app().await;
    let t = token(&app, &user_claims(&app, "user/CarePlan.cruds", Some(PETER)));
    let cases = [
        (json!({"resourceType": "Patient"}), 422),
        (json!({"resourceType": "CarePlan", "intent": "plan", "subject": {"reference": "Patient/9434765919"}}), 422),
        (
            json!({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/1234567890"}}),
            422,
        ),
        (
            json!({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/9111231114"}}),
            422,
        ),
        (
            json!({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/9434765919"}, "favourite": 1}),
            400,
        ),
        (
            json!({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/9434765919"}, "activity": {}}),
            400,
        ),
    ];
    for (body, status) in cases {
        let reply = send(&app, Method::POST, &t, "/fhir/CarePlan", &body, None).await;
        assert_eq!(reply.status.as_u16(), status, "{body}: {}", reply.text());
        let outcome = reply.json();
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert!(!outcome["issue"][0]["diagnostics"].as_str().unwrap().is_empty());
    }
    let not_json = app
        .request(
            Method::POST,
            "/fhir/CarePlan",
            &[("authorization", &format!("Bearer {t}")), ("content-type", "application/fhir+json")],
            b"{oops".to_vec(),
        )
        .await;
    assert_eq!(not_json.status, 400);
    let wrong_type = app
        .request(
            Method::POST,
            "/fhir/CarePlan",
            &[("authorization", &format!("Bearer {t}")), ("content-type", "text/plain")],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(wrong_type.status, 415);
    let all = get(&app, &t, &format!("/fhir/CarePlan?patient={PETER}")).await.json();
    assert_eq!(all["total"], 0, "nothing stored");
}

#[tokio::test]
async fn search_by_patient_identifier_status_category_dates_with_paging() {
    let app = fhir_app().await;
    for (i, start) in ["2026-01-01", "2026-03-01", "2026-05-01"].iter().enumerate() {
        let mut plan = care_plan(PETER, if i == 0 { CRISIS } else { ADVANCE }, start);
        if i == 2 {
            plan["status"] = json!("completed");
        }
        create_plan(&app, &plan).await;
    }
    create_plan(&app, &care_plan(JANE, ADVANCE, "2026-01-01")).await;
    let t = token(&app, &user_claims(&app, "user/CarePlan.rs", None));
    let total = |path: String| {
        let app = &app;
        let t = t.clone();
        async move { get(app, &t, &path).await.json()["total"].as_i64().unwrap() }
    };
    assert_eq!(total(format!("/fhir/CarePlan?patient={PETER}")).await, 3);
    assert_eq!(total(format!("/fhir/CarePlan?subject=Patient/{PETER}")).await, 3);
    assert_eq!(total(format!("/fhir/CarePlan?subject:identifier=https://fhir.nhs.uk/Id/nhs-number|{PETER}")).await, 3);
    assert_eq!(total(format!("/fhir/CarePlan?patient={PETER}&status=active")).await, 2);
    assert_eq!(total(format!("/fhir/CarePlan?patient={PETER}&status=active,completed")).await, 3);
    assert_eq!(total(format!("/fhir/CarePlan?patient={PETER}&category={}|{}", CRISIS.0, CRISIS.1)).await, 1);
    assert_eq!(total(format!("/fhir/CarePlan?patient={PETER}&category={}", ADVANCE.1)).await, 2);
    assert_eq!(
        total(format!("/fhir/CarePlan?patient={PETER}&date=ge2026-02-01")).await,
        3,
        "open-ended periods reach later dates"
    );
    assert_eq!(total(format!("/fhir/CarePlan?patient={PETER}&date=lt2026-02-01")).await, 1);
    assert_eq!(total(format!("/fhir/CarePlan?patient={PETER}&_lastUpdated=ge2020-01-01")).await, 3);
    assert_eq!(total(format!("/fhir/CarePlan?patient={PETER}&_lastUpdated=lt2020-01-01")).await, 0);

    let page = get(&app, &t, &format!("/fhir/CarePlan?patient={PETER}&_count=2")).await.json();
    assert_eq!(page["entry"].as_array().unwrap().len(), 2);
    let next = page["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").expect("next link")["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let rest = get(&app, &t, next.trim_start_matches(crate::support::ISSUER)).await.json();
    assert_eq!(rest["entry"].as_array().unwrap().len(), 1);
    assert!(rest["link"].as_array().unwrap().iter().any(|l| l["relation"] == "previous"));

    for bad in [
        "/fhir/CarePlan?patient=9434765919&colour=red",
        "/fhir/CarePlan?patient=9434765919&date=yesterday",
        "/fhir/CarePlan?patient=9434765919&_count=0",
        "/fhir/CarePlan",
    ] {
        let reply = get(&app, &t, bad).await;
        assert_eq!(reply.status, 400, "{bad}");
        assert_eq!(reply.json()["resourceType"], "OperationOutcome");
    }
}

#[tokio::test]
async fn every_fhir_user_resolves_and_patients_search() {
    let app = fhir_app().await;
    let t = token(&app, &user_claims(&app, "openid fhirUser user/Patient.rs", None));
    let me = get(&app, &t, "/fhir/Practitioner/pr-nurse-1").await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["resourceType"], "Practitioner");
    assert_eq!(
        get(&app, &t, "/fhir/Practitioner/pr-doctor-1").await.status,
        403,
        "someone else's record needs a scope"
    );
    let found = get(&app, &t, "/fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9434765919").await.json();
    assert_eq!(found["total"], 1);
    assert_eq!(get(&app, &t, "/fhir/Patient?family=smith").await.json()["total"], 1);
    assert_eq!(get(&app, &t, "/fhir/Patient?phone=%2B447700900456").await.json()["total"], 1);
    assert_eq!(get(&app, &t, "/fhir/Patient?birthdate=1942-03-14").await.json()["total"], 1);
    assert_eq!(get(&app, &t, "/fhir/Patient").await.status, 400);
    assert_eq!(get(&app, &t, "/fhir/Observation/1").await.status, 404);
}
