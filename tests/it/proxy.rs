//! Proxy access: Mark signs in through the NHS App jump-off as Mary's proxy (an NHS login
//! composite token: Mary as subject, Mark in `act`), the Validated Relationships Service confirms
//! his role, and he gets Mary in context as his own verified RelatedPerson with `act` naming him.
//! A role that ends stops the next refresh and every token already issued; a composite token
//! without a VRS role, a forged one, or one naming a patient Mark may not act for signs nobody in.

use serde_json::{Value, json};

use crate::federation::{follow_provider, nhs_app_with};
use crate::support::browser::Browser;
use crate::support::fake_idp::FakeIdp;
use crate::support::fhir::{ADVANCE, care_plan, create_plan, get};
use crate::support::smart::*;
use crate::support::vrs_double::VrsDouble;
use crate::support::{TestApp, jwt_parts};

const MARY: &str = "9434765919";
const MARK: &str = "9000000017";

/// The composite token's claims: Mary as the subject, Mark (who signs in) in `act`.
fn composite(act: Value) -> serde_json::Map<String, Value> {
    json!({"sub": MARY, "nhs_number": MARY, "family_name": "PATIENT", "act": act}).as_object().unwrap().clone()
}

fn mark() -> Value {
    json!({"sub": "nhslogin-mark-7f3a", "nhs_number": MARK, "given_name": "Mark", "family_name": "CARER"})
}

async fn setup() -> (FakeIdp, VrsDouble, TestApp) {
    setup_at(None).await
}

/// The app (at `public_url` when a browser must reach it), its NHS login and its VRS.
async fn setup_at(public_url: Option<String>) -> (FakeIdp, VrsDouble, TestApp) {
    let idp = FakeIdp::start("nhs_login").await;
    let vrs = VrsDouble::default();
    let base = vrs.start().await;
    let app = nhs_app_with(&idp, move |c| {
        c.vrs.enabled = true;
        c.vrs.base_url = base;
        c.policy.dir = Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"));
        if let Some(url) = public_url {
            c.server.public_url = url;
        }
    })
    .await;
    (idp, vrs, app)
}

