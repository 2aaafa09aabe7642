//! The availability check: existence, last update and launch link for systems (EHR flags, NHS
//! 111 by phone number) and never any clinical content.

use crate::support::fhir::*;

#[tokio::test]
async fn systems_learn_that_a_plan_exists_and_nothing_more() {
    let app = fhir_app().await;
    create_plan(&app, &care_plan("9434765919", CRISIS, "2026-01-01")).await;
    let nhs111 = token(&app, &system_claims(&app, "system/CarePlan.s"));

    let by_number = get(&app, &nhs111, "/availability?nhs_number=943%20476%205919").await;
    assert_eq!(by_number.status, 200, "{}", by_number.text());
    let body = by_number.json();
    assert_eq!(body["care_plan_exists"], true);
    assert_eq!(body["matches"][0]["nhs_number"], "9434765919");
    assert!(body["matches"][0]["last_updated"].is_string());
    assert!(body["matches"][0]["launch_url"].as_str().unwrap().contains("9434765919"));
    let text = by_number.text();
    for clinical in ["Call the community matron", "736373009", "Urgent care plan", "activity", "Peter"] {
        assert!(!text.contains(clinical), "clinical content `{clinical}` leaked: {text}");
    }

    let by_phone = get(&app, &nhs111, "/availability?phone=%2B44%207700%20900123").await.json();
    assert_eq!(by_phone["care_plan_exists"], true);
    assert_eq!(by_phone["matches"][0]["nhs_number"], "9434765919");
    let no_plan = get(&app, &nhs111, "/availability?phone=07700900456").await.json();
    assert_eq!(no_plan["care_plan_exists"], false, "Jane has no plan");
    assert!(no_plan["matches"][0].get("launch_url").is_none());
    let nobody = get(&app, &nhs111, "/availability?phone=01632000000").await.json();
    assert_eq!(nobody["care_plan_exists"], false);
}

#[tokio::test]
async fn availability_is_for_systems_and_wants_one_valid_question() {
    let app = fhir_app().await;
    let nhs111 = token(&app, &system_claims(&app, "system/CarePlan.s"));
    for bad in [
        "/availability",
        "/availability?nhs_number=1234567890",
        "/availability?nhs_number=9434765919&phone=07700900123",
        "/availability?phone=123",
        "/availability?name=x",
    ] {
        let reply = get(&app, &nhs111, bad).await;
        assert_eq!(reply.status, 400, "{bad}");
    }
    let user = token(&app, &user_claims(&app, "user/CarePlan.rs", None));
    assert_eq!(get(&app, &user, "/availability?nhs_number=9434765919").await.status, 403);
    let patient_system = token(&app, &system_claims(&app, "system/Patient.rs"));
    assert_eq!(get(&app, &patient_system, "/availability?nhs_number=9434765919").await.status, 403);
    assert_eq!(app.get("/availability?nhs_number=9434765919").await.status, 401);
}
