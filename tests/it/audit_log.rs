//! The audit log: what is recorded, FHIR AuditEvent search, and tamper detection by
//! `carebroker audit verify`.

use axum::http::Method;
use carebroker::audit::{Verification, verify};

use crate::support::fhir::*;
use crate::support::smart::*;

#[tokio::test]
async fn fhir_access_tokens_sign_in_and_launch_are_audited() {
    let app = smart_app().await;
    let launch = register_launch(&app, launch_body()).await;
    let (verifier, challenge) = pkce_pair();
    let reply =
        app.get(&authorize_path(&challenge, &[("launch", &launch), ("scope", "launch openid patient/*.rs")])).await;
    let tokens = exchange(&app, &code_from(&reply, "st-123"), &verifier).await.json();
    let at = tokens["access_token"].as_str().unwrap();
    assert_eq!(get(&app, at, "/fhir/Patient/9434765919").await.status, 200);
    assert_eq!(get(&app, at, "/fhir/Patient/9000000009").await.status, 404);

    let records = app.state.stores.durable.audit_records(0, 100).await.unwrap();
    let kinds: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.data).unwrap();
            (v["kind"].as_str().unwrap().to_owned(), v["outcome"].as_str().unwrap().to_owned())
        })
        .collect();
    for expected in
        [("launch", "success"), ("token-issue", "success"), ("fhir-read", "success"), ("fhir-read", "denied")]
    {
        assert!(kinds.iter().any(|k| k.0 == expected.0 && k.1 == expected.1), "{expected:?} missing from {kinds:?}");
    }
    let read = records.iter().find(|r| r.data.contains("fhir-read")).unwrap();
    assert_eq!(read.patient.as_deref(), Some("9434765919"));
    let event: serde_json::Value = serde_json::from_str(&read.data).unwrap();
    assert_eq!(event["actor"]["org"], "A9A5A");
    assert_eq!(event["actor"]["client_id"], APP);
    assert!(matches!(verify(app.state.stores.durable.as_ref()).await.unwrap(), Verification::Intact { .. }));
}

#[tokio::test]
async fn auditors_search_audit_events_by_patient_actor_and_date() {
    let app = fhir_app().await;
    let nurse = token(&app, &user_claims(&app, "user/*.rs", None));
    get(&app, &nurse, "/fhir/Patient/9434765919").await;
    get(&app, &nurse, "/fhir/Patient/9000000009").await;
    let auditor = token(&app, &system_claims(&app, "system/AuditEvent.rs"));
    let found = get(&app, &auditor, "/fhir/AuditEvent?patient=9434765919").await;
    assert_eq!(found.status, 200, "{}", found.text());
    let bundle = found.json();
    assert_eq!(bundle["total"], 1);
    let event = &bundle["entry"][0]["resource"];
    assert_eq!(event["resourceType"], "AuditEvent");
    assert_eq!(event["action"], "R");
    assert_eq!(event["outcome"], "0");
    assert_eq!(event["agent"][0]["who"]["identifier"]["value"], "dev:nurse");
    assert!(event["entity"].as_array().unwrap().iter().any(|e| e["what"]["reference"] == "Patient/9434765919"));
    assert_eq!(get(&app, &auditor, "/fhir/AuditEvent?agent=dev:nurse").await.json()["total"], 2);
    assert_eq!(get(&app, &auditor, "/fhir/AuditEvent?agent=dev:nurse&date=lt2020-01-01").await.json()["total"], 0);
    let no_audit_scope = token(&app, &user_claims(&app, "user/Patient.rs user/CarePlan.rs", None));
    assert_eq!(
        get(&app, &no_audit_scope, "/fhir/AuditEvent?patient=9434765919").await.status,
        403,
        "audit events need an AuditEvent scope"
    );
}

/// Rewrites the SQLite file under a running app (as an attacker with database access would).
async fn tamper(app: &crate::support::TestApp, sql: &str) {
    let path = app.dir.path().join("carebroker.db");
    rusqlite::Connection::open(path).unwrap().execute_batch(sql).unwrap();
}

async fn app_with_history() -> crate::support::TestApp {
    let app = fhir_app().await;
    let nurse = token(&app, &user_claims(&app, "user/*.rs", None));
    for _ in 0..5 {
        get(&app, &nurse, "/fhir/Patient/9434765919").await;
    }
    assert!(matches!(
        verify(app.state.stores.durable.as_ref()).await.unwrap(),
        Verification::Intact { records: 5, .. }
    ));
    app
}

