//! The patient's sharing choices (FHIR `Consent`, scope `patient-privacy`): Mary excludes an
//! organisation and a clinician there is refused unless they break glass, which Mary then sees;
//! a part of the plan kept from everyone but her GP; withdrawing a choice; and every way of
//! recording one that carebroker must refuse without storing anything.

use axum::http::Method;
use serde_json::{Value, json};

use crate::support::TestApp;
use crate::support::fhir::{
    ADVANCE, CRISIS, audit_after, audit_head, care_plan, create_plan, get, send, token, user_claims,
};

const MARY: &str = "9434765919";
const OTHER: &str = "9000000009";
const EXCLUDED: &str = "B86011";
const GP: &str = "A81001";
const ODS: &str = "https://fhir.nhs.uk/Id/ods-organization-code";

async fn app() -> TestApp {
    TestApp::builder().with_dev_users().with_shipped_policy().build().await
}

fn mary(app: &TestApp, scope: &str) -> String {
    crate::support::fhir::patient_token(app, MARY, scope)
}

/// A smartcard clinician at `org` with `patient` open.
fn clinician(app: &TestApp, org: &str, patient: &str) -> String {
    let mut claims = user_claims(app, "patient/*.rs", Some(patient));
    claims.roles = vec!["clinician".into()];
    claims.sub = format!("cis2:nurse-at-{org}");
    claims.org = Some(org.into());
    claims.assurance = Some(3);
    token(app, &claims)
}

fn actor(org: &str) -> Value {
    json!({"reference": {"identifier": {"system": ODS, "value": org}}})
}

fn consent(patient: &str, choices: Value) -> Value {
    json!({
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{patient}")},
        "provision": {"type": "permit", "provision": choices}
    })
}

async fn read_with_break_glass(app: &TestApp, token: &str, path: &str, reason: &str) -> crate::support::Reply {
    let auth = format!("Bearer {token}");
    app.request(Method::GET, path, &[("authorization", &auth), ("x-break-glass-reason", reason)], Vec::new()).await
}

async fn consents_stored(app: &TestApp) -> usize {
    let criteria = [carebroker::store::Criterion { key: "patient".into(), values: vec![MARY.into()] }];
    app.state.stores.durable.search_resources("Consent", &criteria, 100).await.unwrap().len()
}

