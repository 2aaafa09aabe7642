//! Federated sign-in against a scriptable provider: generic OIDC, CIS2-shaped and NHS
//! login-shaped happy paths, and every rejection — each ends on a clear page with no session.

use serde_json::json;

use crate::support::browser::{Browser, assert_no_session, consent_and_exchange};
use crate::support::fake_idp::FakeIdp;
use crate::support::smart::*;
use crate::support::{Reply, TestApp};

async fn app_with(idp: &FakeIdp, id: &str, tweak: impl FnOnce(&mut carebroker::config::idps::IdpConfig)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = idp.config(id, dir.path());
    tweak(&mut config);
    TestApp::builder()
        .with_client(public_app())
        .with_client(trusted_ehr())
        .with_dev_users()
        .with_idp(config)
        .with_dir(dir)
        .build()
        .await
}

/// Browser -> /authorize (idp_hint) -> the provider -> back to /federation/callback.
async fn sign_in(app: &TestApp, browser: &mut Browser, idp: &str, overrides: &[(&str, &str)]) -> Reply {
    let (_, challenge) = pkce_pair();
    let mut all = vec![("idp_hint", idp)];
    all.extend_from_slice(overrides);
    let reply = browser.get(app, &authorize_path(&challenge, &all)).await;
    assert!(reply.header("location").is_some_and(|l| l.starts_with("/signin")), "{reply:?}");
    let to_provider = browser.follow(app, &reply).await;
    follow_provider(app, browser, &to_provider).await
}

/// Follows a redirect to the provider and its redirect back to carebroker.
pub(crate) async fn follow_provider(app: &TestApp, browser: &mut Browser, reply: &Reply) -> Reply {
    assert_eq!(reply.status, 303, "{}", reply.text());
    let upstream = reply.header("location").unwrap().to_owned();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let answer = http.get(&upstream).send().await.unwrap();
    let back = answer
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("provider did not redirect back"))
        .to_owned();
    let path = back.trim_start_matches(crate::support::ISSUER).to_owned();
    assert!(path.starts_with("/federation/callback"), "{back}");
    browser.get(app, &path).await
}

#[tokio::test]
async fn a_generic_oidc_user_signs_in_with_mapped_claims() {
    let idp = FakeIdp::start("oidc").await;
    let app = app_with(&idp, "trust", |_| {}).await;
    let mut browser = Browser::new();
    let (verifier, challenge) = pkce_pair();
    let reply = browser
        .get(&app, &authorize_path(&challenge, &[("idp_hint", "trust"), ("scope", "openid fhirUser user/*.rs")]))
        .await;
    let to_provider = browser.follow(&app, &reply).await;
    let back = follow_provider(&app, &mut browser, &to_provider).await;
    assert!(back.header("location").unwrap().starts_with("/authorize/consent"), "{}", back.text());
    let code = consent_and_exchange(&app, &mut browser, &back).await;
    let tokens = exchange(&app, &code, &verifier).await.json();
    let (_, access) = crate::support::jwt_parts(tokens["access_token"].as_str().unwrap());
    assert_eq!(access["sub"], "trust:alice-1");
    assert_eq!(access["fhirUser"], "Practitioner/pr-alice");
    assert_eq!(access["org"], "A9A5A");
    assert_eq!(access["roles"], json!(["R8000"]));
    let params = idp.last_authorize();
    for name in ["nonce", "state", "code_challenge"] {
        assert!(params.iter().any(|(k, _)| k == name), "{name} sent upstream");
    }
    assert!(params.iter().any(|(k, v)| k == "code_challenge_method" && v == "S256"));
}

