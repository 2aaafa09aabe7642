//! The Merkle tree of RFC 9162 §2.1 (certificate transparency) over the audit log: leaf `i` is
//! the chain hash of audit record `i + 1`. `SHA-256(0x00 || leaf)` for leaves and
//! `SHA-256(0x01 || left || right)` for nodes, the tree split at the largest power of two below
//! its size. Inclusion proofs (§2.1.3) and consistency proofs (§2.1.4) are the RFC's, so anyone
//! can check them with the RFC's algorithms and nothing of carebroker's.

use aws_lc_rs::digest::{Context, SHA256};

pub type Hash = [u8; 32];

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut context = Context::new(&SHA256);
    for part in parts {
        context.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

pub fn leaf_hash(leaf: &[u8]) -> Hash {
    sha256(&[&[0x00], leaf])
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[0x01], left, right])
}

/// The largest power of two smaller than `n` (`n` > 1).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// The root of the tree over these leaf hashes (MTH; the empty tree's is `SHA-256("")`).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => sha256(&[]),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The tree as it grows, kept as the roots of its perfect subtrees (one per set bit of its
/// size, largest first): appending a leaf costs one hash amortised and the state is O(log n),
/// where [`root`] over every leaf costs n hashes each time. A node that signs checkpoints as its
/// log grows keeps this instead of every leaf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// (height, root) of each perfect subtree, left to right: heights strictly decrease.
    peaks: Vec<(u32, Hash)>,
}

impl Frontier {
    pub fn len(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Appends the next leaf hash: two subtrees of the same height merge, as a binary counter
    /// carries.
    pub fn push(&mut self, leaf: Hash) {
        let mut carry = (0, leaf);
        while let Some(&(height, left)) = self.peaks.last() {
            if height != carry.0 {
                break;
            }
            self.peaks.pop();
            carry = (height + 1, node_hash(&left, &carry.1));
        }
        self.peaks.push(carry);
        self.size += 1;
    }

    /// MTH of the leaves pushed so far: the perfect subtrees folded from the right, which is
    /// [`root`]'s split at the largest power of two below the size, applied all the way down.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(&(_, mut acc)) = peaks.next() else { return sha256(&[]) };
        for (_, left) in peaks {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// The audit path of leaf `index` in the tree over `leaves` (PATH, §2.1.3.1), leaf side first.
pub fn inclusion_proof(index: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 || index >= n {
        return Vec::new();
    }
    let k = split(n);
    if index < k {
        let mut path = inclusion_proof(index, &leaves[..k]);
        path.push(root(&leaves[k..]));
        path
    } else {
        let mut path = inclusion_proof(index - k, &leaves[k..]);
        path.push(root(&leaves[..k]));
        path
    }
}

/// Checks an inclusion proof (§2.1.3.2): that `leaf` is leaf `index` of the tree of `size`
/// leaves whose root is `root`.
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// The consistency proof between the tree of the first `m` leaves and the tree of all of them
/// (PROOF, §2.1.4.1).
pub fn consistency_proof(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    fn subproof(m: usize, leaves: &[Hash], complete: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if complete { Vec::new() } else { vec![root(leaves)] };
        }
        let k = split(n);
        if m <= k {
            let mut proof = subproof(m, &leaves[..k], complete);
            proof.push(root(&leaves[k..]));
            proof
        } else {
            let mut proof = subproof(m - k, &leaves[k..], false);
            proof.push(root(&leaves[..k]));
            proof
        }
    }
    if m == 0 || m > leaves.len() {
        return Vec::new();
    }
    subproof(m, leaves, true)
}

/// Checks a consistency proof (§2.1.4.2): the tree of `size1` leaves with root `root1` is a
/// prefix of the tree of `size2` leaves with root `root2`.
pub fn verify_consistency(size1: u64, size2: u64, root1: &Hash, root2: &Hash, proof: &[Hash]) -> bool {
    if size1 == size2 {
        return proof.is_empty() && root1 == root2;
    }
    if size1 == 0 || size1 > size2 || proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if size1.is_power_of_two() {
        path.insert(0, *root1);
    }
    let (mut fn_, mut sn) = (size1 - 1, size2 - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    fr == *root1 && sr == *root2 && sn == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(format!("record {i}").as_bytes())).collect()
    }

    #[test]
    fn the_frontier_has_the_same_root_as_the_whole_tree_at_every_size() {
        let all = leaves(300);
        let mut frontier = Frontier::default();
        assert_eq!(frontier.root(), root(&[]));
        for n in 1..=all.len() {
            frontier.push(all[n - 1]);
            assert_eq!(frontier.len(), n as u64);
            assert_eq!(frontier.root(), root(&all[..n]), "size {n}");
            assert_eq!(frontier.peaks.len() as u32, (n as u64).count_ones(), "one peak per set bit of {n}");
        }
        let mut other = Frontier::default();
        for (i, leaf) in all.iter().enumerate() {
            other.push(if i == 150 { leaf_hash(b"edited") } else { *leaf });
        }
        assert_ne!(other.root(), frontier.root(), "one leaf changed changes the root");
    }

    #[test]
    fn the_rfc_shapes_hold() {
        let l = leaves(3);
        assert_eq!(root(&l), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
        assert_eq!(root(&[]), sha256(&[]));
        assert_ne!(leaf_hash(b"x"), sha256(&[b"x"]), "leaves are domain-separated");
    }

    #[test]
    fn every_inclusion_and_consistency_proof_verifies_and_a_wrong_one_does_not() {
        for n in 1..=33 {
            let all = leaves(n);
            let r = root(&all);
            for i in 0..n {
                let proof = inclusion_proof(i, &all);
                assert!(verify_inclusion(i as u64, n as u64, &all[i], &proof, &r), "leaf {i} of {n}");
                let other = leaf_hash(b"forged");
                assert!(!verify_inclusion(i as u64, n as u64, &other, &proof, &r));
                if n > 1 {
                    assert!(
                        !verify_inclusion(((i + 1) % n) as u64, n as u64, &all[i], &proof, &r)
                            || all[i] == all[(i + 1) % n]
                    );
                }
            }
            for m in 1..=n {
                let proof = consistency_proof(m, &all);
                let r1 = root(&all[..m]);
                assert!(verify_consistency(m as u64, n as u64, &r1, &r, &proof), "{m} -> {n}");
                if m < n {
                    // a rewritten prefix is not consistent
                    let mut changed = all.clone();
                    changed[0] = leaf_hash(b"rewritten");
                    assert!(!verify_consistency(m as u64, n as u64, &root(&changed[..m]), &r, &proof), "{m} -> {n}");
                }
            }
        }
    }
}
