//! Semantic checks on a deserialised configuration, and `*_file` secret resolution.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::load::ConfigProblem;
use super::{Config, Secret, StoreKind};
use crate::domain::client::MAX_ACCESS_TOKEN_LIFETIME_SECS;
use crate::domain::scope::ScopeSet;
use crate::domain::url_rules::is_loopback_host;

/// Seed nodes a Redis Cluster URL list may name (the client learns the rest from the cluster).
const MAX_REDIS_SEEDS: usize = 16;

/// Reads `*_file` secrets into their values; giving both the value and the file is a problem.
pub(super) fn resolve_secret_files(config: &mut Config, problems: &mut Vec<ConfigProblem>) {
    let slots: [(&str, &mut Option<Secret>, &Option<PathBuf>); 5] = [
        ("pds.access_token", &mut config.pds.access_token, &config.pds.access_token_file),
        ("vrs.access_token", &mut config.vrs.access_token, &config.vrs.access_token_file),
        (
            "registration.initial_access_token",
            &mut config.registration.initial_access_token,
            &config.registration.initial_access_token_file,
        ),
        ("store.redis_url", &mut config.store.redis_url, &config.store.redis_url_file),
        ("store.postgres_url", &mut config.store.postgres_url, &config.store.postgres_url_file),
    ];
    for (path, value, file) in slots {
        let Some(file) = file else { continue };
        if value.is_some() {
            problems.push(ConfigProblem::new(path, format!("give `{path}` or `{path}_file`, not both")));
            continue;
        }
        match std::fs::read_to_string(file) {
            Ok(text) => *value = Some(Secret::new(text.trim_end_matches(['\r', '\n']))),
            Err(e) => problems
                .push(ConfigProblem::new(format!("{path}_file"), format!("cannot read `{}`: {e}", file.display()))),
        }
    }
}

