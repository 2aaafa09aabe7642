//! The scope grammar: SMART App Launch 2.2 resource scopes (v1 `.read/.write/.*` and v2 `.cruds`
//! with granular `?param=value` restrictions), launch-context scopes, and the OpenID Connect and
//! refresh scopes. Parsing, printing, coverage and narrowing; no I/O.
//!
//! SMART App Launch 2.2, scopes-and-launch-context.

use std::fmt;

/// Who the resource scope speaks for: SMART App Launch 2.2 §"Scopes for requesting clinical data".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeContext {
    Patient,
    User,
    System,
}

impl ScopeContext {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Patient => "patient",
            Self::User => "user",
            Self::System => "system",
        }
    }
}

/// The SMART v2 interactions `c r u d s` as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    pub const CREATE: Self = Self(1);
    pub const READ: Self = Self(2);
    pub const UPDATE: Self = Self(4);
    pub const DELETE: Self = Self(8);
    pub const SEARCH: Self = Self(16);
    pub const ALL: Self = Self(31);
    const LETTERS: [(u8, char); 5] = [(1, 'c'), (2, 'r'), (4, 'u'), (8, 'd'), (16, 's')];

    pub fn bits(self) -> u8 {
        self.0
    }
    pub fn from_bits(bits: u8) -> Self {
        Self(bits & Self::ALL.0)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn intersect(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// Parses the v2 suffix: a non-empty, in-order subset of `cruds`.
    fn parse_v2(text: &str) -> Option<Self> {
        let mut bits = 0u8;
        let mut next = 0usize;
        for ch in text.chars() {
            let position = Self::LETTERS[next..].iter().position(|(_, letter)| *letter == ch)?;
            bits |= Self::LETTERS[next + position].0;
            next += position + 1;
        }
        (bits != 0).then_some(Self(bits))
    }

    /// The v1 name of this set, when it has one (`read` = `rs`, `write` = `cud`, `*` = `cruds`).
    fn v1_name(self) -> Option<&'static str> {
        match self.0 {
            18 => Some("read"),
            13 => Some("write"),
            31 => Some("*"),
            _ => None,
        }
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, letter) in Self::LETTERS {
            if self.0 & bit != 0 {
                write!(f, "{letter}")?;
            }
        }
        Ok(())
    }
}

/// Which grammar a resource scope was written in, so a granted scope is returned the way it was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScopeSyntax {
    V1,
    V2,
}

/// `(patient|user|system)/(Type|*).perms[?param=value&...]`
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceScope {
    pub context: ScopeContext,
    /// `None` is the wildcard `*`.
    pub resource: Option<String>,
    pub permissions: Permissions,
    /// Granular restrictions, a conjunction, kept sorted.
    pub params: Vec<(String, String)>,
    pub syntax: ScopeSyntax,
}

impl ResourceScope {
    /// True when every request this scope allows is also allowed by `self`.
    pub fn covers(&self, other: &ResourceScope) -> bool {
        self.context == other.context
            && (self.resource.is_none() || self.resource == other.resource)
            && self.permissions.contains(other.permissions)
            && self.params.iter().all(|p| other.params.contains(p))
    }

    /// The largest scope allowed by both, if any (granular restrictions are a conjunction).
    pub fn intersect(&self, other: &ResourceScope) -> Option<ResourceScope> {
        if self.context != other.context {
            return None;
        }
        let resource = match (&self.resource, &other.resource) {
            (None, r) | (r, None) => r.clone(),
            (Some(a), Some(b)) if a == b => Some(a.clone()),
            _ => return None,
        };
        let permissions = self.permissions.intersect(other.permissions);
        if permissions.is_empty() {
            return None;
        }
        let mut params = self.params.clone();
        for p in &other.params {
            if !params.contains(p) {
                params.push(p.clone());
            }
        }
        params.sort();
        let syntax = if permissions == self.permissions { self.syntax } else { ScopeSyntax::V2 };
        Some(ResourceScope { context: self.context, resource, permissions, params, syntax })
    }

    /// Whether this scope allows interaction `wanted` on resource type `resource_type`.
    pub fn allows(&self, context: ScopeContext, resource_type: &str, wanted: Permissions) -> bool {
        self.context == context
            && self.resource.as_deref().is_none_or(|r| r == resource_type)
            && self.permissions.contains(wanted)
    }
}

