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

/// A real server's whole log over a run of the main flows — backend token, EHR launch, code
/// exchange, refresh, FHIR read, introspection, revocation, registration, a wrong secret — holds
/// no token, code, verifier, assertion, secret or JWT, and the lines written while answering a
/// request carry that request's id (the `x-request-id` it was sent with, or the one it was given).
#[test]
fn a_whole_run_logs_no_secret_and_every_request_line_carries_its_request_id() {
    use carebroker::token::jose::{Algorithm, SigningKey, pkcs8_from_pem};
    use serde_json::{Value, json};
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let initial = "initial-access-token-for-the-log-test-0123456789";
    let mut child = carebroker()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--public-url", &base])
        .current_dir(dir.path())
        .env("CAREBROKER__CLIENTS__DIR", format!("{root}/config/clients"))
        .env("CAREBROKER__FHIR__SEED_DIR", format!("{root}/config/dev/fhir"))
        .env("CAREBROKER__POLICY__DIR", format!("{root}/policies"))
        .env("CAREBROKER__REGISTRATION__INITIAL_ACCESS_TOKEN", initial)
        .env("CAREBROKER__LOG__FILTER", "debug,hyper=info,h2=info,reqwest=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let http = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for _ in 0..100 {
        if http.get(format!("{base}/readyz")).send().is_ok_and(|r| r.status() == 200) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut secrets: Vec<String> = vec![initial.into()];
    let form = |path: &str, fields: &[(&str, &str)], id: &str| -> Value {
        let reply = http.post(format!("{base}{path}")).header("x-request-id", id).form(fields).send().unwrap();
        reply.json().unwrap_or(Value::Null)
    };

    // backend services
    let pem = std::fs::read_to_string(format!("{root}/certs/test/backend-demo.key.pem")).unwrap();
    let key = SigningKey::from_pkcs8(Algorithm::ES384, &pkcs8_from_pem(&pem).unwrap()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({"iss": "backend-demo", "sub": "backend-demo", "aud": format!("{base}/token"),
        "jti": carebroker::token::random_token(12), "iat": now, "exp": now + 60});
    let assertion = key.sign_with_header(&json!({"alg": "ES384", "typ": "JWT", "kid": key.kid}), &claims).unwrap();
    let system = form(
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("scope", "system/CarePlan.rs"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", &assertion),
        ],
        "probe-backend",
    );
    let system_token = system["access_token"].as_str().expect("a backend token").to_owned();
    secrets.extend([assertion, system_token.clone()]);

    // EHR launch, code exchange, refresh, read, introspect, revoke
    let ehr_secret = std::fs::read_to_string(format!("{root}/certs/test/ehr-demo.secret")).unwrap().trim().to_owned();
    let launch: Value = http
        .post(format!("{base}/launch"))
        .basic_auth("ehr-demo", Some(&ehr_secret))
        .json(&json!({"client_id": "demo-app", "patient": "9434765919", "user": {"sub": "nurse", "name": "Nadia Nurse",
            "fhir_user": "Practitioner/pr-nurse-1", "role_codes": ["R8001"], "org": "A9A5A"}}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let launch = launch["launch"].as_str().expect("a launch").to_owned();
    let verifier = carebroker::token::random_token(48);
    let redirect = "http://127.0.0.1:8765/callback";
    let authorize = http
        .get(format!("{base}/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", "demo-app"),
            ("redirect_uri", redirect),
            ("launch", &launch),
            ("scope", "launch openid fhirUser patient/*.rs offline_access"),
            ("state", "st-log"),
            ("aud", &format!("{base}/fhir")),
            ("code_challenge", &carebroker::domain::pkce::s256(&verifier)),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .unwrap();
    let location = url::Url::parse(authorize.headers()["location"].to_str().unwrap()).unwrap();
    let code = location.query_pairs().find(|(k, _)| k == "code").expect("a code").1.into_owned();
    let tokens = form(
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("code_verifier", &verifier),
            ("client_id", "demo-app"),
        ],
        "probe-code",
    );
    let refresh = tokens["refresh_token"].as_str().expect("a refresh token").to_owned();
    let rotated = form(
        "/token",
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh), ("client_id", "demo-app")],
        "probe-refresh",
    );
    let access = rotated["access_token"].as_str().expect("a refreshed token").to_owned();
    let read = http
        .get(format!("{base}/fhir/Patient/9434765919"))
        .bearer_auth(&access)
        .header("x-request-id", "probe-read")
        .send()
        .unwrap();
    assert_eq!(read.status(), 200);
    form("/introspect", &[("token", &access), ("client_id", "demo-app")], "probe-introspect");
    let next_refresh = rotated["refresh_token"].as_str().unwrap().to_owned();
    form("/revoke", &[("token", &next_refresh), ("client_id", "demo-app")], "probe-revoke");
    for field in ["access_token", "id_token"] {
        secrets.extend([&tokens, &rotated].iter().filter_map(|t| t[field].as_str().map(str::to_owned)));
    }
    secrets.extend([ehr_secret, launch, verifier, code, refresh, next_refresh]);

    // a wrong secret, and a registration that hands one out
    let wrong = "a-wrong-secret-that-must-not-be-logged";
    form(
        "/token",
        &[("grant_type", "client_credentials"), ("client_id", "ehr-demo"), ("client_secret", wrong)],
        "probe-wrong",
    );
    let registered: Value = http
        .post(format!("{base}/register"))
        .bearer_auth(initial)
        .json(
            &json!({"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "client_secret_basic"}),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let registered_secret = registered["client_secret"].as_str().expect("a registered secret").to_owned();
    secrets.extend([wrong.to_owned(), registered_secret]);

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    child.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.lines().count() > 20, "a run at debug level logs something:\n{log}");
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a secret is in the log: {}…", &secret[..secret.len().min(12)]);
    }
    let jwt = regex_lite_jwt(&log);
    assert!(jwt.is_none(), "a JWT is in the log: {jwt:?}");

    // the lines written while answering carry the request's id
    let lines: Vec<Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let of = |id: &str| lines.iter().filter(|l| l["span"]["request_id"] == id).count();
    for id in ["probe-backend", "probe-code", "probe-refresh", "probe-read", "probe-wrong"] {
        assert!(of(id) > 0, "no log line carries request id {id}");
    }
    let rotated_line =
        lines.iter().find(|l| l["fields"]["message"] == "refresh token rotated").expect("rotation logged");
    assert_eq!(rotated_line["span"]["request_id"], "probe-refresh");
    for line in lines.iter().filter(|l| l.get("span").is_some_and(|s| s["name"] == "request")) {
        assert!(line["span"]["request_id"].as_str().is_some_and(|id| !id.is_empty() && id != "-"), "{line}");
    }
}

/// The first thing in `text` shaped like a compact JWS (three base64url parts, a JSON header).
fn regex_lite_jwt(text: &str) -> Option<String> {
    text.match_indices("eyJ").find_map(|(at, _)| {
        let candidate: String =
            text[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect();
        (candidate.split('.').count() == 3 && candidate.len() > 40).then_some(candidate)
    })
}
