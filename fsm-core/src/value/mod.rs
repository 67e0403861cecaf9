//! [`Value`]: the self-describing data that user specs and variables travel as.
//!
//! A worker sees its own typed `Spec`; on the wire (in a [`ChildSpec`], in a
//! snapshot, in an encoded desired tree) the spec is a `Value`. Unlike
//! `serde_json::Value`, a `Value` round-trips through non-self-describing
//! formats such as bincode: it serialises as plain JSON-shaped data for
//! human-readable formats and as a tagged enum for binary ones.
//!
//! [`ChildSpec`]: crate::ChildSpec

mod de;
mod map;
mod render;
mod ser;
mod template;

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::hash::StableHasher;

pub use de::ValueError;
pub use map::{Key, Map};
pub use render::TemplateRenderer;
pub use template::Template;

/// A self-describing tree of data: null, bool, integer, float, string, list,
/// or a map with ordered string keys.
///
/// # Examples
///
/// ```
/// use fsm_core::Value;
/// use serde::Deserialize;
///
/// #[derive(Deserialize, Debug, PartialEq)]
/// struct Conn { host: String, port: u16 }
///
/// let v = Value::map([("host", Value::from("10.0.0.5")), ("port", Value::from(502))]);
/// let conn: Conn = v.decode()?;
/// assert_eq!(conn, Conn { host: "10.0.0.5".into(), port: 502 });
/// # Ok::<(), fsm_core::ValueError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub enum Value {
    /// The absence of a value.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A UTF-8 string.
    String(String),
    /// An ordered list.
    List(Vec<Value>),
    /// A map with ordered string keys.
    Map(Map),
}

/// Equality as the spec hash sees it: floats compare as numbers (`0.0`
/// equals `-0.0`), and NaN equals NaN, so that a value always equals
/// itself (a spec holding NaN is not a change).
impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Null, Self::Null) => true,
            (Self::Bool(a), Self::Bool(b)) => a == b,
            (Self::Int(a), Self::Int(b)) => a == b,
            (Self::Float(a), Self::Float(b)) => a == b || (a.is_nan() && b.is_nan()),
            (Self::String(a), Self::String(b)) => a == b,
            (Self::List(a), Self::List(b)) => a == b,
            (Self::Map(a), Self::Map(b)) => a == b,
            _ => false,
        }
    }
}

impl Value {
    /// How deeply lists and maps may nest in a value that is read
    /// (deserialised, from JSON, the binary [`codec`](crate::codec) or any
    /// other format): 256 levels. Deeper input is refused with an error
    /// instead of overflowing the stack of the thread reading it (reading,
    /// writing and comparing values this deep fits in a 2 MiB thread stack,
    /// with room to spare, even in a debug build). A root spec that declares
    /// its whole tree nests about three levels per tree level (a spec, its
    /// `children`, a child), so a chain of about 85 levels can be declared
    /// in one spec; deeper trees derive their children from a number in
    /// their own spec instead.
    pub const MAX_DEPTH: usize = 256;

    /// Builds a [`Value::Map`] from key/value pairs.
    #[must_use]
    pub fn map<K, I>(entries: I) -> Self
    where
        K: Into<Key>,
        I: IntoIterator<Item = (K, Value)>,
    {
        Self::Map(entries.into_iter().collect())
    }

    /// Converts any serialisable value into a `Value`.
    ///
    /// # Errors
    ///
    /// Fails when `value`'s `Serialize` implementation fails, or when it
    /// produces an unsigned integer above `i64::MAX`, which a `Value` cannot
    /// hold without loss.
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self, ValueError> {
        let json = serde_json::to_value(value).map_err(|e| ValueError::custom(e.to_string()))?;
        Self::try_from(json)
    }