#[tokio::test]
async fn checkpoints_signed_as_the_log_grows_hold_the_root_of_every_record_so_far() {
    // the checkpointer keeps the tree's frontier, not its leaves: each checkpoint it signs after
    // the log grew by 1, 2, 4, 8 … records must still be the root over every record from the first
    use carebroker::audit::checkpoint;
    use carebroker::domain::merkle;
    let app = fhir_app().await;
    let nurse = token(&app, &user_claims(&app, "user/*.rs", None));
    let store = app.state.stores.durable.clone();
    let mut signed = Vec::new();
    for grow in [1, 2, 4, 8, 16] {
        for _ in 0..grow {
            assert_eq!(get(&app, &nurse, "/fhir/Patient/9434765919").await.status, 200);
        }
        let now = app.now();
        let made = app.state.checkpoints.tick(store.as_ref(), now, now * 1000, true).await.unwrap();
        let made = made.expect("new records: a checkpoint");
        let mut leaves = Vec::new();
        checkpoint::extend_leaves(store.as_ref(), &mut leaves, |_| {}).await.unwrap();
        assert_eq!(made.size, leaves.len() as u64);
        assert_eq!(made.root, merkle::root(&leaves), "the checkpoint of {} records", leaves.len());
        signed.push(made);
    }
    assert_eq!(signed.iter().map(|c| c.size).collect::<Vec<_>>(), [1, 3, 7, 15, 31]);
}

#[tokio::test]
async fn verify_detects_an_edited_record() {
    let app = app_with_history().await;
    tamper(&app, "UPDATE audit_log SET data = replace(data, 'dev:nurse', 'dev:doctor') WHERE seq = 3").await;
    let result = verify(app.state.stores.durable.as_ref()).await.unwrap();
    assert!(matches!(&result, Verification::Broken { seq: 3, reason } if reason.contains("edited")), "{result:?}");
}

#[tokio::test]
async fn verify_detects_a_deleted_record() {
    let app = app_with_history().await;
    tamper(&app, "DELETE FROM audit_log WHERE seq = 2").await;
    let result = verify(app.state.stores.durable.as_ref()).await.unwrap();
    assert!(matches!(&result, Verification::Broken { seq: 2, reason } if reason.contains("deleted")), "{result:?}");
}

#[tokio::test]
async fn verify_detects_reordered_records() {
    let app = app_with_history().await;
    tamper(&app, "UPDATE audit_log SET seq = -2 WHERE seq = 2").await;
    tamper(&app, "UPDATE audit_log SET seq = 2 WHERE seq = 4").await;
    tamper(&app, "UPDATE audit_log SET seq = 4 WHERE seq = -2").await;
    let result = verify(app.state.stores.durable.as_ref()).await.unwrap();
    assert!(matches!(&result, Verification::Broken { seq: 2, .. }), "{result:?}");
}

#[test]
fn the_cli_reports_tampering_with_a_non_zero_exit() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(app_with_history());
    let db = app.dir.path().join("carebroker.db");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_carebroker"))
            .args(["audit", "verify"])
            .env("CAREBROKER__STORE__SQLITE_PATH", &db)
            .env("CAREBROKER__FHIR__SEED_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/config/dev/fhir"))
            .output()
            .unwrap()
    };
    let ok = run();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("5 record(s)"));
    runtime.block_on(tamper(&app, "UPDATE audit_log SET time = time + 1 WHERE seq = 4"));
    let broken = run();
    assert_eq!(broken.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&broken.stderr).contains("record 4"));
    let _ = Method::GET;
}

