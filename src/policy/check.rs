//! Checks a parsed policy and reports every problem with its file and line: unknown roles,
//! resource types, duplicate ids, rules that can never fire, and permits fully shadowed by a
//! forbid.

use std::collections::HashSet;

use super::ast::{Condition, Effect, Policy, PolicyError, Rule};
use super::compile::MAX_ROLES;

/// Resource types this service has (rules may also say `*`).
pub const RESOURCE_TYPES: [&str; 6] = ["AuditEvent", "CarePlan", "Consent", "Patient", "Practitioner", "RelatedPerson"];

/// Sources whose `RelatedPerson` users carebroker itself verified (the dev users' configured
/// relationships; NHS login proxy access). Anyone else's `RelatedPerson` is only an assertion.
pub const VERIFIED_PROXY_SOURCES: [&str; 2] = ["dev", "nhs_login"];

fn err(rule_origin: &super::ast::Origin, message: String) -> PolicyError {
    PolicyError { origin: rule_origin.clone(), message }
}

fn roles_of(condition: &Condition, out: &mut Vec<String>) {
    match condition {
        Condition::HasRole(r) => out.push(r.clone()),
        Condition::Not(inner) => roles_of(inner, out),
        _ => {}
    }
}

/// True when the rule's conditions contradict each other (`x` and `not x`).
fn contradictory(rule: &Rule) -> Option<String> {
    for a in &rule.conditions {
        if let Condition::Not(inner) = a {
            if rule.conditions.iter().any(|b| b == inner.as_ref()) {
                return Some(inner.to_string());
            }
        }
    }
    None
}

/// True when `forbid` fires whenever `permit` would: same or wider roles, resources and
/// interactions, and no condition the permit does not also require.
fn shadows(forbid: &Rule, permit: &Rule) -> bool {
    permit.roles.iter().all(|r| forbid.roles.contains(r))
        && (forbid.resources.iter().any(|t| t == "*") || permit.resources.iter().all(|t| forbid.resources.contains(t)))
        && forbid.interactions.contains(permit.interactions)
        && forbid.conditions.iter().all(|c| permit.conditions.contains(c))
}

/// Every problem in `policy`.
pub fn check(policy: &Policy) -> Vec<PolicyError> {
    let mut errors = Vec::new();
    let mut declared: HashSet<&str> = HashSet::new();
    for (name, _, origin) in &policy.roles {
        if !declared.insert(name) {
            errors.push(err(origin, format!("role `{name}` is declared twice")));
        }
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            errors.push(err(origin, format!("role `{name}` must be letters, digits, - and _")));
        }
    }
    if policy.roles.len() > MAX_ROLES {
        if let Some((_, _, origin)) = policy.roles.get(MAX_ROLES) {
            errors.push(err(origin, format!("at most {MAX_ROLES} roles")));
        }
    }
    let mut mapped: HashSet<&str> = HashSet::new();
    for m in &policy.mappings {
        if !declared.contains(m.role.as_str()) {
            errors.push(err(&m.origin, format!("role `{}` is not declared in [roles]", m.role)));
        }
        if m.source == "system" && m.clients.is_empty() {
            errors.push(err(&m.origin, "a system mapping names its clients".into()));
        }
        if m.fhir_user_type.as_deref() == Some("RelatedPerson") && !VERIFIED_PROXY_SOURCES.contains(&m.source.as_str())
        {
            errors.push(err(
                &m.origin,
                format!(
                    "role `{}` from a RelatedPerson of source `{}`: a proxy relationship must be verified, not \
                     asserted; map RelatedPerson users only from {}",
                    m.role,
                    m.source,
                    VERIFIED_PROXY_SOURCES.join(" or ")
                ),
            ));
        }
        mapped.insert(&m.role);
    }
    let mut ids: HashSet<&str> = HashSet::new();
    for rule in &policy.rules {
        let o = &rule.origin;
        if !ids.insert(&rule.id) {
            errors.push(err(o, format!("rule id `{}` is used twice", rule.id)));
        }
        if rule.roles.is_empty() {
            errors.push(err(o, format!("rule `{}` names no role, so it can never fire", rule.id)));
        }
        let mut named = rule.roles.clone();
        for c in &rule.conditions {
            roles_of(c, &mut named);
        }
        for role in &named {
            if !declared.contains(role.as_str()) {
                errors.push(err(o, format!("rule `{}`: role `{role}` is not declared in [roles]", rule.id)));
            }
        }
        if !rule.roles.is_empty()
            && rule.roles.iter().all(|r| declared.contains(r.as_str()) && !mapped.contains(r.as_str()))
        {
            errors.push(err(o, format!("rule `{}` can never fire: no [[map]] entry gives any of its roles", rule.id)));
        }
        for t in &rule.resources {
            if t != "*" && !RESOURCE_TYPES.contains(&t.as_str()) {
                errors.push(err(
                    o,
                    format!(
                        "rule `{}`: `{t}` is not a resource type of this service ({} or *)",
                        rule.id,
                        RESOURCE_TYPES.join(", ")
                    ),
                ));
            }
        }
        if rule.resources.is_empty() {
            errors.push(err(o, format!("rule `{}` names no resource type", rule.id)));
        }
        if let Some(c) = contradictory(rule) {
            errors.push(err(o, format!("rule `{}` can never fire: it requires `{c}` and `not {c}`", rule.id)));
        }
        if rule.effect == Effect::Permit {
            if let Some(forbid) = policy.rules.iter().find(|f| f.effect == Effect::Forbid && shadows(f, rule)) {
                errors.push(err(
                    o,
                    format!(
                        "permit `{}` can never decide: forbid `{}` ({}) always fires with it",
                        rule.id, forbid.id, forbid.origin
                    ),
                ));
            }
        }
    }
    errors
}