#[tokio::test]
async fn mary_excludes_an_organisation_whose_clinician_is_refused_unless_they_break_glass() {
    let app = app().await;
    let plan = create_plan(&app, &care_plan(MARY, ADVANCE, "2026-01-01")).await;
    let path = format!("/fhir/CarePlan/{plan}");
    let excluded = clinician(&app, EXCLUDED, MARY);
    assert_eq!(get(&app, &excluded, &path).await.status, 200, "before the choice");

    let me = mary(&app, "patient/Consent.cruds patient/CarePlan.rs patient/AuditEvent.s");
    let recorded = send(
        &app,
        Method::POST,
        &me,
        "/fhir/Consent",
        &consent(MARY, json!([{"type": "deny", "actor": [actor(EXCLUDED)]}])),
        None,
    )
    .await;
    assert_eq!(recorded.status, 201, "{}", recorded.text());
    let consent_id = recorded.json()["id"].as_str().unwrap().to_owned();

    // the excluded organisation: refused (no rule id in the answer); audited against Mary with the rule
    let head = audit_head(&app).await;
    let refused = get(&app, &excluded, &path).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(!refused.text().contains("patient-sharing-choice"), "rule ids stay in the audit");
    let audited = audit_after(&app, head).await;
    assert!(
        audited
            .iter()
            .any(|(p, e)| p.as_deref() == Some(MARY) && e.to_string().contains("rule patient-sharing-choice")),
        "{audited:?}"
    );
    // searches leave the plan out for them, and show it to everyone else
    let search = format!("/fhir/CarePlan?patient={MARY}");
    assert_eq!(get(&app, &excluded, &search).await.json()["total"], 0);
    assert_eq!(get(&app, &clinician(&app, "X26", MARY), &path).await.status, 200);
    assert_eq!(get(&app, &clinician(&app, "X26", MARY), &search).await.json()["total"], 1);
    // the clinician sees why: the choice is readable to clinicians with Mary open
    let seen = get(&app, &clinician(&app, EXCLUDED, MARY), &format!("/fhir/Consent?patient={MARY}")).await;
    assert_eq!(seen.json()["total"], 1, "{}", seen.text());

    // break-glass goes past the choice, audited high with its reason and the privacy officer told
    let head = audit_head(&app).await;
    let emergency = read_with_break_glass(&app, &excluded, &path, "collapsed at home, plan needed now").await;
    assert_eq!(emergency.status, 200, "{}", emergency.text());
    let audited = audit_after(&app, head).await;
    let text = audited.iter().map(|(_, e)| e.to_string()).collect::<String>();
    assert!(text.contains("rule break-glass") && text.contains("importance: high"), "{text}");
    assert!(text.contains("privacy officer alerted") && text.contains("collapsed at home"), "{text}");
    // and Mary sees it in her access history
    let history = get(&app, &me, &format!("/fhir/AuditEvent?patient={MARY}")).await;
    assert!(history.text().contains("collapsed at home, plan needed now"), "{}", history.text());

    // withdrawn, the choice stops at once
    let mut withdrawn = recorded.json();
    withdrawn["status"] = json!("inactive");
    let reply = send(&app, Method::PUT, &me, &format!("/fhir/Consent/{consent_id}"), &withdrawn, Some("W/\"1\"")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(get(&app, &excluded, &path).await.status, 200);
}

#[tokio::test]
async fn a_part_of_the_plan_is_kept_from_everyone_but_the_gp() {
    let app = app().await;
    let crisis = create_plan(&app, &care_plan(MARY, CRISIS, "2026-01-01")).await;
    let advance = create_plan(&app, &care_plan(MARY, ADVANCE, "2026-01-02")).await;
    let me = mary(&app, "patient/Consent.c");
    let choice = json!([{
        "type": "deny",
        "code": [{"coding": [{"system": CRISIS.0, "code": CRISIS.1}]}],
        "provision": [{"type": "permit", "actor": [actor(GP)]}]
    }]);
    let reply = send(&app, Method::POST, &me, "/fhir/Consent", &consent(MARY, choice), None).await;
    assert_eq!(reply.status, 201, "{}", reply.text());

    let elsewhere = clinician(&app, "X26", MARY);
    assert_eq!(get(&app, &elsewhere, &format!("/fhir/CarePlan/{crisis}")).await.status, 403);
    assert_eq!(get(&app, &elsewhere, &format!("/fhir/CarePlan/{advance}")).await.status, 200);
    let found = get(&app, &elsewhere, &format!("/fhir/CarePlan?patient={MARY}")).await.json();
    assert_eq!(found["total"], 1);
    assert_eq!(found["entry"][0]["resource"]["id"], advance.as_str());
    // nor may they write a plan of that kind for her
    let refused =
        send(&app, Method::POST, &elsewhere, "/fhir/CarePlan", &care_plan(MARY, CRISIS, "2026-02-01"), None).await;
    assert_eq!(refused.status, 403, "{}", refused.text());

    let gp = clinician(&app, GP, MARY);
    assert_eq!(get(&app, &gp, &format!("/fhir/CarePlan/{crisis}")).await.status, 200);
    assert_eq!(get(&app, &gp, &format!("/fhir/CarePlan?patient={MARY}")).await.json()["total"], 2);

    // the availability check still says a plan exists (docs/hazard-log.md H4)
    let mut system = crate::support::fhir::system_claims(&app, "system/CarePlan.s");
    system.roles = vec!["availability".into()];
    let available = get(&app, &token(&app, &system), &format!("/availability?nhs_number={MARY}")).await;
    assert_eq!(available.status, 200, "{}", available.text());
    assert_eq!(available.json()["care_plan_exists"], true, "{}", available.text());
}

#[tokio::test]
async fn choices_are_recorded_only_by_whom_the_policy_lets_and_only_as_carebroker_can_enforce_them() {
    let app = app().await;
    let me = mary(&app, "patient/Consent.cruds");
    let good = consent(MARY, json!([{"type": "deny", "actor": [actor(EXCLUDED)]}]));

    // someone else's record: a patient/ token for Mary, and Mary's own user token naming another
    let for_other = send(
        &app,
        Method::POST,
        &me,
        "/fhir/Consent",
        &consent(OTHER, json!([{"type": "deny", "actor": [actor(EXCLUDED)]}])),
        None,
    )
    .await;
    assert_eq!(for_other.status, 403, "{}", for_other.text());
    let mut user = user_claims(&app, "user/Consent.cruds", None);
    user.fhir_user = Some(format!("Patient/{MARY}"));
    user.roles = vec!["patient".into()];
    let as_user = send(
        &app,
        Method::POST,
        &token(&app, &user),
        "/fhir/Consent",
        &consent(OTHER, json!([{"type": "deny", "actor": [actor(EXCLUDED)]}])),
        None,
    )
    .await;
    assert_eq!(as_user.status, 403, "{}", as_user.text());

    // a clinician, even with Mary open, and a proxy: they may see choices, not make them
    let nurse = clinician(&app, "X26", MARY);
    assert_eq!(send(&app, Method::POST, &nurse, "/fhir/Consent", &good, None).await.status, 403);

    // no scope for Consent
    let narrow = mary(&app, "patient/CarePlan.rs");
    assert_eq!(send(&app, Method::POST, &narrow, "/fhir/Consent", &good, None).await.status, 403);

    // what cannot be enforced is refused and named (422), structure errors are 400
    let unenforceable = [
        (json!([{"type": "deny"}]), "national data opt-out"),
        (json!([{"type": "deny", "actor": [actor(EXCLUDED)], "period": {"end": "2027-01-01"}}]), "period"),
        (json!([{"type": "deny", "actor": [{"reference": {"reference": "Organization/1"}}]}]), "ODS code"),
    ];
    for (choices, says) in unenforceable {
        let reply = send(&app, Method::POST, &me, "/fhir/Consent", &consent(MARY, choices.clone()), None).await;
        assert_eq!(reply.status, 422, "{choices}: {}", reply.text());
        assert!(reply.text().contains(says), "{choices}: {}", reply.text());
    }
    let mut unknown = good.clone();
    unknown["secret"] = json!(true);
    assert_eq!(send(&app, Method::POST, &me, "/fhir/Consent", &unknown, None).await.status, 400);
    let garbage = app
        .request(
            Method::POST,
            "/fhir/Consent",
            &[("authorization", &format!("Bearer {me}")), ("content-type", "application/fhir+json")],
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(garbage.status, 400);
    assert_eq!(consents_stored(&app).await, 0, "nothing refused was stored");

    // a recorded choice cannot be moved to another patient, nor changed without its version
    let created = send(&app, Method::POST, &me, "/fhir/Consent", &good, None).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let mut moved = created.json();
    moved["patient"]["reference"] = json!(format!("Patient/{OTHER}"));
    let reply = send(&app, Method::PUT, &me, &format!("/fhir/Consent/{id}"), &moved, Some("W/\"1\"")).await;
    assert_eq!(reply.status, 422, "{}", reply.text());
    let mut withdrawn = created.json();
    withdrawn["status"] = json!("inactive");
    assert_eq!(send(&app, Method::PUT, &me, &format!("/fhir/Consent/{id}"), &withdrawn, None).await.status, 428);
    assert_eq!(
        send(&app, Method::PUT, &me, &format!("/fhir/Consent/{id}"), &withdrawn, Some("W/\"7\"")).await.status,
        412
    );
    assert_eq!(consents_stored(&app).await, 1);
    let still = get(&app, &me, &format!("/fhir/Consent/{id}")).await;
    assert_eq!(still.json()["status"], "active", "nothing refused changed it");
    assert_eq!(still.json()["meta"]["versionId"], "1");

    // another patient never sees Mary's choices
    let mut other = user_claims(&app, "patient/Consent.rs", Some(OTHER));
    other.fhir_user = Some(format!("Patient/{OTHER}"));
    other.roles = vec!["patient".into()];
    let other = token(&app, &other);
    assert_eq!(get(&app, &other, &format!("/fhir/Consent/{id}")).await.status, 404);
    assert_eq!(get(&app, &other, &format!("/fhir/Consent?patient={MARY}")).await.json()["total"], 0);
}

#[tokio::test]
async fn mary_makes_and_withdraws_choices_on_her_page_and_nothing_else_can() {
    use crate::support::browser::{Browser, dev_signed_in, hidden_value};
    let app = TestApp::builder()
        .with_client(crate::support::smart::public_app())
        .with_dev_users()
        .with_shipped_policy()
        .build()
        .await;
    let plan = create_plan(&app, &care_plan(MARY, CRISIS, "2026-01-01")).await;
    let path = format!("/fhir/CarePlan/{plan}");
    let excluded = clinician(&app, EXCLUDED, MARY);

    assert_eq!(Browser::new().get(&app, "/my-record/sharing").await.status, 401);
    let mut nurse = dev_signed_in(&app, "nurse").await;
    assert_eq!(nurse.get(&app, "/my-record/sharing").await.status, 403);

    let mut mary = dev_signed_in(&app, "patient").await;
    let page = mary.get(&app, "/my-record/sharing").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.header("content-security-policy").is_some_and(|c| c.contains("frame-ancestors")));
    let html = page.text();
    assert!(html.contains("You have not made any choices"), "{html}");
    assert!(html.contains(&format!("{}|{}", CRISIS.0, CRISIS.1)), "her plan's parts are offered: {html}");
    let csrf = hidden_value(&html, "csrf");

    // a forged form (no CSRF token, or another site's origin) changes nothing
    let forged = mary
        .post(
            &app,
            "/my-record/sharing",
            &[("action", "add"), ("kind", "organisation"), ("organisation", EXCLUDED)],
            &[],
        )
        .await;
    assert_eq!(forged.status, 403);
    let cross_site = [("origin", "https://evil.example")];
    let fields = [("csrf", csrf.as_str()), ("action", "add"), ("kind", "organisation"), ("organisation", EXCLUDED)];
    assert_eq!(mary.post(&app, "/my-record/sharing", &fields, &cross_site).await.status, 403);
    assert_eq!(consents_stored(&app).await, 0);
    // a bad code is explained on the page, and nothing is stored
    let bad = [("csrf", csrf.as_str()), ("action", "add"), ("kind", "organisation"), ("organisation", "<b>x</b>")];
    let reply = mary.post(&app, "/my-record/sharing", &bad, &[]).await;
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert!(reply.text().contains("Your choice was not saved") && !reply.text().contains("<b>x</b>"));
    assert_eq!(consents_stored(&app).await, 0);

    let saved = mary.post(&app, "/my-record/sharing", &fields, &[]).await;
    assert_eq!(saved.status, 303, "{}", saved.text());
    assert_eq!(saved.header("location"), Some("/my-record/sharing"));
    let html = mary.get(&app, "/my-record/sharing").await.text();
    assert!(html.contains(&format!("Do not share your care plan with organisation {EXCLUDED}")), "{html}");
    assert_eq!(get(&app, &excluded, &path).await.status, 403, "the page's choice is in force");

    // a part of the plan, except her GP
    let part = format!("{}|{}", CRISIS.0, CRISIS.1);
    let fields =
        [("csrf", csrf.as_str()), ("action", "add"), ("kind", "part"), ("part", part.as_str()), ("except", GP)];
    assert_eq!(mary.post(&app, "/my-record/sharing", &fields, &[]).await.status, 303);
    assert_eq!(get(&app, &clinician(&app, "X26", MARY), &path).await.status, 403);
    assert_eq!(get(&app, &clinician(&app, GP, MARY), &path).await.status, 200);

    // withdrawing the organisation choice lets them back in; the part choice still holds for them
    let html = mary.get(&app, "/my-record/sharing").await.text();
    let choice = html.find(&format!("with organisation {EXCLUDED}")).expect("the organisation choice is listed");
    let id = hidden_value(&html[choice..], "id");
    let withdraw = [("csrf", csrf.as_str()), ("action", "withdraw"), ("id", id.as_str())];
    assert_eq!(mary.post(&app, "/my-record/sharing", &withdraw, &[]).await.status, 303);
    let html = mary.get(&app, "/my-record/sharing").await.text();
    assert!(!html.contains(&format!("organisation {EXCLUDED}")), "{html}");
    assert_eq!(get(&app, &excluded, &path).await.status, 403, "the crisis-plan choice still keeps it from them");
    let advance = create_plan(&app, &care_plan(MARY, ADVANCE, "2026-02-01")).await;
    assert_eq!(get(&app, &excluded, &format!("/fhir/CarePlan/{advance}")).await.status, 200);
    // every change was made as Mary and audited against her
    let records = app.state.stores.durable.search_audit(Some(MARY), None, None, None, 1000).await.unwrap();
    let changes =
        records.iter().filter(|r| r.data.contains("\"Consent\"") && r.data.contains("carebroker-pages")).count();
    assert!(changes >= 3, "{changes} consent changes audited");

    // a withdraw naming someone else's choice (or nothing) changes nothing
    let stranger = [("csrf", csrf.as_str()), ("action", "withdraw"), ("id", "not-a-consent")];
    assert_eq!(mary.post(&app, "/my-record/sharing", &stranger, &[]).await.status, 422);
}

/// Mary lets her carer Mark (his verified RelatedPerson) add notes to her plan; he can add a note
/// and nothing else, and without her word he cannot even do that.
#[tokio::test]
async fn a_proxy_adds_notes_only_where_the_patient_allows_it() {
    let app = app().await;
    crate::support::fhir::put_resource(
        &app,
        &json!({"resourceType": "RelatedPerson", "id": "rp-mark", "active": true,
            "patient": {"reference": format!("Patient/{MARY}")},
            "identifier": [{"system": carebroker::fhir::guard::SUBJECT_SYSTEM, "value": "nhs-login:mark"}]}),
    )
    .await;
    let plan_id = create_plan(&app, &care_plan(MARY, ADVANCE, "2026-01-01")).await;
    let path = format!("/fhir/CarePlan/{plan_id}");
    let mut mark = user_claims(&app, "patient/CarePlan.rus", Some(MARY));
    mark.sub = "nhs-login:mark".into();
    mark.fhir_user = Some("RelatedPerson/rp-mark".into());
    mark.roles = vec!["proxy".into()];
    mark.org = None;
    let mark = token(&app, &mark);
    let current = get(&app, &mark, &path).await;
    assert_eq!(current.status, 200, "he reads her plan");
    let mut with_note = current.json();
    with_note["note"] = json!([{"text": "She prefers to be seen at home"}]);

    let refused = send(&app, Method::PUT, &mark, &path, &with_note, Some("W/\"1\"")).await;
    assert_eq!(refused.status, 403, "not without her word: {}", refused.text());

    let me = mary(&app, "patient/Consent.cruds");
    let allow = json!([{"type": "permit",
        "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "correct"}]}],
        "actor": [{"reference": {"reference": "RelatedPerson/rp-mark"}}]}]);
    let recorded = send(&app, Method::POST, &me, "/fhir/Consent", &consent(MARY, allow), None).await;
    assert_eq!(recorded.status, 201, "{}", recorded.text());

    let added = send(&app, Method::PUT, &mark, &path, &with_note, Some("W/\"1\"")).await;
    assert_eq!(added.status, 200, "{}", added.text());
    assert_eq!(added.json()["note"][0]["text"], "She prefers to be seen at home");
    let mut more = added.json();
    more["status"] = json!("revoked");
    let changed = send(&app, Method::PUT, &mark, &path, &more, Some("W/\"2\"")).await;
    assert_eq!(changed.status, 403, "notes only: {}", changed.text());
}
