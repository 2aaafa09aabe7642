//! Our signing keys: an ES256 chain for access tokens and an RS256 chain for ID tokens, kept in a
//! key file in a private folder. Each chain has a `current` key (signs), a `next` key (published,
//! not yet signing) and `previous` keys (published, no longer signing) kept until every token
//! they signed has expired. Rotation promotes `next`, so a key is always in the JWKS before it
//! signs anything, and the running server picks the change up without a restart.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::jose::{Algorithm, JoseError, SigningKey, VerifyingKey};
use crate::domain::jwk::{Jwk, JwkSet};

/// The algorithm of each chain.
pub const ACCESS_TOKEN_ALG: Algorithm = Algorithm::ES256;
pub const ID_TOKEN_ALG: Algorithm = Algorithm::RS256;
const CHAINS: [Algorithm; 2] = [ACCESS_TOKEN_ALG, ID_TOKEN_ALG];
const KEY_FILE: &str = "keyset.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    Next,
    Current,
    Previous,
}

/// One key as stored (private key in PKCS#8 DER, base64).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredKey {
    pub alg: String,
    pub kid: String,
    pub state: KeyState,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<i64>,
    pkcs8: String,
}

/// Key-file problems.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("`{path}` is not a valid key file: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(transparent)]
    Jose(#[from] JoseError),
    #[error(
        "the next {alg} key was published {age_secs} s ago; rotate after it has been published for {min_secs} s so every cache has it (or pass --force)"
    )]
    TooSoon { alg: &'static str, age_secs: i64, min_secs: i64 },
}

/// The key file: every key of every chain.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeyFile {
    pub keys: Vec<StoredKey>,
}

fn new_key(alg: Algorithm, state: KeyState, now: i64) -> Result<StoredKey, KeyError> {
    let der = SigningKey::generate_pkcs8(alg)?;
    let kid = SigningKey::from_pkcs8(alg, &der)?.kid;
    Ok(StoredKey {
        alg: alg.as_str().to_owned(),
        kid,
        state,
        created_at: now,
        retired_at: None,
        pkcs8: STANDARD.encode(der),
    })
}

impl KeyFile {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(KEY_FILE)
    }

    /// Reads the key file; a missing file is an empty set.
    pub fn load(dir: &Path) -> Result<Self, KeyError> {
        let path = Self::path(dir);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| KeyError::Invalid { path, reason: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(KeyError::Io { path, source }),
        }
    }

    /// Writes the key file atomically (temporary file, then rename) readable by the owner only.
    pub fn save(&self, dir: &Path) -> Result<(), KeyError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| KeyError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io(dir))?;
        let tmp = dir.join(format!(".{KEY_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| KeyError::Invalid { path: tmp.clone(), reason: e.to_string() })?;
        {
            let mut options = fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp).map_err(io(&tmp))?;
            file.write_all(&bytes).map_err(io(&tmp))?;
            file.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, Self::path(dir)).map_err(io(dir))
    }

    fn chain(&self, alg: Algorithm) -> impl Iterator<Item = &StoredKey> {
        self.keys.iter().filter(move |k| k.alg == alg.as_str())
    }

    /// Makes sure every chain has a current and a next key. Returns true when keys were added.
    pub fn ensure(&mut self, now: i64) -> Result<bool, KeyError> {
        let mut changed = false;
        for alg in CHAINS {
            for state in [KeyState::Current, KeyState::Next] {
                if !self.chain(alg).any(|k| k.state == state) {
                    self.keys.push(new_key(alg, state, now)?);
                    changed = true;
                }
            }
        }
        Ok(changed)
    }

    /// Rotates every chain: `current` becomes `previous` (retired now), `next` becomes `current`,
    /// a new `next` is made, and previous keys whose tokens have all expired are dropped. Refuses
    /// while a next key has been published for less than `min_published_secs`, unless `force`.
    pub fn rotate(
        &mut self,
        now: i64,
        retention_secs: i64,
        min_published_secs: i64,
        force: bool,
    ) -> Result<(), KeyError> {
        self.ensure(now)?;
        if !force {
            for alg in CHAINS {
                if let Some(next) = self.chain(alg).find(|k| k.state == KeyState::Next) {
                    let age = now - next.created_at;
                    if age < min_published_secs {
                        return Err(KeyError::TooSoon {
                            alg: alg.as_str(),
                            age_secs: age,
                            min_secs: min_published_secs,
                        });
                    }
                }
            }
        }
        for key in &mut self.keys {
            match key.state {
                KeyState::Current => {
                    key.state = KeyState::Previous;
                    key.retired_at = Some(now);
                }
                KeyState::Next => key.state = KeyState::Current,
                KeyState::Previous => {}
            }
        }
        self.prune(now, retention_secs);
        for alg in CHAINS {
            self.keys.push(new_key(alg, KeyState::Next, now)?);
        }
        Ok(())
    }

    /// Drops previous keys retired more than `retention_secs` ago.
    pub fn prune(&mut self, now: i64, retention_secs: i64) {
        self.keys.retain(|k| k.state != KeyState::Previous || k.retired_at.is_some_and(|t| t + retention_secs > now));
    }

    fn signing_key(key: &StoredKey, path: &Path) -> Result<SigningKey, KeyError> {
        let invalid = |reason: String| KeyError::Invalid { path: path.to_path_buf(), reason };
        let alg = Algorithm::parse(&key.alg).ok_or_else(|| invalid(format!("unknown algorithm `{}`", key.alg)))?;
        let der = STANDARD.decode(&key.pkcs8).map_err(|_| invalid(format!("key `{}` is not base64", key.kid)))?;
        let signing = SigningKey::from_pkcs8(alg, &der)?;
        if signing.kid != key.kid {
            return Err(invalid(format!("key `{}` does not match its kid", key.kid)));
        }
        Ok(signing)
    }
}

