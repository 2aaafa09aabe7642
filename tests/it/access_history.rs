//! "Who has looked at my record": a patient reads the access history of their own record through
//! `GET /fhir/AuditEvent`, seeing who looked by name, role and organisation only, emergency
//! accesses with their reasons, and nothing of any other patient.

use axum::http::Method;
use serde_json::Value;

use crate::support::TestApp;
use crate::support::fhir::{get, token, user_claims};

const PETER: &str = "9434765919";
const OTHER: &str = "9000000009";

async fn app() -> TestApp {
    TestApp::builder().with_dev_users().with_shipped_policy().build().await
}

fn clinician(app: &TestApp, patient: &str) -> String {
    let mut claims = user_claims(app, "patient/*.rs", Some(patient));
    claims.roles = vec!["clinician".into()];
    claims.sub = "cis2:555057896106".into();
    token(app, &claims)
}

fn patient_token(app: &TestApp, nhs_number: &str) -> String {
    crate::support::fhir::patient_token(app, nhs_number, "patient/AuditEvent.s patient/CarePlan.rs")
}

fn entries(reply: &crate::support::Reply) -> Vec<Value> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["entry"].as_array().cloned().unwrap_or_default().into_iter().map(|e| e["resource"].clone()).collect()
}

#[tokio::test]
async fn a_patient_sees_who_looked_at_their_record_and_nothing_more() {
    let app = app().await;
    let nurse = clinician(&app, PETER);
    assert_eq!(get(&app, &nurse, &format!("/fhir/Patient/{PETER}")).await.status, 200);
    let emergency = app
        .request(
            Method::GET,
            &format!("/fhir/Patient/{PETER}"),
            &[("authorization", &format!("Bearer {nurse}")), ("x-break-glass-reason", "unconscious in ED")],
            Vec::new(),
        )
        .await;
    assert!(emergency.status.is_success() || emergency.status == 403, "{}", emergency.text());
    // someone looks at another patient's record too
    assert_eq!(get(&app, &clinician(&app, OTHER), &format!("/fhir/Patient/{OTHER}")).await.status, 200);

    let peter = patient_token(&app, PETER);
    let events = entries(&get(&app, &peter, &format!("/fhir/AuditEvent?patient={PETER}")).await);
    let looked: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["entity"]
                .as_array()
                .is_some_and(|all| all.iter().any(|x| x["what"]["reference"] == format!("Patient/{PETER}")))
        })
        .collect();
    assert!(looked.len() >= 2, "the nurse's reads are listed: {events:#?}");
    for event in &events {
        let text = event.to_string();
        assert!(!text.contains(OTHER), "another patient appears: {text}");
        assert!(!text.contains("555057896106"), "the clinician's identifier is shown: {text}");
        assert!(event["agent"][0].get("network").is_none(), "an address is shown: {text}");
        assert!(event.get("outcomeDesc").is_none(), "internal detail is shown: {text}");
        assert_eq!(event["extension"][0]["valueBoolean"], true, "each entry says it verifies: {text}");
    }
    let nurse_read = looked.iter().find(|e| e["agent"][0]["who"]["display"] == "Nadia Nurse").expect("named by name");
    assert!(nurse_read["agent"][0]["role"].is_array(), "and by role: {nurse_read}");
    let emergency_entry =
        events.iter().find(|e| e.get("purposeOfEvent").is_some()).expect("the emergency access is marked");
    assert!(emergency_entry["purposeOfEvent"][0]["text"].as_str().unwrap().contains("unconscious in ED"));

    // only ever their own record
    let others = get(&app, &peter, &format!("/fhir/AuditEvent?patient={OTHER}")).await;
    assert_eq!(others.status, 200);
    assert_eq!(others.json()["total"], 0);
    let unnamed = entries(&get(&app, &peter, "/fhir/AuditEvent").await);
    assert!(unnamed.iter().all(|e| !e.to_string().contains(OTHER)));
}

/// A browser signed in through the development sign-in as `username`.
#[tokio::test]
async fn the_access_history_page_lists_who_looked_for_the_signed_in_patient_only() {
    let app = TestApp::builder()
        .with_client(crate::support::smart::public_app())
        .with_dev_users()
        .with_shipped_policy()
        .build()
        .await;
    let nurse = clinician(&app, PETER);
    let emergency =
        [("authorization", format!("Bearer {nurse}")), ("x-break-glass-reason", "collapsed at home".into())];
    let headers: Vec<(&str, &str)> = emergency.iter().map(|(k, v)| (*k, v.as_str())).collect();
    app.request(Method::GET, &format!("/fhir/Patient/{PETER}"), &headers, Vec::new()).await;
    get(&app, &clinician(&app, OTHER), &format!("/fhir/Patient/{OTHER}")).await;

    // nobody signed in: told how to get here
    let mut stranger = crate::support::browser::Browser::new();
    assert_eq!(stranger.get(&app, "/my-record/access-history").await.status, 401);

    let mut peter = crate::support::browser::dev_signed_in(&app, "patient").await;
    let page = peter.get(&app, "/my-record/access-history").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.header("content-security-policy").is_some_and(|c| c.contains("frame-ancestors")));
    let html = page.text();
    assert!(html.contains("Who has looked at your record"));
    assert!(html.contains("Nadia Nurse"), "who looked, by name: {html}");
    assert!(html.contains("collapsed at home"), "the emergency reason is shown: {html}");
    assert!(!html.contains(OTHER) && !html.contains("555057896106"), "nothing of anyone else: {html}");
    assert!(html.contains("GMT") || html.contains("BST"), "UK time: {html}");
    // reading it is audited against Peter
    let records = app.state.stores.durable.search_audit(Some(PETER), None, None, None, 1000).await.unwrap();
    assert!(records.iter().any(|r| r.data.contains("access history page")));

    // inside the NHS App: no header, a way back
    let ua = [("user-agent", "Mozilla/5.0 nhsapp-ios/2.3.0")];
    let in_app = peter.request_with(&app, "/my-record/access-history", &ua).await.text();
    assert!(!in_app.contains("nhsuk-header") && in_app.contains("Back to the NHS App"), "{in_app}");

    // a member of staff is not a patient
    let mut nadia = crate::support::browser::dev_signed_in(&app, "nurse").await;
    assert_eq!(nadia.get(&app, "/my-record/access-history").await.status, 403);
}
