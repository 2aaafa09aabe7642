//! Reading the configuration: file, then environment overrides, then per-section deserialisation
//! so one bad section does not hide problems in another.

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;

use super::Config;
use crate::domain::client::Client;

/// One configuration problem: where (a key path, or a file) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub path: String,
    pub message: String,
}

impl ConfigProblem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A loaded, validated configuration and the clients from its client folder.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub clients: Vec<Client>,
    pub idps: Vec<super::idps::IdpConfig>,
}

const ENV_PREFIX: &str = "CAREBROKER__";

/// Loads `file` (or the embedded defaults when `None`), applies `env` overrides, validates, and
/// loads client files. Returns every problem found, or the configuration.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded, Vec<ConfigProblem>> {
    load_from(file, None, env)
}

/// As [`load`], but with `base` TOML text standing in for a file (the embedded default).
pub fn load_from(
    file: Option<&Path>,
    base: Option<&str>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let mut table = toml::Table::new();
    if let Some(text) = base.filter(|_| file.is_none()) {
        match text.parse::<toml::Table>() {
            Ok(t) => table = t,
            Err(e) => problems.push(ConfigProblem::new("(embedded default)", format!("not valid TOML: {e}"))),
        }
    }
    if let Some(path) = file {
        match std::fs::read_to_string(path) {
            Ok(text) => match text.parse::<toml::Table>() {
                Ok(t) => table = t,
                Err(e) => problems.push(ConfigProblem::new(path.display().to_string(), format!("not valid TOML: {e}"))),
            },
            Err(e) => {
                problems.push(ConfigProblem::new(path.display().to_string(), format!("cannot read the file: {e}")))
            }
        }
    }
    apply_env(&mut table, env, &mut problems);

    let mut config = Config::default();
    for (section, value) in table {
        let path = section.clone();
        let result = match section.as_str() {
            "server" => section_into(value, &path).map(|v| config.server = v),
            "store" => section_into(value, &path).map(|v| config.store = v),
            "keys" => section_into(value, &path).map(|v| config.keys = v),
            "tokens" => section_into(value, &path).map(|v| config.tokens = v),
            "clients" => section_into(value, &path).map(|v| config.clients = v),
            "registration" => section_into(value, &path).map(|v| config.registration = v),
            "introspection" => section_into(value, &path).map(|v| config.introspection = v),
            "sessions" => section_into(value, &path).map(|v| config.sessions = v),
            "launch" => section_into(value, &path).map(|v| config.launch = v),
            "dev_idp" => section_into(value, &path).map(|v| config.dev_idp = v),
            "fhir" => section_into(value, &path).map(|v| config.fhir = v),
            "pages" => section_into(value, &path).map(|v| config.pages = v),
            "pds" => section_into(value, &path).map(|v| config.pds = v),
            "vrs" => section_into(value, &path).map(|v| config.vrs = v),
            "audit" => section_into(value, &path).map(|v| config.audit = v),
            "availability" => section_into(value, &path).map(|v| config.availability = v),
            "federation" => section_into(value, &path).map(|v| config.federation = v),
            "nhs_app" => section_into(value, &path).map(|v| config.nhs_app = v),
            "exchange" => section_into(value, &path).map(|v| config.exchange = v),
            "policy" => section_into(value, &path).map(|v| config.policy = v),
            "log" => section_into(value, &path).map(|v| config.log = v),
            _ => Err(ConfigProblem::new(path, "unknown section")),
        };
        if let Err(problem) = result {
            problems.push(problem);
        }
    }

    super::validate::resolve_secret_files(&mut config, &mut problems);
    super::validate::validate(&config, &mut problems);
    let clients = super::clients::load_clients(&config, &mut problems);
    let idps = super::idps::load_idps(&config, &mut problems);
    super::validate::validate_federation(&config, &clients, &idps, &mut problems);
    if problems.is_empty() { Ok(Loaded { config, clients, idps }) } else { Err(problems) }
}

fn section_into<T: DeserializeOwned>(value: toml::Value, section: &str) -> Result<T, ConfigProblem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." { section.to_owned() } else { format!("{section}.{inner}") };
        ConfigProblem::new(path, e.into_inner().to_string())
    })
}

