//! Signed checkpoints of the audit log's Merkle tree, in the C2SP signed-note checkpoint format
//! (github.com/C2SP/C2SP `tlog-checkpoint.md`, `signed-note.md`), so existing witness tooling
//! reads them:
//!
//! ```text
//! carebroker.example/audit        <- origin (also the key name)
//! 4711                            <- tree size: records 1..=4711
//! 7mZ0uKg3…=                      <- root hash, standard base64
//! time 1764662400                 <- an extension line: when it was signed (Unix seconds)
//!
//! — carebroker.example/audit AbCd…   <- key id (4 bytes) and Ed25519 signature, base64
//! ```
//!
//! Every `checkpoint_every_records` records or `checkpoint_every_secs` seconds a node signs the
//! tree as it stands, stores the checkpoint (one per size, so two nodes signing the same size
//! agree or reveal a fork) and pushes it to the configured witness (a file, an HTTP endpoint).
//! `carebroker audit verify` then proves the log against every checkpoint it can find: a deleted
//! tail, a rewritten history or a fork is named.

use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::domain::merkle::{self, Hash};
use crate::store::{DurableStore, ResourceWrite, StoreError};

/// The resource type checkpoints are kept under in the durable store.
pub const RESOURCE: &str = "AuditCheckpoint";
const KEY_FILE: &str = "audit-checkpoint.ed25519.pk8";
/// Records read per page when the tree is built.
const PAGE: i64 = 5000;

/// One signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub time: i64,
    /// The whole signed note, as published.
    pub note: String,
}

/// Why a checkpoint could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("the checkpoint key `{path}`: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("not a checkpoint: {0}")]
    Malformed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The node's checkpoint signer: its Ed25519 key and the origin it signs for.
pub struct Signer {
    key: Ed25519KeyPair,
    origin: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("origin", &self.origin).finish_non_exhaustive()
    }
}

/// The signed-note key id: the first four bytes of SHA-256(name || "\n" || 0x01 || public key).
fn key_id(name: &str, public: &[u8]) -> [u8; 4] {
    let mut input = Vec::with_capacity(name.len() + 2 + public.len());
    input.extend_from_slice(name.as_bytes());
    input.extend_from_slice(b"\n\x01");
    input.extend_from_slice(public);
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input);
    let mut id = [0u8; 4];
    id.copy_from_slice(&hash.as_ref()[..4]);
    id
}

fn body(origin: &str, size: u64, root: &Hash, time: i64) -> String {
    format!("{origin}\n{size}\n{}\ntime {time}\n", STANDARD.encode(root))
}

