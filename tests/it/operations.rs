//! Operating carebroker: `GET /metrics` in the Prometheus text format, labelled only by route
//! templates, grants, error codes and effects, never by who or whose record.

use carebroker::token::jose::Algorithm;

use crate::support::TestApp;
use crate::support::fhir::{ADVANCE, care_plan, create_plan, get, token, user_claims};
use crate::support::keys::{ClientKey, backend_client, backend_form};

const PATIENT: &str = "9434765919";

/// The value of the first sample of `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_tokens_refusals_decisions_and_audit_without_naming_anyone() {
    let key = ClientKey::generate(Algorithm::ES256);
    let app = TestApp::builder()
        .with_client(backend_client("backend-demo", &key, "system/CarePlan.rs"))
        .with_dev_users()
        .with_shipped_policy()
        .build()
        .await;
    let before = app.get("/metrics").await.text();
    let count = |text: &str, name: &str, labels: &[&str]| sample(text, name, labels).unwrap_or(0.0);

    let assertion = key.assertion("backend-demo", app.now());
    let issued = app.post_form("/token", &backend_form(&assertion, "system/CarePlan.rs"), &[]).await;
    assert_eq!(issued.status, 200, "{}", issued.text());
    let access = issued.json()["access_token"].as_str().unwrap().to_owned();
    let refused = app.post_form("/token", &backend_form("not-a-jwt", "system/CarePlan.rs"), &[]).await;
    assert_eq!(refused.status, 401);
    let plan = create_plan(&app, &care_plan(PATIENT, ADVANCE, "2026-01-01")).await;
    let mut nurse = user_claims(&app, "patient/*.rs", Some(PATIENT));
    nurse.roles = vec!["clinician".into()];
    let nurse = token(&app, &nurse);
    assert_eq!(get(&app, &nurse, &format!("/fhir/CarePlan/{plan}")).await.status, 200);
    assert_eq!(get(&app, &nurse, "/fhir/CarePlan/no-such-plan").await.status, 404);

    let reply = app.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-type").is_some_and(|c| c.starts_with("text/plain; version=0.0.4")));
    let after = reply.text();
    let grew = |name: &str, labels: &[&str]| count(&after, name, labels) > count(&before, name, labels);
    assert!(grew("carebroker_tokens_issued_total", &["grant=\"client_credentials\""]), "{after}");
    assert!(grew("carebroker_oauth_refusals_total", &["error=\"invalid_client\""]), "{after}");
    assert!(
        grew("carebroker_http_requests_total", &["route=\"/fhir/CarePlan/{id}\"", "method=\"GET\"", "status=\"200\""]),
        "{after}"
    );
    assert!(
        grew("carebroker_http_requests_total", &["route=\"/token\"", "method=\"POST\"", "status=\"401\""]),
        "{after}"
    );
    assert!(grew("carebroker_http_request_duration_seconds_count", &["route=\"/fhir/CarePlan/{id}\""]), "{after}");
    assert!(grew("carebroker_fhir_refusals_total", &["status=\"404\""]), "{after}");
    assert!(grew("carebroker_policy_decisions_total", &["effect=\"permit\""]), "{after}");
    assert!(grew("carebroker_audit_records_total", &[]), "{after}");
    assert!(
        grew(
            "carebroker_store_operations_total",
            &["store=\"durable\"", "backend=\"sqlite\"", "operation=\"read_resource\""]
        ),
        "{after}"
    );
    assert!(
        grew(
            "carebroker_store_operations_total",
            &["store=\"ephemeral\"", "backend=\"memory\"", "operation=\"put_if_absent\""]
        ),
        "{after}"
    );
    assert!(after.contains("carebroker_audit_append_duration_seconds_bucket"), "{after}");
    assert!(sample(&after, "carebroker_signing_key_age_seconds", &[]).is_some_and(|age| age >= 0.0), "{after}");

    // nobody and no record is named: no NHS number, plan id, token, client or user identifier
    for secret in [PATIENT, plan.as_str(), access.as_str(), "backend-demo", "dev:nurse", "pr-nurse-1"] {
        assert!(!after.contains(secret), "`{secret}` is in the metrics");
    }
}
