//! End to end in a real browser: SMART's own JavaScript client (npm `fhirclient`) in headless
//! Chromium, driven by `playwright-core` (tests/e2e/smart_launch.mjs), completes an EHR launch
//! from `POST /launch` and a standalone launch through the sign-in, patient picker and consent
//! pages, each ending with a token whose `patient` matches, then a refresh.

use std::process::Command;

use carebroker::domain::client::ClientMetadata;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::support::TestApp;
use crate::support::smart::{EHR, EHR_SECRET, trusted_ehr};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smart_js_client_completes_an_ehr_launch_and_a_standalone_launch_in_chromium() {
    let e2e = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e");
    assert!(
        std::path::Path::new(&format!("{e2e}/node_modules/fhirclient")).exists(),
        "tests/e2e/node_modules is missing: run the suite with scripts/test.sh (it runs npm ci there)"
    );
    let app_port = free_port();
    let app_origin = format!("http://127.0.0.1:{app_port}");
    let client = ClientMetadata {
        client_id: "e2e-app".into(),
        client_name: Some("E2E care plan app".into()),
        token_endpoint_auth_method: "none".into(),
        redirect_uris: vec![format!("{app_origin}/callback")],
        launch_uri: Some(format!("{app_origin}/launch")),
        grant_types: vec!["authorization_code".into(), "refresh_token".into()],
        scope: "launch launch/patient openid fhirUser profile offline_access online_access patient/*.rs".into(),
        ..Default::default()
    };
    let mut ehr = trusted_ehr();
    if let Some(trust) = ehr.ehr_launch.as_mut() {
        trust.apps = vec!["e2e-app".into()];
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let broker = format!("http://{}", listener.local_addr().expect("addr"));
    let issuer = broker.clone();
    let app = TestApp::builder()
        .with_client(client)
        .with_client(ehr)
        .with_dev_users()
        .with_config(move |c| {
            c.server.public_url = issuer;
        })
        .build()
        .await;
    // The browser and the app page run on real time.
    app.clock.set(carebroker::clock::Clock::now(&carebroker::clock::SystemClock));
    // Care plans for both patients, so the compartment shows in the app's search.
    for patient in ["9434765919", "9000000009", "9000000009"] {
        crate::support::fhir::create_plan(
            &app,
            &crate::support::fhir::care_plan(patient, crate::support::fhir::ADVANCE, "2026-01-01"),
        )
        .await;
    }
    let state = app.state.clone();
    tokio::spawn(async move { carebroker::http::serve_on(state, listener, std::future::pending()).await });

    let shots = std::env::var("CAREBROKER_E2E_SCREENSHOTS").ok();
    let mut args = vec![
        format!("{e2e}/smart_launch.mjs"),
        "--broker".into(),
        broker.clone(),
        "--app-port".into(),
        app_port.to_string(),
        "--client-id".into(),
        "e2e-app".into(),
        "--ehr-id".into(),
        EHR.into(),
        "--ehr-secret".into(),
        EHR_SECRET.into(),
        "--username".into(),
        "nurse".into(),
        "--password".into(),
        "nurse".into(),
        "--patient".into(),
        "9000000009".into(),
        "--read-patient".into(),
    ];
    if let Some(dir) = shots {
        args.extend(["--screenshots".into(), dir]);
    }
    let output = tokio::task::spawn_blocking(move || Command::new("node").args(&args).output())
        .await
        .expect("join")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser run failed:\n{stderr}\n{stdout}");
    let result: Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"));

    let ehr = &result["ehr"];
    assert_eq!(ehr["ok"], true, "{ehr}");
    assert_eq!(ehr["token"]["patient"], "9434765919");
    assert_eq!(ehr["token"]["encounter"], "enc-1");
    assert_eq!(ehr["token"]["need_patient_banner"], false);
    assert_eq!(ehr["pages_seen"], serde_json::json!([]), "an EHR launch shows no sign-in, picker or consent page");
    assert_eq!(ehr["client"]["fhir_user"], "Practitioner/pr-nurse-1");
    assert_eq!(ehr["refresh"]["patient_in_response"], "9434765919");
    assert_eq!(ehr["refresh"]["refresh_token_rotated"], true);
    assert_eq!(ehr["patient_read"]["id"], "9434765919", "client.patient.read() after the EHR launch");
    assert_eq!(ehr["careplan_search"]["total"], 1);
    assert_eq!(ehr["careplan_search"]["subjects"], serde_json::json!(["Patient/9434765919"]));

    let standalone = &result["standalone"];
    assert_eq!(standalone["ok"], true, "{standalone}");
    assert_eq!(standalone["pages_seen"], serde_json::json!(["signin", "picker", "consent"]));
    assert_eq!(standalone["token"]["patient"], "9000000009");
    assert_eq!(standalone["id_token"]["sub"], "dev:nurse");
    assert_eq!(standalone["refresh"]["patient_in_response"], "9000000009");
    assert_eq!(standalone["refresh"]["access_token_changed"], true);
    assert_eq!(standalone["http_errors"], serde_json::json!([]));
    assert_eq!(standalone["patient_read"]["id"], "9000000009");
    assert_eq!(standalone["careplan_search"]["total"], 2);
}
