//! PDS verification when a patient is opened, against the PDS test double.

use std::sync::atomic::Ordering;

use crate::support::TestApp;
use crate::support::fhir::*;
use crate::support::pds_double::*;

async fn app_with_pds(fail_open: bool) -> (TestApp, PdsDouble) {
    let double = PdsDouble::default();
    let base = double.start().await;
    let app = TestApp::builder()
        .with_dev_users()
        .with_config(move |c| {
            c.pds.enabled = true;
            c.pds.base_url = base;
            c.pds.end_user_org_ods = Some("A9A5A".into());
            if fail_open {
                c.pds.on_unavailable = "fail_open".into();
            }
        })
        .build()
        .await;
    (app, double)
}

fn reader(app: &TestApp) -> String {
    token(app, &user_claims(app, "user/Patient.rs", None))
}

#[tokio::test]
async fn a_verified_patient_opens_with_a_request_id_and_is_cached() {
    let (app, double) = app_with_pds(false).await;
    let t = reader(&app);
    let reply = get(&app, &t, &format!("/fhir/Patient/{DEV_PATIENT}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["name"][0]["family"], "Patient", "local record served");
    assert_eq!(double.request_ids.lock().len(), 1, "X-Request-ID (a UUID) sent");
    get(&app, &t, &format!("/fhir/Patient/{DEV_PATIENT}")).await;
    assert_eq!(double.hits.load(Ordering::SeqCst), 1, "cached");
}

#[tokio::test]
async fn restricted_patients_have_address_telecom_and_gp_withheld() {
    let (app, _double) = app_with_pds(false).await;
    let body = get(&app, &reader(&app), &format!("/fhir/Patient/{RESTRICTED}")).await.json();
    assert_eq!(body["id"], RESTRICTED);
    assert_eq!(body["meta"]["security"][0]["code"], "R");
    for withheld in ["address", "telecom", "generalPractitioner"] {
        assert!(body.get(withheld).is_none(), "{withheld} shown for a restricted patient");
    }
}

#[tokio::test]
async fn a_superseded_number_is_followed_to_the_current_record() {
    let (app, _double) = app_with_pds(false).await;
    let body = get(&app, &reader(&app), &format!("/fhir/Patient/{SUPERSEDED}")).await.json();
    assert_eq!(body["id"], NORMAL);
    assert_eq!(body["name"][0]["family"], "Smith");
}

#[tokio::test]
async fn unknown_and_invalidated_patients_are_refused() {
    let (app, _double) = app_with_pds(false).await;
    let t = reader(&app);
    let unknown = get(&app, &t, &format!("/fhir/Patient/{NOT_FOUND}")).await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.json()["issue"][0]["diagnostics"].as_str().unwrap().contains("not known to PDS"));
    let invalid = get(&app, &t, &format!("/fhir/Patient/{INVALIDATED}")).await;
    assert_eq!(invalid.status, 410);
    assert_eq!(invalid.json()["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn pds_down_fails_closed_by_default_and_open_when_configured() {
    let (app, double) = app_with_pds(false).await;
    double.down.store(true, Ordering::SeqCst);
    let reply = get(&app, &reader(&app), &format!("/fhir/Patient/{NORMAL}")).await;
    assert_eq!(reply.status, 503);
    assert!(reply.json()["issue"][0]["diagnostics"].as_str().unwrap().contains("PDS"));

    let (open, double) = app_with_pds(true).await;
    double.down.store(true, Ordering::SeqCst);
    let reply = get(&open, &reader(&open), &format!("/fhir/Patient/{NORMAL}")).await;
    assert_eq!(reply.status, 200, "fail_open serves the local record");
    // an outage is not cached: once PDS is back, the patient is verified
    double.down.store(false, Ordering::SeqCst);
    get(&open, &reader(&open), &format!("/fhir/Patient/{NORMAL}")).await;
    assert_eq!(double.hits.load(Ordering::SeqCst), 2);
}