/// Checks values that deserialised but do not make sense.
pub(super) fn validate(config: &Config, problems: &mut Vec<ConfigProblem>) {
    let mut push = |path: &str, message: String| problems.push(ConfigProblem::new(path, message));

    let listen = config.server.listen.parse::<SocketAddr>();
    if listen.is_err() {
        push("server.listen", format!("`{}` is not a socket address such as 127.0.0.1:8080", config.server.listen));
    }
    match url::Url::parse(&config.server.public_url) {
        Err(e) => push("server.public_url", format!("`{}` is not an absolute URL ({e})", config.server.public_url)),
        Ok(url) => {
            if url.query().is_some() || url.fragment().is_some() {
                push("server.public_url", "must not have a query or fragment".into());
            }
            match url.scheme() {
                "https" => {}
                "http" if is_loopback_host(url.host()) => {
                    if listen.as_ref().is_ok_and(|a| !a.ip().is_loopback()) {
                        push(
                            "server.listen",
                            "plain http is allowed only on loopback: listen on 127.0.0.1 or put https in front".into(),
                        );
                    }
                }
                "http" => {
                    push("server.public_url", "plain http is allowed only on loopback addresses; use https".into())
                }
                other => push("server.public_url", format!("scheme `{other}` is not http or https")),
            }
        }
    }
    if config.server.max_body_bytes < 1024 {
        push("server.max_body_bytes", "must be at least 1024".into());
    }

    let tokens = &config.tokens;
    if tokens.access_token_lifetime_secs == 0 || tokens.access_token_lifetime_secs > MAX_ACCESS_TOKEN_LIFETIME_SECS {
        push("tokens.access_token_lifetime_secs", format!("must be 1 to {MAX_ACCESS_TOKEN_LIFETIME_SECS}"));
    }
    if tokens.backend_access_token_lifetime_secs == 0 || tokens.backend_access_token_lifetime_secs > 300 {
        push("tokens.backend_access_token_lifetime_secs", "must be 1 to 300 (SMART Backend Services)".into());
    }
    if !(1..=3600).contains(&tokens.client_assertion_max_lifetime_secs) {
        push("tokens.client_assertion_max_lifetime_secs", "must be 1 to 3600".into());
    }
    if !(0..=300).contains(&tokens.clock_skew_secs) {
        push("tokens.clock_skew_secs", "must be 0 to 300".into());
    }

    if config.store.kind == StoreKind::RedisPostgres {
        match &config.store.redis_url {
            None => push("store.redis_url", "is required when store.kind = \"redis+postgres\"".into()),
            Some(url) => {
                let seeds: Vec<&str> = url.expose().split(',').map(str::trim).collect();
                if seeds.iter().any(|s| !(s.starts_with("redis://") || s.starts_with("rediss://"))) {
                    push("store.redis_url", "must start with redis:// or rediss://".into());
                } else if !config.store.redis_cluster && seeds.len() > 1 {
                    push("store.redis_url", "names one server unless store.redis_cluster = true".into());
                } else if seeds.len() > MAX_REDIS_SEEDS {
                    push("store.redis_url", format!("names at most {MAX_REDIS_SEEDS} cluster seed nodes"));
                }
            }
        }
        match &config.store.postgres_url {
            None => push("store.postgres_url", "is required when store.kind = \"redis+postgres\"".into()),
            Some(url) if !(url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://")) => {
                push("store.postgres_url", "must start with postgres:// or postgresql://".into())
            }
            Some(_) => {}
        }
    }

    if config.keys.reload_interval_secs == 0 {
        push("keys.reload_interval_secs", "must be more than zero".into());
    }
    if config.clients.jwks_fetch_timeout_secs == 0 {
        push("clients.jwks_fetch_timeout_secs", "must be more than zero".into());
    }
    if config.clients.jwks_cache_default_secs > config.clients.jwks_cache_max_secs {
        push("clients.jwks_cache_default_secs", "must not exceed clients.jwks_cache_max_secs".into());
    }

    if let Some(token) = &config.registration.initial_access_token {
        if token.expose().len() < 32 {
            push("registration.initial_access_token", "must be at least 32 characters".into());
        }
    }
    if let Err(e) = ScopeSet::parse(&config.registration.allowed_scope) {
        push("registration.allowed_scope", e.to_string());
    }
    if let Err(e) = ScopeSet::parse(&config.introspection.scope) {
        push("introspection.scope", e.to_string());
    }
    let sessions = &config.sessions;
    if sessions.idle_timeout_secs <= 0 || sessions.absolute_timeout_secs < sessions.idle_timeout_secs {
        push("sessions.idle_timeout_secs", "must be more than zero and at most sessions.absolute_timeout_secs".into());
    }
    let https = config.server.public_url.starts_with("https://");
    match sessions.cookie_same_site.as_str() {
        "lax" | "strict" => {}
        "none" if https => {}
        "none" => {
            push("sessions.cookie_same_site", "`none` needs an https public URL (the cookie must be Secure)".into())
        }
        other => push("sessions.cookie_same_site", format!("`{other}` is not lax, strict or none")),
    }
    let launch = &config.launch;
    if launch.lifetime_secs == 0 || launch.lifetime_secs > 3600 {
        push("launch.lifetime_secs", "must be 1 to 3600".into());
    }
    if launch.code_lifetime_secs == 0 || launch.code_lifetime_secs > 600 {
        push("launch.code_lifetime_secs", "must be 1 to 600 (RFC 6749 §4.1.2 recommends at most 600)".into());
    }
    if launch.interaction_lifetime_secs < 60 {
        push("launch.interaction_lifetime_secs", "must be at least 60".into());
    }
    if !(60..=3600).contains(&launch.id_token_lifetime_secs) {
        push("launch.id_token_lifetime_secs", "must be 60 to 3600".into());
    }
    if launch.offline_grant_lifetime_secs < 3600 {
        push("launch.offline_grant_lifetime_secs", "must be at least 3600".into());
    }
    let loopback = config.public_url_is_loopback();
    if config.policy.dir.is_none() && !loopback {
        push(
            "policy.dir",
            "an access policy is required beyond loopback: without one, scopes alone decide who sees a record \
             (set [policy] dir = \"policies\")"
                .into(),
        );
    }
    if config.dev_idp.enabled && !loopback {
        push("dev_idp.enabled", "the development identity provider is allowed only on a loopback public URL".into());
    }
    for (i, user) in config.dev_idp.users.iter().enumerate() {
        let at = format!("dev_idp.users[{i}]");
        if user.username.is_empty() || user.password.expose().is_empty() {
            push(&at, "needs a username and a password".into());
        }
        if !crate::domain::identity::is_fhir_user_reference(&user.fhir_user) {
            push(
                &format!("{at}.fhir_user"),
                format!("`{}` is not Practitioner/…, Patient/…, RelatedPerson/… or Person/…", user.fhir_user),
            );
        }
        if let Some(nhs) = &user.nhs_number {
            if let Err(e) = crate::domain::nhs_number::NhsNumber::parse(nhs) {
                push(&format!("{at}.nhs_number"), e.to_string());
            }
        }
        if config.dev_idp.users[..i].iter().any(|u| u.username == user.username) {
            push(&format!("{at}.username"), format!("`{}` is used twice", user.username));
        }
    }
    if let Some(dir) = &config.fhir.seed_dir {
        if !dir.is_dir() {
            push("fhir.seed_dir", format!("`{}` is not a folder", dir.display()));
        }
    }
    for (i, origin) in config.pages.frame_ancestors.iter().enumerate() {
        let ok = url::Url::parse(origin).is_ok_and(|u| {
            u.origin().ascii_serialization() == origin.trim_end_matches('/')
                && (u.scheme() == "https" || is_loopback_host(u.host()))
        });
        if !ok {
            push(
                &format!("pages.frame_ancestors[{i}]"),
                format!("`{origin}` is not an https origin such as https://ehr.example.nhs.uk"),
            );
        }
    }
    let vrs = &config.vrs;
    if vrs.enabled {
        if let Err(why) = crate::domain::url_rules::check_https_or_loopback(&vrs.base_url) {
            push("vrs.base_url", why);
        }
        if vrs.timeout_secs == 0 {
            push("vrs.timeout_secs", "must be more than zero".into());
        }
    }
    let pds = &config.pds;
    if pds.enabled {
        if let Err(why) = crate::domain::url_rules::check_https_or_loopback(&pds.base_url) {
            push("pds.base_url", why);
        }
        if pds.timeout_secs == 0 {
            push("pds.timeout_secs", "must be more than zero".into());
        }
    }
    if !matches!(pds.on_unavailable.as_str(), "fail_closed" | "fail_open") {
        push("pds.on_unavailable", format!("`{}` is not fail_closed or fail_open", pds.on_unavailable));
    }
    if !config.availability.launch_url_template.contains("{nhs_number}") {
        push("availability.launch_url_template", "must contain {nhs_number}".into());
    }
    if let Some(dir) = &config.policy.dir {
        if !dir.is_dir() {
            push("policy.dir", format!("`{}` is not a folder", dir.display()));
        }
    }
    validate_exchange(config, &mut push);
    if !matches!(config.log.format.as_str(), "auto" | "text" | "json") {
        push("log.format", format!("`{}` is not `auto`, `text` or `json`", config.log.format));
    }
    if tracing_subscriber::EnvFilter::try_new(&config.log.filter).is_err() {
        push("log.filter", format!("`{}` is not a tracing filter", config.log.filter));
    }
}

