//! Scopes narrowed by the access policy: a token carries only what the policy could ever permit
//! for this identity and client. A `*` resource scope is expanded per resource type when the
//! policy permits some types or interactions and not others.

use crate::config::idps::IdpKind;
use crate::domain::client::Client;
use crate::domain::identity::Identity;
use crate::domain::scope::{Permissions, ResourceScope, Scope, ScopeContext, ScopeSet, ScopeSyntax};
use crate::policy::mapping::proofing_of;
use crate::policy::{AccessPolicy, AccessRequest, Facts};

/// Who the token is for, as the policy sees them.
#[derive(Debug, Clone, Default)]
pub struct Holder {
    pub roles: Vec<String>,
    pub org: Option<String>,
    pub fhir_user: Option<String>,
    pub assurance: u8,
    pub client_id: String,
    pub system: bool,
    /// Someone acts for this holder (a token exchange with an actor).
    pub delegated: bool,
}

/// The platform roles of a signed-in identity (or its RBAC role codes when no mapping).
pub fn user_holder(policy: &dyn AccessPolicy, identity: &Identity, client_id: &str) -> Holder {
    let facts = Facts {
        source: &identity.source,
        provider: &identity.provider,
        issuer: identity.issuer.as_deref(),
        role_codes: &identity.role_codes,
        activity_codes: &identity.activity_codes,
        proofing: if identity.source == IdpKind::NhsLogin.as_str() {
            proofing_of(identity.acr.as_deref())
        } else {
            None
        },
        fhir_user: identity.fhir_user.as_deref(),
        client_id,
    };
    Holder {
        roles: policy.roles_for(&facts).unwrap_or_else(|| identity.role_codes.clone()),
        org: identity.org.clone(),
        fhir_user: identity.fhir_user.clone(),
        assurance: identity.assurance,
        client_id: client_id.to_owned(),
        system: false,
        delegated: false,
    }
}

/// The roles of a backend service.
pub fn system_holder(policy: &dyn AccessPolicy, client: &Client) -> Holder {
    let facts = Facts { source: "system", client_id: &client.id, ..Facts::default() };
    Holder {
        roles: policy.roles_for(&facts).unwrap_or_default(),
        client_id: client.id.clone(),
        system: true,
        assurance: 3,
        ..Holder::default()
    }
}

const LETTERS: [Permissions; 5] =
    [Permissions::CREATE, Permissions::READ, Permissions::UPDATE, Permissions::DELETE, Permissions::SEARCH];

/// `scope` with every resource scope cut to what the policy could permit `holder`.
pub fn narrow(policy: &dyn AccessPolicy, holder: &Holder, scope: &ScopeSet) -> ScopeSet {
    let types = policy.resource_types();
    let mut out = ScopeSet::default();
    for s in scope.iter() {
        let Scope::Resource(r) = s else {
            out.insert(s.clone());
            continue;
        };
        let candidates: Vec<String> = match &r.resource {
            Some(t) => vec![t.clone()],
            None if types.is_empty() => {
                out.insert(s.clone());
                continue;
            }
            None => types.clone(),
        };
        let mut parts: Vec<(String, Permissions)> = Vec::new();
        for kind in &candidates {
            let mut allowed = 0u8;
            for letter in LETTERS.iter().filter(|l| r.permissions.contains(**l)) {
                let request = AccessRequest {
                    roles: &holder.roles,
                    org: holder.org.as_deref(),
                    client_id: &holder.client_id,
                    fhir_user: holder.fhir_user.as_deref(),
                    assurance: holder.assurance,
                    system: holder.system || r.context == ScopeContext::System,
                    delegated: holder.delegated,
                    resource_type: kind,
                    interaction: *letter,
                    ..AccessRequest::default()
                };
                // the availability check is a request of its own: a scope that serves only it stays
                let availability = AccessRequest { availability_check: true, ..request.clone() };
                if policy.may_permit(&request) || policy.may_permit(&availability) {
                    allowed |= letter.bits();
                }
            }
            if allowed != 0 {
                parts.push((kind.clone(), Permissions::from_bits(allowed)));
            }
        }
        let whole = parts.len() == candidates.len() && parts.iter().all(|(_, p)| *p == r.permissions);
        if whole {
            out.insert(s.clone());
        } else {
            for (kind, permissions) in parts {
                let syntax = if permissions == r.permissions { r.syntax } else { ScopeSyntax::V2 };
                out.insert(Scope::Resource(ResourceScope {
                    context: r.context,
                    resource: Some(kind),
                    permissions,
                    params: r.params.clone(),
                    syntax,
                }));
            }
        }
    }
    out
}
