//! Client secrets are stored only as hashes. Secrets carebroker generates carry 256 bits of
//! entropy, so a salted SHA-256 is enough (`sha256$salt$hash`); operator-chosen secrets from
//! config files may also be given as PBKDF2-HMAC-SHA256 (`pbkdf2-sha256$iterations$salt$hash`).
//! Comparison is constant-time.

use std::num::NonZeroU32;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::pbkdf2;
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq as _;

fn salted_sha256(salt: &[u8], secret: &str) -> Vec<u8> {
    let mut input = Vec::with_capacity(salt.len() + secret.len());
    input.extend_from_slice(salt);
    input.extend_from_slice(secret.as_bytes());
    digest(&SHA256, &input).as_ref().to_vec()
}

/// Hashes a secret for storage as `sha256$<salt>$<hash>`.
pub fn hash_secret(secret: &str) -> String {
    let mut salt = [0u8; 16];
    // INVARIANT: the system RNG does not fail on Linux once the process has started.
    if SystemRandom::new().fill(&mut salt).is_err() {
        panic!("the system random number generator failed");
    }
    format!("sha256${}${}", URL_SAFE_NO_PAD.encode(salt), URL_SAFE_NO_PAD.encode(salted_sha256(&salt, secret)))
}

/// True when `secret` matches `stored` (either format). Malformed hashes never match.
pub fn verify_secret(secret: &str, stored: &str) -> bool {
    let parts: Vec<&str> = stored.split('$').collect();
    let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).ok();
    match parts.as_slice() {
        ["sha256", salt, hash] => match (decode(salt), decode(hash)) {
            (Some(salt), Some(hash)) => salted_sha256(&salt, secret).ct_eq(&hash).into(),
            _ => false,
        },
        ["pbkdf2-sha256", iterations, salt, hash] => {
            match (iterations.parse::<u32>().ok().and_then(NonZeroU32::new), decode(salt), decode(hash)) {
                (Some(n), Some(salt), Some(hash)) => {
                    pbkdf2::verify(pbkdf2::PBKDF2_HMAC_SHA256, n, &salt, secret.as_bytes(), &hash).is_ok()
                }
                _ => false,
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_round_trip_and_salting() {
        let a = hash_secret("s3cret");
        let b = hash_secret("s3cret");
        assert_ne!(a, b, "salted");
        assert!(verify_secret("s3cret", &a));
        assert!(!verify_secret("s3cret!", &a));
        assert!(!verify_secret("", &a));
    }

    #[test]
    fn pbkdf2_hashes_verify() {
        let salt = b"0123456789abcdef";
        let mut out = [0u8; 32];
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, NonZeroU32::new(1000).unwrap(), salt, b"pw", &mut out);
        let stored = format!("pbkdf2-sha256$1000${}${}", URL_SAFE_NO_PAD.encode(salt), URL_SAFE_NO_PAD.encode(out));
        assert!(verify_secret("pw", &stored));
        assert!(!verify_secret("pw2", &stored));
    }

    #[test]
    fn malformed_hashes_never_match() {
        for stored in ["", "sha256$", "sha256$!!$!!", "md5$a$b", "pbkdf2-sha256$0$YQ$YQ"] {
            assert!(!verify_secret("x", stored), "{stored}");
        }
    }
}
