//! Decoding a spec while rendering its templates: the strings a typed spec
//! *reads* are rendered with the node's variables as they are read; data it
//! keeps as a [`Value`] (a child's spec, a list of child specs) passes
//! or a [`Template`](super::Template) (a string carried for a child) passes
//! through untouched, to be rendered by the node it is meant for.
//!
//! That is what makes templates compose down a tree: a plant's spec can
//! hold a bridge's spec with `"host": "{{ SUBNET }}.10"` although only the
//! line above the bridge defines `SUBNET`.

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{
    self, DeserializeOwned, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

use super::template::RAW_TEMPLATE;
use super::{Value, ValueError, is_template};

/// The name under which [`Value`] asks to be deserialised, so that a
/// rendering deserializer can hand it the raw, unrendered data.
pub(crate) const RAW_VALUE: &str = "$fsm_core::Value";

/// Renders one template found in a spec.
pub trait TemplateRenderer {
    /// Renders `template`, found at `field` (dotted path in the spec). A
    /// template that is exactly one variable (`"{{ PORT }}"`) should yield
    /// the variable's value with its type; others yield a string.
    ///
    /// # Errors
    ///
    /// A message saying what went wrong (which variable is undefined).
    fn render(&self, template: &str, field: &str) -> Result<Value, String>;
}

impl Value {
    /// Decodes this value into `T`, rendering every template string that
    /// `T` reads (as a string, number, bool or enum tag) with `renderer`.
    /// Parts of `T` that are themselves [`Value`]s or
    /// [`Template`](crate::Template)s are not rendered.
    ///
    /// # Errors
    ///
    /// The renderer's message for a template that does not render, or
    /// serde's message for data of the wrong shape; either names the field
    /// it is about ([`ValueError::path`]).
    pub fn decode_with<T: DeserializeOwned>(
        &self,
        renderer: &dyn TemplateRenderer,
    ) -> Result<T, ValueError> {
        serde_path_to_error::deserialize(Rendering {
            value: self,
            renderer,
            field: String::new(),
        })
        .map_err(ValueError::at_path)
    }
}

struct Rendering<'a> {
    value: &'a Value,
    renderer: &'a dyn TemplateRenderer,
    field: String,
}

impl<'a> Rendering<'a> {
    fn child(&self, value: &'a Value, segment: &str) -> Self {
        let mut field = self.field.clone();
        if !field.is_empty() {
            field.push('.');
        }
        field.push_str(segment);
        Self {
            value,
            renderer: self.renderer,
            field,
        }
    }

    /// The rendered form of a template string, if this is one.
    fn rendered(&self) -> Result<Option<Value>, ValueError> {
        match self.value {
            Value::String(s) if is_template(s) => self
                .renderer
                .render(s, &self.field)
                .map(Some)
                .map_err(ValueError::custom),
            _ => Ok(None),
        }
    }
}

/// What a typed spec asked for, so that a rendered value can be coerced to
/// it: `"{{ PORT }}"` fills a string field with `"502"` and a number field
/// with `502`, whatever the variable's own type.
#[derive(Clone, Copy)]
enum Want {
    Str,
    Int,
    Float,
    Bool,
}

fn coerce(value: Value, want: Want) -> Value {
    match (want, value) {
        (Want::Str, Value::Int(i)) => Value::String(i.to_string()),
        (Want::Str, Value::Float(f)) => Value::String(f.to_string()),
        (Want::Str, Value::Bool(b)) => Value::String(b.to_string()),
        (Want::Int, Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::String(s),
        },
        (Want::Float, Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(f) => Value::Float(f),
            Err(_) => Value::String(s),
        },
        (Want::Bool, Value::String(s)) => match s.trim() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(s),
        },
        (_, other) => other,
    }
}

macro_rules! coerced {
    ($($method:ident => $want:expr),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
            match self.rendered()? {
                Some(rendered) => visit_owned(coerce(rendered, $want), visitor),
                None => self.deserialize_any(visitor),
            }
        }
    )*};
}

