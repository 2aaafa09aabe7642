//! The load and the verdict of `scripts/fault` (run it through that script, which starts Redis,
//! PostgreSQL and two carebroker nodes and tells this program how to break and mend them).
//!
//! Mixed load against both nodes — SMART Backend Services tokens, EHR launches (the launch
//! registered on one node, authorized on the other, the code redeemed on either), refreshes, and
//! guarded FHIR writes and reads — while each fault in turn is applied and undone. Then it checks:
//! - no 5xx but 503, and every 503 carries `Retry-After` and the spec's own error form;
//! - every access token answered 200 introspects as active (unless it expired);
//! - no authorization code, client-assertion `jti` or used refresh token is accepted again;
//! - every FHIR write answered 2xx is in the database at that version;
//! - the audit chain verifies, every answered request has its record, and records without an
//!   answer are no more than the requests whose answers were lost to a killed node;
//! - how long each flow took to be answered again after each store came back.
//!
//! ```text
//! fault_drive --nodes URL,URL --issuer URL --postgres URL --fault 'name|break command|mend command' …
//! ```
//! Prints `VERDICT clean` or `VERDICT FAILED` with every violation, and exits 0 or 1.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use carebroker::domain::pkce;
use carebroker::token::jose::{Algorithm, SigningKey, pkcs8_from_pem};
use carebroker::token::random_token;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// A system client the shipped policy maps to `plan-maintainer` (policies/careplan.toml).
const BACKEND: &str = "bench-reader";
const SCOPE: &str = "system/CarePlan.cruds system/Patient.rs";
const PATIENT: &str = "9434765919";
const REDIRECT: &str = "http://127.0.0.1:8765/callback";
/// How many of each used single-use value are tried again at the end.
const MAX_REPLAYS: usize = 1500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Flow {
    BackendToken,
    Launch,
    Refresh,
    FhirWrite,
    FhirRead,
}

impl Flow {
    const ALL: [Flow; 5] = [Flow::BackendToken, Flow::Launch, Flow::Refresh, Flow::FhirWrite, Flow::FhirRead];

    /// The audit kind a 2xx answer of this flow is recorded under.
    fn audit_kind(self) -> &'static str {
        match self {
            Self::BackendToken | Self::Launch => "token-issue",
            Self::Refresh => "token-refresh",
            Self::FhirWrite => "fhir-create",
            Self::FhirRead => "fhir-read",
        }
    }
}

#[derive(Debug, Default)]
struct FlowCount {
    ok: u64,
    refused_503: u64,
    /// No answer: the node was down, or was killed while answering.
    lost: u64,
    other: u64,
}

#[derive(Default)]
struct Ledger {
    flows: BTreeMap<Flow, FlowCount>,
    /// Seconds since start of each answered request, by flow.
    successes: BTreeMap<Flow, Vec<f64>>,
    violations: Vec<String>,
    tokens: Vec<(String, i64)>,
    assertions: Vec<String>,
    codes: Vec<(String, String)>,
    spent_refresh: Vec<String>,
    writes: Vec<(String, i64)>,
}

struct Ctx {
    http: reqwest::Client,
    nodes: Vec<String>,
    /// The public URL both nodes share (as behind a load balancer).
    issuer: String,
    key: SigningKey,
    kid: String,
    ehr_secret: String,
    started: Instant,
    ledger: Mutex<Ledger>,
}

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The backend-services token request with `assertion`.
fn backend_form(assertion: &str) -> [(&'static str, &str); 4] {
    [
        ("grant_type", "client_credentials"),
        ("scope", SCOPE),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion),
    ]
}

/// The app's code exchange.
fn code_form<'a>(code: &'a str, verifier: &'a str) -> [(&'static str, &'a str); 5] {
    [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier),
        ("client_id", "demo-app"),
    ]
}

