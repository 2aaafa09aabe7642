//! Randomized cross-patient property test. A world of five patients in three organisations, two
//! proxies (one verified, one merely claimed), and callers of every kind (clinicians with a
//! patient open through patient/ and user/ scopes, a student, an admin, care-home staff, a
//! patient, proxies, plan-maintaining and availability systems, an auditor, break-glass, and
//! callers with no or a forged token) sends a seeded random stream of every FHIR interaction and
//! search parameter, hostile ones included: care plans, patients, related persons, access
//! histories, the availability check, and the patients' sharing choices (Consent). After each request it asserts:
//!
//! - no answer discloses a patient outside the caller's reach (a table written from the policy's
//!   intent, independent of the code under test);
//! - every patient an answer discloses has an audit record filed against them for that request,
//!   and every request by an identified caller leaves at least one record;
//! - a write never moves a plan to another patient, and no answer is a 5xx.
//!
//! `CAREBROKER_CROSS_PATIENT_SEED` replays a failing run; `CAREBROKER_CROSS_PATIENT_CASES` sets
//! how many requests are sent (CI: the default).

use std::collections::{BTreeSet, HashMap};

use axum::http::Method;
use serde_json::{Value, json};

use crate::support::fhir::*;
use crate::support::{Reply, TestApp};

const PETER: &str = "9434765919"; // A9A5A
const JANE: &str = "9000000009"; // A9A5A
const ARTHUR: &str = "9449306621"; // VNC12 care home
const MARY: &str = "9960308243"; // VNC12 care home
const OLIVE: &str = "9000000017"; // B86041, shares Jane's phone number
const PATIENTS: [&str; 5] = [PETER, JANE, ARTHUR, MARY, OLIVE];
/// Valid NHS numbers with no record here.
const STRANGERS: [&str; 2] = ["9000000025", "9876543210"];
const PHONES: [(&str, &[&str]); 3] = [("07700900123", &[PETER]), ("07700900456", &[JANE, OLIVE]), ("01632000000", &[])];

/// splitmix64: a small seeded generator, so a failing run can be replayed exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Who a caller may see, by the kind of record.
#[derive(Debug, Clone, Default)]
struct Reach {
    care_plans: Vec<&'static str>,
    patients: Vec<&'static str>,
    related_persons: Vec<&'static str>,
    audit_events: Vec<&'static str>,
    availability: Vec<&'static str>,
    /// Whose sharing choices (Consent) they may see.
    consents: Vec<&'static str>,
    /// May create or change plans (of the care-plan patients).
    writes: bool,
}