/// Hands an owned (rendered) value to a visitor.
fn visit_owned<'de, V: Visitor<'de>>(value: Value, visitor: V) -> Result<V::Value, ValueError> {
    let json = serde_json::to_value(&value).map_err(|e| ValueError::custom(e.to_string()))?;
    json.deserialize_any(visitor)
        .map_err(|e| ValueError::custom(e.to_string()))
}

impl<'de> Deserializer<'de> for Rendering<'de> {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        if let Some(rendered) = self.rendered()? {
            return visit_owned(rendered, visitor);
        }
        match self.value {
            Value::List(items) => visitor.visit_seq(Seq {
                parent: &self,
                items: items.iter().enumerate(),
            }),
            Value::Map(map) => visitor.visit_map(Map {
                parent: &self,
                entries: map.iter(),
                pending: None,
            }),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        if name == RAW_VALUE || name == RAW_TEMPLATE {
            // A `Value` or `Template` field: data for someone else, passed
            // on as written.
            return visitor.visit_newtype_struct(self.value);
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        if let Some(rendered) = self.rendered()? {
            let json =
                serde_json::to_value(&rendered).map_err(|e| ValueError::custom(e.to_string()))?;
            return json
                .deserialize_enum(name, variants, visitor)
                .map_err(|e| ValueError::custom(e.to_string()));
        }
        match self.value {
            Value::Map(map) if map.len() == 1 => {
                let Some((variant, content)) = map.iter().next() else {
                    return Err(de::Error::custom("empty map for enum"));
                };
                let content = self.child(content, variant);
                visitor.visit_enum(Enum {
                    variant,
                    content: Some(content),
                })
            }
            Value::String(variant) => visitor.visit_enum(Enum {
                variant,
                content: None,
            }),
            other => other.deserialize_enum(name, variants, visitor),
        }
    }

    coerced! {
        deserialize_bool => Want::Bool,
        deserialize_i8 => Want::Int,
        deserialize_i16 => Want::Int,
        deserialize_i32 => Want::Int,
        deserialize_i64 => Want::Int,
        deserialize_u8 => Want::Int,
        deserialize_u16 => Want::Int,
        deserialize_u32 => Want::Int,
        deserialize_u64 => Want::Int,
        deserialize_f32 => Want::Float,
        deserialize_f64 => Want::Float,
        deserialize_str => Want::Str,
        deserialize_string => Want::Str,
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf unit unit_struct seq tuple tuple_struct
        map struct identifier ignored_any
    }
}

struct Seq<'p, 'a, I> {
    parent: &'p Rendering<'a>,
    items: I,
}

impl<'de, I> SeqAccess<'de> for Seq<'_, 'de, I>
where
    I: Iterator<Item = (usize, &'de Value)>,
{
    type Error = ValueError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ValueError> {
        match self.items.next() {
            Some((i, item)) => seed
                .deserialize(self.parent.child(item, &i.to_string()))
                .map(Some),
            None => Ok(None),
        }
    }
}

struct Map<'p, 'a, I> {
    parent: &'p Rendering<'a>,
    entries: I,
    pending: Option<(&'a super::Key, &'a Value)>,
}

impl<'de, I> MapAccess<'de> for Map<'_, 'de, I>
where
    I: Iterator<Item = (&'de super::Key, &'de Value)>,
{
    type Error = ValueError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ValueError> {
        match self.entries.next() {
            Some((k, v)) => {
                self.pending = Some((k, v));
                seed.deserialize(BorrowedStrDeserializer::<ValueError>::new(k))
                    .map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ValueError> {
        let Some((k, v)) = self.pending.take() else {
            return Err(de::Error::custom(
                "a map value was asked for before its key",
            ));
        };
        seed.deserialize(self.parent.child(v, k))
    }
}

struct Enum<'a> {
    variant: &'a str,
    content: Option<Rendering<'a>>,
}

impl<'de> EnumAccess<'de> for Enum<'de> {
    type Error = ValueError;
    type Variant = Variant<'de>;

    fn variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Variant<'de>), ValueError> {
        let v = seed.deserialize(BorrowedStrDeserializer::<ValueError>::new(self.variant))?;
        Ok((v, Variant(self.content)))
    }
}

struct Variant<'a>(Option<Rendering<'a>>);