impl fmt::Display for ResourceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}.", self.context.as_str(), self.resource.as_deref().unwrap_or("*"))?;
        match (self.syntax, self.permissions.v1_name()) {
            (ScopeSyntax::V1, Some(name)) => write!(f, "{name}")?,
            _ => write!(f, "{}", self.permissions)?,
        }
        for (i, (key, value)) in self.params.iter().enumerate() {
            write!(f, "{}{key}={value}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

/// One scope token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Resource(ResourceScope),
    /// `launch`: the app takes part in an EHR launch.
    Launch,
    /// `launch/patient`, `launch/encounter`, `launch/<type>[?role=uri]`.
    LaunchContext {
        resource: String,
        role: Option<String>,
    },
    OpenId,
    FhirUser,
    /// OpenID Connect standard claim scopes: `profile`, `email`, `phone`, `address`.
    OidcClaims(&'static str),
    OfflineAccess,
    OnlineAccess,
    /// Extension scopes: a full URI or a `__` prefix.
    Extension(String),
}

impl Scope {
    /// Parses one scope token (RFC 6749 §3.3 characters, then the SMART grammar).
    pub fn parse(token: &str) -> Result<Self, ScopeError> {
        let bad = |why: &str| ScopeError { scope: token.to_owned(), reason: why.to_owned() };
        if token.is_empty() {
            return Err(bad("it is empty"));
        }
        if !token.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b)) {
            return Err(bad("it has a character RFC 6749 does not allow in a scope"));
        }
        let named = match token {
            "launch" => Some(Self::Launch),
            "openid" => Some(Self::OpenId),
            "fhirUser" => Some(Self::FhirUser),
            "profile" => Some(Self::OidcClaims("profile")),
            "email" => Some(Self::OidcClaims("email")),
            "phone" => Some(Self::OidcClaims("phone")),
            "address" => Some(Self::OidcClaims("address")),
            "offline_access" => Some(Self::OfflineAccess),
            "online_access" => Some(Self::OnlineAccess),
            _ => None,
        };
        if let Some(scope) = named {
            return Ok(scope);
        }
        if token.starts_with("__")
            || token.starts_with("http://")
            || token.starts_with("https://")
            || token.starts_with("urn:")
        {
            return Ok(Self::Extension(token.to_owned()));
        }
        if let Some(rest) = token.strip_prefix("launch/") {
            return parse_launch_context(rest).map_err(|why| bad(&why));
        }
        let context = if let Some(rest) = token.strip_prefix("patient/") {
            Some((ScopeContext::Patient, rest))
        } else if let Some(rest) = token.strip_prefix("user/") {
            Some((ScopeContext::User, rest))
        } else {
            token.strip_prefix("system/").map(|rest| (ScopeContext::System, rest))
        };
        match context {
            Some((context, rest)) => parse_resource_scope(context, rest).map(Self::Resource).map_err(|why| bad(&why)),
            None => Err(bad("it is not a SMART, OpenID Connect or extension scope")),
        }
    }

    pub fn as_resource(&self) -> Option<&ResourceScope> {
        match self {
            Self::Resource(r) => Some(r),
            _ => None,
        }
    }
}

fn parse_launch_context(rest: &str) -> Result<Scope, String> {
    let (resource, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    if resource.is_empty() || !resource.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err("a launch context scope names a resource type in lower case, as in `launch/patient`".into());
    }
    let role = match query {
        None => None,
        Some(q) => match q.strip_prefix("role=") {
            Some(role) if !role.is_empty() && !role.contains('&') => Some(role.to_owned()),
            _ => return Err("a launch context scope takes only one `?role=` parameter".into()),
        },
    };
    Ok(Scope::LaunchContext { resource: resource.to_owned(), role })
}

