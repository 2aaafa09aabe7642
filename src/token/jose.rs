//! Compact JWS (RFC 7515) over aws-lc: decode, verify with an algorithm allow-list, sign; JWK
//! public-key import/export and RFC 7638 thumbprints. There is no `none` and no HMAC here at all,
//! so a public key can never be used as an HMAC secret.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, PublicKeyComponents};
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, ParsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::domain::jwk::Jwk;

/// The signature algorithms carebroker accepts or produces (RFC 7518 §3.1 subset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    ES256,
    ES384,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] = [Self::RS256, Self::RS384, Self::RS512, Self::ES256, Self::ES384];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }

    /// The JWK `kty` a key for this algorithm has.
    pub fn key_type(self) -> &'static str {
        match self {
            Self::RS256 | Self::RS384 | Self::RS512 => "RSA",
            Self::ES256 | Self::ES384 => "EC",
        }
    }

    fn curve(self) -> Option<(&'static str, usize)> {
        match self {
            Self::ES256 => Some(("P-256", 32)),
            Self::ES384 => Some(("P-384", 48)),
            _ => None,
        }
    }

    fn verification(self) -> &'static dyn signature::VerificationAlgorithm {
        match self {
            Self::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Self::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Self::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Self::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
            Self::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
        }
    }
}

/// Why a JWS or JWK was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoseError {
    #[error("the token is not a compact JWS: {0}")]
    Malformed(&'static str),
    #[error("algorithm `{0}` is not allowed")]
    AlgorithmNotAllowed(String),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the key cannot be used: {0}")]
    UnusableKey(String),
    #[error("signing failed")]
    SigningFailed,
}

/// The JOSE header members carebroker reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jku: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwk: Option<Jwk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crit: Option<serde_json::Value>,
}

/// A compact JWS split and decoded but NOT yet verified.
#[derive(Debug, Clone)]
pub struct UnverifiedJws<'a> {
    pub header: Header,
    pub algorithm: Algorithm,
    signing_input: &'a str,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

fn b64(part: &str) -> Result<Vec<u8>, JoseError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| JoseError::Malformed("a part is not unpadded base64url"))
}

/// Splits and decodes a compact JWS. The header's `alg` must be in `allowed`; `crit` is refused
/// because carebroker understands no critical extensions (RFC 7515 §4.1.11).
pub fn decode<'a>(token: &'a str, allowed: &[Algorithm]) -> Result<UnverifiedJws<'a>, JoseError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JoseError::Malformed("it does not have exactly three parts"));
    };
    let header: Header =
        serde_json::from_slice(&b64(h)?).map_err(|_| JoseError::Malformed("the header is not a JSON object"))?;
    if header.crit.is_some() {
        return Err(JoseError::Malformed("critical header extensions are not supported"));
    }
    let algorithm = Algorithm::parse(&header.alg)
        .filter(|a| allowed.contains(a))
        .ok_or_else(|| JoseError::AlgorithmNotAllowed(header.alg.clone()))?;
    Ok(UnverifiedJws {
        header,
        algorithm,
        signing_input: &token[..h.len() + 1 + p.len()],
        payload: b64(p)?,
        signature: b64(s)?,
    })
}

impl UnverifiedJws<'_> {
    /// Verifies the signature with `key`, which must have been imported for this token's algorithm,
    /// and returns the payload.
    pub fn verify(self, key: &VerifyingKey) -> Result<Vec<u8>, JoseError> {
        if key.algorithm != self.algorithm {
            return Err(JoseError::AlgorithmNotAllowed(self.header.alg));
        }
        key.parsed.verify_sig(self.signing_input.as_bytes(), &self.signature).map_err(|_| JoseError::BadSignature)?;
        Ok(self.payload)
    }

    /// The payload before verification, for reading routing claims such as `iss` only.
    pub fn unverified_payload(&self) -> &[u8] {
        &self.payload
    }
}

