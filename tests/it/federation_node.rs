//! Federated sign-in against a real OpenID provider process (node-oidc-provider, tests/idp/):
//! a plain OIDC IdP, a CIS2-shaped one (issuer with its realm path, userinfo roles, role
//! selection, back-channel logout) and an NHS login-shaped one (RS512, vtr/vot, private_key_jwt).

use carebroker::token::jose::{Algorithm, SigningKey};
use serde_json::json;
use tokio::net::TcpListener;

use crate::support::TestApp;
use crate::support::browser::{Browser, hidden_value};
use crate::support::fake_idp::write_pem;
use crate::support::node_idp::NodeIdp;
use crate::support::smart::*;

const CLIENT: &str = "carebroker";

struct Setup {
    app: TestApp,
    idp: NodeIdp,
    broker: String,
}

/// A broker on a real port (the provider calls it back) with `profile` configured as `idp_id`.
async fn setup(profile: &str, idp_id: &str) -> Setup {
    setup_with(profile, idp_id, |_| {}).await
}

/// [`setup`], with `tweak` applied to the broker's configuration.
async fn setup_with(
    profile: &str,
    idp_id: &str,
    tweak: impl FnOnce(&mut carebroker::config::Config) + Send + 'static,
) -> Setup {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broker = format!("http://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let redirect = format!("{broker}/federation/callback");
    let backchannel = format!("{broker}/federation/backchannel-logout/{idp_id}");
    let (auth, alg) = match profile {
        "plain" => (None, None),
        "cis2" => (Some(Algorithm::RS256), Some("RS256")),
        _ => (Some(Algorithm::RS512), Some("RS512")),
    };
    let key = auth.map(|alg| {
        let der = SigningKey::generate_pkcs8(alg).unwrap();
        let signing = SigningKey::from_pkcs8(alg, &der).unwrap();
        let pem = write_pem(dir.path(), "rp.pem", &der);
        let jwks = dir.path().join("rp.jwks.json");
        std::fs::write(&jwks, json!({"keys": [signing.public_jwk()]}).to_string()).unwrap();
        (pem, jwks)
    });
    let idp = match &key {
        None => NodeIdp::start(profile, CLIENT, &redirect, ("--client-secret", "node-secret"), None).await,
        Some((_, jwks)) => {
            NodeIdp::start(profile, CLIENT, &redirect, ("--client-jwks", jwks.to_str().unwrap()), Some(&backchannel))
                .await
        }
    };
    let kind = match profile {
        "plain" => "oidc",
        other => other,
    };
    let config = carebroker::config::idps::IdpConfig {
        id: idp_id.into(),
        kind: kind.parse().unwrap(),
        name: format!("{profile} (node-oidc-provider)"),
        issuer: idp.issuer.clone(),
        client_id: CLIENT.into(),
        client_secret: key.is_none().then(|| carebroker::config::Secret::new("node-secret")),
        client_secret_file: None,
        private_key_file: key.as_ref().map(|(pem, _)| pem.clone()),
        private_key_alg: alg.map(str::to_owned),
        scopes: match profile {
            "cis2" => vec!["openid".into(), "profile".into(), "nationalrbacaccess".into(), "associatedorgs".into()],
            _ => vec!["openid".into(), "profile".into()],
        },
        id_token_algs: Vec::new(),
        use_userinfo: Some(profile != "nhs_login"),
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
        backchannel_logout: true,
        ..Default::default()
    };
    let issuer = broker.clone();
    let app = TestApp::builder()
        .with_client(public_app())
        .with_dev_users()
        .with_idp(config)
        .with_config(move |c| {
            c.server.public_url = issuer;
            tweak(c);
        })
        .with_dir(dir)
        .build()
        .await;
    app.clock.set(carebroker::clock::Clock::now(&carebroker::clock::SystemClock));
    let state = app.state.clone();
    tokio::spawn(async move { carebroker::http::serve_on(state, listener, std::future::pending()).await });
    Setup { app, idp, broker }
}

/// /authorize -> the provider (signed in there already) -> our callback -> consent -> tokens.
async fn sign_in(s: &Setup, idp_id: &str, scope: &str) -> serde_json::Value {
    let mut browser = Browser::new();
    let (verifier, challenge) = pkce_pair();
    let fhir_base = format!("{}/fhir", s.broker);
    let reply = browser
        .get(&s.app, &authorize_path(&challenge, &[("idp_hint", idp_id), ("scope", scope), ("aud", &fhir_base)]))
        .await;
    let to_provider = browser.follow(&s.app, &reply).await;
    assert_eq!(to_provider.status, 303, "{}", to_provider.text());
    let upstream = to_provider.header("location").unwrap().to_owned();
    assert!(upstream.starts_with(&s.idp.root), "{upstream}");
    let cookie = s.idp.session_cookie().await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let answer = http.get(&upstream).header("cookie", cookie).send().await.unwrap();
    let back = answer
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("provider answered {}", answer.status()))
        .to_owned();
    let path = back.trim_start_matches(&s.broker).to_owned();
    assert!(path.starts_with("/federation/callback"), "{back}");
    let reply = browser.get(&s.app, &path).await;
    assert!(reply.header("location").is_some_and(|l| l.starts_with("/authorize/")), "{}", reply.text());
    let page = browser.follow(&s.app, &reply).await;
    let html = page.text();
    let (csrf, req) = (hidden_value(&html, "csrf"), hidden_value(&html, "req"));
    let mut form = vec![("csrf", csrf.as_str()), ("req", req.as_str()), ("decision", "allow")];
    let scopes: Vec<&str> = scope.split(' ').collect();
    form.extend(scopes.iter().map(|sc| ("scope", *sc)));
    let done = browser.post(&s.app, "/authorize/consent", &form, &[]).await;
    let location = done.header("location").unwrap_or_else(|| panic!("{}", done.text())).to_owned();
    let code = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code");
    let reply = s
        .app
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", APP_REDIRECT),
                ("code_verifier", &verifier),
                ("client_id", APP),
            ],
            &[],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