fn parse_resource_scope(context: ScopeContext, rest: &str) -> Result<ResourceScope, String> {
    let (body, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (resource, perms) =
        body.split_once('.').ok_or("a resource scope needs `.` and permissions, as in `patient/CarePlan.rs`")?;
    let resource = match resource {
        "*" => None,
        name if is_resource_type_name(name) => Some(name.to_owned()),
        _ => return Err("the resource type must be `*` or a FHIR resource type name".into()),
    };
    let (permissions, syntax) = match perms {
        "read" => (Permissions(18), ScopeSyntax::V1),
        "write" => (Permissions(13), ScopeSyntax::V1),
        "*" => (Permissions::ALL, ScopeSyntax::V1),
        other => (
            Permissions::parse_v2(other)
                .ok_or("permissions must be `read`, `write`, `*` or letters of `cruds` in that order")?,
            ScopeSyntax::V2,
        ),
    };
    let mut params = Vec::new();
    if let Some(query) = query {
        if syntax == ScopeSyntax::V1 {
            return Err("granular `?param=` restrictions need the v2 `cruds` form".into());
        }
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').ok_or("each granular restriction is `param=value`")?;
            let key_ok = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-:.".contains(&b));
            if !key_ok || value.is_empty() {
                return Err("each granular restriction is `param=value` with a search parameter name".into());
            }
            let entry = (key.to_owned(), value.to_owned());
            if !params.contains(&entry) {
                params.push(entry);
            }
        }
        params.sort();
    }
    Ok(ResourceScope { context, resource, permissions, params, syntax })
}

/// A FHIR resource type name: an upper-case letter then letters and digits.
pub fn is_resource_type_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'A'..=b'Z')) && bytes.all(|b| b.is_ascii_alphanumeric()) && name.len() <= 64
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Resource(r) => r.fmt(f),
            Self::Launch => f.write_str("launch"),
            Self::LaunchContext { resource, role: None } => write!(f, "launch/{resource}"),
            Self::LaunchContext { resource, role: Some(role) } => write!(f, "launch/{resource}?role={role}"),
            Self::OpenId => f.write_str("openid"),
            Self::FhirUser => f.write_str("fhirUser"),
            Self::OidcClaims(name) => f.write_str(name),
            Self::OfflineAccess => f.write_str("offline_access"),
            Self::OnlineAccess => f.write_str("online_access"),
            Self::Extension(s) => f.write_str(s),
        }
    }
}

/// Why a scope token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope `{scope}` is not valid: {reason}")]
pub struct ScopeError {
    pub scope: String,
    pub reason: String,
}

/// An ordered set of scopes without duplicates, printed space-separated (RFC 6749 §3.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeSet(Vec<Scope>);

impl ScopeSet {
    /// Parses a space-separated scope string. Repeated spaces are tolerated; every token must parse.
    pub fn parse(text: &str) -> Result<Self, ScopeError> {
        let mut set = Self::default();
        for token in text.split(' ').filter(|t| !t.is_empty()) {
            set.insert(Scope::parse(token)?);
        }
        Ok(set)
    }