impl Signer {
    /// Loads the key from `dir`, making one (readable by this user only) the first time.
    pub fn load_or_create(dir: &Path, origin: &str) -> Result<Self, CheckpointError> {
        let path = dir.join(KEY_FILE);
        let fail = |reason: String| CheckpointError::Key { path: path.clone(), reason };
        let der = match std::fs::read(&path) {
            Ok(der) => der,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|e| fail(e.to_string()))?;
                std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
                write_private(&path, der.as_ref()).map_err(|e| fail(e.to_string()))?;
                der.as_ref().to_vec()
            }
            Err(e) => return Err(fail(e.to_string())),
        };
        let key = Ed25519KeyPair::from_pkcs8(&der).map_err(|e| fail(e.to_string()))?;
        Ok(Self { key, origin: origin.to_owned() })
    }

    /// Loads the key from `dir` for checking only: `None` when there is none (never made here).
    pub fn load_existing(dir: &Path, origin: &str) -> Result<Option<Self>, CheckpointError> {
        if !dir.join(KEY_FILE).exists() {
            return Ok(None);
        }
        Self::load_or_create(dir, origin).map(Some)
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// Signs the tree of `size` records with root `root`.
    pub fn sign(&self, size: u64, root: Hash, time: i64) -> Checkpoint {
        let text = body(&self.origin, size, &root, time);
        let signature = self.key.sign(text.as_bytes());
        let mut blob = key_id(&self.origin, self.key.public_key().as_ref()).to_vec();
        blob.extend_from_slice(signature.as_ref());
        let note = format!("{text}\n\u{2014} {} {}\n", self.origin, STANDARD.encode(blob));
        Checkpoint { origin: self.origin.clone(), size, root, time, note }
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// Reads a signed note and checks its signature by `public` (the key named `origin`).
pub fn open(note: &str, origin: &str, public: &[u8]) -> Result<Checkpoint, CheckpointError> {
    let bad = |why: &str| CheckpointError::Malformed(why.to_owned());
    let (text, signatures) = note.split_once("\n\n").ok_or_else(|| bad("no blank line before the signatures"))?;
    let text = format!("{text}\n");
    let mut lines = text.lines();
    let (Some(named), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next()) else {
        return Err(bad("origin, size and root hash are required"));
    };
    if named != origin {
        return Err(bad("signed for another origin"));
    }
    let size: u64 = size.parse().map_err(|_| bad("the tree size is not a number"))?;
    let root: Hash = STANDARD
        .decode(root)
        .ok()
        .and_then(|r| r.try_into().ok())
        .ok_or_else(|| bad("the root is not a base64 SHA-256 hash"))?;
    let time = lines.find_map(|l| l.strip_prefix("time ")).and_then(|t| t.parse().ok()).unwrap_or(0);
    let id = key_id(origin, public);
    let verifier = UnparsedPublicKey::new(&signature::ED25519, public);
    let signed = signatures.lines().filter_map(|l| l.strip_prefix("\u{2014} ")).any(|line| {
        let Some((name, blob)) = line.split_once(' ') else { return false };
        let Ok(blob) = STANDARD.decode(blob.trim()) else { return false };
        name == origin && blob.len() == 68 && blob[..4] == id && verifier.verify(text.as_bytes(), &blob[4..]).is_ok()
    });
    if !signed {
        return Err(bad("no valid signature by this log's key"));
    }
    Ok(Checkpoint { origin: origin.to_owned(), size, root, time, note: note.to_owned() })
}

/// The leaf hashes of the first records of the log (from `have` on), read in pages; `progress`
/// hears how many leaves there are so far.
pub async fn extend_leaves(
    store: &dyn DurableStore,
    leaves: &mut Vec<Hash>,
    progress: impl FnMut(usize),
) -> Result<(), StoreError> {
    let have = leaves.len() as u64;
    read_leaves(store, have, |leaf| leaves.push(leaf), progress).await
}

/// Reads the records after the first `have`, in pages, and hands each one's leaf hash to `push`
/// in order; `progress` hears how many leaves there are so far. A gap in the sequence is an error.
async fn read_leaves(
    store: &dyn DurableStore,
    mut have: u64,
    mut push: impl FnMut(Hash),
    mut progress: impl FnMut(usize),
) -> Result<(), StoreError> {
    loop {
        let page = store.audit_hashes(have as i64, PAGE).await?;
        if page.is_empty() {
            return Ok(());
        }
        for (seq, hash) in &page {
            if *seq != have as i64 + 1 {
                return Err(StoreError::Corrupt(format!("audit record {} is missing", have + 1)));
            }
            push(merkle::leaf_hash(hash.as_bytes()));
            have += 1;
        }
        progress(have as usize);
    }
}

/// Stores `checkpoint` (one per size). `Ok(false)` when a checkpoint of that size was already
/// stored with the same root; an error naming the fork when its root differs.
pub async fn store(store: &dyn DurableStore, checkpoint: &Checkpoint, now_ms: i64) -> Result<bool, CheckpointError> {
    let id = format!("{:020}", checkpoint.size);
    let data = serde_json::to_string(checkpoint).map_err(|e| CheckpointError::Malformed(e.to_string()))?;
    let write = ResourceWrite { resource_type: RESOURCE, id: &id, data: &data, index: &[], now: now_ms };
    if store.create_resource_if_absent(write).await? {
        return Ok(true);
    }
    let existing = store.read_resource(RESOURCE, &id).await?;
    let existing: Option<Checkpoint> = existing.and_then(|e| serde_json::from_str(&e.data).ok());
    match existing {
        Some(e) if e.root == checkpoint.root => Ok(false),
        _ => Err(CheckpointError::Malformed(format!(
            "FORK: a checkpoint of size {} with another root is already stored",
            checkpoint.size
        ))),
    }
}

/// Every stored checkpoint (as stored: their signatures are checked by whoever relies on them).
pub async fn stored(store: &dyn DurableStore) -> Result<Vec<Checkpoint>, StoreError> {
    let mut out: Vec<Checkpoint> = store
        .list_resources(RESOURCE, 1_000_000)
        .await?
        .iter()
        .filter_map(|r| serde_json::from_str(&r.data).ok())
        .collect();
    out.sort_by_key(|c| c.size);
    Ok(out)
}

/// The signed notes in a witness file (notes appended one after another).
pub fn witness_notes(text: &str) -> Vec<String> {
    let mut notes = Vec::new();
    let mut current = String::new();
    for line in text.split_inclusive('\n') {
        current.push_str(line);
        if line.starts_with('\u{2014}') {
            notes.push(std::mem::take(&mut current));
        }
    }
    notes.into_iter().map(|n| n.trim_start_matches('\n').to_owned()).collect()
}

/// What `audit verify` concluded about the checkpoints against the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proven {
    /// Every checkpoint's tree is a prefix of the log.
    Consistent { checkpoints: usize, latest: u64 },
    /// The first checkpoint the log contradicts, and how.
    Contradicted(String),
}

/// Holds `checkpoints` (already opened: signatures checked) against the log's `leaves`.
pub fn prove_log(leaves: &[Hash], checkpoints: &[Checkpoint]) -> Proven {
    let mut sorted: Vec<&Checkpoint> = checkpoints.iter().collect();
    sorted.sort_by_key(|c| c.size);
    for pair in sorted.windows(2) {
        if pair[0].size == pair[1].size && pair[0].root != pair[1].root {
            return Proven::Contradicted(format!(
                "FORK: two checkpoints of size {} have different roots (two histories were signed)",
                pair[0].size
            ));
        }
    }
    for checkpoint in &sorted {
        let size = checkpoint.size as usize;
        if size > leaves.len() {
            return Proven::Contradicted(format!(
                "CUT TAIL: a checkpoint signed the log at {size} records, but it holds {}: records {} to {size} \
                 were deleted",
                leaves.len(),
                leaves.len() + 1
            ));
        }
        if merkle::root(&leaves[..size]) != checkpoint.root {
            return Proven::Contradicted(format!(
                "REWRITTEN: the first {size} records are not the ones the checkpoint of that size signed"
            ));
        }
    }
    Proven::Consistent { checkpoints: sorted.len(), latest: sorted.last().map_or(0, |c| c.size) }
}

/// Checks the whole log against every checkpoint the store and the witness file hold: each
/// note's signature by this log's key, then every tree a prefix of the records (`progress` hears
/// how many records were read). A log that never signed a checkpoint is consistent with none.
pub async fn verify_log(
    store: &dyn DurableStore,
    config: &crate::config::Config,
    progress: impl FnMut(usize),
) -> Result<Proven, CheckpointError> {
    let mut leaves = Vec::new();
    extend_leaves(store, &mut leaves, progress).await?;
    let mut notes: Vec<String> = stored(store).await?.into_iter().map(|c| c.note).collect();
    if let Some(file) = &config.audit.witness_file {
        match std::fs::read_to_string(file) {
            Ok(text) => notes.extend(witness_notes(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CheckpointError::Malformed(format!("the witness file: {e}"))),
        }
    }
    if notes.is_empty() {
        return Ok(Proven::Consistent { checkpoints: 0, latest: 0 });
    }
    let Some(signer) = Signer::load_existing(&config.keys.dir, &config.checkpoint_origin())? else {
        return Err(CheckpointError::Key {
            path: config.keys.dir.join(KEY_FILE),
            reason: "missing: the log's checkpoints cannot be checked without the key that signed them".into(),
        });
    };
    let mut opened = Vec::with_capacity(notes.len());
    for note in &notes {
        match open(note, signer.origin(), &signer.public_key()) {
            Ok(checkpoint) => opened.push(checkpoint),
            Err(e) => {
                let size = note.lines().nth(1).unwrap_or("?");
                return Ok(Proven::Contradicted(format!(
                    "FORGED: the checkpoint of size {size} does not verify ({e})"
                )));
            }
        }
    }
    Ok(prove_log(&leaves, &opened))
}

/// An inclusion proof of record `seq` against the newest stored checkpoint that covers it, as
/// JSON anyone can check with RFC 9162 §2.1.3.2 and the checkpoint's signed note.
pub async fn prove_record(
    store: &dyn DurableStore,
    config: &crate::config::Config,
    seq: u64,
) -> Result<serde_json::Value, CheckpointError> {
    let mut leaves = Vec::new();
    extend_leaves(store, &mut leaves, |_| {}).await?;
    let signer = Signer::load_existing(&config.keys.dir, &config.checkpoint_origin())?.ok_or_else(|| {
        CheckpointError::Malformed("no checkpoint key in keys.dir: no checkpoint was ever signed here".into())
    })?;
    let checkpoint = stored(store)
        .await?
        .into_iter()
        .rev()
        .find(|c| c.size >= seq && seq >= 1)
        .ok_or_else(|| CheckpointError::Malformed(format!("no checkpoint covers record {seq} yet")))?;
    let checkpoint = open(&checkpoint.note, signer.origin(), &signer.public_key())?;
    let size = checkpoint.size as usize;
    if size > leaves.len() {
        return Err(CheckpointError::Malformed(format!(
            "the log holds fewer records than its checkpoint of size {size}"
        )));
    }
    let index = (seq - 1) as usize;
    let record = store.audit_records(index as i64, 1).await?.into_iter().next();
    let proof = merkle::inclusion_proof(index, &leaves[..size]);
    Ok(serde_json::json!({
        "record": seq,
        "leaf_index": index,
        "leaf_input": record.map(|r| r.hash),
        "leaf_hash": STANDARD.encode(leaves[index]),
        "tree_size": size,
        "root": STANDARD.encode(checkpoint.root),
        "inclusion_proof": proof.iter().map(|h| STANDARD.encode(h)).collect::<Vec<_>>(),
        "checkpoint": checkpoint.note,
        "public_key": STANDARD.encode(signer.public_key()),
    }))
}

/// A node's checkpointing: its signer, the tree of the records read so far (its frontier: the
/// state stays O(log n) however long the log grows, and a tick hashes only what is new), the last
/// checkpoint it knows.
pub struct Checkpointer {
    signer: Signer,
    tree: tokio::sync::Mutex<merkle::Frontier>,
    /// (size, time) of the newest checkpoint known; `None` until the stored ones were read.
    last: parking_lot::Mutex<Option<(u64, i64)>>,
    config: crate::config::AuditConfig,
    http: reqwest::Client,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer").field("signer", &self.signer).finish_non_exhaustive()
    }
}

impl Checkpointer {
    pub fn new(config: &crate::config::Config) -> Result<Self, CheckpointError> {
        let signer = Signer::load_or_create(&config.keys.dir, &config.checkpoint_origin())?;
        let http = crate::outbound::client_builder(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        Ok(Self {
            signer,
            tree: tokio::sync::Mutex::new(merkle::Frontier::default()),
            last: parking_lot::Mutex::new(None),
            config: config.audit.clone(),
            http,
        })
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Signs, stores and publishes a checkpoint of the log as it stands when one is due (enough
    /// new records, or time with any), or whenever there is anything new with `force`.
    pub async fn tick(
        &self,
        store: &dyn DurableStore,
        now: i64,
        now_ms: i64,
        force: bool,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let known = *self.last.lock();
        let (last_size, last_time) = match known {
            Some(last) => last,
            None => {
                let newest = stored(store).await?.last().map_or((0, now), |c| (c.size, c.time));
                *self.last.lock() = Some(newest);
                newest
            }
        };
        let mut tree = self.tree.lock().await;
        let have = tree.len();
        read_leaves(store, have, |leaf| tree.push(leaf), |_| {}).await?;
        let size = tree.len();
        let new = size.saturating_sub(last_size);
        let due = new > 0
            && (force
                || new >= self.config.checkpoint_every_records
                || now - last_time >= self.config.checkpoint_every_secs as i64);
        if !due {
            return Ok(None);
        }
        let checkpoint = self.signer.sign(size, tree.root(), now);
        drop(tree);
        self::store(store, &checkpoint, now_ms).await?;
        *self.last.lock() = Some((size, now));
        self.publish(&checkpoint).await;
        Ok(Some(checkpoint))
    }

    /// Hands the checkpoint to the configured witnesses; a witness that fails is logged (the
    /// checkpoint stays stored, and the next one covers this one).
    async fn publish(&self, checkpoint: &Checkpoint) {
        if let Some(file) = &self.config.witness_file {
            use std::io::Write as _;
            let appended = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .and_then(|mut f| f.write_all(checkpoint.note.as_bytes()));
            if let Err(e) = appended {
                tracing::error!(error = %e, file = %file.display(), "audit checkpoint not written to the witness file");
            }
        }
        if let Some(url) = &self.config.witness_url {
            let sent =
                self.http.post(url).header("content-type", "text/plain").body(checkpoint.note.clone()).send().await;
            match sent {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::error!(status = r.status().as_u16(), "the audit witness refused the checkpoint"),
                Err(e) => tracing::error!(error = %e, "the audit witness could not be reached"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_opens_only_with_its_key_origin_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::load_or_create(dir.path(), "carebroker.test/audit").unwrap();
        let again = Signer::load_or_create(dir.path(), "carebroker.test/audit").unwrap();
        assert_eq!(signer.public_key(), again.public_key(), "the key is kept");
        let root = merkle::leaf_hash(b"x");
        let checkpoint = signer.sign(7, root, 1_764_662_400);
        assert!(checkpoint.note.starts_with("carebroker.test/audit\n7\n"));
        assert!(checkpoint.note.contains("\n\n\u{2014} carebroker.test/audit "));
        let opened = open(&checkpoint.note, "carebroker.test/audit", &signer.public_key()).unwrap();
        assert_eq!((opened.size, opened.root, opened.time), (7, root, 1_764_662_400));
        let other = Signer::load_or_create(tempfile::tempdir().unwrap().path(), "carebroker.test/audit").unwrap();
        assert!(open(&checkpoint.note, "carebroker.test/audit", &other.public_key()).is_err(), "another key");
        assert!(
            open(&checkpoint.note.replacen("\n7\n", "\n8\n", 1), "carebroker.test/audit", &signer.public_key())
                .is_err()
        );
        assert!(open(&checkpoint.note, "other/audit", &signer.public_key()).is_err());
        assert_eq!(witness_notes(&format!("{}{}", checkpoint.note, checkpoint.note)).len(), 2);
    }

    #[test]
    fn a_cut_tail_a_rewrite_and_a_fork_are_named() {
        let leaves: Vec<Hash> = (0..10).map(|i| merkle::leaf_hash(&[i])).collect();
        let signer = Signer::load_or_create(tempfile::tempdir().unwrap().path(), "o").unwrap();
        let at = |n: usize, l: &[Hash]| signer.sign(n as u64, merkle::root(&l[..n]), 0);
        let good = [at(4, &leaves), at(10, &leaves)];
        assert_eq!(prove_log(&leaves, &good), Proven::Consistent { checkpoints: 2, latest: 10 });
        assert!(matches!(prove_log(&leaves[..8], &good), Proven::Contradicted(m) if m.starts_with("CUT TAIL")));
        let mut rewritten = leaves.clone();
        rewritten[2] = merkle::leaf_hash(b"edited");
        assert!(matches!(prove_log(&rewritten, &good), Proven::Contradicted(m) if m.starts_with("REWRITTEN")));
        let fork = [at(10, &leaves), at(10, &rewritten)];
        assert!(matches!(prove_log(&leaves, &fork), Proven::Contradicted(m) if m.starts_with("FORK")));
    }
}