/// The app's refresh.
fn refresh_form(token: &str) -> [(&'static str, &str); 3] {
    [("grant_type", "refresh_token"), ("refresh_token", token), ("client_id", "demo-app")]
}

/// What one HTTP exchange came to.
enum Answer {
    Ok(Value),
    Refused,
    Lost,
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Ctx {
    fn node(&self, n: usize) -> &str {
        &self.nodes[n % self.nodes.len()]
    }

    fn assertion(&self) -> String {
        let claims = json!({"iss": BACKEND, "sub": BACKEND, "aud": format!("{}/token", self.issuer), "jti": random_token(16),
            "iat": now(), "exp": now() + 240});
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        self.key.sign_with_header(&header, &claims).expect("sign")
    }

    /// Sends, classifies, and records violations of the error contract.
    async fn send(&self, flow: Flow, request: reqwest::RequestBuilder, fhir: bool) -> Answer {
        let response = match request.timeout(Duration::from_secs(10)).send().await {
            Ok(r) => r,
            Err(_) => {
                self.ledger.lock().await.flows.entry(flow).or_default().lost += 1;
                return Answer::Lost;
            }
        };
        let status = response.status().as_u16();
        let retry_after = response.headers().contains_key("retry-after");
        let body: Value = match response.json().await {
            Ok(v) => v,
            Err(_) if status < 300 && status != 200 && status != 201 => Value::Null,
            Err(_) => {
                let mut ledger = self.ledger.lock().await;
                ledger.flows.entry(flow).or_default().lost += 1;
                if status >= 500 {
                    ledger.violations.push(format!("{flow:?}: {status} without a readable body"));
                }
                return Answer::Lost;
            }
        };
        let mut ledger = self.ledger.lock().await;
        let count = ledger.flows.entry(flow).or_default();
        match status {
            200..=299 => {
                count.ok += 1;
                let at = self.started.elapsed().as_secs_f64();
                ledger.successes.entry(flow).or_default().push(at);
                Answer::Ok(body)
            }
            503 => {
                count.refused_503 += 1;
                let form_ok = if fhir {
                    body["resourceType"] == "OperationOutcome"
                } else {
                    body["error"] == "temporarily_unavailable"
                };
                if !retry_after || !form_ok {
                    ledger
                        .violations
                        .push(format!("{flow:?}: 503 without Retry-After or the spec's error form: {body}"));
                }
                Answer::Refused
            }
            _ => {
                count.other += 1;
                if status >= 500 {
                    ledger.violations.push(format!("{flow:?}: {status} {body}"));
                } else if ledger.violations.len() < 50 {
                    ledger.violations.push(format!("{flow:?}: unexpected {status} {body}"));
                }
                Answer::Refused
            }
        }
    }

    async fn backend_token(&self, n: usize) -> Option<String> {
        let node = self.node(n);
        let assertion = self.assertion();
        let form = backend_form(&assertion);
        let Answer::Ok(body) =
            self.send(Flow::BackendToken, self.http.post(format!("{node}/token")).form(&form), false).await
        else {
            return None;
        };
        let token = body["access_token"].as_str()?.to_owned();
        let mut ledger = self.ledger.lock().await;
        ledger.tokens.push((token.clone(), now() + body["expires_in"].as_i64().unwrap_or(0)));
        ledger.assertions.push(assertion);
        Some(token)
    }

    /// Launch registered on node n, authorized on n+1, code redeemed on n; returns the refresh token.
    async fn launch(&self, n: usize) -> Option<String> {
        let (a, b) = (self.node(n), self.node(n + 1));
        let body = json!({"client_id": "demo-app", "patient": PATIENT, "user": {"sub": "nurse", "name": "Nadia Nurse",
            "fhir_user": "Practitioner/pr-nurse-1", "role_codes": ["R8001"], "org": "A9A5A"}});
        let request = self.http.post(format!("{a}/launch")).basic_auth("ehr-demo", Some(&self.ehr_secret)).json(&body);
        let Answer::Ok(launch) = self.send(Flow::Launch, request, false).await else { return None };
        let launch = launch["launch"].as_str()?.to_owned();
        let verifier = random_token(48);
        let authorize = self.http.get(format!("{b}/authorize")).query(&[
            ("response_type", "code"),
            ("client_id", "demo-app"),
            ("redirect_uri", REDIRECT),
            ("launch", &launch),
            ("scope", "launch openid fhirUser patient/*.rs offline_access"),
            ("state", &random_token(8)),
            ("aud", &format!("{}/fhir", self.issuer)),
            ("code_challenge", &pkce::s256(&verifier)),
            ("code_challenge_method", "S256"),
        ]);
        let response = match authorize.timeout(Duration::from_secs(10)).send().await {
            Ok(r) => r,
            Err(_) => {
                self.ledger.lock().await.flows.entry(Flow::Launch).or_default().lost += 1;
                return None;
            }
        };
        let location = response.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let code = url::Url::parse(&location)
            .ok()
            .and_then(|u| u.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.into_owned()));
        let Some(code) = code else {
            let status = response.status().as_u16();
            let mut ledger = self.ledger.lock().await;
            let count = ledger.flows.entry(Flow::Launch).or_default();
            if status == 503 && response.headers().contains_key("retry-after") {
                count.refused_503 += 1;
            } else {
                count.other += 1;
                // a refusal while a store is down comes back to the app as an error redirect
                let store_down = location.contains("error=temporarily_unavailable");
                if !store_down && ledger.violations.len() < 50 {
                    ledger.violations.push(format!("authorize: {status} {location}"));
                }
            }
            return None;
        };
        let form = code_form(&code, &verifier);
        let answer = self.send(Flow::Launch, self.http.post(format!("{a}/token")).form(&form), false).await;
        let mut ledger = self.ledger.lock().await;
        let Answer::Ok(tokens) = answer else { return None };
        ledger.codes.push((code, verifier));
        ledger.tokens.push((tokens["access_token"].as_str()?.to_owned(), now() + tokens["expires_in"].as_i64()?));
        tokens["refresh_token"].as_str().map(str::to_owned)
    }

    async fn refresh(&self, n: usize, token: &str) -> Option<String> {
        let node = self.node(n);
        let form = refresh_form(token);
        let Answer::Ok(body) =
            self.send(Flow::Refresh, self.http.post(format!("{node}/token")).form(&form), false).await
        else {
            return None;
        };
        let mut ledger = self.ledger.lock().await;
        ledger.spent_refresh.push(token.to_owned());
        ledger.tokens.push((body["access_token"].as_str()?.to_owned(), now() + body["expires_in"].as_i64()?));
        body["refresh_token"].as_str().map(str::to_owned)
    }

    async fn write_plan(&self, n: usize, token: &str) -> Option<String> {
        let node = self.node(n);
        let plan = json!({"resourceType": "CarePlan", "status": "active", "intent": "plan",
            "subject": {"reference": format!("Patient/{PATIENT}")}, "title": "Fault-run care plan"});
        let request = self
            .http
            .post(format!("{node}/fhir/CarePlan"))
            .bearer_auth(token)
            .header("content-type", "application/fhir+json")
            .body(plan.to_string());
        let Answer::Ok(body) = self.send(Flow::FhirWrite, request, true).await else { return None };
        let id = body["id"].as_str()?.to_owned();
        let version = body["meta"]["versionId"].as_str().and_then(|v| v.parse().ok()).unwrap_or(1);
        self.ledger.lock().await.writes.push((id.clone(), version));
        Some(id)
    }

    async fn read_plan(&self, n: usize, token: &str, id: &str) {
        let node = self.node(n);
        self.send(Flow::FhirRead, self.http.get(format!("{node}/fhir/CarePlan/{id}")).bearer_auth(token), true).await;
    }
}

/// One worker: a round of every flow, over and over, against alternating nodes.
async fn worker(ctx: Arc<Ctx>, index: usize, stop: Arc<AtomicBool>) {
    let mut refresh: Option<String> = None;
    let mut system: Option<String> = None;
    let mut plan: Option<String> = None;
    let mut n = index;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        match ctx.backend_token(n).await {
            Some(token) => system = Some(token),
            // the node may be down: do not spin
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        // a launch every round; the refresh family held rotates, or the new launch's replaces it
        // (a refused or lost refresh is not retried: its outcome is unknown to the client)
        let launched = ctx.launch(n).await;
        let rotated = match refresh.take() {
            Some(old) => ctx.refresh(n + 1, &old).await,
            None => None,
        };
        refresh = rotated.or(launched);
        if let Some(token) = system.clone() {
            if let Some(id) = ctx.write_plan(n, &token).await {
                plan = Some(id);
            }
            if let Some(id) = &plan {
                ctx.read_plan(n + 1, &token, id).await;
            }
        }
    }
}

fn run_shell(command: &str) {
    match std::process::Command::new("sh").arg("-c").arg(command).status() {
        Ok(s) if s.success() => {}
        other => eprintln!("fault command `{command}` did not succeed: {other:?}"),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut nodes = Vec::new();
    let mut postgres = String::new();
    let mut issuer = String::new();
    let mut faults = Vec::new();
    let mut workers = 8;
    let mut hold = 4.0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "--nodes" => nodes = value.split(',').map(|s| s.trim_end_matches('/').to_owned()).collect(),
            "--postgres" => postgres = value,
            "--issuer" => issuer = value.trim_end_matches('/').to_owned(),
            "--fault" => faults.push(value),
            "--workers" => workers = value.parse().unwrap_or(8),
            "--hold" => hold = value.parse().unwrap_or(4.0),
            _ => {
                eprintln!("usage: fault_drive --nodes URL,URL --postgres URL --fault 'name|break|mend' …");
                std::process::exit(2);
            }
        }
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let pem = std::fs::read_to_string(format!("{root}/certs/test/bench-client.key.pem")).expect("bench key");
    let key = SigningKey::from_pkcs8(Algorithm::ES256, &pkcs8_from_pem(&pem).expect("pem")).expect("key");
    let jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{root}/certs/test/bench-client.jwks.json")).unwrap())
            .unwrap();
    let ctx = Arc::new(Ctx {
        http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        nodes,
        issuer,
        key,
        kid: jwks["keys"][0]["kid"].as_str().unwrap_or_default().to_owned(),
        ehr_secret: std::fs::read_to_string(format!("{root}/certs/test/ehr-demo.secret")).unwrap().trim().to_owned(),
        started: Instant::now(),
        ledger: Mutex::default(),
    });

    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..workers).map(|i| tokio::spawn(worker(ctx.clone(), i, stop.clone()))).collect();
    let pause = |secs: f64| tokio::time::sleep(Duration::from_secs_f64(secs));
    pause(hold).await;
    let mut mended = Vec::new();
    for fault in &faults {
        let mut parts = fault.splitn(3, '|');
        let (name, break_it, mend_it) =
            (parts.next().unwrap_or("?"), parts.next().unwrap_or("true"), parts.next().unwrap_or("true"));
        println!("fault: {name} at {:.1}s", ctx.started.elapsed().as_secs_f64());
        run_shell(break_it);
        pause(hold).await;
        run_shell(mend_it);
        let at = ctx.started.elapsed().as_secs_f64();
        println!("mended: {name} at {at:.1}s");
        mended.push((name.to_owned(), at));
        pause(hold * 2.0).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.ok();
    }
    let verdict = check(&ctx, &postgres, &mended).await;
    std::process::exit(i32::from(!verdict));
}