/// The keys in use by a running server: current signers and every published verifying key.
#[derive(Debug)]
pub struct KeyRing {
    access: Arc<SigningKey>,
    id: Arc<SigningKey>,
    verifying: HashMap<String, VerifyingKey>,
    jwks: JwkSet,
    jwks_json: Arc<str>,
    /// When the next published previous key leaves the JWKS.
    next_expiry: Option<i64>,
    /// When the oldest key now signing was made (for the key-age metric).
    signers_since: i64,
}

impl KeyRing {
    /// When the oldest key now signing tokens was made (Unix seconds).
    pub fn signers_since(&self) -> i64 {
        self.signers_since
    }

    /// Builds the ring from a key file, publishing current, next and unexpired previous keys.
    pub fn from_file(file: &KeyFile, dir: &Path, now: i64, retention_secs: i64) -> Result<Self, KeyError> {
        let path = KeyFile::path(dir);
        let mut access = None;
        let mut id = None;
        let mut verifying = HashMap::new();
        let mut jwks = JwkSet::default();
        let mut next_expiry: Option<i64> = None;
        let mut signers_since = i64::MAX;
        for key in &file.keys {
            if key.state == KeyState::Previous {
                match key.retired_at.map(|t| t + retention_secs) {
                    Some(expiry) if expiry > now => next_expiry = Some(next_expiry.map_or(expiry, |e| e.min(expiry))),
                    _ => continue,
                }
            }
            let signing = KeyFile::signing_key(key, &path)?;
            verifying.insert(signing.kid.clone(), signing.verifying_key()?);
            jwks.keys.push(signing.public_jwk());
            if key.state == KeyState::Current {
                signers_since = signers_since.min(key.created_at);
                let slot = if signing.algorithm == ACCESS_TOKEN_ALG { &mut access } else { &mut id };
                if slot.replace(Arc::new(signing)).is_some() {
                    return Err(KeyError::Invalid {
                        path: path.clone(),
                        reason: format!("two current {} keys", key.alg),
                    });
                }
            }
        }
        let missing = |alg: Algorithm| KeyError::Invalid {
            path: path.clone(),
            reason: format!("no current {} key", alg.as_str()),
        };
        let access = access.ok_or_else(|| missing(ACCESS_TOKEN_ALG))?;
        let id = id.ok_or_else(|| missing(ID_TOKEN_ALG))?;
        let jwks_json =
            serde_json::to_string(&jwks).map_err(|e| KeyError::Invalid { path, reason: e.to_string() })?.into();
        Ok(Self { access, id, verifying, jwks, jwks_json, next_expiry, signers_since })
    }

