//! [`Map`] and its [`Key`]: the shape of a user spec.
//!
//! A spec's map holds a handful of keys and is cloned (a parent derives its
//! children's specs from one), hashed and walked far more often than it is
//! changed. So the map is one sorted vector, not a tree of 600-byte nodes,
//! and a key is a string that lives inline up to 23 bytes (longer ones are
//! shared): cloning a spec's map is one allocation, however many keys it
//! has.

use std::borrow::Borrow;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smol_str::SmolStr;

use super::Value;

/// A map key: an immutable string that clones without allocating (inline up
/// to 23 bytes, shared beyond).
///
/// It reads as a `&str` ([`Deref`](std::ops::Deref), [`Key::as_str`]) and is
/// made from any string (`"name".into()`).
///
/// # Examples
///
/// ```
/// use fsm_core::Key;
///
/// let key = Key::from("host");
/// assert_eq!(key, "host");
/// assert_eq!(key.len(), 4);
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Key(SmolStr);

impl Key {
    /// A key from a static string (no copy, whatever its length).
    #[must_use]
    pub const fn from_static(key: &'static str) -> Self {
        Self(SmolStr::new_static(key))
    }

    /// The key as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl std::ops::Deref for Key {
    type Target = str;

    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        self.0.as_str()
    }
}

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0.as_str(), f)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl From<&str> for Key {
    fn from(key: &str) -> Self {
        Self(SmolStr::new(key))
    }
}

impl From<&String> for Key {
    fn from(key: &String) -> Self {
        Self(SmolStr::new(key))
    }
}

impl From<String> for Key {
    fn from(key: String) -> Self {
        Self(SmolStr::from(key))
    }
}

impl From<Key> for String {
    fn from(key: Key) -> Self {
        key.0.into()
    }
}

impl PartialEq<str> for Key {
    fn eq(&self, other: &str) -> bool {
        self.0.as_str() == other
    }
}

impl PartialEq<&str> for Key {
    fn eq(&self, other: &&str) -> bool {
        self.0.as_str() == *other
    }
}

impl PartialEq<String> for Key {
    fn eq(&self, other: &String) -> bool {
        self.0.as_str() == other
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key::from(v))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Key, E> {
                Ok(Key::from(v))
            }

            // As `String` does: formats that hand strings over as bytes.
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Key, E> {
                match std::str::from_utf8(v) {
                    Ok(s) => Ok(Key::from(s)),
                    Err(_) => Err(E::invalid_value(serde::de::Unexpected::Bytes(v), &self)),
                }
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// An ordered map of string keys to values: the shape of a user spec.
///
/// Its API is that of a `BTreeMap<String, Value>` (entries in key order, a
/// later insert of a key replaces the earlier one), kept as one sorted
/// vector: lookups are binary searches, an insert in the middle moves the
/// entries after it (a spec's map is small; one built from many entries is
/// best built with [`collect`](Iterator::collect) or
/// [`extend`](Extend::extend), which sort once).
///
/// # Examples
///
/// ```
/// use fsm_core::{Map, Value};
///
/// let mut map = Map::new();
/// map.insert("port", Value::from(502));
/// map.insert("host", Value::from("10.0.0.5"));
/// assert_eq!(map.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["host", "port"]);
/// assert_eq!(map.get("port"), Some(&Value::from(502)));
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct Map {
    /// Sorted by key, each key once.
    entries: Vec<(Key, Value)>,
}

impl Map {
    /// An empty map (no allocation).
    #[must_use]
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// An empty map with room for `capacity` entries.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Vec::with_capacity(capacity),
        }
    }

