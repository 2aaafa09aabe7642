//! `xs:dateTime` in UTC (`2018-06-28T14:30:51Z`, optional fraction) as Unix seconds: what SAML
//! 1.1 and 2.0 put in `IssueInstant`, `NotBefore` and `NotOnOrAfter`.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Seconds since the epoch, or `None` for anything but a UTC `xs:dateTime`.
pub fn parse_utc(text: &str) -> Option<i64> {
    let text = text.trim();
    // xs:dateTime separates date and time with `T` only (RFC 3339 also allows a space)
    if text.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    let instant = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    instant.offset().is_utc().then(|| instant.unix_timestamp())
}

/// Unix seconds as `xs:dateTime` UTC.
pub fn format_utc(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs).ok().and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_utc_instants() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_utc("2018-06-28T14:30:51Z"), Some(1_530_196_251));
        assert_eq!(parse_utc("2018-06-28T14:30:51.123Z"), Some(1_530_196_251));
        assert_eq!(parse_utc("2024-02-29T23:59:59Z"), Some(1_709_251_199));
        assert_eq!(format_utc(1_530_196_251), "2018-06-28T14:30:51Z");
        for secs in [0, 951_782_400, 1_709_251_199, 4_102_444_800] {
            assert_eq!(parse_utc(&format_utc(secs)), Some(secs));
        }
    }

    #[test]
    fn refuses_local_times_and_impossible_dates() {
        for bad in [
            "2018-06-28T14:30:51",
            "2018-06-28T14:30:51+01:00",
            "2023-02-29T00:00:00Z",
            "2018-13-01T00:00:00Z",
            "2018-06-28 14:30:51Z",
            "2018-06-28T14:30:51.x1Z",
            "",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }
}
