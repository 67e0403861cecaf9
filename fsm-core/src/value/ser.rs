//! How a [`Value`] itself is (de)serialised.
//!
//! Human-readable formats (JSON, YAML) see plain data: `{"port": 502}`.
//! Binary formats (bincode) cannot be driven by `deserialize_any`, so there
//! a `Value` is written as an explicitly tagged enum.

use std::fmt;

use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::{Map, Value};

/// The tagged, binary-format shape of a value (borrowed, for writing).
#[derive(serde::Serialize)]
enum TaggedRef<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(&'a str),
    List(&'a [Value]),
    Map(&'a Map),
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            let tagged = match self {
                Value::Null => TaggedRef::Null,
                Value::Bool(b) => TaggedRef::Bool(*b),
                Value::Int(i) => TaggedRef::Int(*i),
                Value::Float(f) => TaggedRef::Float(*f),
                Value::String(s) => TaggedRef::String(s),
                Value::List(l) => TaggedRef::List(l),
                Value::Map(m) => TaggedRef::Map(m),
            };
            return tagged.serialize(serializer);
        }
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::Float(f) => serializer.serialize_f64(*f),
            Value::String(s) => serializer.serialize_str(s),
            Value::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(map) => {
                let mut m = serializer.serialize_map(Some(map.len()))?;
                for (k, v) in map {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
    }
}

/// The variants of the binary shape, in the order [`TaggedRef`] writes
/// them.
const TAGS: &[&str] = &["Null", "Bool", "Int", "Float", "String", "List", "Map"];

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Nested { depth: 0 }.deserialize(deserializer)
    }
}

/// Reads a value found inside `depth` lists or maps.
#[derive(Clone, Copy)]
struct Nested {
    depth: usize,
}

impl Nested {
    /// The reader of what a list or map at this depth holds, or the error
    /// if it would be too deep.
    fn inner<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= Value::MAX_DEPTH {
            return Err(E::custom(format_args!(
                "lists and maps nest more than {} levels deep; flatten the data",
                Value::MAX_DEPTH
            )));
        }
        Ok(Self {
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Nested {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        if !deserializer.is_human_readable() {
            return deserializer.deserialize_enum("Value", TAGS, TaggedVisitor(self));
        }
        // Asking as a newtype lets a rendering deserializer hand over the raw,
        // unrendered data (see `render.rs`); every other format treats it as
        // the value itself.
        deserializer.deserialize_newtype_struct(super::render::RAW_VALUE, ValueVisitor(self))
    }
}

/// Reads the binary, tagged shape.
struct TaggedVisitor(Nested);

impl<'de> Visitor<'de> for TaggedVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tagged value")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (tag, variant): (u32, _) = data.variant()?;
        Ok(match tag {
            0 => {
                variant.unit_variant()?;
                Value::Null
            }
            1 => Value::Bool(variant.newtype_variant()?),
            2 => Value::Int(variant.newtype_variant()?),
            3 => Value::Float(variant.newtype_variant()?),
            4 => Value::String(variant.newtype_variant()?),
            5 => variant.newtype_variant_seed(ListSeed(self.0.inner()?))?,
            6 => variant.newtype_variant_seed(MapSeed(self.0.inner()?))?,
            other => {
                return Err(de::Error::invalid_value(
                    de::Unexpected::Unsigned(u64::from(other)),
                    &"a value tag from 0 to 6",
                ));
            }
        })
    }
}

/// A list whose items are read at the depth it holds.
struct ListSeed(Nested);

impl<'de> DeserializeSeed<'de> for ListSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of values")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        read_list(self.0, seq)
    }
}

/// A map whose values are read at the depth it holds.
struct MapSeed(Nested);

impl<'de> DeserializeSeed<'de> for MapSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MapSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of values")
    }

    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Value, A::Error> {
        read_map(self.0, access)
    }
}

/// The items of a list at `inner` depth.
fn read_list<'de, A: SeqAccess<'de>>(inner: Nested, mut seq: A) -> Result<Value, A::Error> {
    // The size hint comes from the input: trust it only so far.
    let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
    while let Some(item) = seq.next_element_seed(inner)? {
        items.push(item);
    }
    Ok(Value::List(items))
}

/// The entries of a map at `inner` depth.
fn read_map<'de, A: MapAccess<'de>>(inner: Nested, mut access: A) -> Result<Value, A::Error> {
    let mut entries = Vec::with_capacity(access.size_hint().unwrap_or(0).min(64));
    while let Some(key) = access.next_key::<super::Key>()? {
        let value = access.next_value_seed(inner)?;
        entries.push((key, value));
    }
    Ok(Value::Map(super::Map::from_entries(entries)))
}

/// Reads the plain, self-describing shape.
struct ValueVisitor(Nested);

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v).map(Value::Int).map_err(|_| {
            E::custom(format!(
                "integer {v} is above i64::MAX and cannot be held exactly"
            ))
        })
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.0.deserialize(d)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        read_list(self.0.inner()?, seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Value, A::Error> {
        read_map(self.0.inner()?, access)
    }
}