    /// Decodes this value into a typed structure, such as a worker's `Spec`.
    ///
    /// # Errors
    ///
    /// Returns the serde message (missing field, wrong type, unknown variant)
    /// when the value does not have the shape `T` expects, naming the field
    /// it is about ([`ValueError::path`]).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ValueError> {
        // Decoding is deterministic, so the field path is tracked only when
        // there is an error to name: a spec that decodes (nearly all, and
        // every level of a nested spec) pays nothing for it.
        T::deserialize(self)
            .or_else(|_| serde_path_to_error::deserialize(self).map_err(ValueError::at_path))
    }

    /// Returns the string if this is a [`Value::String`].
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// Returns the map if this is a [`Value::Map`].
    #[must_use]
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Self::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Looks up a key if this is a map.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_map().and_then(|m| m.get(key))
    }

    /// Whether any string in this value holds template syntax (`{{` or
    /// `{%`), so that it must be rendered before it is decoded.
    #[must_use]
    pub fn has_templates(&self) -> bool {
        match self {
            Self::String(s) => is_template(s),
            Self::List(items) => items.iter().any(Self::has_templates),
            Self::Map(map) => map.values().any(Self::has_templates),
            _ => false,
        }
    }

    /// A short name of the variant, for error messages.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "bool",
            Self::Int(_) => "integer",
            Self::Float(_) => "float",
            Self::String(_) => "string",
            Self::List(_) => "list",
            Self::Map(_) => "map",
        }
    }

    /// Feeds this value into a [`StableHasher`]. The encoding is fixed (type
    /// tags, lengths, little-endian numbers), so the hash is the same on every
    /// platform and every run.
    pub fn stable_hash(&self, h: &mut StableHasher) {
        match self {
            Self::Null => h.write_u8(0),
            Self::Bool(b) => {
                h.write_u8(1);
                h.write_u8(u8::from(*b));
            }
            Self::Int(i) => {
                h.write_u8(2);
                h.write_u64(*i as u64);
            }
            Self::Float(f) => {
                h.write_u8(3);
                // -0.0 and 0.0 compare equal, and so do all NaNs: they
                // hash equal.
                let f = if *f == 0.0 {
                    0.0
                } else if f.is_nan() {
                    f64::NAN
                } else {
                    *f
                };
                h.write_u64(f.to_bits());
            }
            Self::String(s) => {
                h.write_u8(4);
                h.write_str(s);
            }
            Self::List(items) => {
                h.write_u8(5);
                h.write_u64(items.len() as u64);
                for item in items {
                    item.stable_hash(h);
                }
            }
            Self::Map(map) => Self::stable_hash_map(map, h),
        }
    }

    /// Feeds a map exactly as [`Value::Map`] of it would be fed, without
    /// building the value.
    pub fn stable_hash_map(map: &Map, h: &mut StableHasher) {
        h.write_u8(6);
        h.write_u64(map.len() as u64);
        for (k, v) in map {
            h.write_str(k);
            v.stable_hash(h);
        }
    }
}

/// Whether a string holds template syntax (`{{` or `{%`).
#[must_use]
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

impl fmt::Display for Value {
    /// Formats the value as compact JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Self::Int(i64::from(v))
            }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32);

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::String(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::String(v)
    }
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Self::List(v.into_iter().map(Into::into).collect())
    }
}

impl From<Map> for Value {
    fn from(v: Map) -> Self {
        Self::Map(v)
    }
}

impl TryFrom<serde_json::Value> for Value {
    type Error = ValueError;