impl Reach {
    fn same(patients: &[&'static str], writes: bool) -> Self {
        Self {
            care_plans: patients.to_vec(),
            patients: patients.to_vec(),
            related_persons: patients.to_vec(),
            writes,
            ..Self::default()
        }
    }
}

struct Persona {
    name: &'static str,
    token: String,
    break_glass: bool,
    /// Identified callers leave an audit record for every request.
    identified: bool,
    reach: Reach,
}

fn claims(
    app: &TestApp,
    sub: &str,
    scope: &str,
    patient: Option<&str>,
    fhir_user: Option<&str>,
    roles: &[&str],
    org: Option<&str>,
) -> carebroker::token::access::AccessTokenClaims {
    let mut c = user_claims(app, scope, patient);
    c.sub = sub.into();
    c.fhir_user = fhir_user.map(str::to_owned);
    c.roles = roles.iter().map(|r| (*r).to_owned()).collect();
    c.org = org.map(str::to_owned);
    c
}

fn personas(app: &TestApp) -> Vec<Persona> {
    let user = |sub, scope, patient, fhir_user, roles: &[&str], org| {
        token(app, &claims(app, sub, scope, patient, fhir_user, roles, org))
    };
    let system = |roles: &[&str], scope: &str, client: &str| {
        let mut c = system_claims(app, scope);
        c.roles = roles.iter().map(|r| (*r).to_owned()).collect();
        c.client_id = client.into();
        c.sub = client.into();
        token(app, &c)
    };
    let mut breakglass =
        claims(app, "cis2:doc", "user/*.rs", None, Some("Practitioner/pr-doctor-1"), &["clinician"], Some("A9A5A"));
    breakglass.assurance = Some(3);
    let forger = carebroker::token::jose::SigningKey::from_pkcs8(
        carebroker::token::jose::Algorithm::ES256,
        &carebroker::token::jose::SigningKey::generate_pkcs8(carebroker::token::jose::Algorithm::ES256).unwrap(),
    )
    .unwrap();
    let forged = forger
        .sign("at+jwt", &claims(app, "mallory", "system/*.cruds", None, None, &["plan-maintainer"], None))
        .unwrap();
    let all = PATIENTS.to_vec();
    let identified = |name, token, reach| Persona { name, token, break_glass: false, identified: true, reach };
    vec![
        identified(
            "nurse with Peter open (patient/)",
            user(
                "cis2:nurse",
                "patient/*.cruds",
                Some(PETER),
                Some("Practitioner/pr-nurse-1"),
                &["clinician"],
                Some("A9A5A"),
            ),
            Reach { consents: vec![PETER], ..Reach::same(&[PETER], true) },
        ),
        identified(
            "nurse with Jane open (user/)",
            user(
                "cis2:nurse2",
                "user/*.cruds",
                Some(JANE),
                Some("Practitioner/pr-nurse-1"),
                &["clinician"],
                Some("A9A5A"),
            ),
            Reach { consents: vec![JANE], ..Reach::same(&[JANE], true) },
        ),
        identified(
            "student with Arthur open",
            user("cis2:student", "patient/*.cruds", Some(ARTHUR), None, &["student"], Some("VNC12")),
            Reach::same(&[ARTHUR], false),
        ),
        identified(
            "admin at A9A5A",
            user("cis2:admin", "user/*.rs", None, None, &["admin"], Some("A9A5A")),
            Reach { patients: vec![PETER, JANE], ..Reach::default() },
        ),
        identified(
            "care-home carer at VNC12",
            user("saml:carer", "user/*.cruds", None, Some("Practitioner/pr-carer-1"), &["carehome"], Some("VNC12")),
            Reach::same(&[ARTHUR, MARY], true),
        ),
        identified(
            "Peter himself",
            user(
                "nhs-login:peter",
                "patient/*.cruds",
                Some(PETER),
                Some(&format!("Patient/{PETER}")),
                &["patient"],
                None,
            ),
            // a patient also reads who has looked at their own record
            Reach { audit_events: vec![PETER], consents: vec![PETER], ..Reach::same(&[PETER], true) },
        ),
        identified(
            "Jane's verified carer",
            user(
                "nhs-login:carer-1",
                "patient/*.rs openid fhirUser",
                Some(JANE),
                Some("RelatedPerson/rp-jane-carer"),
                &["proxy"],
                None,
            ),
            Reach {
                care_plans: vec![JANE],
                patients: vec![JANE],
                related_persons: vec![JANE],
                consents: vec![JANE],
                ..Reach::default()
            },
        ),
        identified(
            "someone claiming to be Jane's carer",
            user("ehr:ehr:u-1", "patient/*.rs", Some(JANE), Some("RelatedPerson/rp-jane-carer"), &["proxy"], None),
            Reach::default(),
        ),
        identified(
            "Arthur's son looking at Peter",
            user("nhs-login:son-1", "patient/*.rs", Some(PETER), Some("RelatedPerson/rp-arthur-son"), &["proxy"], None),
            Reach::default(),
        ),
        identified(
            "plan-maintaining system",
            system(&["plan-maintainer"], "system/*.cruds", "backend-demo"),
            Reach { availability: all.clone(), ..Reach::same(&all, true) },
        ),
        identified(
            "NHS 111 (availability only)",
            system(&["availability"], "system/CarePlan.s system/Patient.rs", "nhs111"),
            Reach { availability: all.clone(), ..Reach::default() },
        ),
        identified(
            "privacy officer",
            user("cis2:po", "user/*.rs", None, Some("Practitioner/pr-auditor-1"), &["auditor"], Some("A9A5A")),
            Reach { audit_events: all.clone(), ..Reach::default() },
        ),
        Persona {
            name: "doctor breaking the glass",
            token: token(app, &breakglass),
            break_glass: true,
            identified: true,
            reach: Reach { care_plans: all.clone(), patients: all.clone(), ..Reach::default() },
        },
        Persona {
            name: "no token",
            token: String::new(),
            break_glass: false,
            identified: false,
            reach: Reach::default(),
        },
        Persona { name: "forged token", token: forged, break_glass: false, identified: false, reach: Reach::default() },
    ]
}

/// The world: seeded patients (plus Olive), RelatedPersons, and two plans per patient.
async fn world() -> (TestApp, Vec<(String, &'static str)>) {
    let app = TestApp::builder().with_dev_users().with_shipped_policy().build().await;
    put_resource(
        &app,
        &json!({"resourceType": "Patient", "id": OLIVE,
            "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": OLIVE}],
            "name": [{"family": "Owens", "given": ["Olive"]}], "birthDate": "1950-07-01",
            "telecom": [{"system": "phone", "value": "07700900456"}],
            "managingOrganization": {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "B86041"}}}),
    )
    .await;
    for (id, patient, subject) in
        [("rp-jane-carer", JANE, "nhs-login:carer-1"), ("rp-arthur-son", ARTHUR, "nhs-login:son-1")]
    {
        put_resource(
            &app,
            &json!({"resourceType": "RelatedPerson", "id": id, "active": true, "patient": {"reference": format!("Patient/{patient}")},
                "identifier": [{"system": carebroker::fhir::guard::SUBJECT_SYSTEM, "value": subject}]}),
        )
        .await;
    }
    // sharing choices: Peter keeps his plan from one organisation, Jane her crisis plan from
    // everyone but her GP practice
    for (id, patient, choice) in [
        (
            "consent-peter",
            PETER,
            json!({"type": "deny", "actor": [{"reference": {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "B99999"}}}]}),
        ),
        (
            "consent-jane",
            JANE,
            json!({"type": "deny", "code": [{"coding": [{"system": CRISIS.0, "code": CRISIS.1}]}],
            "provision": [{"type": "permit", "actor": [{"reference": {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "A9A5A"}}}]}]}),
        ),
    ] {
        let mut consent = sharing_choice(patient, choice);
        consent["id"] = json!(id);
        put_resource(&app, &consent).await;
    }
    let mut plans = Vec::new();
    for patient in PATIENTS {
        for (category, start) in [(ADVANCE, "2026-01-01"), (CRISIS, "2026-06-01")] {
            plans.push((create_plan(&app, &care_plan(patient, category, start)).await, patient));
        }
    }
    (app, plans)
}