/// A public key parsed once for one algorithm.
#[derive(Clone)]
pub struct VerifyingKey {
    pub algorithm: Algorithm,
    parsed: ParsedPublicKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

fn member(jwk: &Jwk, value: &Option<String>, name: &str) -> Result<Vec<u8>, JoseError> {
    let text =
        value.as_deref().ok_or_else(|| JoseError::UnusableKey(format!("the {} key has no `{name}`", jwk.kty)))?;
    URL_SAFE_NO_PAD.decode(text).map_err(|_| JoseError::UnusableKey(format!("`{name}` is not base64url")))
}

impl VerifyingKey {
    /// Imports a public JWK for `algorithm`: the key type and curve must match the algorithm, and
    /// a key that states its own `alg` must state this one.
    pub fn from_jwk(jwk: &Jwk, algorithm: Algorithm) -> Result<Self, JoseError> {
        if jwk.kty != algorithm.key_type() {
            return Err(JoseError::UnusableKey(format!("a {} key cannot verify {}", jwk.kty, algorithm.as_str())));
        }
        if jwk.alg.as_deref().is_some_and(|a| a != algorithm.as_str()) {
            return Err(JoseError::UnusableKey(format!("the key is for {}", jwk.alg.as_deref().unwrap_or_default())));
        }
        let parsed = match algorithm.curve() {
            None => {
                let n = member(jwk, &jwk.n, "n")?;
                let e = member(jwk, &jwk.e, "e")?;
                let trim = |v: &[u8]| v.iter().position(|b| *b != 0).map_or_else(Vec::new, |i| v[i..].to_vec());
                PublicKeyComponents { n: trim(&n), e: trim(&e) }
                    .to_parsed_public_key(match algorithm {
                        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                        _ => &signature::RSA_PKCS1_2048_8192_SHA256,
                    })
                    .map_err(|e| JoseError::UnusableKey(format!("RSA key rejected ({e})")))?
            }
            Some((curve, size)) => {
                if jwk.crv.as_deref() != Some(curve) {
                    return Err(JoseError::UnusableKey(format!("{} needs a {curve} key", algorithm.as_str())));
                }
                let x = member(jwk, &jwk.x, "x")?;
                let y = member(jwk, &jwk.y, "y")?;
                if x.len() != size || y.len() != size {
                    return Err(JoseError::UnusableKey(format!("{curve} coordinates are {size} bytes")));
                }
                let mut point = Vec::with_capacity(1 + 2 * size);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                ParsedPublicKey::new(algorithm.verification(), point)
                    .map_err(|e| JoseError::UnusableKey(format!("EC key rejected ({e})")))?
            }
        };
        Ok(Self { algorithm, parsed })
    }
}

/// A private signing key with its `kid`.
pub struct SigningKey {
    pub kid: String,
    pub algorithm: Algorithm,
    inner: SigningInner,
    rng: SystemRandom,
}

enum SigningInner {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a new PKCS#8 private key for `algorithm` (RSA keys are 2048 bits).
    pub fn generate_pkcs8(algorithm: Algorithm) -> Result<Vec<u8>, JoseError> {
        use aws_lc_rs::encoding::AsDer;
        match algorithm {
            Algorithm::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                    .map(|d| d.as_ref().to_vec())
                    .map_err(|_| JoseError::SigningFailed)
            }
            Algorithm::ES384 => {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
                    .map(|d| d.as_ref().to_vec())
                    .map_err(|_| JoseError::SigningFailed)
            }
            _ => RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .and_then(|k| k.as_der())
                .map(|d| d.as_ref().to_vec())
                .map_err(|_| JoseError::SigningFailed),
        }
    }