#[tokio::test]
async fn a_plain_oidc_provider_signs_a_user_in() {
    let s = setup("plain", "trust").await;
    let tokens = sign_in(&s, "trust", "openid fhirUser user/*.rs").await;
    let (_, access) = crate::support::jwt_parts(tokens["access_token"].as_str().unwrap());
    assert_eq!(access["sub"], "trust:alice-1");
    assert_eq!(access["fhirUser"], "Practitioner/pr-alice");
    assert_eq!(access["org"], "A9A5A");
}

#[tokio::test]
async fn a_cis2_shaped_provider_signs_a_smartcard_user_in_and_logs_them_out_by_back_channel() {
    let s = setup("cis2", "cis2").await;
    assert!(s.idp.issuer.ends_with("/openam/oauth2/realms/root/realms/NHSIdentity/realms/Healthcare"));
    let tokens = sign_in(&s, "cis2", "openid fhirUser user/*.rs online_access").await;
    let (_, access) = crate::support::jwt_parts(tokens["access_token"].as_str().unwrap());
    assert_eq!(access["sub"], "cis2:555057896106");
    assert_eq!(access["roles"], json!(["R8001"]));
    assert_eq!(access["org"], "A9A5A");
    assert_eq!(access["acr"], "AAL3_ANY");
    let refresh = tokens["refresh_token"].as_str().unwrap();

    let logout = s.idp.logout().await;
    assert_eq!(logout["backchannel_logout"]["accepted"], true, "{logout}");
    let reply = s.app.post_form("/token", &[("grant_type", "refresh_token"), ("refresh_token", refresh)], &[]).await;
    reply.assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn an_nhs_login_shaped_provider_signs_a_patient_in() {
    let s = setup("nhs_login", "nhs-login").await;
    let tokens = sign_in(&s, "nhs-login", "openid fhirUser patient/*.rs").await;
    assert_eq!(tokens["patient"], "9434765919");
    let (_, access) = crate::support::jwt_parts(tokens["access_token"].as_str().unwrap());
    assert_eq!(access["sub"], "nhs-login:nhslogin-8dc9fc1d");
    assert_eq!(access["fhirUser"], "Patient/9434765919");
    assert_eq!(access["acr"], "P9.Cp.Cd");
}

/// node-oidc-provider's NHS login profile issues a composite token for the asserted identity
/// `proxy-for:<NHS number>` (the patient as subject, the signed-in proxy in `act`); with VRS
/// confirming the role, the NHS App journey opens the patient's plan for their proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nhs_login_provider_signs_a_proxy_in_with_a_composite_token_that_vrs_confirms() {
    let vrs = crate::support::vrs_double::VrsDouble::default();
    let base = vrs.start().await;
    vrs.grant("role-1", "9434765919", "9000000009");
    let s = setup_with("nhs_login", "nhs-login", move |c| {
        c.vrs.enabled = true;
        c.vrs.base_url = base;
        c.nhs_app.enabled = true;
        c.nhs_app.idp = "nhs-login".into();
        c.nhs_app.journeys.insert("careplan".into(), carebroker::config::NhsAppJourney { client_id: APP.into() });
    })
    .await;
    let mut browser = Browser::new();
    let entry = browser.get(&s.app, "/nhs-app/careplan?assertedLoginIdentity=proxy-for:9000000009").await;
    assert_eq!(entry.status, 303, "{}", entry.text());
    let upstream = entry.header("location").unwrap().to_owned();
    assert!(upstream.starts_with(&s.idp.root), "{upstream}");
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let answer = http.get(&upstream).send().await.unwrap();
    let back = answer.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let path = back.trim_start_matches(&s.broker).to_owned();
    assert!(path.starts_with("/federation/callback"), "{back}");
    let launched = browser.get(&s.app, &path).await;
    let launch_url = launched.header("location").unwrap_or_default().to_owned();
    assert!(launch_url.starts_with("https://viewer.example/launch"), "{launch_url} {}", launched.text());
    assert!(vrs.hits.load(std::sync::atomic::Ordering::SeqCst) >= 1, "VRS was asked");
    let people = s.app.state.stores.durable.list_resources("RelatedPerson", 100).await.unwrap();
    let person = people.iter().find(|p| p.id.starts_with("rp-")).expect("the verified relationship is recorded");
    let person: serde_json::Value = serde_json::from_str(&person.data).unwrap();
    assert_eq!(person["patient"]["reference"], "Patient/9000000009");
    assert_eq!(person["identifier"][1]["value"], "9434765919", "the proxy is the signed-in account");

    // a proxy-for a patient VRS holds no role for signs nobody in
    let mut browser = Browser::new();
    let entry = browser.get(&s.app, "/nhs-app/careplan?assertedLoginIdentity=proxy-for:9449306621").await;
    let upstream = entry.header("location").unwrap().to_owned();
    let answer = http.get(&upstream).send().await.unwrap();
    let back = answer.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let refused = browser.get(&s.app, back.trim_start_matches(&s.broker)).await;
    assert!(
        !refused.header("location").unwrap_or_default().starts_with("https://viewer.example/launch"),
        "{}",
        refused.text()
    );
}
