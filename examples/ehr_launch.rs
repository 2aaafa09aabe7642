//! An EHR "launch in context" against a running carebroker, playing both parts: the EHR
//! registers a launch (`POST /launch`, authenticated as the demo EHR), then the SMART app follows
//! the launch URL: it authorizes with the `launch` and PKCE (no password, no consent: the EHR
//! vouches for the user), exchanges the code, and refreshes.
//!
//! ```sh
//! scripts/run.sh &                  # carebroker on 127.0.0.1:8080 with the demo clients
//! cargo run --example ehr_launch    # or: -- http://127.0.0.1:8080
//! ```

use carebroker::domain::pkce;
use carebroker::token::random_token;
use serde_json::{Value, json};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let secret = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/certs/test/ehr-demo.secret"))?;
    let http = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;

    // 1. The EHR: the nurse has patient 9434765919 open and presses "open care plan".
    let launch: Value = http
        .post(format!("{base}/launch"))
        .basic_auth("ehr-demo", Some(secret.trim()))
        .json(&json!({
            "client_id": "demo-app",
            "patient": "9434765919",
            "encounter": "enc-1",
            "need_patient_banner": false,
            "user": {"sub": "nurse", "name": "Nadia Nurse", "fhir_user": "Practitioner/pr-nurse-1", "role_codes": ["R8001"], "org": "A9A5A"}
        }))
        .send()?
        .json()?;
    let launch_url =
        url::Url::parse(launch["launch_url"].as_str().ok_or_else(|| format!("launch refused: {launch}"))?)?;
    println!("EHR opens {launch_url}");

    // 2. The app reads iss and launch, discovers the server, and authorizes.
    let params: std::collections::HashMap<_, _> = launch_url.query_pairs().into_owned().collect();
    let smart: Value = http.get(format!("{}/.well-known/smart-configuration", params["iss"])).send()?.json()?;
    let verifier = random_token(48);
    let state = random_token(16);
    let mut authorize = url::Url::parse(smart["authorization_endpoint"].as_str().ok_or("no authorization_endpoint")?)?;
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", "demo-app")
        .append_pair("redirect_uri", "http://127.0.0.1:8765/callback")
        .append_pair("launch", &params["launch"])
        .append_pair("scope", "launch openid fhirUser patient/*.rs online_access")
        .append_pair("state", &state)
        .append_pair("aud", &params["iss"])
        .append_pair("code_challenge", &pkce::s256(&verifier))
        .append_pair("code_challenge_method", "S256");
    let response = http.get(authorize).send()?;
    let location = response.headers().get("location").and_then(|v| v.to_str().ok()).ok_or("no redirect")?.to_owned();
    let back: std::collections::HashMap<_, _> = url::Url::parse(&location)?.query_pairs().into_owned().collect();
    if back.get("state") != Some(&state) {
        return Err(format!("state mismatch or error: {location}").into());
    }
    let code = back.get("code").ok_or_else(|| format!("no code: {location}"))?;
    println!("authorized without a password: code {}…", &code[..8]);

    // 3. Code for tokens.
    let token_url = smart["token_endpoint"].as_str().ok_or("no token_endpoint")?;
    let tokens: Value = http
        .post(token_url)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", "http://127.0.0.1:8765/callback"),
            ("code_verifier", &verifier),
            ("client_id", "demo-app"),
        ])
        .send()?
        .json()?;
    println!("patient {} encounter {} scope {:?}", tokens["patient"], tokens["encounter"], tokens["scope"]);

    // 4. Refresh (rotates the refresh token; the context stays).
    let refreshed: Value = http
        .post(token_url)
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().ok_or("no refresh_token")?),
        ])
        .send()?
        .json()?;
    println!(
        "refreshed: patient {} new refresh token {}",
        refreshed["patient"],
        refreshed["refresh_token"] != tokens["refresh_token"]
    );
    Ok(())
}