    /// Loads the key folder, generating the first keys when there are none (development start).
    pub fn load_or_generate(dir: &Path, now: i64, retention_secs: i64) -> Result<Self, KeyError> {
        let mut file = KeyFile::load(dir)?;
        if file.ensure(now)? {
            file.save(dir)?;
        }
        Self::from_file(&file, dir, now, retention_secs)
    }

    /// The ES256 key that signs access tokens.
    pub fn access_token_key(&self) -> &SigningKey {
        &self.access
    }

    /// The key that signs ID tokens: RS256, or for a client that registered
    /// `id_token_signed_response_alg = ES256` the ES256 key (ID tokens carry `typ: JWT`, access
    /// tokens `typ: at+jwt`, and each verifier insists on its own, so one is never taken for the other).
    pub fn id_token_key(&self, es256: bool) -> &SigningKey {
        if es256 { &self.access } else { &self.id }
    }

    /// A published verifying key by `kid`.
    pub fn verifying_key(&self, kid: &str) -> Option<&VerifyingKey> {
        self.verifying.get(kid)
    }

    /// When a retired key next leaves the published set, if any will.
    pub fn next_expiry(&self) -> Option<i64> {
        self.next_expiry
    }

    /// The public JWK Set.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// The public JWK Set, serialised once.
    pub fn jwks_json(&self) -> Arc<str> {
        self.jwks_json.clone()
    }

    /// Public JWKs only ever: a guard used by tests and by `keys list`.
    pub fn published(&self) -> &[Jwk] {
        &self.jwks.keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_generates_and_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load_or_generate(dir.path(), 1000, 3700).unwrap();
        let again = KeyRing::load_or_generate(dir.path(), 2000, 3700).unwrap();
        assert_eq!(ring.access_token_key().kid, again.access_token_key().kid);
        assert_eq!(ring.published().len(), 4, "current and next of two chains");
        for jwk in ring.published() {
            assert!(jwk.kid.is_some() && jwk.alg.is_some() && jwk.key_use.as_deref() == Some("sig"));
            assert!(!jwk.has_private_material());
        }
    }

    #[test]
    fn rotation_publishes_next_first_and_keeps_previous_until_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = KeyFile::default();
        file.ensure(0).unwrap();
        let ring = KeyRing::from_file(&file, dir.path(), 0, 3700).unwrap();
        let old = ring.access_token_key().kid.clone();
        let next = file.keys.iter().find(|k| k.alg == "ES256" && k.state == KeyState::Next).unwrap().kid.clone();
        assert!(ring.verifying_key(&next).is_some(), "next key is published before it signs");

        assert!(matches!(file.rotate(100, 3700, 600, false), Err(KeyError::TooSoon { .. })));
        file.rotate(1000, 3700, 600, false).unwrap();
        let ring = KeyRing::from_file(&file, dir.path(), 1000, 3700).unwrap();
        assert_eq!(ring.access_token_key().kid, next);
        assert!(ring.verifying_key(&old).is_some(), "previous key still verifies");

        let later = KeyRing::from_file(&file, dir.path(), 1000 + 3700, 3700).unwrap();
        assert!(later.verifying_key(&old).is_none(), "retired key dropped once its tokens expired");
        file.rotate(10_000, 3700, 600, false).unwrap();
        assert!(!file.keys.iter().any(|k| k.kid == old), "pruned from the file");
    }

    #[test]
    fn a_corrupt_key_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(KeyFile::path(dir.path()), b"{not json").unwrap();
        assert!(matches!(KeyRing::load_or_generate(dir.path(), 0, 3700), Err(KeyError::Invalid { .. })));
    }
}
