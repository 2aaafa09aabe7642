//! The bodies of the `cargo-fuzz` targets in `fuzz/` (each a function of arbitrary bytes that must
//! never panic and must keep its invariant), here so that the test suite runs every seed and every
//! crash ever found through exactly the code the fuzzer ran (`tests/it/fuzz_corpus.rs`).
#![doc(hidden)]

use crate::domain::scope::ScopeSet;
use crate::token::jose::{self, Algorithm};

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// SMART scopes: what parses prints back as itself, and parses again to the same set.
pub fn scope(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Ok(set) = ScopeSet::parse(text) {
        let printed = set.to_string();
        let again = ScopeSet::parse(&printed).expect("a printed scope set parses");
        assert_eq!(again, set, "scope set round trip: {text:?} -> {printed:?}");
    }
}

/// The policy language: any file is parsed and checked, and a policy that checks compiles and
/// decides a request the same way as the reference interpreter.
pub fn policy(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let mut policy = crate::policy::Policy::default();
    let mut errors = Vec::new();
    crate::policy::ast::parse_file(std::path::Path::new("fuzz.toml"), text, &mut policy, &mut errors);
    errors.extend(crate::policy::check::check(&policy));
    if errors.is_empty() {
        let compiled = crate::policy::CompiledPolicy::compile(&policy);
        let roles: Vec<String> = policy.roles.iter().map(|(name, _, _)| name.clone()).collect();
        for resource in ["CarePlan", "Patient", "Consent", "AuditEvent"] {
            let request = crate::policy::AccessRequest {
                roles: &roles,
                resource_type: resource,
                interaction: crate::domain::scope::Permissions::READ,
                record_patient: Some("9434765919"),
                context_patient: Some("9434765919"),
                ..Default::default()
            };
            assert_eq!(compiled.decide(&request), crate::policy::interpret::decide(&policy, &request));
        }
    }
}

/// Compact JWS: decoding never panics, and never admits an algorithm outside the allow-list.
pub fn jws(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let allowed = [Algorithm::ES256, Algorithm::RS256];
    if let Ok(jws) = jose::decode(text, &allowed) {
        assert!(allowed.contains(&jws.algorithm), "an algorithm outside the allow-list was admitted");
    }
}

/// The SAML checks an unauthenticated sender reaches before any signature is looked at.
pub fn saml(data: &[u8]) {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    if crate::federation::saml::precheck_response(&encoded).is_ok() {
        let xml = String::from_utf8_lossy(data);
        assert!(!xml.contains("<!DOCTYPE") && !xml.contains("<!--"), "a DTD or comment passed the pre-checks");
    }
    if let Some(text) = text(data) {
        let _ = crate::federation::saml::precheck_response(text);
    }
}

/// FHIR search parameters: parsing and every bounded accessor.
pub fn fhir_search(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Ok(query) = crate::fhir::search::Query::parse(Some(text)) {
        for name in ["patient", "status", "category", "date", "_count"] {
            let _ = query.lists(name);
            let _ = query.one(name);
        }
        let _ = crate::fhir::search::paging(&query);
        for value in query.all("date") {
            let _ = crate::fhir::search::date_param(value);
        }
    }
}

/// Form bodies: a repeated parameter is refused unless it may repeat, and then bounded.
pub fn form(data: &[u8]) {
    if let Ok(params) = crate::oauth::params::Params::parse(data) {
        let names: Vec<String> = form_urlencoded::parse(data).map(|(k, _)| k.into_owned()).collect();
        for name in &names {
            let count = names.iter().filter(|n| *n == name).count();
            let repeatable = name == "resource" || name == "audience";
            assert!(count == 1 || repeatable, "`{name}` repeated {count} times was accepted");
            assert!(count <= crate::oauth::params::MAX_REPEATS);
        }
        let _ = params.total_len();
    }
}

/// DPoP proofs: verification of arbitrary proofs never panics and never accepts one (no key
/// here signed them, so a proof that verifies would be a forgery the checks let through unless
/// it carries its own valid public key and signature, which is the protocol).
pub fn dpop(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let expected = crate::token::dpop::Expected {
        method: "POST",
        url: "https://carebroker.example/token",
        access_token: Some("token"),
        now: 1_800_000_000,
        max_age_secs: 300,
        skew_secs: 60,
    };
    let _ = crate::token::dpop::verify(text, &expected);
}

/// A target's body.
pub type Body = fn(&[u8]);

/// Every target by name, for the corpus runner and `scripts/fuzz`.
pub const TARGETS: [(&str, Body); 7] = [
    ("scope", scope),
    ("policy", policy),
    ("jws", jws),
    ("saml", saml),
    ("fhir_search", fhir_search),
    ("form", form),
    ("dpop", dpop),
];
