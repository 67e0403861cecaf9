//! A content hash that is the same on every platform, run and release, so
//! that a spec's hash can be stored and compared later (change detection
//! without deep compares).

use std::fmt;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3Default;

/// A 128-bit hash (XXH3-128) over an explicit encoding.
///
/// `std::hash::DefaultHasher` is not guaranteed to stay the same between
/// Rust releases, and `Hash` impls feed platform-sized integers; neither is
/// acceptable for a hash that is persisted. Every input here is written with
/// a fixed width, little-endian, and, for variable-length data, followed by
/// its length.
///
/// 128 bits, so that a changed spec is never taken for the old one by a
/// collision and its update skipped: at 64 bits the chance is small but
/// real over a long-lived tree of 100,000 nodes, at 128 bits it is nil.
/// Most inputs (a spec, a context) are short: they are gathered in a
/// buffer on the stack and hashed in one pass at the end, which for up to
/// 240 bytes is XXH3's fastest path and far cheaper than feeding its
/// streaming state field by field. Longer inputs stream, a buffer at a
/// time. Either way the hash is XXH3-128 of the same bytes.
#[derive(Clone)]
pub struct StableHasher {
    /// What is fed and not yet streamed: `buf[..len]`.
    buf: [u8; BUFFER],
    len: usize,
    /// Once more than a buffer was fed: the streaming state.
    stream: Option<Xxh3Default>,
}

/// Bytes gathered before streaming (XXH3 hashes up to 240 in one pass
/// without its streaming state).
const BUFFER: usize = 240;

impl fmt::Debug for StableHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StableHasher").finish_non_exhaustive()
    }
}

impl StableHasher {
    /// A hasher in its initial state.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            buf: [0; BUFFER],
            len: 0,
            stream: None,
        }
    }

    /// Feeds bytes as they are (no length).
    fn feed(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if let Some(slot) = self.buf.get_mut(self.len..end) {
            slot.copy_from_slice(bytes);
            self.len = end;
            return;
        }
        let stream = self.stream.get_or_insert_with(Xxh3Default::new);
        stream.update(&self.buf[..self.len]);
        self.len = 0;
        if bytes.len() > BUFFER {
            stream.update(bytes);
        } else {
            self.buf[..bytes.len()].copy_from_slice(bytes);
            self.len = bytes.len();
        }
    }

    /// Feeds raw bytes, followed by their length.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        self.feed(bytes);
        self.write_u64(bytes.len() as u64);
    }

    /// Feeds one byte.
    pub fn write_u8(&mut self, b: u8) {
        self.feed(&[b]);
    }

    /// Feeds a `u64`.
    pub fn write_u64(&mut self, v: u64) {
        self.feed(&v.to_le_bytes());
    }

    /// Feeds a `u128` (such as a [`SpecHash`]).
    pub fn write_u128(&mut self, v: u128) {
        self.feed(&v.to_le_bytes());
    }

    /// Feeds a string (its bytes and their length).
    pub fn write_str(&mut self, s: &str) {
        self.write_bytes(s.as_bytes());
    }

    /// The 128-bit hash of everything fed so far.
    #[must_use]
    pub fn finish(&self) -> u128 {
        let rest = &self.buf[..self.len];
        match &self.stream {
            None => xxhash_rust::xxh3::xxh3_128(rest),
            Some(stream) => {
                let mut stream = stream.clone();
                stream.update(rest);
                stream.digest128()
            }
        }
    }

    /// The low 64 bits of [`finish`](Self::finish), for where 64 bits are
    /// what is needed (seeding a random number generator).
    #[must_use]
    pub fn finish_u64(&self) -> u64 {
        // Truncation on purpose: the low half of XXH3-128 is a 64-bit hash.
        self.finish() as u64
    }
}

impl Default for StableHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// The stable 128-bit content hash of a spec. Two specs with equal content
/// have equal hashes; a changed spec has a different one (a collision at
/// 128 bits is not a practical concern).
///
/// The value is persisted and compared across runs: for the same input it
/// is the same on every platform and in every release.
///
/// Held as two `u64` halves (high first, so the order is the number's):
/// a `u128` would make every struct that holds one 16-byte aligned, and
/// nodes hold several. Serialised as the `u128`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "u128", into = "u128")]
pub struct SpecHash([u64; 2]);

impl SpecHash {
    /// The hash whose value is `value`.
    #[must_use]
    pub const fn from_u128(value: u128) -> Self {
        // Truncation intended: the two halves.
        #[allow(clippy::cast_possible_truncation)]
        Self([(value >> 64) as u64, value as u64])
    }

    /// The hash's value.
    #[must_use]
    pub const fn as_u128(self) -> u128 {
        ((self.0[0] as u128) << 64) | self.0[1] as u128
    }

    /// The hash of a sequence of hashes (its length and each in order), for
    /// a list whose items are hashed already.
    ///
    /// ```
    /// use fsm_core::SpecHash;
    ///
    /// let (a, b) = (SpecHash::from_u128(1), SpecHash::from_u128(2));
    /// assert_ne!(SpecHash::of_list(&[a, b]), SpecHash::of_list(&[b, a]));
    /// assert_ne!(SpecHash::of_list(&[]), SpecHash::of_list(&[SpecHash::from_u128(0)]));
    /// ```
    #[must_use]
    pub fn of_list(hashes: &[SpecHash]) -> SpecHash {
        let mut h = StableHasher::new();
        h.write_u64(hashes.len() as u64);
        for x in hashes {
            h.write_u128(x.as_u128());
        }
        SpecHash::from_u128(h.finish())
    }
}