/// The chain alone cannot see a deleted tail (what is left still links up); the signed
/// checkpoints can, even when the attacker deletes the stored checkpoints too, because the
/// witness file keeps them. Any record can be proved against a checkpoint by RFC 9162 alone.
#[test]
fn a_cut_tail_is_caught_by_the_signed_checkpoints_and_any_record_can_be_proved() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use carebroker::domain::merkle;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(app_with_history());
    let store = app.state.stores.durable.clone();
    let (now, now_ms) = (app.now(), app.now() * 1000);
    let checkpoint = runtime
        .block_on(app.state.checkpoints.tick(store.as_ref(), now, now_ms, true))
        .unwrap()
        .expect("five new records: a checkpoint");
    assert_eq!(checkpoint.size, 5);
    assert!(
        runtime.block_on(app.state.checkpoints.tick(store.as_ref(), now, now_ms, true)).unwrap().is_none(),
        "nothing new"
    );
    let witness = app.dir.path().join("witness");
    std::fs::write(&witness, &checkpoint.note).unwrap();
    let db = app.dir.path().join("carebroker.db");
    let config = &app.state.config;
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_carebroker"))
            .args(args)
            .env("CAREBROKER__STORE__SQLITE_PATH", &db)
            .env("CAREBROKER__KEYS__DIR", &config.keys.dir)
            .env("CAREBROKER__SERVER__PUBLIC_URL", &config.server.public_url)
            .env("CAREBROKER__AUDIT__WITNESS_FILE", &witness)
            .env("CAREBROKER__FHIR__SEED_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/config/dev/fhir"))
            .output()
            .unwrap()
    };
    let ok = run(&["audit", "verify"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("checkpoints: 2 verified"),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    // an inclusion proof of record 3 checks out with nothing but the RFC's algorithm
    let proved = run(&["audit", "prove", "3"]);
    assert!(proved.status.success(), "{}", String::from_utf8_lossy(&proved.stderr));
    let proof: serde_json::Value = serde_json::from_slice(&proved.stdout).unwrap();
    let hash =
        |v: &serde_json::Value| -> merkle::Hash { STANDARD.decode(v.as_str().unwrap()).unwrap().try_into().unwrap() };
    let leaf = merkle::leaf_hash(proof["leaf_input"].as_str().unwrap().as_bytes());
    let path: Vec<merkle::Hash> = proof["inclusion_proof"].as_array().unwrap().iter().map(hash).collect();
    assert!(merkle::verify_inclusion(2, 5, &leaf, &path, &hash(&proof["root"])));
    assert!(!merkle::verify_inclusion(3, 5, &leaf, &path, &hash(&proof["root"])), "not as another record");
    assert!(proof["checkpoint"].as_str().unwrap().contains("\n5\n"));
    assert_eq!(run(&["audit", "prove", "9"]).status.code(), Some(1), "no checkpoint covers a record not yet written");

    // cut the tail: the chain that is left still links up...
    runtime.block_on(tamper(&app, "DELETE FROM audit_log WHERE seq >= 4"));
    assert!(matches!(runtime.block_on(verify(store.as_ref())).unwrap(), Verification::Intact { records: 3, .. }));
    // ...but the checkpoint says five were signed
    let cut = run(&["audit", "verify"]);
    assert_eq!(cut.status.code(), Some(3), "{}", String::from_utf8_lossy(&cut.stdout));
    assert!(String::from_utf8_lossy(&cut.stderr).contains("CUT TAIL"), "{}", String::from_utf8_lossy(&cut.stderr));
    // deleting the stored checkpoints as well does not help: the witness keeps one
    runtime.block_on(tamper(&app, "DELETE FROM resources WHERE resource_type = 'AuditCheckpoint'"));
    let still = run(&["audit", "verify"]);
    assert_eq!(still.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&still.stderr).contains("CUT TAIL"));
    // and a witness note that was not signed by this log's key is named as forged
    std::fs::write(&witness, checkpoint.note.replacen("\n5\n", "\n3\n", 1)).unwrap();
    let forged = run(&["audit", "verify"]);
    assert_eq!(forged.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&forged.stderr).contains("FORGED"), "{}", String::from_utf8_lossy(&forged.stderr));
    // without the key that signed them, checkpoints are not checked, and verify says why
    let no_key = tempfile::tempdir().unwrap();
    let keyless = std::process::Command::new(env!("CARGO_BIN_EXE_carebroker"))
        .args(["audit", "verify"])
        .env("CAREBROKER__STORE__SQLITE_PATH", &db)
        .env("CAREBROKER__KEYS__DIR", no_key.path())
        .env("CAREBROKER__SERVER__PUBLIC_URL", &config.server.public_url)
        .env("CAREBROKER__AUDIT__WITNESS_FILE", &witness)
        .env("CAREBROKER__FHIR__SEED_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/config/dev/fhir"))
        .output()
        .unwrap();
    assert_eq!(keyless.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&keyless.stderr).contains("missing"),
        "{}",
        String::from_utf8_lossy(&keyless.stderr)
    );
    assert!(!no_key.path().join("audit-checkpoint.ed25519.pk8").exists(), "verify makes no key");
}

