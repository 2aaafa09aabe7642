//! The `carebroker` binary: config check, keys, serve with graceful shutdown.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::free_port;

fn carebroker() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_carebroker"));
    cmd.env_remove("RUST_LOG");
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("CAREBROKER__")) {
        cmd.env_remove(name);
    }
    cmd
}

#[test]
fn config_check_prints_every_problem_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[server]\npublic_url = \"http://203.0.113.9\"\nlisten = \"nowhere\"\n[tokens]\naccess_token_lifetime_secs = 0\n[store]\nkind = \"redis+postgres\"\n",
    )
    .unwrap();
    let out = carebroker().args(["config", "check"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for path in [
        "server.public_url",
        "server.listen",
        "tokens.access_token_lifetime_secs",
        "store.redis_url",
        "store.postgres_url",
        // beyond loopback an access policy is required
        "policy.dir",
    ] {
        assert!(stderr.contains(path), "{path} missing from:\n{stderr}");
    }
}

#[test]
fn an_identity_provider_of_an_unknown_kind_is_refused_naming_the_file_and_the_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let idps = dir.path().join("idps");
    std::fs::create_dir(&idps).unwrap();
    std::fs::write(idps.join("corp.toml"), "kind = \"ldap\"\nname = \"Corp\"\nissuer = \"https://idp.example\"\n")
        .unwrap();
    let file = dir.path().join("carebroker.toml");
    std::fs::write(&file, format!("[federation]\nidps_dir = {:?}\n", idps.to_str().unwrap())).unwrap();
    let out = carebroker().args(["config", "check"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("corp.toml"), "{stderr}");
    for kind in ["ldap", "oidc", "cis2", "nhs_login", "saml"] {
        assert!(stderr.contains(kind), "{kind} missing from:\n{stderr}");
    }
}

#[test]
fn a_partner_key_file_with_a_private_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("partner.jwks.json");
    std::fs::write(&jwks, r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "d": "AA"}]}"#).unwrap();
    let file = dir.path().join("carebroker.toml");
    let toml = format!(
        "[[exchange.issuers]]\nid = \"hospice\"\nissuer = \"https://hospice.example\"\njwks_file = {:?}\n",
        jwks.to_str().unwrap()
    );
    std::fs::write(&file, toml).unwrap();
    let out = carebroker().args(["config", "check"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exchange.issuers[0].jwks_file") && stderr.contains("private"), "{stderr}");
}

#[test]
fn config_check_accepts_the_shipped_reference_file() {
    let out = carebroker()
        .args(["config", "check", "config/carebroker.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 client(s)"), "the demo clients load");
}

#[test]
fn environment_overrides_reach_config_check() {
    let out = carebroker()
        .args(["config", "check"])
        .env("CAREBROKER__SERVER__PUBLIC_URL", "ftp://x")
        .env("CAREBROKER__CLIENTS__DIR", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.public_url"));
}

#[test]
fn keys_generate_rotate_list() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let run = |args: &[&str]| {
        carebroker()
            .args(args)
            .env("CAREBROKER__KEYS__DIR", &keys)
            .env("CAREBROKER__CLIENTS__DIR", "/nonexistent")
            .output()
            .unwrap()
    };
    let out = run(&["keys", "generate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = String::from_utf8_lossy(&run(&["keys", "list"]).stdout).into_owned();
    assert_eq!(listed.matches("current").count(), 2, "{listed}");
    assert_eq!(listed.matches("next").count(), 2, "{listed}");

    let refused = run(&["keys", "rotate"]);
    assert!(!refused.status.success(), "a just-published next key is not promoted without --force");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));

    let out = run(&["keys", "rotate", "--force"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(listed.matches("previous").count(), 2, "{listed}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(keys.join("keyset.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key file is private");
    }
}

#[test]
fn serve_answers_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = carebroker()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--public-url", &format!("http://127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env("CAREBROKER__FHIR__SEED_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/config/dev/fhir"))
        .env("CAREBROKER__POLICY__DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/policies"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/fhir/.well-known/smart-configuration");
    let mut doc = None;
    for _ in 0..100 {
        if let Ok(response) = reqwest::blocking::get(&url) {
            doc = response.json::<serde_json::Value>().ok();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let doc = doc.expect("server came up");
    assert_eq!(doc["token_endpoint"], format!("http://127.0.0.1:{port}/token"));
    assert!(dir.path().join("data/keys/keyset.json").exists(), "dev keys generated on first start");
    assert!(dir.path().join("data/carebroker.db").exists(), "SQLite file under data/");

    // SAFETY-free: send SIGTERM with the kill command.
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("SIGTERM received"), "{log}");
    // not a terminal: JSON lines, no colour codes
    assert!(!log.contains('\u{1b}'), "{log}");
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "not a JSON line: {line}");
    }
}

#[test]
fn serve_refuses_to_start_on_a_bad_configuration() {
    let out = carebroker().args(["serve", "--public-url", "http://example.org"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.public_url"));
}

#[test]
fn the_demo_client_key_matches_its_published_jwks() {
    let root = env!("CARGO_MANIFEST_DIR");
    let pem = std::fs::read_to_string(format!("{root}/certs/test/backend-demo.key.pem")).unwrap();
    let der = carebroker::token::jose::pkcs8_from_pem(&pem).unwrap();
    let key = carebroker::token::jose::SigningKey::from_pkcs8(carebroker::token::jose::Algorithm::ES384, &der).unwrap();
    let jwks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{root}/certs/test/backend-demo.jwks.json")).unwrap())
            .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], key.kid, "RFC 7638 thumbprints agree between Python and carebroker");
    assert_eq!(jwks["keys"][0]["x"], key.public_jwk().x.unwrap());
}
