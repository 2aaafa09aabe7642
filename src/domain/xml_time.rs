//! `xs:dateTime` in UTC (`2018-06-28T14:30:51Z`, optional fraction) as Unix seconds: what SAML
//! 1.1 and 2.0 put in `IssueInstant`, `NotBefore` and `NotOnOrAfter`.

/// Seconds since the epoch, or `None` for anything but a UTC `xs:dateTime`.
pub fn parse_utc(text: &str) -> Option<i64> {
    let text = text.trim();
    let body = text.strip_suffix('Z').or_else(|| text.strip_suffix("+00:00"))?;
    let (date, time) = body.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let (year, month, day): (i64, i64, i64) =
        (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    let time = time.split_once('.').map_or(
        time,
        |(whole, fraction)| {
            if fraction.bytes().all(|b| b.is_ascii_digit()) { whole } else { "" }
        },
    );
    let mut t = time.splitn(3, ':');
    let (hour, minute, second): (i64, i64, i64) =
        (t.next()?.parse().ok()?, t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    let valid = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && (0..24).contains(&hour)
        && (0..60).contains(&minute)
        && (0..61).contains(&second);
    valid.then(|| days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Unix seconds as `xs:dateTime` UTC.
pub fn format_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil-date algorithms.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
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
