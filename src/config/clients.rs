//! Client files: `{clients.dir}/*.toml`, one client each, in RFC 7591 metadata names. A file may
//! name `client_secret_file` (hashed at load, the plain secret is not kept) or `jwks_file`.
//! Files with `dev_only = true` load only when the public URL is loopback.

use std::path::Path;

use super::Config;
use super::load::ConfigProblem;
use crate::domain::client::{Client, ClientMetadata};
use crate::domain::jwk::JwkSet;

/// Loads every client file; problems are reported as `{file}: {field}`.
pub(super) fn load_clients(config: &Config, problems: &mut Vec<ConfigProblem>) -> Vec<Client> {
    let dir = &config.clients.dir;
    let paths = match super::toml_files(dir) {
        Ok(paths) => paths,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            problems.push(ConfigProblem::new("clients.dir", format!("cannot read `{}`: {e}", dir.display())));
            return Vec::new();
        }
    };
    let loopback = config.public_url_is_loopback();
    let mut clients: Vec<Client> = Vec::new();
    for path in paths {
        let label = path.display().to_string();
        let Some((metadata, dev_only)) = read_client_file(&path, problems) else { continue };
        if dev_only && !loopback {
            continue;
        }
        match metadata.validate() {
            Ok(client) => {
                if clients.iter().any(|c| c.id == client.id) {
                    problems.push(ConfigProblem::new(
                        format!("{label}: client_id"),
                        format!("`{}` is used by another client file", client.id),
                    ));
                } else {
                    clients.push(client);
                }
            }
            Err(found) => {
                problems
                    .extend(found.into_iter().map(|p| ConfigProblem::new(format!("{label}: {}", p.field), p.message)));
            }
        }
    }
    clients
}

fn read_client_file(path: &Path, problems: &mut Vec<ConfigProblem>) -> Option<(ClientMetadata, bool)> {
    let label = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            problems.push(ConfigProblem::new(label, format!("cannot read the file: {e}")));
            return None;
        }
    };
    let mut table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            problems.push(ConfigProblem::new(label, format!("not valid TOML: {e}")));
            return None;
        }
    };
    let dev_only = match table.remove("dev_only") {
        None => false,
        Some(toml::Value::Boolean(b)) => b,
        Some(_) => {
            problems.push(ConfigProblem::new(format!("{label}: dev_only"), "must be true or false"));
            return None;
        }
    };
    let mut metadata: ClientMetadata = match serde_path_to_error::deserialize(toml::Value::Table(table)) {
        Ok(m) => m,
        Err(e) => {
            problems.push(ConfigProblem::new(format!("{label}: {}", e.path()), e.into_inner().to_string()));
            return None;
        }
    };
    let base = path.parent().unwrap_or(Path::new("."));
    if let Some(file) = metadata.client_secret_file.take() {
        if metadata.client_secret_hash.is_some() {
            problems.push(ConfigProblem::new(
                format!("{label}: client_secret_file"),
                "give client_secret_hash or client_secret_file, not both",
            ));
            return None;
        }
        match std::fs::read_to_string(base.join(&file)) {
            Ok(secret) => {
                metadata.client_secret_hash =
                    Some(crate::domain::secret::hash_secret(secret.trim_end_matches(['\r', '\n'])))
            }
            Err(e) => {
                problems.push(ConfigProblem::new(
                    format!("{label}: client_secret_file"),
                    format!("cannot read `{file}`: {e}"),
                ));
                return None;
            }
        }
    }
    if let Some(file) = metadata.jwks_file.take() {
        if metadata.jwks.is_some() {
            problems.push(ConfigProblem::new(format!("{label}: jwks_file"), "give jwks or jwks_file, not both"));
            return None;
        }
        let parsed = std::fs::read_to_string(base.join(&file))
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str::<JwkSet>(&text).map_err(|e| e.to_string()));
        match parsed {
            Ok(set) => metadata.jwks = Some(set),
            Err(e) => {
                problems.push(ConfigProblem::new(
                    format!("{label}: jwks_file"),
                    format!("cannot read `{file}` as a JWK Set: {e}"),
                ));
                return None;
            }
        }
    }
    Some((metadata, dev_only))
}