/// A sharing choice (Consent) of `patient` with one `deny` provision.
fn sharing_choice(patient: &str, deny: Value) -> Value {
    json!({"resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{patient}")},
        "provision": {"type": "permit", "provision": [deny]}})
}

fn any_patient(rng: &mut Rng) -> &'static str {
    let pool: &[&'static str] = if rng.chance(85) { &PATIENTS } else { &STRANGERS };
    pool[rng.below(pool.len())]
}

/// A hostile or ordinary value naming a patient.
fn patient_value(rng: &mut Rng) -> String {
    let p = any_patient(rng);
    match rng.below(7) {
        0 => format!("Patient/{p}"),
        1 => format!("{p},{}", any_patient(rng)),
        2 => format!("{} {} {}", &p[..3], &p[3..6], &p[6..]),
        3 => format!("Patient/{p}/../{}", any_patient(rng)),
        _ => p.to_owned(),
    }
}

fn careplan_query(rng: &mut Rng) -> String {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let n = rng.below(4);
    for _ in 0..n {
        let pair = match rng.below(11) {
            0..=2 => ("patient".into(), patient_value(rng)),
            3 => ("subject".into(), format!("Patient/{}", any_patient(rng))),
            4 => ("subject:identifier".into(), format!("https://fhir.nhs.uk/Id/nhs-number|{}", any_patient(rng))),
            5 => ("status".into(), rng.pick(&["active", "active,revoked", "draft", ""]).to_string()),
            6 => ("category".into(), rng.pick(&["734163000", "http://snomed.info/sct|736373009", "x"]).to_string()),
            7 => ("_count".into(), rng.pick(&["1", "2", "100", "0", "-1"]).to_string()),
            8 => ("_offset".into(), rng.pick(&["0", "1", "3", "x"]).to_string()),
            9 => ("date".into(), rng.pick(&["ge2026-03-01", "lt2026-03-01", "2026-06-01", "bogus"]).to_string()),
            _ => (
                rng.pick(&["_include", "_elements", "patient:missing", "_has:Patient:link:id"]).to_string(),
                "x".into(),
            ),
        };
        pairs.push(pair);
    }
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

fn patient_query(rng: &mut Rng) -> String {
    let pair: (&str, String) = match rng.below(6) {
        0 => ("identifier", any_patient(rng).to_owned()),
        1 => ("identifier", format!("https://fhir.nhs.uk/Id/nhs-number|{}", any_patient(rng))),
        2 => ("family", rng.pick(&["Smith", "patient", "JONES", "evans", "Owens", "nobody"]).to_string()),
        3 => ("phone", rng.pick(&PHONES).0.to_owned()),
        4 => ("_id", any_patient(rng).to_owned()),
        _ => ("birthdate", rng.pick(&["1950-07-01", "1942-03-14", "1931-11-23"]).to_string()),
    };
    form_urlencoded::Serializer::new(String::new()).append_pair(pair.0, &pair.1).finish()
}

/// One random request: method, path, body.
fn request(rng: &mut Rng, plans: &[(String, &'static str)]) -> (Method, String, Option<Value>) {
    let plan = |rng: &mut Rng| -> String {
        if rng.chance(90) { rng.pick(plans).0.clone() } else { rng.pick(&["missing", "..%2Fx", "a.b-c"]).to_string() }
    };
    match rng.below(17) {
        0 | 1 => (Method::GET, format!("/fhir/CarePlan/{}", plan(rng)), None),
        2 => (Method::GET, format!("/fhir/CarePlan/{}/_history/{}", plan(rng), 1 + rng.below(3)), None),
        3 => (Method::GET, format!("/fhir/CarePlan/{}/_history", plan(rng)), None),
        4 | 5 => (Method::GET, format!("/fhir/CarePlan?{}", careplan_query(rng)), None),
        6 => (Method::GET, format!("/fhir/Patient/{}", any_patient(rng)), None),
        7 => (Method::GET, format!("/fhir/Patient?{}", patient_query(rng)), None),
        8 => (
            Method::GET,
            format!("/fhir/RelatedPerson/{}", rng.pick(&["rp-jane-carer", "rp-arthur-son", "rp-none"])),
            None,
        ),
        9 => (Method::GET, format!("/fhir/AuditEvent?patient={}", any_patient(rng)), None),
        14 => {
            let query =
                form_urlencoded::Serializer::new(String::new()).append_pair("patient", &patient_value(rng)).finish();
            (Method::GET, format!("/fhir/Consent?{query}"), None)
        }
        15 => (Method::GET, format!("/fhir/Consent/{}", rng.pick(&["consent-peter", "consent-jane", "none"])), None),
        16 => {
            let deny = json!({"type": "deny", "actor": [{"reference": {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "B99999"}}}]});
            (Method::POST, "/fhir/Consent".into(), Some(sharing_choice(any_patient(rng), deny)))
        }
        10 => {
            let query = if rng.chance(50) {
                format!("nhs_number={}", any_patient(rng))
            } else {
                format!("phone={}", rng.pick(&PHONES).0)
            };
            (Method::GET, format!("/availability?{query}"), None)
        }
        11 => {
            let mut body = care_plan(any_patient(rng), ADVANCE, "2026-02-01");
            if rng.chance(20) {
                body["subject"]["identifier"] =
                    json!({"system": "https://fhir.nhs.uk/Id/nhs-number", "value": any_patient(rng)});
            }
            (Method::POST, "/fhir/CarePlan".into(), Some(body))
        }
        _ => {
            let (id, owner) = rng.pick(plans).clone();
            let subject = if rng.chance(30) { any_patient(rng) } else { owner };
            let mut body = care_plan(subject, ADVANCE, "2026-01-01");
            body["id"] = json!(id);
            match rng.below(3) {
                0 => body["note"] = json!([{"text": "please call my daughter"}]),
                1 => body["status"] = json!("revoked"),
                _ => {}
            }
            (Method::PUT, format!("/fhir/CarePlan/{id}"), Some(body))
        }
    }
}

/// The known patients whose NHS numbers or phone numbers appear in `value` (a Bundle's links, which
/// echo the caller's own query, left out).
fn disclosed(value: &Value) -> BTreeSet<&'static str> {
    let mut value = value.clone();
    if let Some(map) = value.as_object_mut() {
        map.remove("link");
    }
    let text = value.to_string();
    let mut out: BTreeSet<&'static str> = PATIENTS.iter().copied().filter(|p| text.contains(p)).collect();
    // a phone number one patient alone has identifies them
    for (phone, owners) in PHONES {
        if let ([owner], true) = (owners, text.contains(phone)) {
            out.insert(owner);
        }
    }
    out
}

fn reach_for<'a>(reach: &'a Reach, path: &str) -> &'a [&'static str] {
    if path.starts_with("/availability") {
        &reach.availability
    } else if path.starts_with("/fhir/CarePlan") {
        &reach.care_plans
    } else if path.starts_with("/fhir/Patient") {
        &reach.patients
    } else if path.starts_with("/fhir/RelatedPerson") {
        &reach.related_persons
    } else if path.starts_with("/fhir/AuditEvent") {
        &reach.audit_events
    } else if path.starts_with("/fhir/Consent") {
        &reach.consents
    } else {
        &[]
    }
}