    fn try_from(json: serde_json::Value) -> Result<Self, Self::Error> {
        Ok(match json {
            serde_json::Value::Null => Self::Null,
            serde_json::Value::Bool(b) => Self::Bool(b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Self::Int(i)
                } else if let Some(u) = n.as_u64() {
                    return Err(ValueError::custom(format!(
                        "integer {u} is above i64::MAX and cannot be held exactly"
                    )));
                } else {
                    Self::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            serde_json::Value::String(s) => Self::String(s),
            serde_json::Value::Array(items) => Self::List(
                items
                    .into_iter()
                    .map(Self::try_from)
                    .collect::<Result<_, _>>()?,
            ),
            serde_json::Value::Object(map) => Self::Map(
                map.into_iter()
                    .map(|(k, v)| Ok((k, Self::try_from(v)?)))
                    .collect::<Result<_, ValueError>>()?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Spec {
        host: String,
        port: u16,
        #[serde(default)]
        tags: Vec<String>,
        mode: Mode,
        ratio: Option<f64>,
    }

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        Read,
        Write { qos: u8 },
    }

    fn sample() -> Value {
        Value::map([
            ("host", Value::from("h")),
            ("port", Value::from(80)),
            ("tags", Value::from(vec!["a", "b"])),
            (
                "mode",
                Value::map([("write", Value::map([("qos", 1.into())]))]),
            ),
            ("ratio", Value::Float(0.5)),
        ])
    }

    #[test]
    fn decodes_into_typed_struct_including_enums_and_options() {
        let spec: Spec = sample().decode().unwrap();
        assert_eq!(spec.host, "h");
        assert_eq!(spec.port, 80);
        assert_eq!(spec.tags, vec!["a", "b"]);
        assert_eq!(spec.mode, Mode::Write { qos: 1 });
        assert_eq!(spec.ratio, Some(0.5));
        let unit: Mode = Value::from("read").decode().unwrap();
        assert_eq!(unit, Mode::Read);
    }

    #[test]
    fn decode_error_carries_the_serde_message() {
        let v = Value::map([("host", Value::from(1))]);
        let err = v.decode::<Spec>().unwrap_err().to_string();
        assert!(
            err.contains("invalid type") && err.contains("string"),
            "{err}"
        );
        let v = Value::map([("host", Value::from("h"))]);
        let err = v.decode::<Spec>().unwrap_err().to_string();
        assert!(err.contains("missing field `port`"), "{err}");
        let v = Value::map([("host", "h".into()), ("port", Value::from(70000))]);
        let err = v.decode::<Spec>().unwrap_err().to_string();
        assert!(err.contains("70000"), "{err}");
    }

    #[test]
    fn a_decode_error_names_the_path_of_the_field_it_is_about() {
        let v = Value::map([
            ("host", "h".into()),
            ("port", 80.into()),
            ("tags", Value::from(vec![Value::from("a"), Value::from(7)])),
            ("mode", "read".into()),
        ]);
        let err = v.decode::<Spec>().unwrap_err();
        assert_eq!(err.path(), Some("tags[1]"));
        assert_eq!(
            err.to_string(),
            "tags[1]: invalid type: integer `7`, expected a string"
        );
        let v = Value::map([
            ("host", "h".into()),
            ("port", 80.into()),
            (
                "mode",
                Value::map([("write", Value::map([("qos", "high".into())]))]),
            ),
        ]);
        let err = v.decode::<Spec>().unwrap_err();
        assert_eq!(err.path(), Some("mode.write.qos"), "{err}");
        // An error about the value as a whole has no path.
        let err = Value::from(1).decode::<Spec>().unwrap_err();
        assert_eq!(err.path(), None);
        assert!(
            err.to_string().starts_with("invalid type: integer `1`"),
            "{err}"
        );
    }

    #[test]
    fn from_serialize_round_trips_through_decode() {
        let spec = Spec {
            host: "x".into(),
            port: 1,
            tags: vec![],
            mode: Mode::Read,
            ratio: None,
        };
        let v = Value::from_serialize(&spec).unwrap();
        assert_eq!(v.decode::<Spec>().unwrap(), spec);
    }

    #[test]
    fn json_form_is_plain_and_round_trips() {
        let v = sample();
        let json = serde_json::to_string(&v).unwrap();
        assert!(json.starts_with("{\"host\":\"h\""), "{json}");
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn large_unsigned_integers_are_refused_not_truncated() {
        let err = Value::from_serialize(&u64::MAX).unwrap_err();
        assert!(err.to_string().contains("i64::MAX"));
    }

    #[test]
    fn stable_hash_distinguishes_kinds_and_ignores_map_insertion_order() {
        let h = |v: &Value| {
            let mut s = StableHasher::new();
            v.stable_hash(&mut s);
            s.finish()
        };
        assert_ne!(h(&Value::from("1")), h(&Value::from(1)));
        assert_ne!(h(&Value::from(vec!["ab"])), h(&Value::from(vec!["a", "b"])));
        let a = Value::map([("x", 1.into()), ("y", 2.into())]);
        let b = Value::map([("y", 2.into()), ("x", 1.into())]);
        assert_eq!(h(&a), h(&b));
        assert_eq!(h(&Value::Float(0.0)), h(&Value::Float(-0.0)));
    }

    #[test]
    fn a_value_holding_nan_equals_itself_and_hashes_alike() {
        let nan = Value::List(vec![Value::Float(f64::NAN)]);
        assert_eq!(nan, nan.clone());
        let other_nan = Value::List(vec![Value::Float(-f64::NAN)]);
        assert_eq!(nan, other_nan);
        let h = |v: &Value| {
            let mut s = StableHasher::new();
            v.stable_hash(&mut s);
            s.finish()
        };
        assert_eq!(h(&nan), h(&other_nan));
        assert_ne!(nan, Value::List(vec![Value::Float(1.0)]));
        assert_eq!(Value::Float(0.0), Value::Float(-0.0));
    }
}