/// The jump-off, then the journey's app's authorization: the token response, or the page where
/// the sign-in stopped.
async fn jump_off(app: &TestApp) -> Result<Value, crate::support::Reply> {
    let mut browser = Browser::new();
    let entry = browser.get(app, "/nhs-app/careplan?assertedLoginIdentity=eyJhbGciOiJSUzUxMiJ9.e30.sig").await;
    let back = follow_provider(app, &mut browser, &entry).await;
    if back.status != 303 || !back.header("location").unwrap_or_default().starts_with("https://viewer.example/launch") {
        return Err(back);
    }
    let launch_url = url::Url::parse(back.header("location").unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = launch_url.query_pairs().into_owned().collect();
    let (verifier, challenge) = pkce_pair();
    let scope = "launch openid fhirUser patient/*.rs offline_access";
    let reply = browser.get(app, &authorize_path(&challenge, &[("launch", &q["launch"]), ("scope", scope)])).await;
    let code = code_from(&reply, "st-123");
    let tokens = exchange(app, &code, &verifier).await;
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    Ok(tokens.json())
}

async fn refresh(app: &TestApp, token: &str) -> crate::support::Reply {
    app.post_form("/token", &[("grant_type", "refresh_token"), ("refresh_token", token), ("client_id", APP)], &[]).await
}

#[tokio::test]
async fn mark_signs_in_through_the_nhs_app_as_marys_proxy_and_reads_her_plan_until_the_role_ends() {
    let (idp, vrs, app) = setup().await;
    let plan = create_plan(&app, &care_plan(MARY, ADVANCE, "2026-01-01")).await;
    vrs.grant("role-mark-mary", MARK, MARY);
    idp.set(|k| k.id_claims = composite(mark()));

    let tokens = jump_off(&app).await.unwrap_or_else(|page| panic!("{} {}", page.status, page.text()));
    assert_eq!(tokens["patient"], MARY, "the person cared for is in context");
    let fhir_user = tokens["id_token"].as_str().map(|t| jwt_parts(t).1["fhirUser"].clone()).unwrap_or_default();
    assert!(fhir_user.as_str().unwrap_or_default().contains("/RelatedPerson/rp-"), "{fhir_user}");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let (_, claims) = jwt_parts(&access);
    assert_eq!(claims["sub"], "nhs-login:nhslogin-mark-7f3a", "Mark is the one signed in");
    assert_eq!(claims["act"]["sub"], "nhs-login:nhslogin-mark-7f3a", "and is named as the actor");
    assert_eq!(claims["patient"], MARY);
    assert_eq!(vrs.hits.load(std::sync::atomic::Ordering::SeqCst), 1, "VRS was asked");

    // his RelatedPerson is carebroker's verified record of the role
    let person_id = claims["fhirUser"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let person = app.state.stores.durable.read_resource("RelatedPerson", &person_id).await.unwrap().unwrap();
    let person: Value = serde_json::from_str(&person.data).unwrap();
    assert_eq!(person["patient"]["reference"], format!("Patient/{MARY}"));
    assert_eq!(person["relationship"][0]["coding"][0]["code"], "health-and-welfare-lasting-power-of-attorney");

    // he reads Mary's plan; break-glass is not for proxies
    assert_eq!(get(&app, &access, &format!("/fhir/CarePlan/{plan}")).await.status, 200);
    let emergency = app
        .request(
            axum::http::Method::GET,
            &format!("/fhir/CarePlan?patient={MARY}"),
            &[("authorization", &format!("Bearer {access}")), ("x-break-glass-reason", "I am worried")],
            Vec::new(),
        )
        .await;
    assert_eq!(emergency.json()["total"], 1, "still only what a proxy may see: {}", emergency.text());
    // a refresh asks VRS again and, while the role holds, rotates as usual
    let refreshed = refresh(&app, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
    assert_eq!(refreshed.json()["patient"], MARY);

    // Mary's access history shows that Mark looked
    let records = app.state.stores.durable.search_audit(Some(MARY), None, None, None, 1000).await.unwrap();
    assert!(records.iter().any(|r| r.actor.as_deref() == Some("nhs-login:nhslogin-mark-7f3a")));

    // the role ends: the next refresh is refused and revokes the grant, and the token he holds
    // stops reaching Mary at once
    vrs.end("role-mark-mary");
    let ended = refresh(&app, refreshed.json()["refresh_token"].as_str().unwrap()).await;
    ended.assert_error(400, "invalid_grant");
    let access = refreshed.json()["access_token"].as_str().unwrap().to_owned();
    let after = get(&app, &access, &format!("/fhir/CarePlan/{plan}")).await;
    assert!(matches!(after.status.as_u16(), 401 | 403 | 404), "{} {}", after.status, after.text());
}

#[tokio::test]
async fn a_composite_token_without_an_active_vrs_role_or_with_a_broken_act_signs_nobody_in() {
    let (idp, vrs, app) = setup().await;
    vrs.grant("role-other", MARK, "9000000009");
    // a role for someone else is not a role for Mary
    idp.set(|k| k.id_claims = composite(mark()));
    let refused = jump_off(&app).await.expect_err("no role for Mary");
    assert!(!refused.text().contains(MARY) || refused.status != 303);
    assert_eq!(
        app.state
            .stores
            .durable
            .list_resources("RelatedPerson", 100)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.id.starts_with("rp-"))
            .count(),
        0
    );

    // an act naming no NHS number, naming Mary herself, or unreadable
    for act in
        [json!({"sub": "nhslogin-mark-7f3a"}), json!({"sub": "x", "nhs_number": MARY}), json!("not a token"), json!(42)]
    {
        vrs.grant("role-mark-mary", MARK, MARY);
        idp.set(|k| k.id_claims = composite(act.clone()));
        assert!(jump_off(&app).await.is_err(), "{act}");
    }
    // the proxy's own ID token in act (as NHS login describes it) is read from the signed token
    let inner = idp.held_id_token(app.now(), |c| {
        c.insert("sub".into(), json!("nhslogin-mark-7f3a"));
        c.insert("nhs_number".into(), json!(MARK));
    });
    idp.set(|k| k.id_claims = composite(json!(inner)));
    let tokens = jump_off(&app).await.unwrap_or_else(|page| panic!("{} {}", page.status, page.text()));
    assert_eq!(tokens["patient"], MARY);

    // a forged composite token (not signed by NHS login's key) is refused before VRS is asked
    let hits = vrs.hits.load(std::sync::atomic::Ordering::SeqCst);
    idp.set(|k| {
        k.id_claims = composite(mark());
        k.foreign_key = true;
    });
    assert!(jump_off(&app).await.is_err());
    assert_eq!(vrs.hits.load(std::sync::atomic::Ordering::SeqCst), hits, "VRS is not asked about a forged token");
    // nor about an unsigned one (`alg: none`)
    idp.set(|k| {
        k.foreign_key = false;
        k.alg_none = true;
    });
    assert!(jump_off(&app).await.is_err());
    assert_eq!(vrs.hits.load(std::sync::atomic::Ordering::SeqCst), hits, "VRS is not asked about an unsigned token");
    idp.set(|k| k.alg_none = false);

    // VRS down: nobody is let in as a proxy
    idp.set(|k| k.foreign_key = false);
    vrs.down.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(jump_off(&app).await.is_err());
}

/// In Chromium with the NHS App's user agent: Mark jumps off as Mary's proxy and his app reads
/// her plan; then Mary jumps off, sees that Mark looked, and keeps her plan from an organisation,
/// whose clinician is then refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nhs_app_journeys_of_a_proxy_and_the_patient_in_chromium() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broker = format!("http://{}", listener.local_addr().unwrap());
    let (idp, vrs, app) = setup_at(Some(broker.clone())).await;
    let plan = create_plan(&app, &care_plan(MARY, ADVANCE, "2026-01-01")).await;
    crate::browser::serve_live(&app, listener);
    vrs.grant("role-mark-mary", MARK, MARY);
    let args = |mode: &str| {
        let mut args: Vec<String> =
            ["--broker", &broker, "--mode", mode, "--client-id", APP, "--app-origin", "https://viewer.example"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
        if let Ok(dir) = std::env::var("CAREBROKER_E2E_SCREENSHOTS") {
            args.extend(["--screenshots".to_owned(), dir]);
        }
        args
    };

    let live = carebroker::clock::Clock::now(&carebroker::clock::SystemClock);
    idp.set(|k| {
        k.id_claims = composite(mark());
        k.now = Some(live);
    });
    let proxy = crate::browser::e2e_script("patient_journeys.mjs", args("proxy")).await;
    assert_eq!(proxy["patient"], MARY, "{proxy}");
    assert!(proxy["fhir_user"].as_str().unwrap_or_default().starts_with("RelatedPerson/rp-"), "{proxy}");
    assert_eq!(proxy["act"]["sub"], "nhs-login:nhslogin-mark-7f3a", "{proxy}");
    assert_eq!(proxy["plans"], 1, "{proxy}");

    idp.set(|k| k.id_claims = serde_json::Map::new());
    let mary = crate::browser::e2e_script("patient_journeys.mjs", args("patient")).await;
    let history = mary["history"]["text"].as_str().unwrap_or_default();
    assert!(history.contains("Mark CARER"), "Mary sees that Mark looked: {history}");
    assert!(!history.contains(MARK), "and nothing of Mark but his name and role: {history}");
    assert_eq!(mary["history"]["header"], 0, "no service header inside the NHS App");
    assert_eq!(mary["history"]["back"], "https://www.nhsapp.service.nhs.uk/");
    let sharing = mary["sharing"]["text"].as_str().unwrap_or_default();
    assert!(sharing.contains("Do not share your care plan with organisation B86011"), "{sharing}");

    let mut nurse = crate::support::fhir::user_claims(&app, "patient/*.rs", Some(MARY));
    nurse.roles = vec!["clinician".into()];
    nurse.org = Some("B86011".into());
    let nurse = crate::support::fhir::token(&app, &nurse);
    assert_eq!(get(&app, &nurse, &format!("/fhir/CarePlan/{plan}")).await.status, 403, "Mary's choice holds");
}

/// Jane signs in with NHS login herself (a standalone launch, not a composite token). VRS says she
/// may act for Mary, so the picker offers "you" or Mary; choosing Mary makes this authorization
/// hers as Mary's verified proxy, choosing herself keeps it hers, and anyone else is refused.
#[tokio::test]
async fn an_nhs_login_user_who_cares_for_someone_chooses_whom_the_sign_in_is_for() {
    use crate::support::browser::hidden_value;
    const JANE: &str = "9000000009";
    let (idp, vrs, app) = setup().await;
    vrs.grant("role-jane-mary", JANE, MARY);
    idp.set(|k| {
        k.id_claims = json!({"sub": "nhslogin-jane-51c0", "nhs_number": JANE, "family_name": "JONES"})
            .as_object()
            .unwrap()
            .clone();
    });
    let mut browser = Browser::new();
    let (page, verifier) = picker(&app, &mut browser).await;
    let html = page.text();
    assert_eq!(page.status, 200, "{html}");
    assert!(html.contains(&format!("value=\"{JANE}\"")) && html.contains(&format!("value=\"{MARY}\"")), "{html}");
    assert!(html.contains("someone you care for"), "{html}");
    let (csrf, req) = (hidden_value(&html, "csrf"), hidden_value(&html, "req"));
    // nobody else, whatever the form says
    let other = browser
        .post(&app, "/authorize/patient", &[("csrf", &csrf), ("req", &req), ("patient", "9449306621")], &[])
        .await;
    assert_eq!(other.status, 400, "{}", other.text());
    let chosen =
        browser.post(&app, "/authorize/patient", &[("csrf", &csrf), ("req", &req), ("patient", MARY)], &[]).await;
    let tokens = exchange(&app, &code_from(&chosen, "st-123"), &verifier).await.json();
    assert_eq!(tokens["patient"], MARY, "{tokens}");
    let (_, claims) = jwt_parts(tokens["access_token"].as_str().unwrap());
    assert!(claims["fhirUser"].as_str().unwrap_or_default().starts_with("RelatedPerson/rp-"), "{claims}");
    assert_eq!(claims["act"]["sub"], "nhs-login:nhslogin-jane-51c0");
    assert_eq!(claims["roles"], json!(["proxy"]));

    // choosing herself keeps the sign-in hers
    let mut browser = Browser::new();
    let (page, verifier) = picker(&app, &mut browser).await;
    let html = page.text();
    let (csrf, req) = (hidden_value(&html, "csrf"), hidden_value(&html, "req"));
    let chosen =
        browser.post(&app, "/authorize/patient", &[("csrf", &csrf), ("req", &req), ("patient", JANE)], &[]).await;
    let tokens = exchange(&app, &code_from(&chosen, "st-123"), &verifier).await.json();
    assert_eq!(tokens["patient"], JANE);
    let (_, claims) = jwt_parts(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["fhirUser"], format!("Patient/{JANE}"));
    assert!(claims.get("act").is_none());

    // a role that ends between the picker and the choice is refused there
    let mut browser = Browser::new();
    let (page, _) = picker(&app, &mut browser).await;
    let html = page.text();
    let (csrf, req) = (hidden_value(&html, "csrf"), hidden_value(&html, "req"));
    vrs.end("role-jane-mary");
    let refused =
        browser.post(&app, "/authorize/patient", &[("csrf", &csrf), ("req", &req), ("patient", MARY)], &[]).await;
    assert_eq!(refused.status, 400, "{}", refused.text());
}

/// A standalone launch through NHS login up to the page after the provider: (that page, the
/// PKCE verifier).
async fn picker(app: &TestApp, browser: &mut Browser) -> (crate::support::Reply, String) {
    let (verifier, challenge) = pkce_pair();
    let scope = "launch/patient openid fhirUser patient/*.rs";
    let start = browser.get(app, &authorize_path(&challenge, &[("idp_hint", "nhs-login"), ("scope", scope)])).await;
    let start = if start.status == 303 && start.header("location").is_some_and(|l| l.starts_with('/')) {
        browser.follow(app, &start).await
    } else {
        start
    };
    let back = follow_provider(app, browser, &start).await;
    let page = browser.follow(app, &back).await;
    (page, verifier)
}
