//! Access decisions from the policy files in `policies/`, in a form a clinical safety officer can
//! read: role mapping (who you are → platform roles) and access rules (permit/forbid over role ×
//! resource type × SMART interaction with conditions; forbid wins, default deny). Files are
//! parsed and checked with file:line errors, then compiled into an indexed evaluator; the plain
//! interpreter stays as the reference and property tests hold the two to the same answers.
//!
//! The same evaluator narrows the scopes a token is granted and guards every FHIR request.

pub mod ast;
pub mod check;
pub mod compile;
pub mod conditions;
pub mod explain;
pub mod fixtures;
pub mod interpret;
pub mod mapping;
pub mod request;

use std::path::Path;
use std::sync::{Arc, OnceLock};

pub use ast::{Policy, PolicyError};
pub use compile::CompiledPolicy;
pub use mapping::Facts;
pub use request::{AccessRequest, Decision, Obligations};

/// Answers access questions.
pub trait AccessPolicy: Send + Sync + std::fmt::Debug {
    fn decide(&self, request: &AccessRequest<'_>) -> Decision;
    /// Whether any record could be permitted (record facts unknown): for narrowing scopes.
    fn may_permit(&self, request: &AccessRequest<'_>) -> bool;
    /// Platform roles for an identity; `None` when there is no role mapping.
    fn roles_for(&self, facts: &Facts<'_>) -> Option<Vec<String>>;
    /// Resource types the policy speaks about (a `*` scope is expanded to these).
    fn resource_types(&self) -> Vec<String>;
}

/// No policy files: scopes and the patient compartment alone decide (development and tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct ScopeOnly;

fn scope_only_rule() -> Arc<str> {
    static RULE: OnceLock<Arc<str>> = OnceLock::new();
    RULE.get_or_init(|| Arc::from("scope-only")).clone()
}

impl AccessPolicy for ScopeOnly {
    fn decide(&self, _request: &AccessRequest<'_>) -> Decision {
        Decision::Permit { rule: scope_only_rule(), obligations: Obligations::default() }
    }
    fn may_permit(&self, _request: &AccessRequest<'_>) -> bool {
        true
    }
    fn roles_for(&self, _facts: &Facts<'_>) -> Option<Vec<String>> {
        None
    }
    fn resource_types(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The policy in force, shared by token issuance and the FHIR guard, swapped on reload.
pub type PolicyHandle = Arc<arc_swap::ArcSwap<Box<dyn AccessPolicy>>>;

/// A handle holding `policy`.
pub fn handle(policy: Box<dyn AccessPolicy>) -> PolicyHandle {
    Arc::new(arc_swap::ArcSwap::from_pointee(policy))
}

/// The newest modification time of the policy files (for reloading on change).
pub fn modified(dir: &Path) -> Option<std::time::SystemTime> {
    crate::config::toml_files(dir).ok()?.iter().filter_map(|p| p.metadata().and_then(|m| m.modified()).ok()).max()
}

/// A loaded policy: the source (for mapping, explain and the reference) and its compiled form.
#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    pub source: Policy,
    pub compiled: CompiledPolicy,
}

impl AccessPolicy for LoadedPolicy {
    fn decide(&self, request: &AccessRequest<'_>) -> Decision {
        self.compiled.decide(request)
    }
    fn may_permit(&self, request: &AccessRequest<'_>) -> bool {
        self.compiled.may_permit(request)
    }
    fn roles_for(&self, facts: &Facts<'_>) -> Option<Vec<String>> {
        Some(mapping::roles_for(&self.source, facts))
    }
    fn resource_types(&self) -> Vec<String> {
        self.compiled.resource_types().map(str::to_owned).collect()
    }
}

/// Reads, checks and compiles every `*.toml` directly in `dir` (fixtures live in `dir/tests/`).
pub fn load_dir(dir: &Path) -> Result<LoadedPolicy, Vec<PolicyError>> {
    let unreadable = |message: String| {
        vec![PolicyError { origin: ast::Origin { file: dir.display().to_string(), line: 0 }, message }]
    };
    let paths =
        crate::config::toml_files(dir).map_err(|e| unreadable(format!("cannot read the policy folder: {e}")))?;
    if paths.is_empty() {
        return Err(unreadable("the policy folder has no *.toml files".into()));
    }
    let mut policy = Policy::default();
    let mut errors = Vec::new();
    for path in &paths {
        match std::fs::read_to_string(path) {
            Ok(text) => ast::parse_file(path, &text, &mut policy, &mut errors),
            Err(e) => errors.push(PolicyError {
                origin: ast::Origin { file: path.display().to_string(), line: 0 },
                message: format!("cannot read: {e}"),
            }),
        }
    }
    errors.extend(check::check(&policy));
    if !errors.is_empty() {
        return Err(errors);
    }
    let compiled = CompiledPolicy::compile(&policy);
    Ok(LoadedPolicy { source: policy, compiled })
}
