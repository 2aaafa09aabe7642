//! End to end in a real browser: SMART's own JavaScript client (npm `fhirclient`) in headless
//! Chromium, driven by `playwright-core` (tests/e2e/smart_launch.mjs), completes an EHR launch
//! from `POST /launch` and a standalone launch through the sign-in, patient picker and consent
//! pages, each ending with a token whose `patient` matches, then a refresh.

use std::process::Command;

use carebroker::domain::client::ClientMetadata;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::support::smart::{EHR, EHR_SECRET, trusted_ehr};
use crate::support::{TestApp, free_port};

/// A resident of the care home VNC12 in the seeded records (`config/dev/fhir/patients.json`).
const PATIENT_AT_VNC12: &str = "9449306621";

/// The SMART app the e2e driver serves on `app_origin` (public, PKCE), optionally sent to one
/// identity provider.
fn e2e_client(app_origin: &str, idp: Option<&str>) -> ClientMetadata {
    ClientMetadata {
        client_id: "e2e-app".into(),
        client_name: Some("E2E care plan app".into()),
        token_endpoint_auth_method: "none".into(),
        redirect_uris: vec![format!("{app_origin}/callback")],
        launch_uri: Some(format!("{app_origin}/launch")),
        grant_types: vec!["authorization_code".into(), "refresh_token".into()],
        scope: "launch launch/patient openid fhirUser profile offline_access online_access patient/*.rs".into(),
        default_identity_provider: idp.map(str::to_owned),
        ..Default::default()
    }
}

/// Serves `app` on `listener` for the browser, on real time (the browser and the app page are).
pub(crate) fn serve_live(app: &TestApp, listener: TcpListener) {
    app.clock.set(carebroker::clock::Clock::now(&carebroker::clock::SystemClock));
    let state = app.state.clone();
    tokio::spawn(async move { carebroker::http::serve_on(state, listener, std::future::pending()).await });
}

/// Runs `tests/e2e/smart_launch.mjs` with `args` and returns its JSON result (its last line).
async fn smart_launch(args: Vec<String>) -> Value {
    e2e_script("smart_launch.mjs", args).await
}