#[tokio::test]
async fn a_cis2_smartcard_user_signs_in_with_the_selected_role() {
    let idp = FakeIdp::start("cis2").await;
    let app = app_with(&idp, "cis2", |_| {}).await;
    let mut browser = Browser::new();
    let (verifier, challenge) = pkce_pair();
    let reply =
        browser.get(&app, &authorize_path(&challenge, &[("idp_hint", "cis2"), ("scope", "openid user/*.rs")])).await;
    let to_provider = browser.follow(&app, &reply).await;
    let back = follow_provider(&app, &mut browser, &to_provider).await;
    assert!(back.header("location").unwrap().starts_with("/authorize/consent"), "{}", back.text());
    let params = idp.last_authorize();
    let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!(get("acr_values"), "AAL3_ANY");
    assert_eq!(get("prompt"), "login", "role selection needs prompt=login");
    assert!(get("scope").split(' ').any(|s| s == "selectedrole"));
    let code = consent_and_exchange(&app, &mut browser, &back).await;
    let tokens = exchange(&app, &code, &verifier).await.json();
    let (_, access) = crate::support::jwt_parts(tokens["access_token"].as_str().unwrap());
    assert_eq!(access["sub"], "cis2:555057896106");
    assert_eq!(access["roles"], json!(["R8001"]), "the selected role, not the student role");
    assert_eq!(access["org"], "A9A5A", "the selected role's organisation");
    assert_eq!(access["acr"], "AAL3_ANY");
    assert_eq!(access["amr"], json!(["N3_SMARTCARD"]));
}

#[tokio::test]
async fn an_nhs_login_patient_signs_in_as_their_own_patient() {
    let idp = FakeIdp::start("nhs_login").await;
    let app = app_with(&idp, "nhs-login", |_| {}).await;
    let mut browser = Browser::new();
    let (verifier, challenge) = pkce_pair();
    let reply = browser.get(&app, &authorize_path(&challenge, &[("idp_hint", "nhs-login")])).await;
    let to_provider = browser.follow(&app, &reply).await;
    let back = follow_provider(&app, &mut browser, &to_provider).await;
    assert!(back.header("location").unwrap().starts_with("/authorize/consent"), "no patient picker: {}", back.text());
    let vtr = idp.last_authorize().into_iter().find(|(k, _)| k == "vtr").map(|(_, v)| v).unwrap();
    assert_eq!(serde_json::from_str::<Vec<String>>(&vtr).unwrap(), vec!["P9.Cp.Cd", "P9.Cp.Ck", "P9.Cm"]);
    let code = consent_and_exchange(&app, &mut browser, &back).await;
    let tokens = exchange(&app, &code, &verifier).await.json();
    assert_eq!(tokens["patient"], "9434765919");
    let (_, access) = crate::support::jwt_parts(tokens["access_token"].as_str().unwrap());
    assert_eq!(access["fhirUser"], "Patient/9434765919");
    assert_eq!(access["acr"], "P9.Cp.Cd");
}