/// The checks after the load; true when clean.
async fn check(ctx: &Ctx, postgres: &str, mended: &[(String, f64)]) -> bool {
    let mut ledger = ctx.ledger.lock().await;
    let mut violations = std::mem::take(&mut ledger.violations);
    println!("\nflow             answered  503s   lost  other");
    for (flow, c) in &ledger.flows {
        println!("{:<16}{:>9}{:>6}{:>7}{:>7}", format!("{flow:?}"), c.ok, c.refused_503, c.lost, c.other);
    }

    // recovery: from the mend to the first answer of each flow
    println!("\nrecovery after each fault (first 2xx of each flow after the store or node came back):");
    for (name, at) in mended {
        let mut line = format!("  {name:<16}");
        for flow in Flow::ALL {
            let first = ledger.successes.get(&flow).and_then(|s| s.iter().find(|t| **t >= *at).copied());
            match first {
                Some(t) => line += &format!(" {flow:?} {:.0} ms;", (t - at) * 1000.0),
                None => {
                    line += &format!(" {flow:?} never;");
                    violations.push(format!("{flow:?} was not answered again after {name}"));
                }
            }
        }
        println!("{line}");
    }

    // every token answered 200 is still active
    let introspector = ctx.node(0).to_owned();
    let mut inactive = 0;
    let live: Vec<_> = ledger.tokens.iter().filter(|(_, exp)| *exp > now() + 2).cloned().collect();
    for (token, _) in &live {
        let assertion = ctx.assertion();
        let form =
            [("token", token.as_str()), ("client_assertion_type", ASSERTION_TYPE), ("client_assertion", &assertion)];
        let reply: Value = match ctx.http.post(format!("{introspector}/introspect")).form(&form).send().await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(e) => json!({"error": e.to_string()}),
        };
        if reply["active"] != true {
            inactive += 1;
            if inactive <= 3 {
                violations.push(format!("a token answered 200 is not active: {reply}"));
            }
        }
    }
    println!("\ntokens answered 200: {} live, {} introspected inactive", live.len(), inactive);

    // nothing single-use is accepted again
    let mut accepted_again = 0;
    for assertion in ledger.assertions.iter().take(MAX_REPLAYS) {
        accepted_again += replay(ctx, &backend_form(assertion)).await;
    }
    for (code, verifier) in ledger.codes.iter().take(MAX_REPLAYS) {
        accepted_again += replay(ctx, &code_form(code, verifier)).await;
    }
    for token in ledger.spent_refresh.iter().take(MAX_REPLAYS) {
        accepted_again += replay(ctx, &refresh_form(token)).await;
    }
    println!(
        "single-use values tried again: {} jtis, {} codes, {} refresh tokens; accepted again: {accepted_again}",
        ledger.assertions.len().min(MAX_REPLAYS),
        ledger.codes.len().min(MAX_REPLAYS),
        ledger.spent_refresh.len().min(MAX_REPLAYS)
    );
    if accepted_again > 0 {
        violations.push(format!("{accepted_again} single-use values were accepted a second time"));
    }

    // the database: every write answered 2xx, and an audit that verifies and matches
    let store =
        carebroker::store::postgres::PostgresStore::connect(postgres).await.expect("the fault run's PostgreSQL");
    let mut missing = 0;
    for (id, version) in &ledger.writes {
        let stored = carebroker::store::ResourceStore::read_resource(&store, "CarePlan", id).await.ok().flatten();
        if stored.is_none_or(|r| r.version < *version) {
            missing += 1;
        }
    }
    println!("FHIR writes answered 2xx: {}, missing from the database: {missing}", ledger.writes.len());
    if missing > 0 {
        violations.push(format!("{missing} acknowledged writes are not in the database"));
    }
    match carebroker::audit::verify(&store).await {
        Ok(carebroker::audit::Verification::Intact { records, .. }) => {
            println!("audit chain: intact, {records} records")
        }
        other => violations.push(format!("audit chain: {other:?}")),
    }
    let mut audited: BTreeMap<&str, u64> = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = carebroker::store::AuditStore::audit_records(&store, after, 1000).await.unwrap_or_default();
        let Some(last) = page.last() else { break };
        after = last.seq;
        for record in &page {
            let event: Value = serde_json::from_str(&record.data).unwrap_or(Value::Null);
            if event["outcome"] == "success" {
                for flow in Flow::ALL {
                    if event["kind"] == flow.audit_kind() {
                        *audited.entry(flow.audit_kind()).or_default() += 1;
                        break;
                    }
                }
            }
        }
    }
    let mut answered: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (flow, c) in &ledger.flows {
        let entry = answered.entry(flow.audit_kind()).or_default();
        // a launch's answers are two (launch + token); only its token is a token-issue
        let ok = if *flow == Flow::Launch { ledger.codes.len() as u64 } else { c.ok };
        entry.0 += ok;
        entry.1 += c.lost;
    }
    println!("\naudit kind       answered  audited  (lost answers)");
    for (kind, (ok, lost)) in &answered {
        let records = audited.get(kind).copied().unwrap_or(0);
        println!("{kind:<16}{ok:>9}{records:>9}  ({lost})");
        if records < *ok {
            violations.push(format!("{kind}: {ok} answered but only {records} audited"));
        }
        if records > ok + lost {
            violations.push(format!("{kind}: {records} audited, more than {ok} answered + {lost} lost"));
        }
    }

    if violations.is_empty() {
        println!("\nVERDICT clean");
        true
    } else {
        println!("\nVERDICT FAILED");
        for v in &violations {
            println!("  - {v}");
        }
        false
    }
}

/// Presents a used single-use value again at every node; 1 if any accepted it.
async fn replay(ctx: &Ctx, form: &[(&str, &str)]) -> u32 {
    let mut accepted = 0;
    for node in &ctx.nodes {
        if let Ok(r) = ctx.http.post(format!("{node}/token")).form(form).send().await {
            accepted |= u32::from(r.status().is_success());
        }
    }
    accepted
}
