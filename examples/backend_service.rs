//! SMART Backend Services against a running carebroker: sign a client assertion with the demo
//! client's TEST-ONLY key, get a `system/` token, introspect it, revoke it, introspect again.
//!
//! ```sh
//! scripts/run.sh &                       # carebroker on 127.0.0.1:8080 with config/clients/
//! cargo run --example backend_service    # or: -- http://127.0.0.1:8080
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use carebroker::token::jose::{Algorithm, SigningKey, pkcs8_from_pem};
use carebroker::token::random_token;
use serde_json::{Value, json};

const CLIENT_ID: &str = "backend-demo";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let http = reqwest::blocking::Client::new();
    let smart: Value = http.get(format!("{base}/fhir/.well-known/smart-configuration")).send()?.json()?;
    let token_url = smart["token_endpoint"].as_str().ok_or("no token_endpoint in discovery")?.to_owned();

    let pem = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/certs/test/backend-demo.key.pem"))?;
    let key = SigningKey::from_pkcs8(Algorithm::ES384, &pkcs8_from_pem(&pem)?)?;
    let assertion = |aud: &str| -> Result<String, Box<dyn std::error::Error>> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = json!({"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": aud, "exp": now + 300, "jti": random_token(16)});
        Ok(key.sign("JWT", &claims)?)
    };

    println!("POST {token_url} (client_credentials, private_key_jwt ES384 kid {})", key.kid);
    let response: Value = http
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/CarePlan.rs system/Patient.rs"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &assertion(&token_url)?),
        ])
        .send()?
        .json()?;
    println!("{}", serde_json::to_string_pretty(&response)?);
    let access_token = response["access_token"].as_str().ok_or("no access token")?.to_owned();

    let introspect = |label: &str| -> Result<(), Box<dyn std::error::Error>> {
        let url = smart["introspection_endpoint"].as_str().ok_or("no introspection_endpoint")?;
        let body: Value = http
            .post(url)
            .form(&[
                ("token", access_token.as_str()),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &assertion(&token_url)?),
            ])
            .send()?
            .json()?;
        println!("introspection {label}: {body}");
        Ok(())
    };
    introspect("before revocation")?;
    let revoke_url = smart["revocation_endpoint"].as_str().ok_or("no revocation_endpoint")?;
    let status = http
        .post(revoke_url)
        .form(&[
            ("token", access_token.as_str()),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &assertion(&token_url)?),
        ])
        .send()?
        .status();
    println!("revocation: HTTP {}", status.as_u16());
    introspect("after revocation")?;
    Ok(())
}
