//! DPoP proofs (RFC 9449 §4.3): a JWT the client signs with a key it holds, over the request it
//! is making. Checked here without state; the one-use `jti` and server nonces are the caller's
//! (they live in the shared ephemeral store).

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::jose::{self, Algorithm, VerifyingKey, thumbprint};

/// The proof algorithms accepted: asymmetric only (never `none`, never HMAC).
pub const ALGORITHMS: [Algorithm; 5] = Algorithm::ALL;

/// `typ` of a DPoP proof.
pub const PROOF_TYP: &str = "dpop+jwt";

/// The longest `jti` kept in the replay cache.
const MAX_JTI_LEN: usize = 256;

/// What the request the proof must match is.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The HTTP method (`htm`).
    pub method: &'a str,
    /// The URL the request was made to (`htu`), as this server's public URL names it.
    pub url: &'a str,
    /// The access token presented with the proof (`ath` must be its hash), at a resource server.
    pub access_token: Option<&'a str>,
    pub now: i64,
    /// How old (by `iat`) a proof may be, and how far in the future (clock skew).
    pub max_age_secs: i64,
    pub skew_secs: i64,
}

/// A verified proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// RFC 7638 thumbprint of the proof's key: what a bound token's `cnf.jkt` names.
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
    /// The server nonce the proof carries (the caller checks it is one it handed out).
    pub nonce: Option<String>,
}

/// Why a proof is refused (`invalid_dpop_proof`): malformed, badly signed, or not this request's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the DPoP proof is not valid: {0}")]
pub struct DpopError(pub String);

fn invalid(why: impl Into<String>) -> DpopError {
    DpopError(why.into())
}

#[derive(Debug, Deserialize)]
struct Claims {
    jti: Option<String>,
    htm: Option<String>,
    htu: Option<String>,
    iat: Option<i64>,
    ath: Option<String>,
    nonce: Option<String>,
}

/// base64url SHA-256 of an access token (`ath`).
pub fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, token.as_bytes()))
}

/// `htu` comparison (RFC 9449 §4.3): scheme, host, port and path, without query or fragment,
/// after URL normalisation (case of scheme and host, default ports, percent-encoding).
fn same_target(claimed: &str, expected: &str) -> bool {
    let parse = |u: &str| url::Url::parse(u).ok();
    let (Some(a), Some(b)) = (parse(claimed), parse(expected)) else { return false };
    a.username().is_empty()
        && a.password().is_none()
        && a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
        && a.path() == b.path()
}

