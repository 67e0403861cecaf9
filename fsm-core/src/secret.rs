//! [`Secret`]: a spec value that is stored and compared like any other but
//! never printed.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret in a spec (an auth token, a password): it serialises to its
/// value, so it reaches the store and the spec hash like any other field,
/// but `Debug` and `Display` print `<redacted>`, so a spec printed into a
/// log, a span, an error message or a report does not carry it.
///
/// Read the value with [`expose`](Self::expose), only where it is used.
///
/// ```
/// use fsm_core::Secret;
///
/// #[derive(Debug, serde::Deserialize)]
/// struct Login {
///     user: String,
///     token: Secret,
/// }
///
/// let login: Login = serde_json::from_str(r#"{"user":"ann","token":"s3cr3t"}"#).unwrap();
/// assert_eq!(login.token.expose(), "s3cr3t");
/// assert!(!format!("{login:?}").contains("s3cr3t"));
/// assert_eq!(login.token.to_string(), "<redacted>");
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Secret<T = String>(T);

impl<T> Secret<T> {
    /// What a secret prints as.
    pub const REDACTED: &'static str = "<redacted>";

    /// Wraps `value`.
    #[must_use]
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret value: use it, do not print it.
    #[must_use]
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// The secret value, unwrapped.
    #[must_use]
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret<String> {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl<T: Serialize> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChildSpec, Value};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Spec {
        url: String,
        token: Secret,
    }

    #[test]
    fn a_secret_prints_redacted_in_debug_and_display() {
        let spec = Spec {
            url: "http://relay".into(),
            token: Secret::from("hunter2"),
        };
        let debug = format!("{spec:?} {spec:#?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"));
        assert_eq!(spec.token.to_string(), "<redacted>");
        assert_eq!(spec.token.expose(), "hunter2");
    }

    #[test]
    fn a_secret_serialises_to_its_value_for_the_store_and_back() {
        let spec = Spec {
            url: "http://relay".into(),
            token: Secret::from("hunter2"),
        };
        let json = serde_json::to_string(&spec).unwrap_or_default();
        assert_eq!(json, r#"{"url":"http://relay","token":"hunter2"}"#);
        let back: Spec = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, spec);
        // Through a child spec's typed spec (the store's form) and back.
        let child = ChildSpec::new("c", "w")
            .with_typed_spec(&spec)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(child.user_spec.get("token"), Some(&Value::from("hunter2")));
        let decoded: Spec = child.user_spec.decode().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decoded.token.expose(), "hunter2");
    }

    #[test]
    fn a_changed_secret_changes_the_spec_hash() {
        let a = ChildSpec::new("c", "w")
            .with_typed_spec(&Spec {
                url: "u".into(),
                token: Secret::from("one"),
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let b = ChildSpec::new("c", "w")
            .with_typed_spec(&Spec {
                url: "u".into(),
                token: Secret::from("two"),
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a.hash(), b.hash());
    }
}