/// Runs the browser driver `tests/e2e/{script}` with `args` and returns its JSON result (its
/// last line).
pub(crate) async fn e2e_script(script: &str, args: Vec<String>) -> Value {
    let e2e = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e");
    assert!(
        std::path::Path::new(&format!("{e2e}/node_modules/fhirclient")).exists(),
        "tests/e2e/node_modules is missing: run the suite with scripts/test.sh (it runs npm ci there)"
    );
    let mut all = vec![format!("{e2e}/{script}")];
    all.extend(args);
    let output = tokio::task::spawn_blocking(move || Command::new("node").args(&all).output())
        .await
        .expect("join")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the browser run failed:\n{}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smart_js_client_completes_an_ehr_launch_and_a_standalone_launch_in_chromium() {
    let app_port = free_port();
    let app_origin = format!("http://127.0.0.1:{app_port}");
    let client = e2e_client(&app_origin, None);
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
    // Care plans for both patients, so the compartment shows in the app's search.
    for patient in ["9434765919", "9000000009", "9000000009"] {
        crate::support::fhir::create_plan(
            &app,
            &crate::support::fhir::care_plan(patient, crate::support::fhir::ADVANCE, "2026-01-01"),
        )
        .await;
    }
    serve_live(&app, listener);

    let shots = std::env::var("CAREBROKER_E2E_SCREENSHOTS").ok();
    let mut args = vec![
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
    let result = smart_launch(args).await;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_sign_in_in_chromium_gives_the_smart_client_an_upstream_identity() {
    use carebroker::token::jose::{Algorithm, SigningKey};
    let app_port = free_port();
    let app_origin = format!("http://127.0.0.1:{app_port}");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let broker = format!("http://{}", listener.local_addr().expect("addr"));
    let dir = tempfile::tempdir().unwrap();
    // a CIS2-shaped provider (node-oidc-provider) with private_key_jwt
    let der = SigningKey::generate_pkcs8(Algorithm::RS256).unwrap();
    let rp = SigningKey::from_pkcs8(Algorithm::RS256, &der).unwrap();
    let pem = crate::support::fake_idp::write_pem(dir.path(), "rp.pem", &der);
    let jwks = dir.path().join("rp.jwks.json");
    std::fs::write(&jwks, serde_json::json!({"keys": [rp.public_jwk()]}).to_string()).unwrap();
    let idp = crate::support::node_idp::NodeIdp::start(
        "cis2",
        "carebroker",
        &format!("{broker}/federation/callback"),
        ("--client-jwks", jwks.to_str().unwrap()),
        None,
    )
    .await;
    let idp_config = carebroker::config::idps::IdpConfig {
        id: "cis2".into(),
        kind: carebroker::config::idps::IdpKind::Cis2,
        name: "NHS smartcard (CIS2)".into(),
        issuer: idp.issuer.clone(),
        client_id: "carebroker".into(),
        client_secret: None,
        client_secret_file: None,
        private_key_file: Some(pem),
        private_key_alg: Some("RS256".into()),
        scopes: vec!["openid".into(), "profile".into(), "nationalrbacaccess".into(), "associatedorgs".into()],
        id_token_algs: Vec::new(),
        use_userinfo: Some(true),
        discovery_cache_secs: 3600,
        dev_only: false,
        claims: Default::default(),
        acr_values: Some("AAL3_ANY".into()),
        min_authentication_assurance_level: 3,
        min_id_assurance_level: 3,
        max_auth_age_secs: 300,
        select_role: true,
        vtr: Vec::new(),
        session_idle_secs: None,
        session_absolute_secs: None,
        backchannel_logout: false,
        ..Default::default()
    };
    let client = e2e_client(&app_origin, Some("cis2"));
    let issuer = broker.clone();
    let app = TestApp::builder()
        .with_client(client)
        .with_dev_users()
        .with_idp(idp_config)
        .with_config(move |c| c.server.public_url = issuer)
        .with_dir(dir)
        .build()
        .await;
    serve_live(&app, listener);

    let args = vec![
        "--broker".into(),
        broker,
        "--app-port".into(),
        app_port.to_string(),
        "--client-id".into(),
        "e2e-app".into(),
        "--only".into(),
        "standalone".into(),
        "--idp-login".into(),
        "555057896106".into(),
        "--patient".into(),
        "9000000009".into(),
    ];
    let result = smart_launch(args).await;
    let standalone = &result["standalone"];
    assert_eq!(standalone["ok"], true, "{standalone}");
    assert_eq!(standalone["pages_seen"], serde_json::json!(["upstream-signin", "picker", "consent"]));
    assert_eq!(standalone["id_token"]["sub"], "cis2:555057896106", "the identity came from the upstream provider");
    assert_eq!(standalone["token"]["patient"], "9000000009");
    assert_eq!(
        standalone["picker_patients"],
        serde_json::json!(["9000000009", "9434765919"]),
        "patients of the CIS2 role's organisation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_care_home_carer_signs_in_through_simplesamlphp_in_chromium() {
    let certs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/test");
    let app_port = free_port();
    let app_origin = format!("http://127.0.0.1:{app_port}");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let broker = format!("http://{}", listener.local_addr().expect("addr"));
    let dir = tempfile::tempdir().unwrap();
    let idp = crate::support::simplesaml::SimpleSaml::start(&broker).await;
    let idp_config = carebroker::config::idps::IdpConfig {
        id: "lavender".into(),
        kind: carebroker::config::idps::IdpKind::Saml,
        name: "Lavender Care Homes".into(),
        issuer: idp.entity_id(),
        claims: carebroker::config::idps::ClaimMapping {
            subject: "NameID".into(),
            name: "displayName".into(),
            org: "odsCode".into(),
            roles: "role".into(),
            fhir_user_template: Some("Practitioner/{sub}".into()),
            ..Default::default()
        },
        saml: carebroker::config::idps::SamlIdpSettings {
            metadata_url: Some(idp.entity_id()),
            sign_requests: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let client = e2e_client(&app_origin, Some("lavender"));
    let issuer = broker.clone();
    let app = TestApp::builder()
        .with_client(client)
        .with_dev_users()
        .with_idp(idp_config)
        .with_config(move |c| {
            c.server.public_url = issuer;
            c.federation.saml.key_file = Some(certs.join("saml-sp.key.pem"));
            c.federation.saml.cert_file = Some(certs.join("saml-sp.crt.pem"));
        })
        .with_dir(dir)
        .build()
        .await;
    serve_live(&app, listener);

    let args = vec![
        "--broker".into(),
        broker,
        "--app-port".into(),
        app_port.to_string(),
        "--client-id".into(),
        "e2e-app".into(),
        "--only".into(),
        "standalone".into(),
        "--idp-login".into(),
        "carer:carer-pass".into(),
        "--patient".into(),
        PATIENT_AT_VNC12.into(),
    ];
    let result = smart_launch(args).await;
    let standalone = &result["standalone"];
    assert_eq!(standalone["ok"], true, "{standalone}");
    assert_eq!(standalone["pages_seen"], serde_json::json!(["saml-signin", "picker", "consent"]));
    assert_eq!(standalone["id_token"]["sub"], "lavender:cj-4471", "the identity came from the SAML IdP");
    assert_eq!(standalone["token"]["patient"], PATIENT_AT_VNC12);
    assert_eq!(standalone["http_errors"], serde_json::json!([]));
}
