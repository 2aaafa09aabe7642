//! A partner app as a real relying party: panva's `openid-client` (npm, OpenID-certified)
//! drives PAR + authorization code with a DPoP-bound token, a DPoP FHIR read, and a token
//! exchange to a narrower token, which needs a proof of the subject token's key; then it signs
//! its user in at a real OpenID provider (node-oidc-provider, tests/idp) itself and exchanges
//! that ID token, with the launch an EHR registered for the same user, for a patient-scoped
//! token that reads the care plan (tests/e2e/partner_app.mjs).

use std::process::Command;

use serde_json::Value;
use tokio::net::TcpListener;

use crate::support::TestApp;
use crate::support::fhir::{ADVANCE, care_plan, create_plan};
use crate::support::node_idp::NodeIdp;
use crate::support::smart::{EHR, EHR_SECRET, trusted_ehr};

const PARTNER: &str = "hospice-app";
const SECRET: &str = "hospice-secret-hospice-secret-0123";
const IDP_CLIENT: &str = "hospice-at-the-trust";
const IDP_SECRET: &str = "hospice-at-the-trust-secret";
const IDP_REDIRECT: &str = "https://hospice.example/signed-in";
const PATIENT: &str = "9434765919";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_client_pushes_redeems_with_dpop_reads_and_exchanges() {
    let e2e = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e");
    assert!(
        std::path::Path::new(&format!("{e2e}/node_modules/openid-client")).exists(),
        "tests/e2e/node_modules is missing: run the suite with scripts/test.sh (it runs npm ci there)"
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let mut partner = crate::support::keys::secret_client(PARTNER, "client_secret_post", SECRET);
    partner.grant_types = vec!["authorization_code".into(), "urn:ietf:params:oauth:grant-type:token-exchange".into()];
    partner.redirect_uris = vec!["https://hospice.example/callback".into()];
    partner.launch_uri = Some("https://hospice.example/launch".into());
    partner.scope = "launch patient/*.rs".into();
    partner.dpop_bound_access_tokens = true;
    partner.require_pushed_authorization_requests = true;
    partner.token_exchange_subject_token_types = vec![
        "urn:ietf:params:oauth:token-type:access_token".into(),
        "urn:ietf:params:oauth:token-type:id_token".into(),
    ];
    // The partner's own client at an upstream provider; carebroker takes its ID tokens in
    // exchange (and from the EHR in POST /launch) because this provider file says so.
    let idp = NodeIdp::start("plain", IDP_CLIENT, IDP_REDIRECT, ("--client-secret", IDP_SECRET), None).await;
    let idp_config = carebroker::config::idps::IdpConfig {
        id: "trust-idp".into(),
        kind: carebroker::config::idps::IdpKind::Oidc,
        name: "A trust's OpenID provider".into(),
        issuer: idp.issuer.clone(),
        client_id: "carebroker-at-the-trust".into(),
        client_secret: Some(carebroker::config::Secret::new("unused-here")),
        scopes: vec!["openid".into(), "profile".into()],
        accept_exchange: true,
        accept_presented_tokens: true,
        presented_audiences: vec![IDP_CLIENT.into()],
        discovery_cache_secs: 3600,
        ..Default::default()
    };
    let mut ehr = trusted_ehr();
    ehr.ehr_launch.as_mut().unwrap().apps.push(PARTNER.into());
    let public = base.clone();
    let app = TestApp::builder()
        .with_client(partner)
        .with_client(ehr)
        .with_idp(idp_config)
        .with_dir(tempfile::tempdir().unwrap())
        .with_dev_users()
        .with_config(move |c| {
            c.server.public_url = public.clone();
        })
        .build()
        .await;
    app.clock.set(carebroker::clock::Clock::now(&carebroker::clock::SystemClock));
    let plan = create_plan(&app, &care_plan(PATIENT, ADVANCE, "2026-01-01")).await;
    let state = app.state.clone();
    tokio::spawn(async move { carebroker::http::serve_on(state, listener, std::future::pending()).await });

    let args = vec![
        format!("{e2e}/partner_app.mjs"),
        "--broker".into(),
        base.clone(),
        "--client-id".into(),
        PARTNER.into(),
        "--client-secret".into(),
        SECRET.into(),
        "--redirect-uri".into(),
        "https://hospice.example/callback".into(),
        "--ehr-id".into(),
        EHR.into(),
        "--ehr-secret".into(),
        EHR_SECRET.into(),
        "--idp".into(),
        idp.issuer.clone(),
        "--idp-root".into(),
        idp.root.clone(),
        "--idp-client-id".into(),
        IDP_CLIENT.into(),
        "--idp-client-secret".into(),
        IDP_SECRET.into(),
        "--idp-redirect-uri".into(),
        IDP_REDIRECT.into(),
    ];
    let output = tokio::task::spawn_blocking(move || Command::new("node").args(&args).output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "partner app failed:\n{}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let out: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(out["par_endpoint"], format!("{base}/par"), "{out}");
    assert!(out["request_uri"].as_str().unwrap_or_default().starts_with("urn:ietf:params:oauth:request_uri:"), "{out}");
    assert_eq!(out["code"]["token_type"], "dpop", "{out}");
    assert_eq!(out["code"]["patient"], "9434765919", "{out}");
    assert_eq!(out["code_read"]["status"], 200, "{out}");
    assert_eq!(out["code_read"]["id"], "9434765919", "{out}");
    assert_eq!(out["exchange_other_key"], "invalid_request", "a bound subject token needs its key: {out}");
    assert_eq!(out["exchange"]["issued_token_type"], "urn:ietf:params:oauth:token-type:access_token", "{out}");
    assert_eq!(out["exchange"]["scope"], "patient/Patient.rs", "{out}");
    assert_eq!(out["exchange"]["patient"], "9434765919", "{out}");
    assert_eq!(out["exchange_read"]["status"], 200, "{out}");
    assert_eq!(out["exchange_read_wrong_key"]["status"], 401, "{out}");

    let by_id_token = &out["id_token_exchange"];
    assert_eq!(by_id_token["idp_sub"], "alice-1", "{out}");
    assert_eq!(by_id_token["exchange"]["token_type"], "dpop", "{out}");
    assert_eq!(by_id_token["exchange"]["patient"], PATIENT, "{out}");
    assert_eq!(by_id_token["exchange"]["scope"], "patient/CarePlan.rs", "{out}");
    assert_eq!(by_id_token["care_plans"]["status"], 200, "{out}");
    assert_eq!(
        by_id_token["care_plans"]["subjects"],
        serde_json::json!([format!("Patient/{PATIENT}")]),
        "{plan} {out}"
    );
    assert_eq!(by_id_token["launch_again"], "invalid_request", "a launch is used once: {out}");
    // the exchange is audited against the upstream user, with the provider and the token type
    let records = app.state.stores.durable.audit_records(0, 1000).await.unwrap();
    let exchanged = records
        .iter()
        .filter_map(|r| serde_json::from_str::<Value>(&r.data).ok())
        .find(|e| {
            e["kind"] == "token-exchange" && e["outcome"] == "success" && e.to_string().contains("trust-idp:alice-1")
        })
        .expect("the ID-token exchange is audited");
    assert!(exchanged.to_string().contains("token-type:id_token"), "{exchanged}");
}
