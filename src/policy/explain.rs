//! `carebroker policy explain`: which rule decided and why, with every condition's value.

use std::fmt::Write as _;

use super::ast::Effect;
use super::fixtures::Case;
use super::{LoadedPolicy, interpret};

/// A human-readable account of how `case` is decided.
pub fn explain(policy: &LoadedPolicy, case: &Case) -> Result<String, String> {
    let roles = case.roles(policy);
    let request = case.request(&roles)?;
    let mut out = String::new();
    let _ = writeln!(out, "roles: {}", if roles.is_empty() { "(none)".into() } else { roles.join(", ") });
    let _ = writeln!(
        out,
        "request: {} `{}` on {}",
        if request.system { "system" } else { "user" },
        case.interaction,
        case.resource
    );
    for rule in &policy.source.rules {
        let resource = rule.resources.iter().any(|t| t == "*" || *t == case.resource);
        if !resource || !rule.interactions.contains(request.interaction) {
            continue;
        }
        let role = rule.roles.iter().any(|r| roles.contains(r));
        let effect = if rule.effect == Effect::Permit { "permit" } else { "forbid" };
        let _ = writeln!(out, "\n{effect} {} ({})", rule.id, rule.origin);
        let _ = writeln!(out, "  roles {}: {}", rule.roles.join(", "), if role { "yes" } else { "no" });
        for (condition, value) in interpret::explain_conditions(rule, &request) {
            let _ = writeln!(out, "  {condition}: {value}");
        }
        let _ = writeln!(out, "  => {}", if interpret::matches(rule, &request) { "FIRES" } else { "does not fire" });
    }
    let compiled = policy.compiled.decide(&request);
    let reference = interpret::decide(&policy.source, &request);
    let verdict = if compiled.is_permit() { "PERMIT" } else { "DENY" };
    let _ = writeln!(out, "\ndecision: {verdict} by rule `{}`", compiled.rule());
    if let super::Decision::Deny { reason, .. } = &compiled {
        let _ = writeln!(out, "reason: {reason}");
    }
    let deciding = policy.source.rules.iter().find(|r| r.id == compiled.rule());
    if deciding.is_some_and(|r| r.conditions.iter().any(|c| c.mentions(&super::ast::Condition::ConsentRefuses))) {
        let _ = writeln!(out, "the patient's sharing choice (their Consent) was part of this decision");
    }
    if compiled != reference {
        let _ = writeln!(out, "WARNING: the reference interpreter decides `{}`", reference.rule());
    }
    Ok(out)
}
