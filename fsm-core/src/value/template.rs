//! [`Template`]: a string a typed spec carries for someone else to render.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::{Value, is_template};

/// The name under which [`Template`] asks to be deserialised, so that a
/// rendering deserializer hands it the raw, unrendered text.
pub(crate) const RAW_TEMPLATE: &str = "$fsm_core::Template";

/// A string field of a typed spec that is kept as written, templates and
/// all, for another node to render with its own variables.
///
/// A node renders the templates of every string its typed spec reads, with
/// its own variables. A parent whose spec carries a template meant for a
/// child (`address: "h:{{ PORT }}"` with `PORT` set only on the child)
/// declares that field a `Template`: the parent's decode leaves it alone,
/// the parent puts it in the child's spec ([`Value::from`] or serialising
/// a struct holding it), and the child renders it when it decodes its own
/// spec. For data of any shape (not only strings), use a [`Value`] field,
/// which is passed on as written too.
///
/// # Examples
///
/// ```
/// use fsm_core::{Template, TemplateRenderer, Value};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Bridge { name: String, address: Template }
///
/// /// Knows `LINE` only, as the parent does.
/// struct Parent;
/// impl TemplateRenderer for Parent {
///     fn render(&self, template: &str, _field: &str) -> Result<Value, String> {
///         match template {
///             "b-{{ LINE }}" => Ok(Value::from("b-1")),
///             other => Err(format!("undefined variable in `{other}`")),
///         }
///     }
/// }
///
/// let spec = Value::map([
///     ("name", Value::from("b-{{ LINE }}")),
///     ("address", Value::from("h:{{ PORT }}")),
/// ]);
/// let bridge: Bridge = spec.decode_with(&Parent)?;
/// assert_eq!(bridge.name, "b-1");
/// assert_eq!(bridge.address.as_str(), "h:{{ PORT }}");
/// assert_eq!(Value::from(bridge.address), Value::from("h:{{ PORT }}"));
/// # Ok::<(), fsm_core::ValueError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Template(String);

impl Template {
    /// A template of this text.
    #[must_use]
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text as written.
    #[must_use]
    pub fn into_string(self) -> String {
        self.0
    }

    /// Whether the text holds template syntax (a plain string is a valid
    /// `Template` too, and renders to itself).
    #[must_use]
    pub fn has_templates(&self) -> bool {
        is_template(&self.0)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Template {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl From<&str> for Template {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl From<Template> for String {
    fn from(template: Template) -> Self {
        template.0
    }
}

impl From<Template> for Value {
    fn from(template: Template) -> Self {
        Value::String(template.0)
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Asked as a newtype so that a rendering deserializer hands over the
        // raw text (see `render.rs`); every other format reads the string.
        deserializer.deserialize_newtype_struct(RAW_TEMPLATE, TemplateVisitor)
    }
}

struct TemplateVisitor;

impl<'de> Visitor<'de> for TemplateVisitor {
    type Value = Template;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string (a template, kept as written)")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Template, D::Error> {
        String::deserialize(d).map(Template)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Template, E> {
        Ok(Template(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Template, E> {
        Ok(Template(s))
    }
}