/// `CAREBROKER__SECTION__KEY=value`: the double underscore nests, names are lower-cased, and the
/// value is read as a TOML value when it is one (numbers, booleans, arrays) or as a string.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    problems: &mut Vec<ConfigProblem>,
) {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else { continue };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            problems.push(ConfigProblem::new(name.clone(), "an environment override is CAREBROKER__SECTION__KEY"));
            continue;
        }
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let (last, parents) = path.split_last().unwrap_or((&path[0], &[]));
        if let Err(why) = insert_path(table, parents, last, value) {
            problems.push(ConfigProblem::new(name.clone(), why));
        }
    }
}

fn insert_path(table: &mut toml::Table, parents: &[String], last: &str, value: toml::Value) -> Result<(), String> {
    match parents.split_first() {
        None => {
            table.insert(last.to_owned(), value);
            Ok(())
        }
        Some((first, rest)) => {
            match table.entry(first.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new())) {
                toml::Value::Table(inner) => insert_path(inner, rest, last, value),
                _ => Err(format!("`{first}` is a value, not a section")),
            }
        }
    }
}

/// The `*.toml` files directly in `dir`, sorted by name (client, provider and policy folders).
pub fn toml_files(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn no_clients() -> Vec<(String, String)> {
        env(&[("CAREBROKER__CLIENTS__DIR", "/nonexistent-carebroker-clients")])
    }

    #[test]
    fn defaults_are_valid() {
        let loaded = load(None, no_clients()).expect("defaults load");
        assert_eq!(loaded.config.server.listen, "127.0.0.1:8080");
        assert_eq!(loaded.config.fhir_base(), "http://127.0.0.1:8080/fhir");
    }

    #[test]
    fn environment_overrides_nest_and_parse_types() {
        let mut vars = no_clients();
        vars.extend(env(&[
            ("CAREBROKER__TOKENS__ACCESS_TOKEN_LIFETIME_SECS", "600"),
            ("CAREBROKER__SERVER__PUBLIC_URL", "http://localhost:9999/"),
            ("CAREBROKER__REGISTRATION__INITIAL_ACCESS_TOKEN", "0123456789abcdef0123456789abcdef"),
            ("UNRELATED", "x"),
        ]));
        let loaded = load(None, vars).expect("valid");
        assert_eq!(loaded.config.tokens.access_token_lifetime_secs, 600);
        assert_eq!(loaded.config.issuer(), "http://localhost:9999");
        assert!(loaded.config.registration.initial_access_token.is_some());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(
            &file,
            "[server]\npublic_url = \"http://example.org\"\n[tokens]\naccess_token_lifetime_secs = \"long\"\n[nonsense]\nx = 1\n[keys]\ndirr = \"x\"\n",
        )
        .unwrap();
        let problems = load(Some(&file), no_clients()).expect_err("invalid");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for expected in ["server.public_url", "tokens.access_token_lifetime_secs", "nonsense", "keys"] {
            assert!(paths.iter().any(|p| p.starts_with(expected)), "{expected} missing from {paths:?}");
        }
        let keys = problems.iter().find(|p| p.path.starts_with("keys")).unwrap();
        assert!(keys.message.contains("dirr"), "{}", keys.message);
    }

    #[test]
    fn redis_urls_are_one_server_unless_a_cluster_is_named() {
        let store = |url: &str, cluster: &str| {
            let mut vars = no_clients();
            vars.extend(env(&[
                ("CAREBROKER__STORE__KIND", "redis+postgres"),
                ("CAREBROKER__STORE__POSTGRES_URL", "postgres://db/carebroker"),
                ("CAREBROKER__STORE__REDIS_URL", url),
                ("CAREBROKER__STORE__REDIS_CLUSTER", cluster),
            ]));
            load(None, vars).map(|_| ()).map_err(|p| p[0].message.clone())
        };
        let seeds = "redis://a:7000/,redis://b:7001/, redis://c:7002/";
        assert_eq!(store("redis://a:6379/", "false"), Ok(()));
        assert_eq!(store(seeds, "true"), Ok(()));
        assert!(store(seeds, "false").unwrap_err().contains("redis_cluster"));
        assert!(store("redis://a:7000/,http://b/", "true").unwrap_err().contains("redis://"));
        let many = vec!["redis://a:7000/"; 17].join(",");
        assert!(store(&many, "true").unwrap_err().contains("at most 16"));
    }

    #[test]
    fn a_missing_file_is_a_problem_not_a_panic() {
        let problems = load(Some(Path::new("/nonexistent/carebroker.toml")), no_clients()).expect_err("missing");
        assert!(problems[0].message.contains("cannot read"));
    }
}