/// Reads a partner's JWK Set file: its verification keys, or why not.
pub fn partner_keys(file: &std::path::Path) -> Result<crate::domain::jwk::JwkSet, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
    let set: crate::domain::jwk::JwkSet =
        serde_json::from_str(&text).map_err(|e| format!("`{}` is not a JWK Set: {e}", file.display()))?;
    if set.keys.iter().any(|k| k.has_private_material()) {
        return Err(format!("`{}` holds private key material; give the public keys only", file.display()));
    }
    if !set.keys.iter().any(|k| k.is_for_verification()) {
        return Err(format!("`{}` has no signature verification key", file.display()));
    }
    Ok(set)
}

/// `[[exchange.issuers]]`: partners whose own JWTs may be exchanged.
fn validate_exchange(config: &Config, push: &mut impl FnMut(&str, String)) {
    for (i, server) in config.exchange.resource_servers.iter().enumerate() {
        let at = |field: &str| format!("exchange.resource_servers[{i}].{field}");
        if server.audience.is_empty() || server.audience == config.fhir_base() {
            push(&at("audience"), "name a resource server other than our FHIR API".into());
        }
        if config.exchange.resource_servers[..i].iter().any(|s| s.audience == server.audience) {
            push(&at("audience"), "is listed twice".into());
        }
        if let Err(e) = crate::domain::scope::ScopeSet::parse(&server.scope) {
            push(&at("scope"), e.to_string());
        }
    }
    for (i, partner) in config.exchange.issuers.iter().enumerate() {
        let at = |field: &str| format!("exchange.issuers[{i}].{field}");
        let id_ok =
            !partner.id.is_empty() && partner.id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        if !id_ok {
            push(&at("id"), "a partner id is letters, digits, - and _".into());
        }
        if config.exchange.issuers[..i].iter().any(|p| p.id == partner.id || p.issuer == partner.issuer) {
            push(&at("issuer"), "each partner has its own id and issuer".into());
        }
        if let Err(why) = crate::domain::url_rules::check_https_or_loopback(&partner.issuer) {
            push(&at("issuer"), why);
        }
        if let Err(why) = partner_keys(&partner.jwks_file) {
            push(&at("jwks_file"), why);
        }
        if !(1..=3600).contains(&partner.max_lifetime_secs) {
            push(&at("max_lifetime_secs"), "is 1 to 3600 seconds".into());
        }
        if partner.assurance > 3 {
            push(&at("assurance"), "is 0 to 3".into());
        }
    }
}

