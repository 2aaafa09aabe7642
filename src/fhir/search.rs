//! Search parameters and Bundles: strict parsing (an unknown parameter is an error), FHIR date
//! prefixes, `_count` paging with `next`/`previous` links.

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::outcome::FhirError;
use super::resources::with_meta;
use crate::store::StoredResource;

/// Parsed query: every parameter once or more, in order.
#[derive(Debug, Clone, Default)]
pub struct Query(pub Vec<(String, String)>);

/// The most parameters a search may carry (a real search uses a handful).
pub const MAX_PARAMETERS: usize = 32;
/// The most times one parameter may repeat (`date=ge…&date=le…` is two).
pub const MAX_REPEATS: usize = 4;
/// The most comma-separated values one parameter may list (`status=active,on-hold`).
pub const MAX_VALUES: usize = 16;
/// The longest parameter value.
pub const MAX_VALUE_LEN: usize = 512;

impl Query {
    /// Parses a query string, refusing one larger than any real search: every list and
    /// repetition is bounded, so the store is never asked an unbounded question.
    pub fn parse(raw: Option<&str>) -> Result<Self, FhirError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            if pairs.len() == MAX_PARAMETERS {
                return Err(FhirError::bad_request(format!("a search takes at most {MAX_PARAMETERS} parameters")));
            }
            if value.len() > MAX_VALUE_LEN || name.len() > 64 {
                return Err(FhirError::bad_request(format!(
                    "a search parameter value is at most {MAX_VALUE_LEN} characters"
                )));
            }
            if pairs.iter().filter(|(k, _)| *k == name).count() == MAX_REPEATS {
                return Err(FhirError::bad_request(format!("`{name}` may be given at most {MAX_REPEATS} times")));
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Self(pairs))
    }
    /// The comma-separated values of each `name` parameter (each an OR list), at most
    /// [`MAX_VALUES`] per parameter.
    pub fn lists(&self, name: &str) -> Result<Vec<Vec<String>>, FhirError> {
        let mut out = Vec::new();
        for value in self.all(name) {
            let values: Vec<String> = value.split(',').map(str::to_owned).collect();
            if values.len() > MAX_VALUES {
                return Err(FhirError::bad_request(format!("`{name}` lists at most {MAX_VALUES} values")));
            }
            if values.iter().any(String::is_empty) {
                return Err(FhirError::bad_request(format!("`{name}` has an empty value")));
            }
            out.push(values);
        }
        Ok(out)
    }
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }
    pub fn one(&self, name: &str) -> Result<Option<&str>, FhirError> {
        match self.all(name).as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            _ => Err(FhirError::bad_request(format!("`{name}` may be given once"))),
        }
    }
    /// Refuses parameters outside `known` (and the common `_format`).
    pub fn only(&self, known: &[&str]) -> Result<(), FhirError> {
        for (name, _) in &self.0 {
            if name != "_format" && !known.contains(&name.as_str()) {
                return Err(FhirError::bad_request(format!("unknown search parameter `{name}`")));
            }
        }
        Ok(())
    }
}

/// A FHIR date search value with its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Parses `[prefix]YYYY-MM-DD[Thh:mm:ss…]` to a prefix and the instant in Unix milliseconds
/// (a bare date is its start; `eq` covers the whole day).
pub fn date_param(text: &str) -> Result<(Prefix, i64, bool), FhirError> {
    let (prefix, rest) = match text.get(..2) {
        Some("eq") => (Prefix::Eq, &text[2..]),
        Some("lt") => (Prefix::Lt, &text[2..]),
        Some("le") => (Prefix::Le, &text[2..]),
        Some("gt") => (Prefix::Gt, &text[2..]),
        Some("ge") => (Prefix::Ge, &text[2..]),
        _ => (Prefix::Eq, text),
    };
    let bad = || FhirError::bad_request(format!("`{text}` is not a FHIR date search value"));
    if rest.len() == 10 {
        let date =
            time::Date::parse(rest, time::macros::format_description!("[year]-[month]-[day]")).map_err(|_| bad())?;
        let millis = date.midnight().assume_utc().unix_timestamp() * 1000;
        Ok((prefix, millis, true))
    } else {
        let at = OffsetDateTime::parse(rest, &Rfc3339).map_err(|_| bad())?;
        Ok((prefix, (at.unix_timestamp_nanos() / 1_000_000) as i64, false))
    }
}

