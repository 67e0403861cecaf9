//! A content hash that is the same on every platform, run and release, so
//! that a spec's hash can be stored and compared later (change detection
//! without deep compares).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A 64-bit hash over an explicit encoding, a 64-bit word at a time.
///
/// `std::hash::DefaultHasher` is not guaranteed to stay the same between
/// Rust releases, and `Hash` impls feed platform-sized integers; neither is
/// acceptable for a hash that is persisted. Every input here is written with
/// a fixed width and, for variable-length data, a length prefix.
///
/// Each word is mixed in with one multiply and one shift, both bijective,
/// so inputs of the same shape that differ in one word never collide; the
/// result goes through MurmurHash3's 64-bit finaliser. (A byte-at-a-time
/// hash costs a dependent multiply per byte, and the specs of a large tree
/// are hashed on every derivation.)
#[derive(Clone, Debug)]
pub struct StableHasher {
    state: u64,
}

const SEED: u64 = 0xcbf2_9ce4_8422_2325;
const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

impl StableHasher {
    /// A hasher in its initial state.
    #[must_use]
    pub const fn new() -> Self {
        Self { state: SEED }
    }

    fn mix(&mut self, word: u64) {
        let s = (self.state ^ word).wrapping_mul(MULTIPLIER);
        self.state = s ^ (s >> 32);
    }

    /// Feeds raw bytes, followed by their length.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            self.mix(u64::from_le_bytes(w));
        }
        let tail = words.remainder();
        if !tail.is_empty() {
            let mut w = [0u8; 8];
            w[..tail.len()].copy_from_slice(tail);
            self.mix(u64::from_le_bytes(w));
        }
        self.mix(bytes.len() as u64);
    }

    /// Feeds one byte.
    pub fn write_u8(&mut self, b: u8) {
        self.mix(u64::from(b));
    }

    /// Feeds a `u64`.
    pub fn write_u64(&mut self, v: u64) {
        self.mix(v);
    }

    /// Feeds a string (its bytes and their length).
    pub fn write_str(&mut self, s: &str) {
        self.write_bytes(s.as_bytes());
    }

    /// The hash of everything fed so far.
    #[must_use]
    pub const fn finish(&self) -> u64 {
        let mut h = self.state;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
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

    /// The hash is persisted and compared across runs and releases: these
    /// values must never change.
    const PINNED: [u64; 2] = [17_280_346_270_528_514_342, 95_315_523_996_122_545];

    #[test]
    fn stays_the_same_across_releases() {
        let h = StableHasher::new();
        assert_eq!(h.finish(), PINNED[0]);
        let mut h = StableHasher::new();
        h.write_str("plant/line-1");
        h.write_u64(502);
        h.write_u8(1);
        assert_eq!(h.finish(), PINNED[1]);
    }

    #[test]
    fn trailing_zero_bytes_and_word_boundaries_change_the_hash() {
        let of = |bytes: &[u8]| {
            let mut h = StableHasher::new();
            h.write_bytes(bytes);
            h.finish()
        };
        assert_ne!(of(b"a"), of(b"a\0"));
        assert_ne!(of(b"abcdefg"), of(b"abcdefg\0"));
        assert_ne!(of(b"abcdefgh"), of(b"abcdefgh\0"));
        assert_ne!(of(b""), of(b"\0"));
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