    /// The number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map has no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// The value of `key`, if present.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    /// The value of `key`, mutably, if present.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.find(key).ok().map(|i| &mut self.entries[i].1)
    }

    /// Whether `key` is present.
    #[must_use]
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`, returning the value it replaced.
    pub fn insert(&mut self, key: impl Into<Key>, value: Value) -> Option<Value> {
        let key = key.into();
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    /// The value of `key`, inserted first from `make` if it is missing.
    pub fn get_or_insert_with(
        &mut self,
        key: impl Into<Key>,
        make: impl FnOnce() -> Value,
    ) -> &mut Value {
        let key = key.into();
        let i = match self.find(&key) {
            Ok(i) => i,
            Err(i) => {
                self.entries.insert(i, (key, make()));
                i
            }
        };
        &mut self.entries[i].1
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.find(key).ok().map(|i| self.entries.remove(i).1)
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The entries, in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&Key, &Value)> + ExactSizeIterator {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The entries, in key order, with the values mutable.
    pub fn iter_mut(
        &mut self,
    ) -> impl DoubleEndedIterator<Item = (&Key, &mut Value)> + ExactSizeIterator {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &Key> + ExactSizeIterator {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The values, in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Value> + ExactSizeIterator {
        self.entries.iter().map(|(_, v)| v)
    }

    /// The values, in key order, mutable.
    pub fn values_mut(
        &mut self,
    ) -> impl DoubleEndedIterator<Item = &mut Value> + ExactSizeIterator {
        self.entries.iter_mut().map(|(_, v)| v)
    }

    /// Sets every key of `other` to its value there (`other` wins where
    /// both have a key): one merge of the two sorted maps, not an insert
    /// into the middle for each entry.
    ///
    /// ```
    /// use fsm_core::{Map, Value};
    ///
    /// let mut vars = Map::from([("IP", Value::from("10.0.0.5")), ("PORT", Value::from(502))]);
    /// vars.overlay(&Map::from([("PORT", Value::from(503))]));
    /// assert_eq!(vars.get("PORT"), Some(&Value::from(503)));
    /// assert_eq!(vars.len(), 2);
    /// ```
    pub fn overlay(&mut self, other: &Map) {
        if !other.is_empty() {
            self.extend(other.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }

    /// Keeps only the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&Key, &mut Value) -> bool) {
        self.entries.retain_mut(|(k, v)| keep(k, v));
    }

    /// A map of these entries in any order: sorted once, and of a key given
    /// twice the later value kept (as inserting them one by one would).
    pub(crate) fn from_entries(mut entries: Vec<(Key, Value)>) -> Self {
        if !entries.is_sorted_by(|a, b| a.0 < b.0) {
            // Stable: equal keys stay in the order given. Of a run of equal
            // keys the first slot is kept, holding the run's last entry.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same {
                    std::mem::swap(later, kept);
                }
                same
            });
        }
        Self { entries }
    }
}

