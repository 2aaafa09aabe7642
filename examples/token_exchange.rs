//! A partner app against a running carebroker: an EHR opens the demo app for a patient (as
//! `examples/ehr_launch.rs` does), the demo app passes its access token on to a hospice partner
//! app, and the partner exchanges it (RFC 8693) for a narrower token bound to its own DPoP key
//! (RFC 9449), keeping the patient in context, then reads the patient's care plans with it.
//!
//! ```sh
//! scripts/run.sh &                      # carebroker on 127.0.0.1:8080 with the demo clients
//! cargo run --example token_exchange    # or: -- http://127.0.0.1:8080
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use carebroker::domain::pkce;
use carebroker::token::jose::{Algorithm, SigningKey};
use carebroker::token::random_token;
use serde_json::{Value, json};

const REDIRECT: &str = "http://127.0.0.1:8765/callback";

/// A DPoP proof (RFC 9449 §4.2) for `method url`, over `access_token` when given.
fn proof(
    key: &SigningKey,
    method: &str,
    url: &str,
    access_token: Option<&str>,
) -> Result<String, Box<dyn std::error::Error>> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut claims = json!({"jti": random_token(16), "htm": method, "htu": url, "iat": now});
    if let Some(token) = access_token {
        claims["ath"] = URL_SAFE_NO_PAD.encode(digest(&SHA256, token.as_bytes())).into();
    }
    let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_jwk()});
    Ok(key.sign_with_header(&header, &claims)?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let root = env!("CARGO_MANIFEST_DIR");
    let ehr_secret = std::fs::read_to_string(format!("{root}/certs/test/ehr-demo.secret"))?;
    let partner_secret = std::fs::read_to_string(format!("{root}/certs/test/partner-demo.secret"))?;
    let http = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let smart: Value = http.get(format!("{base}/fhir/.well-known/smart-configuration")).send()?.json()?;
    let token_url = smart["token_endpoint"].as_str().ok_or("no token_endpoint")?.to_owned();
    let fhir = format!("{base}/fhir");

    // 1. The EHR opens the demo app for patient 9434765919; the app gets its token.
    let launch: Value = http
        .post(format!("{base}/launch"))
        .basic_auth("ehr-demo", Some(ehr_secret.trim()))
        .json(&json!({
            "client_id": "demo-app", "patient": "9434765919",
            "user": {"sub": "nurse", "name": "Nadia Nurse", "fhir_user": "Practitioner/pr-nurse-1", "role_codes": ["R8001"], "org": "A9A5A"}
        }))
        .send()?
        .json()?;
    let launch = launch["launch"].as_str().ok_or_else(|| format!("launch refused: {launch}"))?.to_owned();
    let (verifier, state) = (random_token(48), random_token(16));
    let mut authorize = url::Url::parse(smart["authorization_endpoint"].as_str().ok_or("no authorization_endpoint")?)?;
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", "demo-app")
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("launch", &launch)
        .append_pair("scope", "launch patient/*.rs")
        .append_pair("state", &state)
        .append_pair("aud", &fhir)
        .append_pair("code_challenge", &pkce::s256(&verifier))
        .append_pair("code_challenge_method", "S256");
    let location = http
        .get(authorize)
        .send()?
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("no redirect")?
        .to_owned();
    let code = url::Url::parse(&location)?
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .ok_or(location)?;
    let app_tokens: Value = http
        .post(&token_url)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
            ("client_id", "demo-app"),
        ])
        .send()?
        .json()?;
    let subject = app_tokens["access_token"].as_str().ok_or_else(|| format!("no token: {app_tokens}"))?.to_owned();
    println!("demo-app holds a token for patient {} with scope {}", app_tokens["patient"], app_tokens["scope"]);

    // 2. The partner exchanges it for a narrower token bound to its own key.
    let key = SigningKey::from_pkcs8(Algorithm::ES256, &SigningKey::generate_pkcs8(Algorithm::ES256)?)?;
    let exchanged: Value = http
        .post(&token_url)
        .header("DPoP", proof(&key, "POST", &token_url, None)?)
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("client_id", "partner-demo"),
            ("client_secret", partner_secret.trim()),
            ("subject_token", &subject),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token"),
            ("scope", "patient/CarePlan.rs"),
            ("resource", &fhir),
        ])
        .send()?
        .json()?;
    println!("{}", serde_json::to_string_pretty(&exchanged)?);
    let token = exchanged["access_token"].as_str().ok_or("the exchange was refused")?;

    // 3. The partner reads the care plans with a proof for each request.
    let url = format!("{fhir}/CarePlan?patient=9434765919");
    let response = http
        .get(&url)
        .header("Authorization", format!("DPoP {token}"))
        .header("DPoP", proof(&key, "GET", &url, Some(token))?)
        .send()?;
    let status = response.status();
    let bundle: Value = response.json()?;
    println!("GET {url} with a DPoP proof: {status}, {} care plan(s)", bundle["total"]);
    let bearer = http.get(&url).bearer_auth(token).send()?;
    println!(
        "the same token as a plain Bearer token: {} ({})",
        bearer.status(),
        bearer.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("-")
    );
    Ok(())
}