/// Verifies a DPoP proof against the request it came with.
pub fn verify(proof: &str, expected: &Expected<'_>) -> Result<Proof, DpopError> {
    let jws = jose::decode(proof, &ALGORITHMS).map_err(|e| invalid(e.to_string()))?;
    if jws.header.typ.as_deref() != Some(PROOF_TYP) {
        return Err(invalid(format!("`typ` must be `{PROOF_TYP}`")));
    }
    let jwk = jws.header.jwk.clone().ok_or_else(|| invalid("the header carries no `jwk`"))?;
    if jwk.has_private_material() {
        return Err(invalid("the `jwk` must be a public key; it carries private key material"));
    }
    let key = VerifyingKey::from_jwk(&jwk, jws.algorithm).map_err(|e| invalid(e.to_string()))?;
    let payload = jws.verify(&key).map_err(|e| invalid(e.to_string()))?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| invalid("the claims are not valid"))?;
    let jti = claims
        .jti
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_LEN)
        .ok_or_else(|| invalid(format!("missing `jti`, or longer than {MAX_JTI_LEN} characters")))?;
    if claims.htm.as_deref() != Some(expected.method) {
        return Err(invalid(format!("`htm` must be `{}`", expected.method)));
    }
    if !claims.htu.as_deref().is_some_and(|htu| same_target(htu, expected.url)) {
        return Err(invalid(format!("`htu` must be `{}`", expected.url)));
    }
    let iat = claims.iat.ok_or_else(|| invalid("missing `iat`"))?;
    if iat > expected.now + expected.skew_secs {
        return Err(invalid("`iat` is in the future"));
    }
    if iat < expected.now - expected.max_age_secs {
        return Err(invalid("the proof is too old (`iat`)"));
    }
    if let Some(token) = expected.access_token {
        if claims.ath.as_deref() != Some(access_token_hash(token).as_str()) {
            return Err(invalid("`ath` must be the hash of the access token presented"));
        }
    }
    Ok(Proof { jkt: thumbprint(&jwk), jti, iat, nonce: claims.nonce })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::token::jose::SigningKey;

    const URL: &str = "https://cb.example/token";

    fn key() -> SigningKey {
        SigningKey::from_pkcs8(Algorithm::ES256, &SigningKey::generate_pkcs8(Algorithm::ES256).unwrap()).unwrap()
    }

    fn proof(key: &SigningKey, typ: &str, claims: serde_json::Value) -> String {
        let header = json!({"alg": "ES256", "typ": typ, "jwk": key.public_jwk()});
        key.sign_with_header(&header, &claims).unwrap()
    }

    fn expected(access_token: Option<&'static str>) -> Expected<'static> {
        Expected { method: "POST", url: URL, access_token, now: 1_000, max_age_secs: 300, skew_secs: 60 }
    }

    #[test]
    fn a_good_proof_names_its_key_by_thumbprint() {
        let k = key();
        let p = proof(
            &k,
            "dpop+jwt",
            json!({"jti": "a", "htm": "POST", "htu": "https://CB.example:443/token?x=1", "iat": 990}),
        );
        let verified = verify(&p, &expected(None)).unwrap();
        assert_eq!(verified.jkt, thumbprint(&k.public_jwk()));
    }

    #[test]
    fn every_mismatch_is_refused() {
        let k = key();
        let base = json!({"jti": "a", "htm": "POST", "htu": URL, "iat": 1_000});
        let with = |field: &str, value: serde_json::Value| {
            let mut c = base.clone();
            c[field] = value;
            c
        };
        for (claims, why) in [
            (with("htm", json!("GET")), "htm"),
            (with("htu", json!("https://cb.example/other")), "htu"),
            (with("htu", json!("https://evil.example/token")), "htu"),
            (with("htu", json!("https://someone@cb.example/token")), "htu with userinfo"),
            (with("iat", json!(1_000 - 301)), "old"),
            (with("iat", json!(1_000 + 61)), "future"),
            (with("jti", json!("")), "jti"),
        ] {
            assert!(verify(&proof(&k, "dpop+jwt", claims), &expected(None)).is_err(), "{why}");
        }
        assert!(verify(&proof(&k, "JWT", base.clone()), &expected(None)).is_err());
        // ath must hash the presented token
        let at = expected(Some("token-1"));
        assert!(verify(&proof(&k, "dpop+jwt", base.clone()), &at).is_err());
        let bound = with("ath", json!(access_token_hash("token-1")));
        assert!(verify(&proof(&k, "dpop+jwt", bound), &at).is_ok());
        // the nonce is handed back for the caller to check
        let with_nonce = verify(&proof(&k, "dpop+jwt", with("nonce", json!("n-1"))), &expected(None)).unwrap();
        assert_eq!(with_nonce.nonce.as_deref(), Some("n-1"));
    }

    #[test]
    fn a_private_key_none_or_a_foreign_signature_is_refused() {
        let k = key();
        let claims = json!({"jti": "a", "htm": "POST", "htu": URL, "iat": 1_000});
        let mut private = k.public_jwk();
        private.other.insert("d".into(), json!("AAAA"));
        let header = json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": private});
        assert!(verify(&k.sign_with_header(&header, &claims).unwrap(), &expected(None)).is_err());
        // signed by another key than the one in the header
        let other = key();
        let header = json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": k.public_jwk()});
        assert!(verify(&other.sign_with_header(&header, &claims).unwrap(), &expected(None)).is_err());
        // alg none
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"dpop+jwt"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        assert!(verify(&none, &expected(None)).is_err());
    }
}