impl fmt::Debug for Map {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<Key>> FromIterator<(K, Value)> for Map {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Self {
        Self::from_entries(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl<K: Into<Key>> Extend<(K, Value)> for Map {
    fn extend<I: IntoIterator<Item = (K, Value)>>(&mut self, iter: I) {
        let mut entries = std::mem::take(&mut self.entries);
        entries.extend(iter.into_iter().map(|(k, v)| (k.into(), v)));
        *self = Self::from_entries(entries);
    }
}

impl<K: Into<Key>, const N: usize> From<[(K, Value); N]> for Map {
    fn from(entries: [(K, Value); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl IntoIterator for Map {
    type Item = (Key, Value);
    type IntoIter = std::vec::IntoIter<(Key, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a> IntoIterator for &'a Map {
    type Item = (&'a Key, &'a Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Key, Value)>,
        fn(&'a (Key, Value)) -> (&'a Key, &'a Value),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

impl std::ops::Index<&str> for Map {
    type Output = Value;

    /// The value of `key`.
    ///
    /// # Panics
    ///
    /// When `key` is not in the map (as `BTreeMap`'s index does; use
    /// [`Map::get`] where it may be missing).
    fn index(&self, key: &str) -> &Value {
        match self.get(key) {
            Some(v) => v,
            None => panic!("no key {key:?} in the map"),
        }
    }
}

impl Serialize for Map {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self {
            map.serialize_entry(k.as_str(), v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Map {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor;
        impl<'de> Visitor<'de> for MapVisitor {
            type Value = Map;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Map, A::Error> {
                let mut entries = Vec::with_capacity(access.size_hint().unwrap_or(0).min(64));
                while let Some(entry) = access.next_entry::<Key, Value>()? {
                    entries.push(entry);
                }
                Ok(Map::from_entries(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_stay_sorted_and_a_later_insert_replaces() {
        let mut map = Map::new();
        assert_eq!(map.insert("b", Value::from(1)), None);
        assert_eq!(map.insert("a", Value::from(2)), None);
        assert_eq!(map.insert("c", Value::from(3)), None);
        assert_eq!(map.insert("b", Value::from(4)), Some(Value::from(1)));
        let keys: Vec<&str> = map.keys().map(Key::as_str).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(map.get("b"), Some(&Value::from(4)));
        assert_eq!(map.remove("a"), Some(Value::from(2)));
        assert!(!map.contains_key("a"));
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn collecting_sorts_once_and_keeps_the_last_of_a_repeated_key() {
        let map: Map = [
            ("z", Value::from(1)),
            ("a", Value::from(2)),
            ("z", Value::from(3)),
            ("m", Value::from(4)),
        ]
        .into_iter()
        .collect();
        let entries: Vec<(&str, &Value)> = map.iter().map(|(k, v)| (k.as_str(), v)).collect();
        assert_eq!(
            entries,
            [
                ("a", &Value::from(2)),
                ("m", &Value::from(4)),
                ("z", &Value::from(3))
            ]
        );
    }

    #[test]
    fn reads_back_as_written_through_json_in_key_order() {
        let json = r#"{"port":502,"host":"h","port":503}"#;
        let map: Map = serde_json::from_str(json).unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(map["port"], Value::from(503));
        assert_eq!(
            serde_json::to_string(&map).unwrap(),
            r#"{"host":"h","port":503}"#
        );
    }

    #[test]
    fn a_key_reads_from_utf8_bytes_and_refuses_other_bytes() {
        use serde::de::value::{BytesDeserializer, Error};
        let key = Key::deserialize(BytesDeserializer::<Error>::new(b"port")).unwrap();
        assert_eq!(key, "port");
        let err = Key::deserialize(BytesDeserializer::<Error>::new(b"\xff")).unwrap_err();
        assert!(err.to_string().contains("invalid value"), "{err}");
        let key: Key = serde_json::from_str(r#""host""#).unwrap();
        assert_eq!(key, "host");
    }

    #[test]
    fn long_keys_and_short_keys_compare_as_strings() {
        let long = "a-key-much-longer-than-twenty-three-bytes";
        let map: Map = [(long, Value::Null), ("b", Value::Null)].into();
        assert_eq!(map.keys().next().map(Key::as_str), Some(long));
        assert!(map.contains_key(long));
        assert_eq!(Key::from(long).clone(), long);
    }

    /// An operation on a map, as the model test applies it.
    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, i64),
        Remove(String),
        Extend(Vec<(String, i64)>),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        // Few distinct keys, so that inserts replace and removes hit; some
        // longer than a key holds inline.
        let key = prop_oneof!["[a-d]{1,2}", "[a-b]{24,26}"];
        prop_oneof![
            (key.clone(), any::<i64>()).prop_map(|(k, v)| Op::Insert(k, v)),
            key.clone().prop_map(Op::Remove),
            proptest::collection::vec((key, any::<i64>()), 0..6).prop_map(Op::Extend),
        ]
    }

    proptest::proptest! {
        /// Whatever is done to it, the map holds what a `BTreeMap` would,
        /// in the same order, and says the same about each step.
        #[test]
        fn behaves_as_a_btree_map(ops in proptest::collection::vec(op(), 0..40)) {
            let mut map = Map::new();
            let mut model = std::collections::BTreeMap::<String, Value>::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => proptest::prop_assert_eq!(
                        map.insert(k.as_str(), Value::from(v)),
                        model.insert(k, Value::from(v))
                    ),
                    Op::Remove(k) => proptest::prop_assert_eq!(map.remove(&k), model.remove(&k)),
                    Op::Extend(entries) => {
                        map.extend(entries.iter().map(|(k, v)| (k.as_str(), Value::from(*v))));
                        model.extend(entries.into_iter().map(|(k, v)| (k, Value::from(v))));
                    }
                }
                let ours: Vec<(&str, &Value)> = map.iter().map(|(k, v)| (k.as_str(), v)).collect();
                let theirs: Vec<(&str, &Value)> = model.iter().map(|(k, v)| (k.as_str(), v)).collect();
                proptest::prop_assert_eq!(ours, theirs);
                for k in model.keys() {
                    proptest::prop_assert_eq!(map.get(k), model.get(k));
                }
            }
        }
    }
}