impl From<u128> for SpecHash {
    fn from(value: u128) -> Self {
        Self::from_u128(value)
    }
}

impl From<SpecHash> for u128 {
    fn from(hash: SpecHash) -> Self {
        hash.as_u128()
    }
}

impl fmt::Debug for SpecHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpecHash({:032x})", self.as_u128())
    }
}

impl fmt::Display for SpecHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.as_u128())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash is persisted and compared across runs and releases: these
    /// values must never change. (Computed once, when the hash became
    /// XXH3-128; a change here breaks every stored hash.)
    const PINNED: [u128; 2] = [
        0x99aa_06d3_0147_98d8_6001_c324_468d_497f,
        0xfcd8_9221_c71b_da8e_603f_d03b_a143_7161,
    ];

    #[test]
    fn short_and_long_inputs_hash_as_xxh3_128_of_their_bytes_however_they_are_fed() {
        // Across the buffer's end, in pieces of every size up to twice it.
        let bytes: Vec<u8> = (0..2_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for total in [0, 1, 239, 240, 241, 480, 481, 1_999] {
            for piece in [1, 7, 240, 241, 500] {
                let mut h = StableHasher::new();
                for chunk in bytes[..total].chunks(piece) {
                    h.feed(chunk);
                }
                assert_eq!(
                    h.finish(),
                    xxhash_rust::xxh3::xxh3_128(&bytes[..total]),
                    "{total} bytes fed {piece} at a time"
                );
                // `finish` does not consume: more can be fed after it.
                h.write_u8(9);
                let mut more = bytes[..total].to_vec();
                more.push(9);
                assert_eq!(h.finish(), xxhash_rust::xxh3::xxh3_128(&more));
            }
        }
    }

    #[test]
    fn stays_the_same_across_releases() {
        let h = StableHasher::new();
        assert_eq!(h.finish(), PINNED[0]);
        let mut h = StableHasher::new();
        h.write_str("plant/line-1");
        h.write_u64(502);
        h.write_u8(1);
        assert_eq!(h.finish(), PINNED[1]);
        // The encoding is exactly the documented one: bytes, then their
        // length, numbers little-endian; whatever chunks they are fed in.
        let mut encoding = b"plant/line-1".to_vec();
        encoding.extend_from_slice(&12u64.to_le_bytes());
        encoding.extend_from_slice(&502u64.to_le_bytes());
        encoding.push(1);
        assert_eq!(xxhash_rust::xxh3::xxh3_128(&encoding), PINNED[1]);
        assert_eq!(h.finish_u64(), PINNED[1] as u64);
    }

    #[test]
    fn the_hash_is_128_bits_wide_and_inputs_one_field_apart_differ_in_both_halves() {
        let spec = |port: i64| {
            let mut h = StableHasher::new();
            h.write_str("plant/line-1/pump");
            h.write_u64(port as u64);
            SpecHash::from_u128(h.finish())
        };
        assert_eq!(std::mem::size_of::<SpecHash>(), 16);
        assert_eq!(std::mem::align_of::<SpecHash>(), 8);
        let (a, b) = (spec(502), spec(503));
        assert_ne!(a.as_u128() as u64, b.as_u128() as u64, "low halves");
        assert_ne!(a.as_u128() >> 64, b.as_u128() >> 64, "high halves");
        assert_eq!(a.to_string().len(), 32);
        // A long input (past XXH3's internal buffer) stays stable too.
        let mut long = StableHasher::new();
        for i in 0..1_000u64 {
            long.write_u64(i);
        }
        let words: Vec<u8> = (0..1_000u64).flat_map(u64::to_le_bytes).collect();
        assert_eq!(long.finish(), xxhash_rust::xxh3::xxh3_128(&words));
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

#[cfg(test)]
mod repr_tests {
    use super::SpecHash;

    #[test]
    fn a_hash_orders_serialises_and_prints_as_its_u128() {
        let values = [
            0,
            1,
            u128::from(u64::MAX),
            u128::from(u64::MAX) + 1,
            u128::MAX,
        ];
        for pair in values.windows(2) {
            let (a, b) = (SpecHash::from_u128(pair[0]), SpecHash::from_u128(pair[1]));
            assert!(a < b, "{a:?} < {b:?}");
            assert_eq!(a.as_u128(), pair[0]);
        }
        let hash = SpecHash::from_u128(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        assert_eq!(hash.to_string(), "0123456789abcdeffedcba9876543210");
        let json = serde_json::to_string(&hash).unwrap_or_default();
        let as_number = serde_json::to_string(&hash.as_u128()).unwrap_or_default();
        assert_eq!(json, as_number);
        let back: SpecHash = serde_json::from_str(&json).unwrap_or(SpecHash::from_u128(0));
        assert_eq!(back, hash);
    }
}