    /// Loads a PKCS#8 private key for `algorithm`; the `kid` is the key's RFC 7638 thumbprint.
    pub fn from_pkcs8(algorithm: Algorithm, der: &[u8]) -> Result<Self, JoseError> {
        let reject = |e: aws_lc_rs::error::KeyRejected| JoseError::UnusableKey(e.to_string());
        let inner = match algorithm {
            Algorithm::ES256 => SigningInner::Ec(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der).map_err(reject)?,
            ),
            Algorithm::ES384 => SigningInner::Ec(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, der).map_err(reject)?,
            ),
            _ => SigningInner::Rsa(RsaKeyPair::from_pkcs8(der).map_err(reject)?),
        };
        let mut key = Self { kid: String::new(), algorithm, inner, rng: SystemRandom::new() };
        key.kid = thumbprint(&key.public_jwk());
        Ok(key)
    }

    /// The public half as a JWK with `kid`, `alg` and `use: sig`.
    pub fn public_jwk(&self) -> Jwk {
        let mut jwk = Jwk {
            kty: self.algorithm.key_type().to_owned(),
            kid: Some(self.kid.clone()),
            alg: Some(self.algorithm.as_str().to_owned()),
            key_use: Some("sig".to_owned()),
            key_ops: None,
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
            other: Default::default(),
        };
        match &self.inner {
            SigningInner::Ec(pair) => {
                let point = pair.public_key().as_ref();
                let size = (point.len() - 1) / 2;
                jwk.crv = self.algorithm.curve().map(|(c, _)| c.to_owned());
                jwk.x = Some(URL_SAFE_NO_PAD.encode(&point[1..=size]));
                jwk.y = Some(URL_SAFE_NO_PAD.encode(&point[1 + size..]));
            }
            SigningInner::Rsa(pair) => {
                let public = pair.public_key();
                jwk.n = Some(URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()));
                jwk.e = Some(URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()));
            }
        }
        jwk
    }

    /// The matching verifying key.
    pub fn verifying_key(&self) -> Result<VerifyingKey, JoseError> {
        VerifyingKey::from_jwk(&self.public_jwk(), self.algorithm)
    }

    fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, JoseError> {
        match &self.inner {
            SigningInner::Ec(pair) => {
                pair.sign(&self.rng, message).map(|s| s.as_ref().to_vec()).map_err(|_| JoseError::SigningFailed)
            }
            SigningInner::Rsa(pair) => {
                let padding: &'static dyn signature::RsaEncoding = match self.algorithm {
                    Algorithm::RS384 => &signature::RSA_PKCS1_SHA384,
                    Algorithm::RS512 => &signature::RSA_PKCS1_SHA512,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut out = vec![0; pair.public_modulus_len()];
                pair.sign(padding, &self.rng, message, &mut out).map_err(|_| JoseError::SigningFailed)?;
                Ok(out)
            }
        }
    }

    /// Signs `claims` as a compact JWS with header `{alg, kid, typ}`.
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, JoseError> {
        let header = serde_json::json!({"alg": self.algorithm.as_str(), "kid": self.kid, "typ": typ});
        self.sign_with_header(&header, claims)
    }

    /// Signs `claims` under a caller-built header (which must carry this key's `alg`).
    pub fn sign_with_header<H: Serialize, T: Serialize>(&self, header: &H, claims: &T) -> Result<String, JoseError> {
        let header = serde_json::to_vec(header).map_err(|_| JoseError::SigningFailed)?;
        let payload = serde_json::to_vec(claims).map_err(|_| JoseError::SigningFailed)?;
        let mut out = String::with_capacity((header.len() + payload.len()) * 4 / 3 + 700);
        URL_SAFE_NO_PAD.encode_string(&header, &mut out);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut out);
        let signature = self.sign_bytes(out.as_bytes())?;
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut out);
        Ok(out)
    }
}

/// The DER bytes of a PEM `PRIVATE KEY` (PKCS#8) block.
pub fn pkcs8_from_pem(pem: &str) -> Result<Vec<u8>, JoseError> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN PRIVATE KEY-----")
        .skip(1)
        .take_while(|l| *l != "-----END PRIVATE KEY-----")
        .collect();
    if body.is_empty() {
        return Err(JoseError::UnusableKey("no PKCS#8 `BEGIN PRIVATE KEY` block".into()));
    }
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| JoseError::UnusableKey("the PEM body is not base64".into()))
}

