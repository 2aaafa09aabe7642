//! The audit hash chain as plain data: each record's hash covers its sequence number, time, body
//! and the previous record's hash, so an edited, deleted or reordered record breaks the chain.

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "genesis";

/// `base64url(SHA-256(prev_hash | seq | time_ms | data))`, with `|` separators so fields cannot
/// run into each other.
pub fn chain_hash(prev_hash: &str, seq: i64, time_ms: i64, data: &str) -> String {
    let input = format!("{prev_hash}|{seq}|{time_ms}|{data}");
    URL_SAFE_NO_PAD.encode(digest(&SHA256, input.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_changes_the_hash() {
        let base = chain_hash(GENESIS_HASH, 1, 1000, "{}");
        assert_ne!(base, chain_hash("other", 1, 1000, "{}"));
        assert_ne!(base, chain_hash(GENESIS_HASH, 2, 1000, "{}"));
        assert_ne!(base, chain_hash(GENESIS_HASH, 1, 1001, "{}"));
        assert_ne!(base, chain_hash(GENESIS_HASH, 1, 1000, "{ }"));
        assert_eq!(base, chain_hash(GENESIS_HASH, 1, 1000, "{}"));
    }
}
