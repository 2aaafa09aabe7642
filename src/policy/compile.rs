//! The compiled evaluator. Roles become bits of a `u64`, resource types a small fingerprinted table, and
//! each (resource type, interaction) pair gets its forbid and permit rules in file order with
//! role masks and a short condition program. A decision does no allocation: it walks at most
//! the rules for that pair, testing a mask and a few conditions each.

use std::sync::Arc;

use super::ast::{Condition, Effect, Policy};
use super::conditions as c;
use super::interpret::{obligations, reason};
use super::request::{AccessRequest, DEFAULT_DENY, DEFAULT_DENY_REASON, Decision, Obligations};
use crate::domain::scope::Permissions;

/// The most platform roles a policy may declare (bits of a `u64`).
pub const MAX_ROLES: usize = 64;

#[derive(Debug, Clone)]
enum Op {
    PatientInContext,
    SubjectIsPatient,
    SubjectIsProxy,
    SameOrganisation,
    Restricted,
    BreakGlass,
    HasRole(u64),
    AssuranceAtLeast(u8),
    ClientIn(Box<[Box<str>]>),
    Hours(u16, u16),
    OnlyNotesChanged,
    AvailabilityCheck,
    Delegated,
    ConsentRefuses,
    PatientAllowsNotes,
    Not(Box<Op>),
}

#[derive(Debug, Clone)]
struct Compiled1 {
    role_mask: u64,
    program: Box<[Op]>,
    id: Arc<str>,
    reason: Arc<str>,
    obligations: Obligations,
}

/// Rule indices for one resource type: per interaction, forbids then permits, in file order.
#[derive(Debug, Clone, Default)]
struct Table {
    forbid: [Box<[u32]>; 5],
    permit: [Box<[u32]>; 5],
}

/// A few names with a value each, looked up by a one-word fingerprint (length and the first and
/// last eight bytes) before one full comparison: no hashing of the whole name, no allocation.
#[derive(Debug, Clone)]
struct NameTable<T>(Box<[(u64, Box<str>, T)]>);

fn fingerprint(name: &str) -> u64 {
    let bytes = name.as_bytes();
    let n = bytes.len();
    let k = n.min(8);
    let mut head = [0u8; 8];
    head[..k].copy_from_slice(&bytes[..k]);
    let mut tail = [0u8; 8];
    tail[8 - k..].copy_from_slice(&bytes[n - k..]);
    u64::from_le_bytes(head) ^ u64::from_le_bytes(tail).rotate_left(29) ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl<T> NameTable<T> {
    fn new(entries: impl IntoIterator<Item = (Box<str>, T)>) -> Self {
        Self(entries.into_iter().map(|(name, value)| (fingerprint(&name), name, value)).collect())
    }
    fn get(&self, name: &str) -> Option<&T> {
        let key = fingerprint(name);
        self.0.iter().find(|(k, n, _)| *k == key && **n == *name).map(|(_, _, v)| v)
    }
    fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(_, n, _)| &**n)
    }
}

/// A policy compiled for fast decisions.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    /// Role names with their bit.
    roles: NameTable<u64>,
    /// Resource types with their table, sorted by name; `wildcard` serves every other type.
    types: NameTable<Table>,
    wildcard: Table,
    rules: Box<[Compiled1]>,
    default_deny: Arc<str>,
    default_reason: Arc<str>,
}

fn interaction_index(p: Permissions) -> Option<usize> {
    match p.bits() {
        1 => Some(0),
        2 => Some(1),
        4 => Some(2),
        8 => Some(3),
        16 => Some(4),
        _ => None,
    }
}

fn compile_condition(condition: &Condition, role_bit: &dyn Fn(&str) -> u64) -> Op {
    match condition {
        Condition::PatientInContext => Op::PatientInContext,
        Condition::SubjectIsPatient => Op::SubjectIsPatient,
        Condition::SubjectIsProxy => Op::SubjectIsProxy,
        Condition::SameOrganisation => Op::SameOrganisation,
        Condition::Restricted => Op::Restricted,
        Condition::BreakGlass => Op::BreakGlass,
        Condition::HasRole(role) => Op::HasRole(role_bit(role)),
        Condition::AssuranceAtLeast(n) => Op::AssuranceAtLeast(*n),
        Condition::ClientIn(ids) => Op::ClientIn(ids.iter().map(|s| Box::from(s.as_str())).collect()),
        Condition::Hours(a, b) => Op::Hours(*a, *b),
        Condition::OnlyNotesChanged => Op::OnlyNotesChanged,
        Condition::AvailabilityCheck => Op::AvailabilityCheck,
        Condition::Delegated => Op::Delegated,
        Condition::ConsentRefuses => Op::ConsentRefuses,
        Condition::PatientAllowsNotes => Op::PatientAllowsNotes,
        Condition::Not(inner) => Op::Not(Box::new(compile_condition(inner, role_bit))),
    }
}

fn run(op: &Op, r: &AccessRequest<'_>, roles: u64) -> bool {
    match op {
        Op::PatientInContext => c::patient_in_context(r),
        Op::SubjectIsPatient => c::subject_is_patient(r),
        Op::SubjectIsProxy => c::subject_is_proxy(r),
        Op::SameOrganisation => c::same_organisation(r),
        Op::Restricted => r.restricted,
        Op::BreakGlass => r.break_glass,
        Op::HasRole(mask) => roles & mask != 0,
        Op::AssuranceAtLeast(n) => r.assurance >= *n,
        Op::ClientIn(ids) => ids.iter().any(|id| **id == *r.client_id),
        Op::Hours(a, b) => c::within_hours(r, *a, *b),
        Op::OnlyNotesChanged => r.only_notes_changed,
        Op::AvailabilityCheck => r.availability_check,
        Op::Delegated => r.delegated,
        Op::ConsentRefuses => r.consent_refuses,
        Op::PatientAllowsNotes => r.patient_allows_notes,
        Op::Not(inner) => !run(inner, r, roles),
    }
}

