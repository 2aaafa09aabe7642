//! Request parameters: `application/x-www-form-urlencoded` bodies and query strings, refusing
//! repeated parameters (RFC 6749 §3.1: "MUST NOT be included more than once") and treating a
//! parameter sent without a value as omitted.

use std::collections::HashMap;

use super::error::OAuthError;

/// Parsed parameters, each name at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(HashMap<String, String>);

impl Params {
    /// Parses `name=value&…`, refusing repeated names.
    pub fn parse(encoded: &[u8]) -> Result<Self, OAuthError> {
        let mut map = HashMap::new();
        for (name, value) in form_urlencoded::parse(encoded) {
            if map.insert(name.to_string(), value.into_owned()).is_some() {
                return Err(OAuthError::invalid_request(format!("parameter `{name}` is repeated")));
            }
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

    /// The value of `name`, or `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// The value of `name`, or `invalid_request` naming it.
    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name).ok_or_else(|| OAuthError::invalid_request(format!("missing `{name}`")))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The name of a parameter whose value is longer than `max` characters, if any.
    pub fn longer_than(&self, max: usize) -> Option<&str> {
        self.0.iter().find(|(_, v)| v.chars().count() > max).map(|(k, _)| k.as_str())
    }

    /// The length of every value together, in characters.
    pub fn total_len(&self) -> usize {
        self.0.values().map(|v| v.chars().count()).sum()
    }

    /// The parameters named in `only`, as pairs.
    pub fn pairs_only(&self, only: &[&str]) -> Vec<(String, String)> {
        self.0.iter().filter(|(k, _)| only.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Parameters from pairs already checked once (a pushed authorization request).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        Self(pairs.into_iter().collect())
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