#[tokio::test]
async fn each_audit_event_says_whether_its_record_verifies() {
    let app = app_with_history().await;
    tamper(&app, "UPDATE audit_log SET data = replace(data, '\"fhir-read\"', '\"fhir-vread\"') WHERE seq = 3").await;
    let auditor = token(&app, &system_claims(&app, "system/AuditEvent.rs"));
    let found = get(&app, &auditor, "/fhir/AuditEvent?patient=9434765919").await;
    assert_eq!(found.status, 200, "{}", found.text());
    let verdicts: Vec<(String, bool)> = found.json()["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let event = &e["resource"];
            let flag = event["extension"]
                .as_array()
                .and_then(|x| x.iter().find(|x| x["url"] == carebroker::audit::fhir::VERIFIED_EXTENSION))
                .and_then(|x| x["valueBoolean"].as_bool())
                .expect("every event says whether it verifies");
            (event["id"].as_str().unwrap().to_owned(), flag)
        })
        .collect();
    assert_eq!(verdicts.len(), 5, "{verdicts:?}");
    for (id, verifies) in verdicts {
        assert_eq!(verifies, id != "3", "record {id}");
    }
}

#[tokio::test]
async fn the_audit_viewer_shows_auditors_emergency_access_first_and_only_auditors() {
    use crate::support::browser::{Browser, dev_signed_in};
    let app = crate::support::TestApp::builder()
        .with_client(public_app())
        .with_dev_users()
        .with_shipped_policy()
        .build()
        .await;
    let mut nurse = user_claims(&app, "patient/*.rs", Some("9434765919"));
    nurse.roles = vec!["clinician".into()];
    nurse.assurance = Some(3);
    let nurse = token(&app, &nurse);
    assert_eq!(get(&app, &nurse, "/fhir/Patient/9434765919").await.status, 200);
    assert_eq!(get(&app, &nurse, "/fhir/Patient/9000000009").await.status, 404);
    let emergency = app
        .request(
            Method::GET,
            "/fhir/Patient/9000000009",
            &[("authorization", &format!("Bearer {nurse}")), ("x-break-glass-reason", "collapsed in the waiting room")],
            Vec::new(),
        )
        .await;
    assert!(emergency.status.as_u16() < 500);

    assert_eq!(Browser::new().get(&app, "/audit").await.status, 401);
    let mut staff = dev_signed_in(&app, "nurse").await;
    assert_eq!(staff.get(&app, "/audit").await.status, 403, "only the auditor role");

    let mut auditor = dev_signed_in(&app, "auditor").await;
    let empty = auditor.get(&app, "/audit").await;
    assert_eq!(empty.status, 200);
    assert!(empty.text().contains("Search the access log") && !empty.text().contains("<table"));

    let found = auditor.get(&app, "/audit?patient=9000000009").await.text();
    let emergency_at = found.find("Emergency (break-glass) access").expect("emergency access is shown");
    let table_at = found.find("<table").expect("the records");
    assert!(emergency_at < table_at, "emergency access first");
    assert!(found.contains("collapsed in the waiting room"), "{found}");
    assert!(found.contains("cell\">Yes<") && !found.contains("NO: investigate"), "every record verifies: {found}");

    let refused = auditor.get(&app, "/audit?patient=9434765919&outcome=refused").await.text();
    assert!(!refused.contains("cell\">Allowed<"), "{refused}");
    let allowed = auditor.get(&app, "/audit?patient=9434765919&outcome=success&org=A9A5A").await.text();
    assert!(allowed.contains("cell\">Allowed<") && !allowed.contains("cell\">Refused<"), "{allowed}");
    assert!(!allowed.contains("/_history/"), "patients by NHS number: {allowed}");
    let other_org = auditor.get(&app, "/audit?patient=9434765919&org=ZZ999").await.text();
    assert!(other_org.contains("No record matches"), "{other_org}");

    // bad input is explained, never run, never echoed as markup
    let bad = auditor.get(&app, "/audit?patient=123&user=%3Cscript%3Ealert(1)%3C/script%3E").await;
    assert_eq!(bad.status, 200);
    assert!(bad.text().contains("An NHS number is 10 digits") && !bad.text().contains("<script>alert"));
    assert!(auditor.get(&app, "/audit?since=yesterday").await.text().contains("must be a date"));

    // the auditor's searches are on the record too
    let records = app.state.stores.durable.search_audit(None, Some("dev:auditor"), None, None, 100).await.unwrap();
    assert!(records.iter().any(|r| r.data.contains("AuditEvent")), "the viewer's searches are audited");
}
