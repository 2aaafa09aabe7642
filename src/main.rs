//! The `carebroker` command line: serve, config check, keys.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use carebroker::app::{App, key_retention_secs};
use carebroker::clock::{Clock, SystemClock};
use carebroker::config::{self, Loaded};
use carebroker::http;
use carebroker::token::keys::{KeyFile, KeyState};

#[derive(Debug, Parser)]
#[command(name = "carebroker", version, about = "Authentication broker for shared care records")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (with no options: the embedded development default on 127.0.0.1:8080).
    Serve {
        /// Configuration file (TOML); defaults apply to every key it leaves out.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address, overriding `server.listen`.
        #[arg(long)]
        listen: Option<String>,
        /// Public URL (the issuer), overriding `server.public_url`.
        #[arg(long)]
        public_url: Option<String>,
    },
    /// Check configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Register a demo EHR launch with a running carebroker (as the EHR client) and print its URL.
    Launch(Box<LaunchArgs>),
    /// The access policy: check the files, run the decision fixtures, explain one decision.
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
        /// Configuration file naming the store.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Manage signing keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        /// Configuration file naming the key folder.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct LaunchArgs {
    /// carebroker's URL (default: the configured public URL).
    #[arg(long)]
    url: Option<String>,
    /// The SMART app to open.
    #[arg(long, default_value = "demo-app")]
    app: String,
    /// The patient's NHS number.
    #[arg(long, default_value = "9434765919")]
    patient: String,
    /// The EHR client that registers the launch (client_secret_basic).
    #[arg(long, default_value = "ehr-demo")]
    ehr: String,
    /// File holding the EHR client's secret.
    #[arg(long, default_value = "certs/test/ehr-demo.secret")]
    ehr_secret_file: PathBuf,
    /// The signed-in user as the EHR vouches for them.
    #[arg(long, default_value = "nurse")]
    user: String,
    #[arg(long, default_value = "Nadia Nurse")]
    user_name: String,
    #[arg(long, default_value = "Practitioner/pr-nurse-1")]
    fhir_user: String,
    #[arg(long, default_value = "R8001")]
    role: Vec<String>,
    #[arg(long, default_value = "A9A5A")]
    org: String,
    /// Optional encounter id.
    #[arg(long)]
    encounter: Option<String>,
    /// Configuration file (for the default URL).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum PolicyAction {
    /// Parse and check the policy files; print every problem with file and line.
    Check {
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
    /// Run the decision fixtures in DIR/tests with the compiled evaluator and the interpreter.
    Test {
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
    /// Explain the decision for one request: the deciding rule and every condition's value.
    Explain(Box<ExplainArgs>),
}

#[derive(Debug, clap::Args)]
struct ExplainArgs {
    #[arg(long, default_value = "policies")]
    dir: PathBuf,
    /// Platform roles directly (comma-separated); otherwise mapped from the identity below.
    #[arg(long, value_delimiter = ',')]
    roles: Option<Vec<String>>,
    /// cis2, nhs_login, oidc, ehr, dev or system.
    #[arg(long, default_value = "cis2")]
    source: String,
    #[arg(long, value_delimiter = ',')]
    role_codes: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    activity_codes: Vec<String>,
    #[arg(long)]
    vot: Option<String>,
    #[arg(long)]
    fhir_user: Option<String>,
    #[arg(long, default_value = "")]
    client_id: String,
    #[arg(long)]
    org: Option<String>,
    #[arg(long, default_value_t = 3)]
    assurance: u8,
    #[arg(long)]
    context_patient: Option<String>,
    #[arg(long)]
    break_glass: bool,
    #[arg(long)]
    system: bool,
    #[arg(long)]
    resource: String,
    /// One of c r u d s.
    #[arg(long)]
    interaction: String,
    #[arg(long)]
    record_patient: Option<String>,
    #[arg(long)]
    record_org: Option<String>,
    #[arg(long)]
    restricted: bool,
    /// Patients the caller is a verified proxy for (comma-separated).
    #[arg(long, value_delimiter = ',')]
    proxy_for: Vec<String>,
    /// UK local time of the request, HH:MM (default 10:00).
    #[arg(long, conflicts_with = "at")]
    time: Option<String>,
    /// The instant of the request (RFC 3339), read as UK local time.
    #[arg(long)]
    at: Option<String>,
    /// An update that only adds notes.
    #[arg(long)]
    only_notes_changed: bool,
    /// The request is the availability check.
    #[arg(long)]
    availability_check: bool,
    /// Someone acts for the token's subject (an RFC 8693 `act` claim: `delegated`).
    #[arg(long)]
    delegated: bool,
    /// The patient's sharing choices (their Consents) exclude this caller (`consent_refuses`).
    #[arg(long)]
    consent_refuses: bool,
    /// The patient lets this caller add notes to their plan (`patient_allows_notes`).
    #[arg(long)]
    patient_allows_notes: bool,
}

#[derive(Debug, Subcommand)]
enum AuditAction {
    /// Walk the hash chain, then prove the log against every signed checkpoint (stored and in
    /// the witness file); exit 3 and name the first record that was edited, deleted or moved,
    /// a cut tail, a rewritten history or a fork.
    Verify,
    /// Print an inclusion proof of record SEQ against the newest checkpoint covering it (JSON:
    /// RFC 9162 §2.1.3 audit path, the signed checkpoint and the log's public key).
    Prove { seq: u64 },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Print every problem in the configuration (and client files) and exit non-zero if any.
    Check { file: Option<PathBuf> },
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Create the key file if it is missing (a current and a next key per chain).
    Generate,
    /// Promote each next key to current; the old current stays published until its tokens expire.
    Rotate {
        /// Rotate even if the next key was published only moments ago.
        #[arg(long)]
        force: bool,
    },
    /// List keys: kid, algorithm, state, dates.
    List,
}

fn load_config(file: Option<&std::path::Path>, extra: Vec<(String, String)>) -> Result<Loaded, ExitCode> {
    let env: Vec<(String, String)> = std::env::vars().chain(extra).collect();
    config::load_from(file, Some(config::EMBEDDED_DEFAULT), env).map_err(|problems| {
        eprintln!("carebroker: the configuration has {} problem(s):", problems.len());
        for problem in &problems {
            eprintln!("  {problem}");
        }
        ExitCode::from(2)
    })
}

fn init_logging(config: &config::Config) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .or_else(|| tracing_subscriber::EnvFilter::try_new(&config.log.filter).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    // `auto`: JSON lines (no colour codes) when the log is not a terminal, text on a terminal
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let json = config.log.format == "json" || (config.log.format == "auto" && !terminal);
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(terminal && !json);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, listen, public_url } => {
            let mut extra = Vec::new();
            if let Some(listen) = listen {
                extra.push(("CAREBROKER__SERVER__LISTEN".to_owned(), format!("\"{listen}\"")));
            }
            if let Some(url) = public_url {
                extra.push(("CAREBROKER__SERVER__PUBLIC_URL".to_owned(), format!("\"{url}\"")));
            }
            let loaded = match load_config(config.as_deref(), extra) {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            init_logging(&loaded.config);
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("carebroker: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(async {
                let state = match App::build(loaded, Arc::new(SystemClock)).await.map(Arc::new) {
                    Ok(state) => state,
                    Err(e) => {
                        tracing::error!(error = %e, "carebroker could not start");
                        return ExitCode::FAILURE;
                    }
                };
                match http::serve(state).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!(error = %e, "carebroker stopped with an error");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Config { action: ConfigAction::Check { file } } => match load_config(file.as_deref(), Vec::new()) {
            Ok(loaded) => {
                println!(
                    "configuration is valid: issuer {}, {} client(s), store {:?}",
                    loaded.config.issuer(),
                    loaded.clients.len(),
                    loaded.config.store.kind
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Launch(args) => launch_command(*args),
        Command::Policy { action } => policy_command(action),
        Command::Audit { action, config } => {
            let loaded = match load_config(config.as_deref(), Vec::new()) {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            audit_command(&loaded.config, action)
        }
        Command::Keys { action, config } => {
            let loaded = match load_config(config.as_deref(), Vec::new()) {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            keys_command(&loaded.config, action)
        }
    }
}

fn keys_command(config: &config::Config, action: KeysAction) -> ExitCode {
    let dir = &config.keys.dir;
    let now = SystemClock.now();
    let result = (|| {
        let mut file = KeyFile::load(dir)?;
        match action {
            KeysAction::Generate => {
                if file.ensure(now)? {
                    file.save(dir)?;
                    println!("generated keys in {}", dir.display());
                } else {
                    println!("keys already present in {}", dir.display());
                }
            }
            KeysAction::Rotate { force } => {
                file.rotate(now, key_retention_secs(config), config.keys.min_published_secs, force)?;
                file.save(dir)?;
                println!("rotated; running servers pick the new keys up within {} s", config.keys.reload_interval_secs);
            }
            KeysAction::List => {}
        }
        print_keys(&file, now, key_retention_secs(config));
        Ok::<(), carebroker::token::keys::KeyError>(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("carebroker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_keys(file: &KeyFile, now: i64, retention: i64) {
    println!("{:<45} {:<6} {:<9} {:>12} published until", "kid", "alg", "state", "age (s)");
    for key in &file.keys {
        let until = match (key.state, key.retired_at) {
            (KeyState::Previous, Some(t)) => format!("{} s from now", (t + retention - now).max(0)),
            _ => "while in use".to_owned(),
        };
        let state = format!("{:?}", key.state).to_lowercase();
        println!("{:<45} {:<6} {:<9} {:>12} {}", key.kid, key.alg, state, now - key.created_at, until);
    }
}

fn launch_command(args: LaunchArgs) -> ExitCode {
    let url = match &args.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => match load_config(args.config.as_deref(), Vec::new()) {
            Ok(loaded) => loaded.config.issuer().to_owned(),
            Err(code) => return code,
        },
    };
    let secret = match std::fs::read_to_string(&args.ehr_secret_file) {
        Ok(s) => s.trim_end().to_owned(),
        Err(e) => {
            eprintln!("carebroker: cannot read `{}`: {e}", args.ehr_secret_file.display());
            return ExitCode::FAILURE;
        }
    };
    let mut body = serde_json::json!({
        "client_id": args.app,
        "patient": args.patient,
        "need_patient_banner": true,
        "user": {"sub": args.user, "name": args.user_name, "fhir_user": args.fhir_user, "role_codes": args.role, "org": args.org},
    });
    if let Some(encounter) = args.encounter {
        body["encounter"] = encounter.into();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("carebroker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{url}/launch"))
            .basic_auth(&args.ehr, Some(&secret))
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let json: serde_json::Value = response.json().await?;
        Ok::<_, reqwest::Error>((status, json))
    });
    match result {
        Ok((status, json)) if status.is_success() => {
            println!("{}", json["launch_url"].as_str().unwrap_or_default());
            eprintln!("launch {} expires in {} s", json["launch"].as_str().unwrap_or_default(), json["expires_in"]);
            ExitCode::SUCCESS
        }
        Ok((status, json)) => {
            eprintln!("carebroker: launch refused (HTTP {}): {json}", status.as_u16());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("carebroker: cannot reach {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn audit_command(config: &config::Config, action: AuditAction) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("carebroker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let stores = match carebroker::store::open(&config.store, Arc::new(SystemClock)).await {
            Ok(stores) => stores,
            Err(e) => {
                eprintln!("carebroker: {e}");
                return ExitCode::FAILURE;
            }
        };
        let store = stores.durable.as_ref();
        match action {
            AuditAction::Verify => audit_verify(store, config).await,
            AuditAction::Prove { seq } => match carebroker::audit::checkpoint::prove_record(store, config, seq).await {
                Ok(proof) => {
                    println!("{}", serde_json::to_string_pretty(&proof).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("carebroker: {e}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}

async fn audit_verify(store: &dyn carebroker::store::DurableStore, config: &config::Config) -> ExitCode {
    use carebroker::audit::checkpoint::{Proven, verify_log};
    let records = match carebroker::audit::verify(store).await {
        Ok(carebroker::audit::Verification::Intact { records, head }) => {
            println!("audit chain intact: {records} record(s), head {head}");
            records
        }
        Ok(carebroker::audit::Verification::Broken { seq, reason }) => {
            eprintln!("audit log TAMPERED at record {seq}: {reason}");
            return ExitCode::from(3);
        }
        Err(e) => {
            eprintln!("carebroker: cannot read the audit log: {e}");
            return ExitCode::FAILURE;
        }
    };
    let progress = |read: usize| {
        if records >= 100_000 && read % 100_000 < 5000 {
            eprintln!("  … {read} of {records} records in the tree");
        }
    };
    match verify_log(store, config, progress).await {
        Ok(Proven::Consistent { checkpoints: 0, .. }) => {
            println!(
                "no signed checkpoint yet: nothing proves the tail (a server signs one every {} records or {} s)",
                config.audit.checkpoint_every_records, config.audit.checkpoint_every_secs
            );
            ExitCode::SUCCESS
        }
        Ok(Proven::Consistent { checkpoints, latest }) => {
            println!(
                "checkpoints: {checkpoints} verified; the newest signs {latest} record(s), and the log holds all of them"
            );
            ExitCode::SUCCESS
        }
        Ok(Proven::Contradicted(why)) => {
            eprintln!("audit log TAMPERED: {why}");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("carebroker: cannot check the checkpoints: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_policy(dir: &std::path::Path) -> Result<carebroker::policy::LoadedPolicy, ExitCode> {
    carebroker::policy::load_dir(dir).map_err(|errors| {
        eprintln!("carebroker: the policy has {} problem(s):", errors.len());
        for e in &errors {
            eprintln!("  {e}");
        }
        ExitCode::from(2)
    })
}

fn policy_command(action: PolicyAction) -> ExitCode {
    match action {
        PolicyAction::Check { dir } => match load_policy(&dir) {
            Ok(p) => {
                println!(
                    "policy is valid: {} role(s), {} mapping(s), {} rule(s)",
                    p.source.roles.len(),
                    p.source.mappings.len(),
                    p.source.rules.len()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        PolicyAction::Test { dir } => {
            let policy = match load_policy(&dir) {
                Ok(p) => p,
                Err(code) => return code,
            };
            match carebroker::policy::fixtures::run_dir(&policy, &dir.join("tests")) {
                Ok(outcomes) => {
                    let failed = outcomes.iter().filter(|o| !o.passed).count();
                    for o in &outcomes {
                        println!("{} {} — {}: {}", if o.passed { "ok  " } else { "FAIL" }, o.file, o.name, o.detail);
                    }
                    println!("{} fixture(s), {failed} failed", outcomes.len());
                    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
                }
                Err(e) => {
                    eprintln!("carebroker: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        PolicyAction::Explain(args) => {
            let policy = match load_policy(&args.dir) {
                Ok(p) => p,
                Err(code) => return code,
            };
            let case = carebroker::policy::fixtures::Case {
                name: "explain".into(),
                roles: args.roles,
                source: args.source,
                provider: String::new(),
                role_codes: args.role_codes,
                activity_codes: args.activity_codes,
                vot: args.vot,
                fhir_user: args.fhir_user,
                client_id: args.client_id,
                org: args.org,
                assurance: args.assurance,
                context_patient: args.context_patient,
                proxy_for: args.proxy_for,
                break_glass: args.break_glass,
                time: args.time,
                at: args.at,
                system: args.system,
                resource: args.resource,
                interaction: args.interaction,
                record_patient: args.record_patient,
                record_org: args.record_org,
                restricted: args.restricted,
                only_notes_changed: args.only_notes_changed,
                availability_check: args.availability_check,
                delegated: args.delegated,
                consent_refuses: args.consent_refuses,
                patient_allows_notes: args.patient_allows_notes,
                expect: String::new(),
                rule: String::new(),
            };
            match carebroker::policy::explain::explain(&policy, &case) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("carebroker: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
