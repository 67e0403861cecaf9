//! A content hash that is the same on every platform, run and release, so
//! that a spec's hash can be stored and compared later (change detection
//! without deep compares).

use std::fmt;

use serde::{Deserialize, Serialize};

/// 64-bit FNV-1a over an explicit byte encoding.
///
/// `std::hash::DefaultHasher` is not guaranteed to stay the same between
/// Rust releases, and `Hash` impls feed platform-sized integers; neither is
/// acceptable for a hash that is persisted. Every input here is written with
/// a fixed width and, for variable-length data, a length prefix.
#[derive(Clone, Debug)]
pub struct StableHasher {
    state: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl StableHasher {
    /// A hasher in its initial state.
    #[must_use]
    pub const fn new() -> Self {
        Self { state: FNV_OFFSET }
    }

    /// Feeds raw bytes.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.state ^= u64::from(*b);
            self.state = self.state.wrapping_mul(FNV_PRIME);
        }
    }

    /// Feeds one byte (used for type tags).
    pub fn write_u8(&mut self, b: u8) {
        self.write_bytes(&[b]);
    }

    /// Feeds a `u64`, little-endian.
    pub fn write_u64(&mut self, v: u64) {
        self.write_bytes(&v.to_le_bytes());
    }

    /// Feeds a string with its length, so `"ab","c"` differs from `"a","bc"`.
    pub fn write_str(&mut self, s: &str) {
        self.write_u64(s.len() as u64);
        self.write_bytes(s.as_bytes());
    }

    /// The hash of everything fed so far.
    #[must_use]
    pub const fn finish(&self) -> u64 {
        self.state
    }
}

impl Default for StableHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// The stable content hash of a spec. Two specs with equal content have equal
/// hashes; a changed spec (almost certainly) has a different one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SpecHash(pub u64);

impl SpecHash {
    /// The hash of a sequence of hashes (its length and each in order), for
    /// a list whose items are hashed already.
    ///
    /// ```
    /// use fsm_core::SpecHash;
    ///
    /// let (a, b) = (SpecHash(1), SpecHash(2));
    /// assert_ne!(SpecHash::of_list(&[a, b]), SpecHash::of_list(&[b, a]));
    /// assert_ne!(SpecHash::of_list(&[]), SpecHash::of_list(&[SpecHash(0)]));
    /// ```
    #[must_use]
    pub fn of_list(hashes: &[SpecHash]) -> SpecHash {
        let mut h = StableHasher::new();
        h.write_u64(hashes.len() as u64);
        for x in hashes {
            h.write_u64(x.0);
        }
        SpecHash(h.finish())
    }
}

impl fmt::Debug for SpecHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpecHash({:016x})", self.0)
    }
}

impl fmt::Display for SpecHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_fnv1a_vectors() {
        let mut h = StableHasher::new();
        assert_eq!(h.finish(), 0xcbf2_9ce4_8422_2325);
        h.write_bytes(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn length_prefix_separates_adjacent_strings() {
        let mut a = StableHasher::new();
        a.write_str("ab");
        a.write_str("c");
        let mut b = StableHasher::new();
        b.write_str("a");
        b.write_str("bc");
        assert_ne!(a.finish(), b.finish());
    }
}
