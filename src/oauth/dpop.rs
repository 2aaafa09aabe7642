//! DPoP at this server (RFC 9449): a proof is verified ([`crate::token::dpop::verify`]), its
//! `jti` is spent once across every node, and, when configured, it must carry a server nonce we
//! handed out (`use_dpop_nonce` / `DPoP-Nonce`; nonces rotate and each is accepted for
//! `tokens.dpop_nonce_lifetime_secs`, on every node).

use std::time::Duration;

use super::error::{ErrorCode, OAuthError};
use crate::app::App;
use crate::keyspaces::{DPOP_JTIS, DPOP_NONCES};
use crate::store::StoreError;
use crate::token::dpop::{self, Expected, Proof};
use crate::token::random_token;

/// The `DPoP` request headers: none, exactly one proof, or more than one (refused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DpopHeader<'a> {
    #[default]
    Absent,
    Proof(&'a str),
    Repeated,
}

/// Why a DPoP proof was refused.
#[derive(Debug, thiserror::Error)]
pub enum DpopRefusal {
    #[error("{0}")]
    Invalid(String),
    /// The proof must carry the server nonce; here is a current one.
    #[error("the DPoP proof must carry the server's nonce")]
    UseNonce(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<DpopRefusal> for OAuthError {
    fn from(refusal: DpopRefusal) -> Self {
        match refusal {
            DpopRefusal::Invalid(why) => OAuthError::new(ErrorCode::InvalidDpopProof, why),
            DpopRefusal::UseNonce(nonce) => {
                let mut e = OAuthError::new(ErrorCode::UseDpopNonce, "the DPoP proof must carry the server's nonce");
                e.dpop_nonce = Some(nonce);
                e
            }
            DpopRefusal::Store(e) => e.into(),
        }
    }
}

impl App {
    /// The server nonce to hand out now, when nonces are required: the current one, or a fresh
    /// one once half its lifetime has passed.
    pub async fn dpop_nonce(&self) -> Result<Option<String>, StoreError> {
        let tokens = &self.config.tokens;
        if !tokens.dpop_require_nonce {
            return Ok(None);
        }
        let now = self.clock.now();
        let lifetime = tokens.dpop_nonce_lifetime_secs.max(2);
        if let Some((nonce, minted)) = self.dpop_nonce.lock().clone() {
            if now - minted < i64::try_from(lifetime / 2).unwrap_or(i64::MAX) {
                return Ok(Some(nonce));
            }
        }
        let nonce = random_token(18);
        DPOP_NONCES.mark(self.stores.ephemeral.as_ref(), &nonce, Duration::from_secs(lifetime)).await?;
        *self.dpop_nonce.lock() = Some((nonce.clone(), now));
        Ok(Some(nonce))
    }

    /// Checks the DPoP proof of a request to `method url` (with `access_token` at a resource
    /// server): valid, fresh, with a nonce we handed out when required, and never seen before.
    pub async fn check_dpop(
        &self,
        header: DpopHeader<'_>,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        require_nonce: bool,
    ) -> Result<Option<Proof>, DpopRefusal> {
        let proof = match header {
            DpopHeader::Absent => return Ok(None),
            DpopHeader::Repeated => return Err(DpopRefusal::Invalid("send exactly one DPoP header".into())),
            DpopHeader::Proof(proof) => proof,
        };
        let tokens = &self.config.tokens;
        let expected = Expected {
            method,
            url,
            access_token,
            now: self.clock.now(),
            max_age_secs: tokens.dpop_proof_max_age_secs,
            skew_secs: tokens.clock_skew_secs,
        };
        let proof = dpop::verify(proof, &expected).map_err(|e| DpopRefusal::Invalid(e.to_string()))?;
        let store = self.stores.ephemeral.as_ref();
        if require_nonce && tokens.dpop_require_nonce {
            let known = match &proof.nonce {
                Some(nonce) => DPOP_NONCES.contains(store, nonce).await?,
                None => false,
            };
            if !known {
                let fresh = self.dpop_nonce().await?.unwrap_or_default();
                return Err(DpopRefusal::UseNonce(fresh));
            }
        }
        let remember = u64::try_from(tokens.dpop_proof_max_age_secs + 2 * tokens.clock_skew_secs).unwrap_or(600);
        let id = format!("{}:{}", proof.jkt, proof.jti);
        if !DPOP_JTIS.first_use(store, &id, Duration::from_secs(remember.max(1))).await? {
            return Err(DpopRefusal::Invalid("this DPoP proof was already used (`jti`)".into()));
        }
        Ok(Some(proof))
    }
}

/// Why a presented token's sender constraint does not hold (RFC 9449 §7).
#[derive(Debug)]
pub enum SenderRefusal {
    /// `code` is `invalid_token` or `invalid_dpop_proof`.
    Refused {
        code: ErrorCode,
        why: &'static str,
        detail: Option<String>,
    },
    Store(StoreError),
}

impl SenderRefusal {
    fn refused(code: ErrorCode, why: &'static str) -> Self {
        Self::Refused { code, why, detail: None }
    }

    /// The description for the caller.
    pub fn description(&self) -> String {
        match self {
            Self::Refused { why, detail: Some(detail), .. } => format!("{why}: {detail}"),
            Self::Refused { why, detail: None, .. } => (*why).to_owned(),
            Self::Store(e) => e.to_string(),
        }
    }
}

impl App {
    /// The sender constraint of a token presented at a resource (the FHIR API, userinfo): a
    /// DPoP-bound token (`cnf.jkt`) only under the `DPoP` scheme with a proof over this request
    /// (`method url`), made with that key and carrying the token's hash; an unbound token only
    /// under `Bearer`.
    pub async fn check_sender(
        &self,
        scheme: crate::token::Scheme,
        token: &str,
        claims: &crate::token::access::AccessTokenClaims,
        header: DpopHeader<'_>,
        method: &str,
        url: &str,
    ) -> Result<(), SenderRefusal> {
        use crate::token::Scheme;
        let bound = match (claims.dpop_jkt(), scheme) {
            (None, Scheme::Bearer) => return Ok(()),
            (None, Scheme::Dpop) => {
                return Err(SenderRefusal::refused(
                    ErrorCode::InvalidToken,
                    "the token is not DPoP-bound: send it as a Bearer token",
                ));
            }
            (Some(_), Scheme::Bearer) => {
                let why = "the token is DPoP-bound: send it with the DPoP scheme and a proof";
                return Err(SenderRefusal::refused(ErrorCode::InvalidToken, why));
            }
            (Some(bound), Scheme::Dpop) => bound,
        };
        let proof = match self.check_dpop(header, method, url, Some(token), false).await {
            Ok(Some(proof)) => proof,
            Ok(None) => {
                return Err(SenderRefusal::refused(
                    ErrorCode::InvalidDpopProof,
                    "a DPoP proof is required with this token",
                ));
            }
            Err(DpopRefusal::Store(e)) => return Err(SenderRefusal::Store(e)),
            Err(e) => {
                return Err(SenderRefusal::Refused {
                    code: ErrorCode::InvalidDpopProof,
                    why: "the DPoP proof was refused",
                    detail: Some(e.to_string()),
                });
            }
        };
        if proof.jkt != bound {
            return Err(SenderRefusal::refused(
                ErrorCode::InvalidDpopProof,
                "the proof is not made with the key the token is bound to",
            ));
        }
        Ok(())
    }
}