/// Cross-checks between clients, providers and the NHS App settings.
pub(super) fn validate_federation(
    config: &Config,
    clients: &[crate::domain::client::Client],
    idps: &[super::idps::IdpConfig],
    problems: &mut Vec<ConfigProblem>,
) {
    let known = |id: &str| id == "dev" || idps.iter().any(|i| i.id == id);
    for client in clients {
        for id in client.identity_providers.iter().chain(client.default_identity_provider.iter()) {
            if !known(id) {
                problems.push(ConfigProblem::new(
                    format!("clients[{}].identity_providers", client.id),
                    format!("`{id}` is not a configured identity provider"),
                ));
            }
        }
    }
    let sso = &config.federation.cis_sso;
    if sso.enabled {
        if let Err(why) = crate::domain::url_rules::check_https_or_loopback(&sso.role_assertion_url) {
            problems.push(ConfigProblem::new("federation.cis_sso.role_assertion_url", why));
        }
        if let Some(file) = &sso.ca_file {
            if !std::fs::read_to_string(file).is_ok_and(|pem| pem.contains("BEGIN CERTIFICATE")) {
                problems.push(ConfigProblem::new(
                    "federation.cis_sso.ca_file",
                    format!("`{}` is not a readable PEM certificate file", file.display()),
                ));
            }
        }
        if sso.timeout_secs == 0 || sso.max_skew_secs < 0 {
            problems.push(ConfigProblem::new(
                "federation.cis_sso.timeout_secs",
                "timeout must be positive and skew not negative",
            ));
        }
    }
    let app = &config.nhs_app;
    if app.enabled {
        match idps.iter().find(|i| i.id == app.idp) {
            Some(idp) if idp.kind == super::idps::IdpKind::NhsLogin => {}
            Some(_) => {
                problems.push(ConfigProblem::new("nhs_app.idp", format!("`{}` is not an nhs_login provider", app.idp)))
            }
            None => problems.push(ConfigProblem::new(
                "nhs_app.idp",
                format!("`{}` is not a configured identity provider", app.idp),
            )),
        }
        if let Err(why) = crate::domain::url_rules::check_https_or_loopback(&app.home_url) {
            problems.push(ConfigProblem::new("nhs_app.home_url", why));
        }
        for (name, journey) in &app.journeys {
            if !clients.iter().any(|c| c.id == journey.client_id && c.launch_uri.is_some()) {
                problems.push(ConfigProblem::new(
                    format!("nhs_app.journeys.{name}.client_id"),
                    format!("`{}` is not a client with a launch_uri", journey.client_id),
                ));
            }
        }
    }
    for (key, file) in [
        ("nhs_app.assetlinks_file", &app.assetlinks_file),
        ("nhs_app.apple_app_site_association_file", &app.apple_app_site_association_file),
    ] {
        if let Some(file) = file {
            let valid = std::fs::read_to_string(file)
                .ok()
                .is_some_and(|t| serde_json::from_str::<serde_json::Value>(&t).is_ok());
            if !valid {
                problems.push(ConfigProblem::new(key, format!("`{}` is not a readable JSON file", file.display())));
            }
        }
    }
}