    pub fn insert(&mut self, scope: Scope) {
        if !self.0.contains(&scope) {
            self.0.push(scope);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn contains(&self, scope: &Scope) -> bool {
        self.0.contains(scope)
    }
    pub fn resources(&self) -> impl Iterator<Item = &ResourceScope> {
        self.0.iter().filter_map(Scope::as_resource)
    }

    /// Narrows `self` (what was requested) to what `allowed` permits: a non-resource scope survives
    /// when `allowed` holds it exactly; a resource scope survives whole when one allowed scope covers
    /// it, otherwise as its intersections with the allowed scopes (SMART: a granted scope may be
    /// narrower, or split).
    pub fn narrow_to(&self, allowed: &ScopeSet) -> ScopeSet {
        let mut granted = ScopeSet::default();
        for scope in &self.0 {
            match scope {
                Scope::Resource(requested) => {
                    let allowed_resources: Vec<&ResourceScope> = allowed.resources().collect();
                    if allowed_resources.iter().any(|a| a.covers(requested)) {
                        granted.insert(scope.clone());
                        continue;
                    }
                    let parts: Vec<ResourceScope> =
                        allowed_resources.iter().filter_map(|a| requested.intersect(a)).collect();
                    for (i, part) in parts.iter().enumerate() {
                        let redundant = parts
                            .iter()
                            .enumerate()
                            .any(|(j, other)| j != i && other.covers(part) && (!part.covers(other) || j < i));
                        if !redundant {
                            granted.insert(Scope::Resource(part.clone()));
                        }
                    }
                }
                other => {
                    if allowed.contains(other) {
                        granted.insert(other.clone());
                    }
                }
            }
        }
        granted
    }

    /// True when every scope in `self` is allowed by `allowed` without narrowing.
    pub fn is_within(&self, allowed: &ScopeSet) -> bool {
        self.narrow_to(allowed) == *self
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            scope.fmt(f)?;
        }
        Ok(())
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        let mut set = Self::default();
        for scope in iter {
            set.insert(scope);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> ScopeSet {
        ScopeSet::parse(text).expect("valid scopes")
    }

    #[test]
    fn v1_and_v2_forms_parse_and_print_back() {
        for text in [
            "patient/Observation.read",
            "user/*.write",
            "system/*.*",
            "system/Patient.rs",
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
            "patient/CarePlan.rs?category=http://snomed.info/sct|736373009",
            "user/CarePlan.cruds",
            "launch",
            "launch/patient",
            "launch/encounter",
            "launch/questionnaire?role=https://example.org/role",
            "openid",
            "fhirUser",
            "profile",
            "offline_access",
            "online_access",
            "__introspect",
            "https://example.org/scopes/x",
        ] {
            let scope = Scope::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(scope.to_string(), text);
        }
    }

    #[test]
    fn v1_read_means_read_and_search() {
        let scope = Scope::parse("patient/Observation.read").unwrap();
        let r = scope.as_resource().unwrap();
        assert_eq!(r.permissions, Permissions::from_bits(Permissions::READ.bits() | Permissions::SEARCH.bits()));
        assert!(r.allows(ScopeContext::Patient, "Observation", Permissions::SEARCH));
        assert!(!r.allows(ScopeContext::Patient, "Observation", Permissions::UPDATE));
        assert!(!r.allows(ScopeContext::User, "Observation", Permissions::READ));
    }

    #[test]
    fn malformed_scopes_are_refused_with_a_reason() {
        for text in [
            "patient/Observation.sr",
            "patient/Observation.rr",
            "patient/Observation.",
            "patient/Observation",
            "patient/observation.rs",
            "patient/Observation.read?category=x",
            "patient/Observation.rs?category",
            "patient/Observation.rs?=x",
            "launch/Patient",
            "launch/patient?role=a&x=b",
            "practitioner/Observation.rs",
            "frobnicate",
            "a\"b",
        ] {
            let err = Scope::parse(text).expect_err(text);
            assert_eq!(err.scope, text);
            assert!(!err.reason.is_empty());
        }
    }

    #[test]
    fn narrowing_keeps_covered_scopes_whole_and_splits_the_rest() {
        let allowed = set("system/CarePlan.rs system/Patient.r launch openid");
        let requested = set("system/CarePlan.read system/*.rs system/Observation.rs openid fhirUser");
        let granted = requested.narrow_to(&allowed);
        assert_eq!(granted.to_string(), "system/CarePlan.read system/CarePlan.rs system/Patient.r openid");
    }

    #[test]
    fn narrowing_respects_granular_restrictions() {
        let allowed = set("patient/Observation.rs?category=laboratory");
        assert_eq!(
            set("patient/Observation.rs").narrow_to(&allowed).to_string(),
            "patient/Observation.rs?category=laboratory"
        );
        assert_eq!(
            set("patient/Observation.r?category=laboratory&code=x").narrow_to(&allowed).to_string(),
            "patient/Observation.r?category=laboratory&code=x"
        );
        assert!(set("patient/Condition.rs").narrow_to(&allowed).is_empty());
    }

    #[test]
    fn wildcard_allowed_covers_any_type_but_not_more_permissions() {
        let allowed = set("system/*.rs");
        assert!(set("system/CarePlan.r system/Patient.s").is_within(&allowed));
        assert!(!set("system/CarePlan.cruds").is_within(&allowed));
        assert_eq!(set("system/CarePlan.cruds").narrow_to(&allowed).to_string(), "system/CarePlan.rs");
        assert_eq!(set("system/*.write").narrow_to(&allowed).to_string(), "");
    }

    #[test]
    fn duplicate_tokens_collapse() {
        assert_eq!(set("openid  openid launch").to_string(), "openid launch");
    }
}