/// Three-valued evaluation for "could this ever be permitted": record facts are unknown; who
/// asks, and whether the request is the availability check, are known.
fn may_hold(op: &Op, r: &AccessRequest<'_>, roles: u64) -> Option<bool> {
    match op {
        Op::HasRole(_) | Op::AssuranceAtLeast(_) | Op::ClientIn(_) | Op::AvailabilityCheck | Op::Delegated => {
            Some(run(op, r, roles))
        }
        Op::Not(inner) => may_hold(inner, r, roles).map(|v| !v),
        _ => None,
    }
}

impl CompiledPolicy {
    /// Compiles a checked policy.
    pub fn compile(policy: &Policy) -> Self {
        let roles = NameTable::new(
            policy
                .roles
                .iter()
                .take(MAX_ROLES)
                .enumerate()
                .map(|(i, (name, _, _))| (Box::from(name.as_str()), 1u64 << i)),
        );
        let role_bit = |name: &str| roles.get(name).copied().unwrap_or(0);
        let rules: Vec<Compiled1> = policy
            .rules
            .iter()
            .map(|rule| Compiled1 {
                role_mask: rule.roles.iter().fold(0, |m, r| m | role_bit(r)),
                program: rule.conditions.iter().map(|cond| compile_condition(cond, &role_bit)).collect(),
                id: Arc::from(rule.id.as_str()),
                reason: Arc::from(reason(rule).as_str()),
                obligations: obligations(&rule.obligations),
            })
            .collect();
        let mut type_names: Vec<&str> =
            policy.rules.iter().flat_map(|r| r.resources.iter().map(String::as_str)).filter(|t| *t != "*").collect();
        type_names.sort_unstable();
        type_names.dedup();
        let table_for = |kind: Option<&str>| {
            let mut table = Table::default();
            for (slot, bit) in
                [Permissions::CREATE, Permissions::READ, Permissions::UPDATE, Permissions::DELETE, Permissions::SEARCH]
                    .into_iter()
                    .enumerate()
            {
                let pick = |effect: Effect| -> Box<[u32]> {
                    policy
                        .rules
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| r.effect == effect && r.interactions.contains(bit))
                        .filter(|(_, r)| r.resources.iter().any(|t| t == "*" || Some(t.as_str()) == kind))
                        .map(|(i, _)| i as u32)
                        .collect()
                };
                table.forbid[slot] = pick(Effect::Forbid);
                table.permit[slot] = pick(Effect::Permit);
            }
            table
        };
        let types = NameTable::new(type_names.iter().map(|t| (Box::from(*t), table_for(Some(t)))));
        Self {
            roles,
            types,
            wildcard: table_for(None),
            rules: rules.into_boxed_slice(),
            default_deny: Arc::from(DEFAULT_DENY),
            default_reason: Arc::from(DEFAULT_DENY_REASON),
        }
    }

    /// The caller's roles as a bit set (unknown names carry no bit).
    pub fn role_mask(&self, names: &[String]) -> u64 {
        names.iter().fold(0, |mask, name| mask | self.roles.get(name).copied().unwrap_or(0))
    }

    fn table(&self, resource_type: &str) -> &Table {
        self.types.get(resource_type).unwrap_or(&self.wildcard)
    }

    /// Decides `r`: forbid wins, then the first permit, else default deny.
    pub fn decide(&self, r: &AccessRequest<'_>) -> Decision {
        let Some(slot) = interaction_index(r.interaction) else {
            return Decision::Deny { rule: self.default_deny.clone(), reason: self.default_reason.clone() };
        };
        let roles = self.role_mask(r.roles);
        let table = self.table(r.resource_type);
        let fires = |i: &u32| {
            let rule = &self.rules[*i as usize];
            rule.role_mask & roles != 0 && rule.program.iter().all(|op| run(op, r, roles))
        };
        if let Some(i) = table.forbid[slot].iter().find(|i| fires(i)) {
            let rule = &self.rules[*i as usize];
            return Decision::Deny { rule: rule.id.clone(), reason: rule.reason.clone() };
        }
        if let Some(i) = table.permit[slot].iter().find(|i| fires(i)) {
            let rule = &self.rules[*i as usize];
            return Decision::Permit { rule: rule.id.clone(), obligations: rule.obligations };
        }
        Decision::Deny { rule: self.default_deny.clone(), reason: self.default_reason.clone() }
    }

    /// Whether some record could be permitted to this caller: used to narrow token scopes.
    /// Record facts are unknown; a permit counts unless a caller fact rules it out, a forbid only
    /// when caller facts alone make it fire.
    pub fn may_permit(&self, r: &AccessRequest<'_>) -> bool {
        let Some(slot) = interaction_index(r.interaction) else { return false };
        let roles = self.role_mask(r.roles);
        let table = self.table(r.resource_type);
        let certain_forbid = table.forbid[slot].iter().any(|i| {
            let rule = &self.rules[*i as usize];
            rule.role_mask & roles != 0 && rule.program.iter().all(|op| may_hold(op, r, roles) == Some(true))
        });
        !certain_forbid
            && table.permit[slot].iter().any(|i| {
                let rule = &self.rules[*i as usize];
                rule.role_mask & roles != 0 && rule.program.iter().all(|op| may_hold(op, r, roles) != Some(false))
            })
    }

    /// The resource types the policy names (for expanding `*` scopes).
    pub fn resource_types(&self) -> impl Iterator<Item = &str> {
        self.types.names()
    }
}
