//! The crypto floor of one backend-services token: verifying one client assertion and signing one
//! ES256 access token. `scripts/bench-token` divides measured throughput by this bound.
//! Run: `cargo bench --bench crypto_cost` (prints `CRYPTO verify_us=… sign_us=…`).

use std::time::Instant;

use carebroker::token::jose::{self, Algorithm, SigningKey};
use serde_json::json;

fn median_us(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn time_us(iterations: usize, mut f: impl FnMut()) -> f64 {
    let rounds: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                f();
            }
            start.elapsed().as_secs_f64() * 1e6 / iterations as f64
        })
        .collect();
    median_us(rounds)
}

fn main() {
    let alg = match std::env::var("CLIENT_ALG").as_deref() {
        Ok("ES384") => Algorithm::ES384,
        _ => Algorithm::ES256,
    };
    let client = SigningKey::from_pkcs8(alg, &SigningKey::generate_pkcs8(alg).expect("keygen")).expect("key");
    let server =
        SigningKey::from_pkcs8(Algorithm::ES256, &SigningKey::generate_pkcs8(Algorithm::ES256).expect("keygen"))
            .expect("key");
    let claims = json!({"iss": "c", "sub": "c", "aud": "http://127.0.0.1:8080/token", "exp": 2_000_000_000u64, "jti": "0123456789abcdef0123456789abcdef"});
    let assertion = client.sign("JWT", &claims).expect("sign");
    let verifying = client.verifying_key().expect("verifying key");
    let verify_us = time_us(2000, || {
        let jws = jose::decode(&assertion, &[alg]).expect("decode");
        jws.verify(&verifying).expect("verify");
    });
    let access = json!({"iss": "http://127.0.0.1:8080", "sub": "c", "aud": "http://127.0.0.1:8080/fhir", "exp": 2_000_000_000u64, "iat": 1_999_999_700u64, "jti": "abcdefabcdefabcdefabcdef", "client_id": "c", "scope": "system/CarePlan.rs"});
    let sign_us = time_us(2000, || {
        server.sign("at+jwt", &access).expect("sign");
    });
    let rsa = SigningKey::from_pkcs8(Algorithm::RS256, &SigningKey::generate_pkcs8(Algorithm::RS256).expect("keygen"))
        .expect("key");
    let id_sign_us = time_us(300, || {
        rsa.sign("JWT", &access).expect("sign");
    });
    // What the FHIR guard pays per request before the revocation lookup: decode, ES256 verify,
    // claims parse and checks.
    let dir = std::env::temp_dir().join(format!("carebroker-crypto-cost-{}", std::process::id()));
    let ring = carebroker::token::keys::KeyRing::load_or_generate(&dir, 1_999_999_000, 3700).expect("keys");
    let claims = carebroker::token::access::AccessTokenClaims {
        iss: "http://127.0.0.1:8080".into(),
        sub: "c".into(),
        aud: "http://127.0.0.1:8080/fhir".into(),
        exp: 2_000_000_000,
        iat: 1_999_999_700,
        jti: "abcdefabcdefabcdefabcdef".into(),
        client_id: "c".into(),
        scope: "system/CarePlan.rs".into(),
        ..Default::default()
    };
    let token = carebroker::token::access::mint(&ring, &claims).expect("mint");
    let fhir_base = Some("http://127.0.0.1:8080/fhir");
    let access_verify_us = time_us(2000, || {
        carebroker::token::access::verify(&ring, &token, "http://127.0.0.1:8080", fhir_base, 1_999_999_800)
            .expect("valid");
    });
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "CRYPTO alg={} verify_us={verify_us:.1} sign_us={sign_us:.1} id_token_rs256_sign_us={id_sign_us:.1} access_token_verify_us={access_verify_us:.1}",
        alg.as_str()
    );
}
