//! Load generator for full launch round trips and refresh grants, used by `scripts/bench-launch`.
//!
//! `cargo bench --bench launch_load -- <target> <base-url> <seconds> <concurrency>`
//! where target is one of:
//! - `carebroker-launch`: POST /launch (EHR, Basic) -> GET /authorize?launch=… -> POST /token
//! - `carebroker-refresh`: POST /token grant_type=refresh_token, rotating
//! - `peer-launch`: GET /auth (a signed-in session per worker, from the peer's
//!   `POST /bench/session`) -> POST /token (node-oidc-provider, scripts/peers/oidc-provider-launch.mjs)
//! - `peer-refresh`: POST /token grant_type=refresh_token, rotating (node-oidc-provider)
//!
//! Prints `RESULT target=… rps=… p50_us=… p99_us=… errors=…`.
//! With `STOP_AFTER=N` in the environment it stops once N round trips have completed (the memory
//! benchmark, `scripts/bench-memory`, makes an exact number of live grants that way).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use carebroker::domain::pkce;
use carebroker::token::random_token;
use serde_json::{Value, json};

#[derive(Clone)]
struct Target {
    kind: String,
    base: String,
    cookie: Option<String>,
    ehr_secret: String,
}

type Fail = Box<dyn std::error::Error + Send + Sync>;

fn location(response: &reqwest::Response) -> Result<url::Url, Fail> {
    let text = response.headers().get("location").and_then(|v| v.to_str().ok()).ok_or("no Location")?;
    Ok(url::Url::parse(text)?)
}

fn code_of(url: &url::Url) -> Result<String, Fail> {
    url.query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| format!("no code in {url}").into())
}

/// One full launch round trip; returns the refresh token.
async fn launch_round_trip(http: &reqwest::Client, t: &Target) -> Result<String, Fail> {
    let verifier = random_token(48);
    let challenge = pkce::s256(&verifier);
    let state = random_token(12);
    let (code, redirect, client) = if t.kind.starts_with("carebroker") {
        let launch: Value = http
            .post(format!("{}/launch", t.base))
            .basic_auth("ehr-demo", Some(&t.ehr_secret))
            .json(&json!({"client_id": "demo-app", "patient": "9434765919",
                "user": {"sub": "nurse", "name": "Nadia Nurse", "fhir_user": "Practitioner/pr-nurse-1", "role_codes": ["R8001"], "org": "A9A5A"}}))
            .send()
            .await?
            .json()
            .await?;
        let launch = launch["launch"].as_str().ok_or("launch refused")?;
        let redirect = "http://127.0.0.1:8765/callback";
        let response = http
            .get(format!("{}/authorize", t.base))
            .query(&[
                ("response_type", "code"),
                ("client_id", "demo-app"),
                ("redirect_uri", redirect),
                ("launch", launch),
                ("scope", "launch openid fhirUser patient/*.rs offline_access"),
                ("state", &state),
                ("aud", &format!("{}/fhir", t.base)),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .await?;
        (code_of(&location(&response)?)?, redirect, "demo-app")
    } else {
        let redirect = "http://127.0.0.1:9/callback";
        let response = http
            .get(format!("{}/auth", t.base))
            .header("cookie", t.cookie.as_deref().unwrap_or_default())
            .query(&[
                ("response_type", "code"),
                ("client_id", "bench-app"),
                ("redirect_uri", redirect),
                ("scope", "openid offline_access patient/*.rs"),
                ("state", &state),
                ("nonce", &state),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .await?;
        (code_of(&location(&response)?)?, redirect, "bench-app")
    };
    let tokens: Value = http
        .post(format!("{}/token", t.base))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("code_verifier", &verifier),
            ("client_id", client),
        ])
        .send()
        .await?
        .json()
        .await?;
    if tokens["access_token"].as_str().is_none() || tokens["id_token"].as_str().is_none() {
        return Err(format!("no tokens: {tokens}").into());
    }
    tokens["refresh_token"].as_str().map(str::to_owned).ok_or_else(|| "no refresh token".into())
}

/// A signed-in session at the peer: its two cookies (`_session`, `_session.sig`).
async fn peer_session(http: &reqwest::Client, t: &Target) -> Result<String, Fail> {
    let response = http.post(format!("{}/bench/session", t.base)).send().await?;
    let cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| c.split(';').next())
        .map(str::to_owned)
        .collect();
    if cookies.is_empty() {
        return Err("the peer gave no session".into());
    }
    Ok(cookies.join("; "))
}

async fn refresh(http: &reqwest::Client, t: &Target, token: &str) -> Result<String, Fail> {
    let client = if t.kind.starts_with("carebroker") { "demo-app" } else { "bench-app" };
    let tokens: Value = http
        .post(format!("{}/token", t.base))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", token), ("client_id", client)])
        .send()
        .await?
        .json()
        .await?;
    tokens["refresh_token"].as_str().map(str::to_owned).ok_or_else(|| format!("refresh failed: {tokens}").into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let [kind, base, seconds, concurrency] = args.as_slice() else {
        eprintln!("usage: launch_load <target> <base-url> <seconds> <concurrency>");
        std::process::exit(2);
    };
    let target = Target {
        kind: kind.clone(),
        base: base.trim_end_matches('/').to_owned(),
        cookie: None,
        ehr_secret: std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/certs/test/ehr-demo.secret"))
            .unwrap_or_default()
            .trim()
            .to_owned(),
    };
    let seconds: u64 = seconds.parse().unwrap_or(10);
    let concurrency: usize = concurrency.parse().unwrap_or(16);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap_or_default();
    let errors = Arc::new(AtomicU64::new(0));
    let refreshing = kind.ends_with("refresh");
    // Refresh runs need one live refresh token per worker, made before timing starts.
    let mut seeds = Vec::new();
    let mut targets = Vec::new();
    for _ in 0..concurrency {
        let mut worker_target = target.clone();
        if kind.starts_with("peer") {
            match peer_session(&http, &target).await {
                Ok(cookie) => worker_target.cookie = Some(cookie),
                Err(e) => {
                    eprintln!("setup failed: {e}");
                    std::process::exit(1);
                }
            }
        }
        targets.push(worker_target);
    }
    if refreshing {
        for worker_target in &targets {
            match launch_round_trip(&http, worker_target).await {
                Ok(token) => seeds.push(token),
                Err(e) => {
                    eprintln!("setup failed: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let stop_after: u64 = std::env::var("STOP_AFTER").ok().and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
    let completed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|i| {
            let (http, target, errors, completed) =
                (http.clone(), targets[i].clone(), errors.clone(), completed.clone());
            let mut token = seeds.get(i).cloned().unwrap_or_default();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline && completed.fetch_add(1, Ordering::Relaxed) < stop_after {
                    let t0 = Instant::now();
                    let result = if refreshing {
                        refresh(&http, &target, &token).await
                    } else {
                        launch_round_trip(&http, &target).await
                    };
                    match result {
                        Ok(next) => {
                            token = next;
                            latencies.push(t0.elapsed().as_micros() as u64);
                        }
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("first error: {e}");
                            }
                            if refreshing {
                                return latencies;
                            }
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap_or_default());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct =
        |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0);
    println!(
        "RESULT target={kind} rps={:.0} p50_us={} p99_us={} errors={} completed={}",
        all.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        errors.load(Ordering::Relaxed),
        all.len()
    );
}