/// Whether a JWT's `aud` (a string, or an array of them: RFC 7519 §4.1.3) names `wanted`.
pub fn audience_includes(aud: Option<&serde_json::Value>, wanted: &str) -> bool {
    match aud {
        Some(serde_json::Value::String(aud)) => aud == wanted,
        Some(serde_json::Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(wanted)),
        _ => false,
    }
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url) over the required members in lexicographic order.
pub fn thumbprint(jwk: &Jwk) -> String {
    let canonical = match jwk.kty.as_str() {
        "EC" => serde_json::json!({"crv": jwk.crv, "kty": "EC", "x": jwk.x, "y": jwk.y}),
        "RSA" => serde_json::json!({"e": jwk.e, "kty": "RSA", "n": jwk.n}),
        other => serde_json::json!({"kty": other}),
    };
    // serde_json's map is sorted (no preserve_order feature), which RFC 7638 §3.3 requires.
    let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(alg: Algorithm) -> SigningKey {
        SigningKey::from_pkcs8(alg, &SigningKey::generate_pkcs8(alg).unwrap()).unwrap()
    }

    #[test]
    fn sign_then_verify_every_algorithm() {
        for alg in [Algorithm::ES256, Algorithm::ES384, Algorithm::RS256, Algorithm::RS384, Algorithm::RS512] {
            let k = key(alg);
            let token = k.sign("JWT", &serde_json::json!({"sub": "x"})).unwrap();
            let jws = decode(&token, &Algorithm::ALL).unwrap();
            assert_eq!(jws.header.kid.as_deref(), Some(k.kid.as_str()));
            let payload = jws.verify(&k.verifying_key().unwrap()).unwrap();
            assert_eq!(payload, br#"{"sub":"x"}"#);
        }
    }

    #[test]
    fn tampering_and_wrong_keys_fail() {
        let k = key(Algorithm::ES256);
        let other = key(Algorithm::ES256);
        let token = k.sign("JWT", &serde_json::json!({"sub": "x"})).unwrap();
        let jws = decode(&token, &[Algorithm::ES256]).unwrap();
        assert_eq!(jws.verify(&other.verifying_key().unwrap()).unwrap_err(), JoseError::BadSignature);

        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#);
        parts[1] = &forged;
        let forged_token = parts.join(".");
        let jws = decode(&forged_token, &[Algorithm::ES256]).unwrap();
        assert_eq!(jws.verify(&k.verifying_key().unwrap()).unwrap_err(), JoseError::BadSignature);
    }

    #[test]
    fn none_hs_and_unlisted_algorithms_are_refused() {
        for alg in ["none", "HS256", "RS256"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}"}}"#));
            let token = format!("{header}.e30.");
            assert!(matches!(decode(&token, &[Algorithm::ES256]), Err(JoseError::AlgorithmNotAllowed(_))), "{alg}");
        }
    }

    #[test]
    fn key_type_must_match_algorithm() {
        let ec = key(Algorithm::ES256).public_jwk();
        assert!(VerifyingKey::from_jwk(&ec, Algorithm::RS256).is_err());
        assert!(VerifyingKey::from_jwk(&ec, Algorithm::ES384).is_err());
        let rsa = key(Algorithm::RS256).public_jwk();
        // the key says alg RS256, so it may not verify RS512
        assert!(VerifyingKey::from_jwk(&rsa, Algorithm::RS512).is_err());
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for token in ["", "a.b", "a.b.c.d", "!!.e30.", "e30.e30.e30"] {
            assert!(decode(token, &Algorithm::ALL).is_err(), "{token}");
        }
        let crit = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","crit":["exp"]}"#);
        assert!(matches!(decode(&format!("{crit}.e30.AA"), &Algorithm::ALL), Err(JoseError::Malformed(_))));
    }

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 §3.1
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        }))
        .unwrap();
        assert_eq!(thumbprint(&jwk), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }
}
