//! Request parameters: `application/x-www-form-urlencoded` bodies and query strings, refusing
//! repeated parameters (RFC 6749 §3.1: "MUST NOT be included more than once") and treating a
//! parameter sent without a value as omitted. The exceptions are the target parameters, which
//! RFC 8707 (`resource`) and RFC 8693 §2.1 (`resource`, `audience`) let a client repeat: a few
//! values each, every one of which the endpoint that reads them must check.

use std::collections::HashMap;

use super::error::OAuthError;

/// Parameters a client may send more than once.
const REPEATABLE: [&str; 2] = ["resource", "audience"];
/// How many values a repeatable parameter may have.
pub const MAX_REPEATS: usize = 8;

/// Parsed parameters: each name once, except [`REPEATABLE`] ones (at most [`MAX_REPEATS`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(HashMap<String, Vec<String>>);

impl Params {
    /// Parses `name=value&…`, refusing repeated names.
    pub fn parse(encoded: &[u8]) -> Result<Self, OAuthError> {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (name, value) in form_urlencoded::parse(encoded) {
            let values = map.entry(name.to_string()).or_default();
            if !values.is_empty() && !REPEATABLE.contains(&name.as_ref()) {
                return Err(OAuthError::invalid_request(format!("parameter `{name}` is repeated")));
            }
            if values.len() == MAX_REPEATS {
                return Err(OAuthError::invalid_request(format!("`{name}` is given more than {MAX_REPEATS} times")));
            }
            values.push(value.into_owned());
        }
        Ok(Self(map))
    }

    /// Parses a form POST body after checking its content type.
    pub fn from_form(content_type: Option<&str>, body: &[u8]) -> Result<Self, OAuthError> {
        if !is_form_content_type(content_type) {
            return Err(OAuthError::invalid_request("the body must be application/x-www-form-urlencoded"));
        }
        Self::parse(body)
    }

    /// The value of `name` (the first, for a repeatable one: read those with [`Self::all`]), or
    /// `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.first()).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Every non-empty value of `name`.
    pub fn all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.get(name).into_iter().flatten().map(String::as_str).filter(|v| !v.is_empty())
    }

    /// The value of `name`, or `invalid_request` naming it.
    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name).ok_or_else(|| OAuthError::invalid_request(format!("missing `{name}`")))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn values(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_str(), v.as_str())))
    }

    /// The name of a parameter whose value is longer than `max` characters, if any.
    pub fn longer_than(&self, max: usize) -> Option<&str> {
        self.values().find(|(_, v)| v.chars().count() > max).map(|(k, _)| k)
    }

    /// The length of every value together, in characters.
    pub fn total_len(&self) -> usize {
        self.values().map(|(_, v)| v.chars().count()).sum()
    }

    /// The parameters named in `only`, as pairs.
    pub fn pairs_only(&self, only: &[&str]) -> Vec<(String, String)> {
        self.values().filter(|(k, _)| only.contains(k)).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
    }

    /// Parameters from pairs already checked once (a pushed authorization request).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in pairs {
            map.entry(k).or_default().push(v);
        }
        Self(map)
    }
}

/// True for `application/x-www-form-urlencoded`, with or without parameters such as `charset`.
pub fn is_form_content_type(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused() {
        let err = Params::parse(b"grant_type=a&scope=x&grant_type=a").unwrap_err();
        assert_eq!(err.code, super::super::error::ErrorCode::InvalidRequest);
        assert!(err.description.contains("grant_type"));
    }

    #[test]
    fn targets_may_repeat_a_few_times_and_nothing_else_may() {
        let p = Params::parse(b"resource=a&audience=x&resource=b&resource=").unwrap();
        assert_eq!(p.all("resource").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(p.get("resource"), Some("a"));
        assert_eq!(p.all("audience").count(), 1);
        let many = "resource=a&".repeat(MAX_REPEATS + 1);
        assert!(Params::parse(many.as_bytes()).unwrap_err().description.contains("more than"));
        let again = Params::from_pairs(p.pairs_only(&["resource"]));
        assert_eq!(again.all("resource").collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn empty_values_count_as_absent_and_plus_is_space() {
        let p = Params::parse(b"a=&scope=system%2FPatient.rs+system/CarePlan.rs").unwrap();
        assert_eq!(p.get("a"), None);
        assert_eq!(p.get("scope"), Some("system/Patient.rs system/CarePlan.rs"));
        assert!(p.require("a").is_err());
    }

    #[test]
    fn only_form_bodies_are_accepted() {
        assert!(Params::from_form(Some("application/x-www-form-urlencoded; charset=UTF-8"), b"a=1").is_ok());
        assert!(Params::from_form(Some("application/json"), b"{}").is_err());
        assert!(Params::from_form(None, b"a=1").is_err());
    }
}

/// A form-encoded request to the token, introspection or revocation endpoint, as received: the
/// body and the two headers that matter (client authentication may be in either).
#[derive(Debug, Clone, Copy)]
pub struct FormRequest<'a> {
    pub content_type: Option<&'a str>,
    pub authorization: Option<&'a str>,
    /// The `DPoP` header(s) (RFC 9449), read at the token endpoint.
    pub dpop: super::dpop::DpopHeader<'a>,
    pub body: &'a [u8],
}
