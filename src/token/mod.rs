//! Tokens: JOSE primitives, our signing keys (JWKS, rotation with overlap, hot reload), access
//! tokens, and random identifiers for codes, ids and `jti`.

pub mod access;
pub mod dpop;
pub mod jose;
pub mod keys;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use keys::{KeyError, KeyFile, KeyRing};

/// A random URL-safe string with `bytes` bytes of entropy (base64url, no padding: safe in a query
/// string even when a client forgets to encode it).
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // INVARIANT: the system RNG does not fail on Linux once the process has started.
    if SystemRandom::new().fill(&mut buf).is_err() {
        panic!("the system random number generator failed");
    }
    URL_SAFE_NO_PAD.encode(buf)
}

/// Holds the live [`KeyRing`] and reloads it when the key file changes (after `keys rotate`).
#[derive(Debug)]
pub struct KeyManager {
    dir: PathBuf,
    retention_secs: i64,
    ring: ArcSwap<KeyRing>,
    modified: parking_lot::Mutex<Option<std::time::SystemTime>>,
}

impl KeyManager {
    /// Loads (or on first start generates) the keys in `dir`.
    pub fn open(dir: PathBuf, now: i64, retention_secs: i64) -> Result<Self, KeyError> {
        let ring = KeyRing::load_or_generate(&dir, now, retention_secs)?;
        let modified = Self::modified(&dir);
        Ok(Self { dir, retention_secs, ring: ArcSwap::from_pointee(ring), modified: parking_lot::Mutex::new(modified) })
    }

    fn modified(dir: &std::path::Path) -> Option<std::time::SystemTime> {
        std::fs::metadata(KeyFile::path(dir)).and_then(|m| m.modified()).ok()
    }

    /// The ring in use now.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.load_full()
    }

    /// Re-reads the key file when it changed (or when a retired key's overlap has ended, so it
    /// leaves the JWKS). A broken file keeps the running keys and returns the error.
    pub fn refresh(&self, now: i64) -> Result<bool, KeyError> {
        let modified = Self::modified(&self.dir);
        let expired = self.ring.load().next_expiry().is_some_and(|t| t <= now);
        if !expired && *self.modified.lock() == modified {
            return Ok(false);
        }
        let file = KeyFile::load(&self.dir)?;
        let ring = KeyRing::from_file(&file, &self.dir, now, self.retention_secs)?;
        self.ring.store(Arc::new(ring));
        *self.modified.lock() = modified;
        Ok(true)
    }
}

/// How an access token is presented (RFC 6750, RFC 9449 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    Dpop,
}

/// The scheme and token of an `Authorization: Bearer …` or `Authorization: DPoP …` header
/// (scheme case-insensitive).
pub fn credentials(header: Option<&str>) -> Option<(Scheme, &str)> {
    let (scheme, value) = header?.trim().split_once(' ')?;
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return None;
    };
    Some((scheme, value.trim()))
}

/// The token of an `Authorization: Bearer …` header (scheme case-insensitive), if that is what it
/// holds.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, value) = header?.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| value.trim())
}