impl<'de> VariantAccess<'de> for Variant<'de> {
    type Error = ValueError;

    fn unit_variant(self) -> Result<(), ValueError> {
        match self.0 {
            None => Ok(()),
            Some(r) if matches!(r.value, Value::Null) => Ok(()),
            Some(_) => Err(de::Error::custom("expected a unit variant")),
        }
    }

    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, ValueError> {
        match self.0 {
            Some(r) => seed.deserialize(r),
            None => Err(de::Error::custom("expected a newtype variant")),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match self.0 {
            Some(r) => r.deserialize_any(visitor),
            None => Err(de::Error::custom("expected a tuple variant")),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match self.0 {
            Some(r) => r.deserialize_any(visitor),
            None => Err(de::Error::custom("expected a struct variant")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ChildSpec;
    use serde::Deserialize;
    use std::cell::RefCell;

    /// Knows `PORT` (a number) and `HOST`; records what it rendered.
    struct Vars(RefCell<Vec<String>>);

    impl TemplateRenderer for Vars {
        fn render(&self, template: &str, field: &str) -> Result<Value, String> {
            self.0.borrow_mut().push(format!("{field}={template}"));
            match template {
                "{{ PORT }}" => Ok(Value::from(502)),
                "{{ HOST }}:{{ PORT }}" => Ok(Value::from("h:502")),
                "{{ MODE }}" => Ok(Value::from("write")),
                other => Err(format!("undefined variable in `{other}`")),
            }
        }
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        Read,
        Write,
    }

    #[derive(Deserialize, Debug)]
    struct Spec {
        address: String,
        port: u16,
        mode: Mode,
        tags: Vec<String>,
        children: Vec<ChildSpec>,
        extra: Value,
        maybe: Option<u16>,
    }

    #[test]
    fn strings_that_are_read_are_rendered_and_values_pass_through() {
        let spec = Value::map([
            ("address", Value::from("{{ HOST }}:{{ PORT }}")),
            ("port", Value::from("{{ PORT }}")),
            ("mode", Value::from("{{ MODE }}")),
            ("tags", Value::from(vec!["a"])),
            (
                "children",
                Value::List(vec![Value::map([
                    ("name", Value::from("c")),
                    ("worker_type", Value::from("t")),
                    (
                        "user_spec",
                        Value::map([("host", Value::from("{{ SUBNET }}.10"))]),
                    ),
                ])]),
            ),
            ("extra", Value::from("{{ LATER }}")),
            ("maybe", Value::from("{{ PORT }}")),
        ]);
        let vars = Vars(RefCell::default());
        let decoded: Spec = spec.decode_with(&vars).unwrap();
        assert_eq!(decoded.address, "h:502");
        assert_eq!(decoded.port, 502);
        assert_eq!(decoded.mode, Mode::Write);
        assert_eq!(decoded.tags, ["a"]);
        assert_eq!(decoded.maybe, Some(502));
        // Data for others is left as written.
        assert_eq!(decoded.extra, Value::from("{{ LATER }}"));
        assert_eq!(
            decoded.children[0].user_spec.get("host"),
            Some(&Value::from("{{ SUBNET }}.10"))
        );
        assert_eq!(
            *vars.0.borrow(),
            [
                "address={{ HOST }}:{{ PORT }}",
                "maybe={{ PORT }}",
                "mode={{ MODE }}",
                "port={{ PORT }}"
            ]
        );
    }

    #[test]
    fn rendered_values_are_coerced_to_what_the_field_wants() {
        struct Typed;
        impl TemplateRenderer for Typed {
            fn render(&self, template: &str, _field: &str) -> Result<Value, String> {
                Ok(match template {
                    "{{ NUM }}" => Value::from(502),
                    "{{ TEXT_NUM }}" => Value::from("7"),
                    "{{ FLAG }}" => Value::from("true"),
                    _ => Value::from("x"),
                })
            }
        }
        #[derive(Deserialize, Debug, PartialEq)]
        struct S {
            label: String,
            port: u16,
            ratio: f64,
            on: bool,
            any: Value,
        }
        let spec = Value::map([
            ("label", Value::from("{{ NUM }}")),
            ("port", Value::from("{{ TEXT_NUM }}")),
            ("ratio", Value::from("{{ TEXT_NUM }}")),
            ("on", Value::from("{{ FLAG }}")),
            ("any", Value::from("{{ NUM }}")),
        ]);
        let s: S = spec.decode_with(&Typed).unwrap();
        assert_eq!(s.label, "502");
        assert_eq!(s.port, 7);
        assert!((s.ratio - 7.0).abs() < f64::EPSILON);
        assert!(s.on);
        // A `Value` field keeps the data as written, for someone else.
        assert_eq!(s.any, Value::from("{{ NUM }}"));
    }

    #[test]
    fn a_template_field_keeps_its_text_for_the_node_it_is_meant_for() {
        #[derive(Deserialize, Debug)]
        struct Bridge {
            name: String,
            address: crate::Template,
            spare: Option<crate::Template>,
        }
        #[derive(Deserialize, Debug)]
        struct Parent {
            bridges: Vec<Bridge>,
        }
        let spec = Value::map([(
            "bridges",
            Value::List(vec![Value::map([
                ("name", Value::from("{{ HOST }}:{{ PORT }}")),
                ("address", Value::from("h:{{ LATER }}")),
                ("spare", Value::from("{{ NOPE }}")),
            ])]),
        )]);
        let vars = Vars(RefCell::default());
        let parent: Parent = spec.decode_with(&vars).unwrap();
        let bridge = &parent.bridges[0];
        assert_eq!(bridge.name, "h:502");
        assert_eq!(bridge.address.as_str(), "h:{{ LATER }}");
        assert_eq!(
            bridge.spare.as_ref().map(crate::Template::as_str),
            Some("{{ NOPE }}")
        );
        // Only the plain string field was rendered.
        assert_eq!(*vars.0.borrow(), ["bridges.0.name={{ HOST }}:{{ PORT }}"]);
        // Without rendering, and through JSON, it reads the same text.
        let plain: Parent = spec.decode().unwrap();
        assert_eq!(plain.bridges[0].address.as_str(), "h:{{ LATER }}");
        let json: crate::Template = serde_json::from_str("\"{{ X }}\"").unwrap();
        assert_eq!(json.as_str(), "{{ X }}");
        assert_eq!(
            Value::from_serialize(&json).unwrap(),
            Value::from("{{ X }}")
        );
    }

    #[test]
    fn a_template_that_does_not_render_fails_the_decode_with_its_message() {
        #[derive(Deserialize, Debug)]
        struct S {
            #[allow(dead_code)]
            host: String,
        }
        let spec = Value::map([("host", Value::from("{{ NOPE }}"))]);
        let err = spec
            .decode_with::<S>(&Vars(RefCell::default()))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("undefined variable in `{{ NOPE }}`"),
            "{err}"
        );
    }

    #[test]
    fn plain_values_still_decode_as_before() {
        let v = Value::map([("a", Value::from(1)), ("b", Value::from("x"))]);
        let plain: std::collections::BTreeMap<String, Value> = v.decode().unwrap();
        let rendered: std::collections::BTreeMap<String, Value> =
            v.decode_with(&Vars(RefCell::default())).unwrap();
        assert_eq!(plain, rendered);
        let json: Value = serde_json::from_str(r#"{"a":[1,2.5,null,true]}"#).unwrap();
        assert_eq!(
            json,
            Value::map([(
                "a",
                Value::List(vec![1.into(), 2.5.into(), Value::Null, true.into()])
            )])
        );
    }
}