/// The instant of a FHIR date or dateTime string (a bare date is its start).
pub fn instant_of(text: &str) -> Option<i64> {
    date_param(text).ok().map(|(_, t, _)| t)
}

/// Whether the range `[start, end]` (either end open) matches a date search value.
pub fn range_matches(start: Option<i64>, end: Option<i64>, prefix: Prefix, at: i64, whole_day: bool) -> bool {
    let (lo, hi) = (start.unwrap_or(i64::MIN), end.unwrap_or(i64::MAX));
    let day_end = if whole_day { at + 86_400_000 - 1 } else { at };
    match prefix {
        Prefix::Eq => lo <= day_end && hi >= at,
        Prefix::Ge => hi >= at,
        Prefix::Gt => hi > day_end,
        Prefix::Le => lo <= day_end,
        Prefix::Lt => lo < at,
    }
}

/// `_count` (default 20, at most 100) and our paging offset.
pub fn paging(query: &Query) -> Result<(usize, usize), FhirError> {
    let count = match query.one("_count")? {
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| FhirError::bad_request("`_count` must be 1 to 100"))?,
        None => 20,
    };
    let offset = match query.one("_offset")? {
        Some(v) => v.parse::<usize>().map_err(|_| FhirError::bad_request("`_offset` must be a number"))?,
        None => 0,
    };
    Ok((count, offset))
}

fn page_link(base: &str, query: &Query, offset: usize) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &query.0 {
        if k != "_offset" {
            s.append_pair(k, v);
        }
    }
    s.append_pair("_offset", &offset.to_string());
    format!("{base}?{}", s.finish())
}

/// A `searchset` Bundle of one page of `matches`.
pub fn searchset(
    fhir_base: &str,
    resource_type: &str,
    query: &Query,
    matches: &[StoredResource],
    count: usize,
    offset: usize,
) -> Value {
    let base = format!("{fhir_base}/{resource_type}");
    let page: Vec<Value> = matches
        .iter()
        .skip(offset)
        .take(count)
        .map(|r| json!({"fullUrl": format!("{base}/{}", r.id), "resource": with_meta(r), "search": {"mode": "match"}}))
        .collect();
    let mut links = vec![json!({"relation": "self", "url": page_link(&base, query, offset)})];
    if offset + count < matches.len() {
        links.push(json!({"relation": "next", "url": page_link(&base, query, offset + count)}));
    }
    if offset > 0 {
        links.push(json!({"relation": "previous", "url": page_link(&base, query, offset.saturating_sub(count))}));
    }
    json!({"resourceType": "Bundle", "type": "searchset", "total": matches.len(), "link": links, "entry": page})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_list_and_repetition_is_bounded() {
        let long_list = format!("status={}", vec!["active"; 40_000].join(","));
        let query = Query::parse(Some(&long_list));
        assert!(matches!(query, Err(FhirError::BadRequest(_))), "one value too long");
        let list = format!("status={}", vec!["active"; MAX_VALUES + 1].join(","));
        assert!(Query::parse(Some(&list)).unwrap().lists("status").is_err());
        let list = format!("status={}", vec!["active"; MAX_VALUES].join(","));
        assert_eq!(Query::parse(Some(&list)).unwrap().lists("status").unwrap()[0].len(), MAX_VALUES);
        let repeated = vec!["family=smith"; 1200].join("&");
        assert!(Query::parse(Some(&repeated)).is_err());
        let repeated = ["family=smith"; MAX_REPEATS].join("&");
        assert!(Query::parse(Some(&repeated)).is_ok());
        let many: Vec<String> = (0..=MAX_PARAMETERS).map(|i| format!("p{i}=x")).collect();
        assert!(Query::parse(Some(&many.join("&"))).is_err());
        assert!(Query::parse(Some("status=active,,on-hold")).unwrap().lists("status").is_err());
    }

    #[test]
    fn date_prefixes() {
        let (p, t, day) = date_param("ge2026-01-01").unwrap();
        assert_eq!((p, day), (Prefix::Ge, true));
        assert!(range_matches(Some(t), None, Prefix::Eq, t, true));
        assert!(!range_matches(None, Some(t - 1), Prefix::Ge, t, true));
        assert!(date_param("2026-13-01").is_err());
        assert!(date_param("xx2026").is_err());
        assert!(date_param("2026-01-01T10:00:00Z").is_ok());
    }
}
