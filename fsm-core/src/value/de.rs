//! Decoding a [`Value`] into a typed structure: `&Value` is a serde
//! `Deserializer`, so a worker's `Spec` decodes straight from the tree
//! without a detour through JSON.

use std::fmt;

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, Deserializer, EnumAccess, IntoDeserializer, VariantAccess, Visitor};

use super::Value;

/// A value did not have the shape the target type expects, or could not be
/// represented as a [`Value`]. The message is serde's (missing field, invalid
/// type, unknown variant, ...), preceded by the path of the field it is about
/// when there is one: `pumps[2].enabled: invalid type: string "yes",
/// expected a boolean`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    message: String,
    /// Where in the value (`pumps[2].enabled`); `None` for the value itself.
    path: Option<String>,
}

impl ValueError {
    pub(crate) fn custom(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            path: None,
        }
    }

    /// The error of a decode that tracked where it was: the path is kept
    /// unless it says nothing (the top level, or only unknown segments).
    pub(crate) fn at_path(e: serde_path_to_error::Error<ValueError>) -> Self {
        let known = e
            .path()
            .iter()
            .any(|s| !matches!(s, serde_path_to_error::Segment::Unknown));
        let path = known.then(|| e.path().to_string());
        let mut inner = e.into_inner();
        if inner.path.is_none() {
            inner.path = path;
        }
        inner
    }

    /// The serde message.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The path of the field the error is about (`pumps[2].enabled`: map
    /// keys and struct fields joined by `.`, list indices in brackets), or
    /// `None` when it is about the value as a whole.
    #[must_use]
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{path}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ValueError {}

impl de::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::custom(msg.to_string())
    }
}

impl<'de> IntoDeserializer<'de, ValueError> for &'de Value {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> Deserializer<'de> for &'de Value {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::List(items) => {
                let mut seq = SeqDeserializer::new(items.iter());
                let out = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(out)
            }
            Value::Map(map) => {
                let mut access = MapDeserializer::new(map.iter().map(|(k, v)| (k.as_str(), v)));
                let out = visitor.visit_map(&mut access)?;
                access.end()?;
                Ok(out)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(other),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match self {
            // "read" -> unit variant
            Value::String(variant) => visitor.visit_enum(EnumRef {
                variant,
                content: None,
            }),
            // {"write": {...}} -> variant with content
            Value::Map(map) if map.len() == 1 => {
                let Some((variant, content)) = map.iter().next() else {
                    return Err(de::Error::custom("empty map for enum"));
                };
                visitor.visit_enum(EnumRef {
                    variant,
                    content: Some(content),
                })
            }
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

fn unexpected(v: &Value) -> de::Unexpected<'_> {
    match v {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Int(i) => de::Unexpected::Signed(*i),
        Value::Float(f) => de::Unexpected::Float(*f),
        Value::String(s) => de::Unexpected::Str(s),
        Value::List(_) => de::Unexpected::Seq,
        Value::Map(_) => de::Unexpected::Map,
    }
}

struct EnumRef<'de> {
    variant: &'de str,
    content: Option<&'de Value>,
}

impl<'de> EnumAccess<'de> for EnumRef<'de> {
    type Error = ValueError;
    type Variant = VariantRef<'de>;

    fn variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), ValueError> {
        let de: de::value::BorrowedStrDeserializer<'de, ValueError> =
            de::value::BorrowedStrDeserializer::new(self.variant);
        let v = seed.deserialize(de)?;
        Ok((
            v,
            VariantRef {
                content: self.content,
            },
        ))
    }
}

struct VariantRef<'de> {
    content: Option<&'de Value>,
}

impl<'de> VariantAccess<'de> for VariantRef<'de> {
    type Error = ValueError;

    fn unit_variant(self) -> Result<(), ValueError> {
        match self.content {
            None | Some(Value::Null) => Ok(()),
            Some(other) => Err(de::Error::invalid_type(
                unexpected(other),
                &"a unit variant",
            )),
        }
    }

    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, ValueError> {
        match self.content {
            Some(v) => seed.deserialize(v),
            None => Err(de::Error::invalid_type(
                de::Unexpected::UnitVariant,
                &"a newtype variant",
            )),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match self.content {
            Some(v @ Value::List(_)) => v.deserialize_any(visitor),
            Some(other) => Err(de::Error::invalid_type(unexpected(other), &visitor)),
            None => Err(de::Error::invalid_type(
                de::Unexpected::UnitVariant,
                &"a tuple variant",
            )),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match self.content {
            Some(v @ Value::Map(_)) => v.deserialize_any(visitor),
            Some(other) => Err(de::Error::invalid_type(unexpected(other), &visitor)),
            None => Err(de::Error::invalid_type(
                de::Unexpected::UnitVariant,
                &"a struct variant",
            )),
        }
    }
}