async fn send_as(
    app: &TestApp,
    persona: &Persona,
    method: Method,
    path: &str,
    body: Option<&Value>,
    if_match: Option<&str>,
) -> Reply {
    let auth = format!("Bearer {}", persona.token);
    let mut headers: Vec<(&str, &str)> = vec![("authorization", &auth)];
    if persona.break_glass {
        headers.push(("x-break-glass-reason", "unconscious patient in ED"));
    }
    if body.is_some() {
        headers.push(("content-type", "application/fhir+json"));
    }
    if let Some(m) = if_match {
        headers.push(("if-match", m));
    }
    app.request(method, path, &headers, body.map(|b| b.to_string().into_bytes()).unwrap_or_default()).await
}

#[tokio::test]
async fn no_request_reveals_a_patient_outside_the_callers_reach_and_every_disclosure_is_audited() {
    let seed: u64 =
        std::env::var("CAREBROKER_CROSS_PATIENT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5EED_CA4E_0001);
    let cases: usize =
        std::env::var("CAREBROKER_CROSS_PATIENT_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(2500);
    let (app, plans) = world().await;
    let subjects: HashMap<String, &'static str> = plans.iter().cloned().collect();
    let mut versions: HashMap<String, i64> = plans.iter().map(|(id, _)| (id.clone(), 1)).collect();
    let personas = personas(&app);
    let mut rng = Rng(seed);
    let mut disclosures = 0usize;
    let mut choices_shown = 0usize;
    let mut refusals = 0usize;
    let mut head = audit_head(&app).await;
    for case in 0..cases {
        let persona = rng.pick(&personas);
        let (method, path, body) = request(&mut rng, &plans);
        let if_match = (method == Method::PUT).then(|| {
            let id = path.rsplit('/').next().unwrap_or_default();
            format!("W/\"{}\"", versions.get(id).copied().unwrap_or(1))
        });
        let context = format!("seed {seed}, case {case}: {} {method} {path}", persona.name);
        let reply = send_as(&app, persona, method.clone(), &path, body.as_ref(), if_match.as_deref()).await;
        assert!(reply.status.as_u16() < 500, "{context}: {} {}", reply.status, reply.text());
        let records = audit_after(&app, head).await;
        head += records.len() as i64;
        if persona.identified {
            assert!(!records.is_empty(), "{context}: no audit record");
        }
        if !reply.status.is_success() {
            refusals += 1;
            // an error may echo what the caller sent, and nothing more
            let asked: BTreeSet<&str> = {
                let mut sent = path.clone();
                if let Some(b) = &body {
                    sent.push_str(&b.to_string());
                }
                PATIENTS.iter().copied().filter(|p| sent.contains(p)).collect()
            };
            if !reply.body.is_empty() {
                let shown = disclosed(&reply.json());
                assert!(shown.is_subset(&asked), "{context}: an error disclosed {shown:?}: {}", reply.text());
            }
            continue;
        }
        let body_json = reply.json();
        let shown = disclosed(&body_json);
        let reach = reach_for(&persona.reach, &path);
        for patient in &shown {
            assert!(
                reach.contains(patient),
                "{context}: disclosed {patient}, outside the caller's reach: {}",
                reply.text()
            );
            assert!(
                records.iter().any(|(filed, _)| filed.as_deref() == Some(*patient)),
                "{context}: disclosed {patient} without an audit record filed against them: {records:?}\nanswer: {}",
                reply.text()
            );
        }
        disclosures += shown.len();
        if path.starts_with("/fhir/Consent") {
            choices_shown += shown.len();
        }
        if method != Method::GET {
            assert!(persona.reach.writes, "{context}: a caller who may not write wrote: {}", reply.text());
        }
        if method == Method::PUT {
            let id = body_json["id"].as_str().unwrap_or_default().to_owned();
            let subject = body_json["subject"]["reference"].as_str().unwrap_or_default();
            assert_eq!(subject, format!("Patient/{}", subjects[&id]), "{context}: a plan moved to another patient");
            versions.insert(id, body_json["meta"]["versionId"].as_str().and_then(|v| v.parse().ok()).unwrap_or(1));
        }
    }
    // the stream really exercised both sides
    assert!(disclosures > cases / 10, "{disclosures} disclosures in {cases} requests");
    assert!(refusals > cases / 10, "{refusals} refusals in {cases} requests");
    assert!(choices_shown > 0, "no sharing choice was ever shown");
    assert!(matches!(
        carebroker::audit::verify(app.state.stores.durable.as_ref()).await.unwrap(),
        carebroker::audit::Verification::Intact { .. }
    ));
}
