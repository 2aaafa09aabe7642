//! The NHS number: ten digits whose last is a Modulus 11 check digit (NHS Data Dictionary).

use std::fmt;

/// A syntactically valid NHS number (ten digits, check digit correct). Whether PDS knows it is a
/// separate question.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NhsNumber(String);

/// Why a string is not an NHS number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NhsNumberError {
    #[error("an NHS number is ten digits, `{0}` is not")]
    NotTenDigits(String),
    #[error("`{0}` fails the NHS number Modulus 11 check")]
    CheckDigit(String),
}

/// The identifier system for NHS numbers in FHIR.
pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";

impl NhsNumber {
    /// Parses ten digits; spaces between groups (`943 476 5919`) are accepted and dropped.
    pub fn parse(text: &str) -> Result<Self, NhsNumberError> {
        let digits: String = text.chars().filter(|c| *c != ' ').collect();
        if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NhsNumberError::NotTenDigits(text.to_owned()));
        }
        let values: Vec<u32> = digits.bytes().map(|b| u32::from(b - b'0')).collect();
        let sum: u32 = values[..9].iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
        let check = match 11 - (sum % 11) {
            11 => 0,
            10 => return Err(NhsNumberError::CheckDigit(text.to_owned())),
            c => c,
        };
        if check != values[9] {
            return Err(NhsNumberError::CheckDigit(text.to_owned()));
        }
        Ok(Self(digits))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NhsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `text` with every NHS number in it other than `keep` replaced by `(another NHS number)`: for
/// free text filed against one patient (an audit record's detail, which may echo what a caller
/// sent), so one patient's history never names another patient. Digits in runs of exactly ten
/// (`943 476 5919` too) that pass the check digit are NHS numbers.
pub fn redact_other_nhs_numbers(text: &str, keep: Option<&str>) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || (i > 0 && bytes[i - 1].is_ascii_digit()) {
            let ch = text[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        // a run of digits and single spaces starting here
        let mut end = i;
        let mut digits = 0;
        while end < bytes.len()
            && (bytes[end].is_ascii_digit()
                || (bytes[end] == b' ' && end + 1 < bytes.len() && bytes[end + 1].is_ascii_digit()))
        {
            if bytes[end].is_ascii_digit() {
                digits += 1;
            }
            end += 1;
        }
        let run = &text[i..end];
        match NhsNumber::parse(run) {
            Ok(n) if digits == 10 && Some(n.as_str()) != keep => out.push_str("(another NHS number)"),
            _ => out.push_str(run),
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_patients_numbers_are_redacted_from_free_text() {
        let text = "`subject.reference` names `Patient/9434765919` but the identifier names 900 000 0009";
        assert_eq!(
            redact_other_nhs_numbers(text, Some("9434765919")),
            "`subject.reference` names `Patient/9434765919` but the identifier names (another NHS number)"
        );
        assert_eq!(redact_other_nhs_numbers("at 1795305600 ms, 12345678901", None), "at 1795305600 ms, 12345678901");
        assert_eq!(
            redact_other_nhs_numbers("9000000009,9434765919", None),
            "(another NHS number),(another NHS number)"
        );
        assert_eq!(redact_other_nhs_numbers("naïve 9000000009é", Some("9000000009")), "naïve 9000000009é");
    }

    #[test]
    fn valid_numbers_pass() {
        for n in ["9434765919", "943 476 5919", "9000000009", "9449306621"] {
            assert!(NhsNumber::parse(n).is_ok(), "{n}");
        }
        assert_eq!(NhsNumber::parse("943 476 5919").unwrap().as_str(), "9434765919");
    }

    #[test]
    fn wrong_check_digit_and_shape_fail() {
        assert_eq!(NhsNumber::parse("9434765918"), Err(NhsNumberError::CheckDigit("9434765918".into())));
        assert!(matches!(NhsNumber::parse("943476591"), Err(NhsNumberError::NotTenDigits(_))));
        assert!(matches!(NhsNumber::parse("94347659190"), Err(NhsNumberError::NotTenDigits(_))));
        assert!(matches!(NhsNumber::parse("94347a5919"), Err(NhsNumberError::NotTenDigits(_))));
        // remainder 1 gives check value 10, which no NHS number may have
        assert!(matches!(NhsNumber::parse("1000000010"), Err(NhsNumberError::CheckDigit(_))));
    }
}