#[tokio::test]
async fn every_bad_answer_from_a_provider_fails_with_a_page_and_no_session() {
    type Spoil = Box<dyn Fn(&mut crate::support::fake_idp::Knobs)>;
    let cases: Vec<(&'static str, &'static str, Spoil)> = vec![
        ("oidc", "wrong issuer", Box::new(|k| k.issuer = Some("https://evil.example".into()))),
        ("oidc", "wrong nonce", Box::new(|k| k.nonce = Some("replayed".into()))),
        ("oidc", "wrong audience", Box::new(|k| k.audience = Some(json!("someone-else")))),
        ("oidc", "audience list without azp", Box::new(|k| k.audience = Some(json!(["carebroker-rp", "other"])))),
        ("oidc", "expired", Box::new(|k| k.exp_offset = Some(-120))),
        ("oidc", "alg none", Box::new(|k| k.alg_none = true)),
        ("oidc", "unknown kid", Box::new(|k| k.kid = Some("rotated-away".into()))),
        ("oidc", "signed by another key", Box::new(|k| k.foreign_key = true)),
        ("oidc", "userinfo sub mismatch", Box::new(|k| k.userinfo_sub = Some("mallory".into()))),
        ("oidc", "provider refused", Box::new(|k| k.authorize_error = Some("access_denied".into()))),
        (
            "cis2",
            "AAL too low",
            Box::new(|k| {
                k.id_claims.insert("authentication_assurance_level".into(), json!("2"));
            }),
        ),
        (
            "cis2",
            "identity assurance too low",
            Box::new(|k| {
                k.id_claims.insert("id_assurance_level".into(), json!(1));
            }),
        ),
        (
            "cis2",
            "stale smartcard sign-in",
            Box::new(|k| {
                k.id_claims.insert("auth_time".into(), json!(crate::support::T0 - 3600));
            }),
        ),
        (
            "cis2",
            "selected role not the user's",
            Box::new(|k| {
                k.id_claims.insert("selected_roleid".into(), json!("999"));
            }),
        ),
        (
            "cis2",
            "no role selected among several",
            Box::new(|k| {
                k.id_claims.insert("selected_roleid".into(), serde_json::Value::Null);
            }),
        ),
        (
            "nhs_login",
            "vot not requested",
            Box::new(|k| {
                k.id_claims.insert("vot".into(), json!("P5.Cp"));
                k.id_claims.insert("identity_proofing_level".into(), json!("P5"));
            }),
        ),
        (
            "nhs_login",
            "missing NHS number",
            Box::new(|k| {
                k.id_claims.insert("nhs_number".into(), serde_json::Value::Null);
            }),
        ),
        (
            "nhs_login",
            "invalid NHS number",
            Box::new(|k| {
                k.id_claims.insert("nhs_number".into(), json!("9434765918"));
            }),
        ),
        (
            "nhs_login",
            "proofing level below the vector's",
            Box::new(|k| {
                k.id_claims.insert("identity_proofing_level".into(), json!("P5"));
            }),
        ),
    ];
    for (profile, why, spoil) in cases {
        let idp = FakeIdp::start(profile).await;
        idp.set(|k| spoil(k));
        let app = app_with(&idp, "up", |_| {}).await;
        let mut browser = Browser::new();
        let failed = sign_in(&app, &mut browser, "up", &[]).await;
        assert_no_session(&app, &mut browser, &failed, why).await;
        let records = app.state.stores.durable.audit_records(0, 10).await.unwrap();
        assert!(
            records.iter().any(|r| r.data.contains("sign-in") && r.data.contains("failed")),
            "{why}: failure audited"
        );
    }
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_jwks_once() {
    let idp = FakeIdp::start("oidc").await;
    let app = app_with(&idp, "up", |_| {}).await;
    let mut browser = Browser::new();
    let ok = sign_in(&app, &mut browser, "up", &[]).await;
    assert!(ok.header("location").is_some());
    let before = idp.jwks_fetches.load(std::sync::atomic::Ordering::SeqCst);
    idp.set(|k| k.kid = Some("new-kid".into()));
    let mut other = Browser::new();
    let failed = sign_in(&app, &mut other, "up", &[]).await;
    assert_eq!(failed.status, 403);
    assert_eq!(idp.jwks_fetches.load(std::sync::atomic::Ordering::SeqCst), before + 1, "exactly one refetch");
}

#[tokio::test]
async fn a_provider_answer_is_single_use_and_bound_to_its_browser() {
    let idp = FakeIdp::start("oidc").await;
    let app = app_with(&idp, "up", |_| {}).await;
    let mut browser = Browser::new();
    let (_, challenge) = pkce_pair();
    let reply = browser.get(&app, &authorize_path(&challenge, &[("idp_hint", "up")])).await;
    let to_provider = browser.follow(&app, &reply).await;
    let upstream = to_provider.header("location").unwrap().to_owned();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let back = http.get(&upstream).send().await.unwrap().headers()["location"]
        .to_str()
        .unwrap()
        .trim_start_matches(crate::support::ISSUER)
        .to_owned();
    let mut thief = Browser::new();
    assert_eq!(thief.get(&app, &back).await.status, 403, "another browser cannot use the answer");
    let mut browser2 = browser.clone();
    let first = browser.get(&app, &back).await;
    assert_eq!(first.status, 403, "the thief's attempt used the state up: {}", first.text());
    let _ = browser2.get(&app, &back).await;
}

#[tokio::test]
async fn prompt_none_without_a_session_is_login_required_and_the_provider_is_not_asked() {
    let idp = FakeIdp::start("oidc").await;
    let app = app_with(&idp, "up", |_| {}).await;
    let (_, challenge) = pkce_pair();
    let reply = app.get(&authorize_path(&challenge, &[("idp_hint", "up"), ("prompt", "none")])).await;
    assert_eq!(error_from(&reply, Some("st-123")), "login_required");
    assert!(idp.last_authorize().is_empty());
}

#[tokio::test]
async fn the_chooser_lists_allowed_providers_and_hints_skip_it() {
    let oidc = FakeIdp::start("oidc").await;
    let dir = tempfile::tempdir().unwrap();
    let mut two = public_app();
    two.identity_providers = vec!["trust".into(), "dev".into()];
    let app =
        TestApp::builder().with_client(two).with_dev_users().with_idp(oidc.config("trust", dir.path())).build().await;
    let mut browser = Browser::new();
    let (_, challenge) = pkce_pair();
    let reply = browser.get(&app, &authorize_path(&challenge, &[])).await;
    let chooser = browser.follow(&app, &reply).await;
    let html = chooser.text();
    assert!(
        html.contains("How do you want to sign in?") && html.contains("idp=trust") && html.contains("idp=dev"),
        "{html}"
    );
    let req = reply.header("location").unwrap().split("req=").nth(1).unwrap().to_owned();
    let dev = browser.get(&app, &format!("/signin?req={req}&idp=dev")).await;
    assert!(dev.text().contains("name=\"password\""));
    let unknown = browser.get(&app, &format!("/signin?req={req}&idp=elsewhere")).await;
    assert_eq!(unknown.status, 400);
    let hinted = browser.get(&app, &authorize_path(&challenge, &[("idp_hint", "trust")])).await;
    let next = browser.follow(&app, &hinted).await;
    assert!(next.header("location").unwrap().starts_with(&oidc.issuer), "idp_hint goes straight to the provider");
}

/// Signs in through the provider with online_access and returns the browser and the tokens.
async fn online_session(app: &TestApp, idp_id: &str) -> (Browser, serde_json::Value) {
    let mut browser = Browser::new();
    let (verifier, challenge) = pkce_pair();
    let reply = browser
        .get(app, &authorize_path(&challenge, &[("idp_hint", idp_id), ("scope", "openid user/*.rs online_access")]))
        .await;
    let to_provider = browser.follow(app, &reply).await;
    let back = follow_provider(app, &mut browser, &to_provider).await;
    let code = consent_and_exchange(app, &mut browser, &back).await;
    let tokens = exchange(app, &code, &verifier).await.json();
    assert!(tokens["refresh_token"].is_string(), "{tokens}");
    (browser, tokens)
}

async fn backchannel(app: &TestApp, idp_id: &str, token: &str) -> Reply {
    app.post_form(&format!("/federation/backchannel-logout/{idp_id}"), &[("logout_token", token)], &[]).await
}

#[tokio::test]
async fn a_verified_backchannel_logout_ends_the_session_and_its_online_grants() {
    let idp = FakeIdp::start("oidc").await;
    let app = app_with(&idp, "trust", |_| {}).await;
    let (mut browser, tokens) = online_session(&app, "trust").await;
    let mut refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let now = crate::support::T0;

    // forged, replayed, malformed tokens are refused and end nothing
    let forged = {
        idp.set(|k| k.foreign_key = true);
        let t = idp.logout_token("upstream-sid-1", now, |_| {});
        idp.set(|k| k.foreign_key = false);
        t
    };
    let spoiled: Vec<(&str, String)> = vec![
        ("forged", forged),
        (
            "no events",
            idp.logout_token("upstream-sid-1", now, |c| {
                c.remove("events");
            }),
        ),
        (
            "nonce present",
            idp.logout_token("upstream-sid-1", now, |c| {
                c.insert("nonce".into(), json!("n"));
            }),
        ),
        ("too old", idp.logout_token("upstream-sid-1", now - 3600, |_| {})),
        (
            "wrong audience",
            idp.logout_token("upstream-sid-1", now, |c| {
                c.insert("aud".into(), json!("other"));
            }),
        ),
        (
            "neither sid nor sub",
            idp.logout_token("upstream-sid-1", now, |c| {
                c.remove("sid");
            }),
        ),
    ];
    for (why, token) in spoiled {
        let reply = backchannel(&app, "trust", &token).await;
        assert_eq!(reply.status, 400, "{why}");
        assert_eq!(reply.json()["error"], "invalid_request", "{why}");
    }
    assert_eq!(refresh_status(&app, &mut refresh).await, 200, "still signed in after refused logouts");

    let good = idp.logout_token("upstream-sid-1", now, |_| {});
    assert_eq!(backchannel(&app, "trust", &good).await.status, 200);
    assert_eq!(backchannel(&app, "trust", &good).await.status, 400, "a logout token is used once");
    assert_eq!(refresh_status(&app, &mut refresh).await, 400, "the online_access grant ended");
    let (_, challenge) = pkce_pair();
    let again = browser.get(&app, &authorize_path(&challenge, &[("idp_hint", "dev")])).await;
    assert!(again.header("location").unwrap().starts_with("/signin"), "the browser is signed out");
}

/// Refreshes with the current token of the family (keeping the rotated one).
async fn refresh_status(app: &TestApp, current: &mut String) -> u16 {
    let reply =
        app.post_form("/token", &[("grant_type", "refresh_token"), ("refresh_token", current.as_str())], &[]).await;
    if reply.status == 200 {
        *current = reply.json()["refresh_token"].as_str().unwrap().to_owned();
    }
    reply.status.as_u16()
}

#[tokio::test]
async fn backchannel_logout_is_refused_for_providers_without_it() {
    let idp = FakeIdp::start("oidc").await;
    let app = app_with(&idp, "trust", |c| c.backchannel_logout = false).await;
    let token = idp.logout_token("upstream-sid-1", crate::support::T0, |_| {});
    assert_eq!(backchannel(&app, "trust", &token).await.status, 400);
    assert_eq!(backchannel(&app, "nobody", &token).await.status, 400);
}

async fn nhs_app(idp: &FakeIdp) -> TestApp {
    nhs_app_with(idp, |_| {}).await
}

/// An app behind the NHS App jump-off `careplan`, with `idp` as NHS login and `tweak` applied.
pub(crate) async fn nhs_app_with(
    idp: &FakeIdp,
    tweak: impl FnOnce(&mut carebroker::config::Config) + Send + 'static,
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let config = idp.config("nhs-login", dir.path());
    let assetlinks = dir.path().join("assetlinks.json");
    std::fs::write(&assetlinks, r#"[{"relation":["delegate_permission/common.handle_all_urls"],"target":{"namespace":"android_app","package_name":"com.nhs.online.nhsonline"}}]"#).unwrap();
    let mut app = public_app();
    app.skip_consent = true;
    TestApp::builder()
        .with_client(app)
        .with_dev_users()
        .with_idp(config)
        .with_config(move |c| {
            c.nhs_app.enabled = true;
            c.nhs_app.idp = "nhs-login".into();
            c.nhs_app.home_url = "https://www.nhsapp.service.nhs.uk/".into();
            c.nhs_app.journeys.insert("careplan".into(), carebroker::config::NhsAppJourney { client_id: APP.into() });
            c.nhs_app.assetlinks_file = Some(assetlinks);
            tweak(c);
        })
        .with_dir(dir)
        .build()
        .await
}

const NHS_APP_UA: &str = "Mozilla/5.0 (Linux; Android 14) Mobile Safari/537.36 nhsapp-android/2.40.0";

#[tokio::test]
async fn an_nhs_app_jump_off_signs_the_patient_in_silently_and_opens_their_plan() {
    let idp = FakeIdp::start("nhs_login").await;
    let app = nhs_app(&idp).await;
    let mut browser = Browser::new();
    let entry =
        browser.get(&app, "/nhs-app/careplan?source=app&assertedLoginIdentity=eyJhbGciOiJSUzUxMiJ9.e30.sig").await;
    let back = follow_provider(&app, &mut browser, &entry).await;
    let sent = idp.last_authorize();
    let get = |n: &str| sent.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!(get("prompt"), "none");
    assert_eq!(get("asserted_login_identity"), "eyJhbGciOiJSUzUxMiJ9.e30.sig", "camelCase in, snake_case out");
    // straight on to the journey's app, with a launch carrying the patient
    assert_eq!(back.status, 303, "{}", back.text());
    let launch_url = url::Url::parse(back.header("location").unwrap()).unwrap();
    assert!(launch_url.as_str().starts_with("https://viewer.example/launch"));
    let q: std::collections::HashMap<_, _> = launch_url.query_pairs().into_owned().collect();
    let (verifier, challenge) = pkce_pair();
    let reply = browser
        .get(
            &app,
            &authorize_path(&challenge, &[("launch", &q["launch"]), ("scope", "launch openid fhirUser patient/*.rs")]),
        )
        .await;
    let code = code_from(&reply, "st-123");
    let tokens = exchange(&app, &code, &verifier).await.json();
    assert_eq!(tokens["patient"], "9434765919", "themselves in context, no picker");
}

#[tokio::test]
async fn a_failed_silent_sign_in_sends_the_patient_back_to_the_nhs_app_without_our_header() {
    let idp = FakeIdp::start("nhs_login").await;
    idp.set(|k| k.authorize_error = Some("sso_login_required".into()));
    let app = nhs_app(&idp).await;
    let mut browser = Browser::new();
    let entry = browser
        .request_with(&app, "/nhs-app/careplan?assertedLoginIdentity=expired", &[("user-agent", NHS_APP_UA)])
        .await;
    let back = follow_provider(&app, &mut browser, &entry).await;
    assert_eq!(back.status, 403);
    let html = back.text();
    assert!(html.contains("Go back to the NHS App") && html.contains("https://www.nhsapp.service.nhs.uk/"), "{html}");
    assert!(!html.contains("nhsuk-header"), "the NHS App shows its own header");

    let missing = browser.request_with(&app, "/nhs-app/careplan", &[("user-agent", NHS_APP_UA)]).await;
    assert!(missing.text().contains("Open this page from the NHS App"));
    assert!(!missing.text().contains("nhsuk-header"));
    assert_eq!(app.get("/nhs-app/unknown?assertedLoginIdentity=x").await.status, 404);
}

#[tokio::test]
async fn app_site_association_files_are_served_from_config() {
    let idp = FakeIdp::start("nhs_login").await;
    let app = nhs_app(&idp).await;
    let links = app.get("/.well-known/assetlinks.json").await;
    assert_eq!(links.status, 200);
    assert_eq!(links.json()[0]["target"]["package_name"], "com.nhs.online.nhsonline");
    assert_eq!(app.get("/.well-known/apple-app-site-association").await.status, 404, "not configured");
}

#[tokio::test]
async fn nhs_login_sessions_end_after_thirty_idle_minutes() {
    let idp = FakeIdp::start("nhs_login").await;
    let app = app_with(&idp, "nhs-login", |_| {}).await;
    let mut browser = Browser::new();
    let signed_in = sign_in(&app, &mut browser, "nhs-login", &[]).await;
    assert!(signed_in.header("location").unwrap().starts_with("/authorize/consent"));
    let (_, challenge) = pkce_pair();
    app.clock.advance(20 * 60);
    let active = browser.get(&app, &authorize_path(&challenge, &[])).await;
    assert!(active.header("location").unwrap().starts_with("/authorize/consent"), "20 minutes idle: still signed in");
    app.clock.advance(29 * 60);
    let still = browser.get(&app, &authorize_path(&challenge, &[])).await;
    assert!(still.header("location").unwrap().starts_with("/authorize/consent"), "activity resets the idle timer");
    app.clock.advance(31 * 60);
    let idle = browser.get(&app, &authorize_path(&challenge, &[])).await;
    assert!(idle.header("location").unwrap().starts_with("/signin"), "31 idle minutes: signed out");
}
