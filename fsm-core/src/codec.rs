//! The binary codec for desired state: specs, desired states and whole
//! desired trees, as compact bytes that can be stored and restored.
//!
//! This is the one place that knows the binary format (bincode 2, standard
//! configuration); swapping formats is a change to this file only. Every
//! encoding starts with a 4-byte header, `FSM` and a format version, so that
//! foreign or future bytes are refused with a clear error instead of being
//! misread.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CodecError;
use crate::spec::{ChildSpec, DesiredState};

const MAGIC: &[u8; 3] = b"FSM";
/// The format version this build writes and reads. 2: a child spec has a
/// `placement` (version 1 had none; its bytes are refused, not misread).
pub const FORMAT_VERSION: u8 = 2;
/// The largest input decoding accepts, so that corrupt length prefixes cannot
/// make the decoder allocate without bound.
pub const MAX_DECODE_BYTES: usize = 256 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

/// Encodes any serialisable value, with the header.
///
/// # Errors
///
/// [`CodecError::Encode`] when the value's `Serialize` fails.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    let body = bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode {
        what,
        message: e.to_string(),
    })?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a value written by [`encode`].
///
/// # Errors
///
/// [`CodecError::Decode`] for bytes that are not such an encoding (wrong
/// header, truncated, corrupt), [`CodecError::Version`] for another format
/// version, [`CodecError::TrailingBytes`] when bytes are left over.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    let bad = |message: String| CodecError::Decode {
        what,
        len: bytes.len(),
        message,
    };
    if bytes.len() < 4 || &bytes[..3] != MAGIC {
        return Err(bad("missing the `FSM` header".to_owned()));
    }
    if bytes[3] != FORMAT_VERSION {
        return Err(CodecError::Version {
            what,
            found: bytes[3],
            expected: FORMAT_VERSION,
        });
    }
    let body = &bytes[4..];
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(body, config())
        .map_err(|e| bad(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::TrailingBytes {
            what,
            trailing: body.len() - used,
        });
    }
    Ok(value)
}

/// Encodes a child spec (a root spec is one: it describes the whole desired
/// tree, since every node derives its children from its spec).
///
/// # Errors
///
/// See [`encode`].
pub fn encode_spec(spec: &ChildSpec) -> Result<Vec<u8>, CodecError> {
    encode("child spec", spec)
}

/// Decodes a child spec written by [`encode_spec`].
///
/// # Errors
///
/// See [`decode`].
///
/// # Examples
///
/// ```
/// use fsm_core::{ChildSpec, Value, codec};
///
/// let spec = ChildSpec::new("plant", "plant").with_spec(Value::map([("lines", Value::from(3))]));
/// let bytes = codec::encode_spec(&spec)?;
/// assert_eq!(codec::decode_spec(&bytes)?, spec);
/// assert!(codec::decode_spec(&bytes[..bytes.len() - 1]).is_err());
/// # Ok::<(), fsm_core::CodecError>(())
/// ```
pub fn decode_spec(bytes: &[u8]) -> Result<ChildSpec, CodecError> {
    decode("child spec", bytes)
}

/// Encodes a desired state.
///
/// # Errors
///
/// See [`encode`].
pub fn encode_desired(desired: &DesiredState) -> Result<Vec<u8>, CodecError> {
    encode("desired state", desired)
}

/// Decodes a desired state written by [`encode_desired`].
///
/// # Errors
///
/// See [`decode`].
pub fn decode_desired(bytes: &[u8]) -> Result<DesiredState, CodecError> {
    decode("desired state", bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;
    use proptest::prelude::*;

    fn value_strategy() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>()
                .prop_filter("NaN never equals itself", |f| !f.is_nan())
                .prop_map(Value::Float),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                proptest::collection::btree_map("[a-z]{1,6}", inner, 0..6)
                    .prop_map(|m| Value::Map(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_spec_round_trips(name in "[a-z]{1,8}", v in value_strategy()) {
            let spec = ChildSpec::new(name, "t").with_spec(v).map_state("running", "up");
            let bytes = encode_spec(&spec).unwrap();
            prop_assert_eq!(decode_spec(&bytes).unwrap(), spec);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_spec(&bytes);
            let mut with_header = [&MAGIC[..], &[FORMAT_VERSION]].concat();
            with_header.extend_from_slice(&bytes);
            let _ = decode_spec(&with_header);
        }
    }

    #[test]
    fn malformed_bytes_give_typed_errors() {
        let spec = ChildSpec::new("a", "t").with_spec(Value::from("x"));
        let bytes = encode_spec(&spec).unwrap();
        assert!(matches!(
            decode_spec(b"nope"),
            Err(CodecError::Decode { .. })
        ));
        assert!(matches!(
            decode_spec(&bytes[..bytes.len() - 2]),
            Err(CodecError::Decode { .. })
        ));
        let mut future = bytes.clone();
        future[3] = 9;
        assert!(matches!(
            decode_spec(&future),
            Err(CodecError::Version { found: 9, .. })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode_spec(&long),
            Err(CodecError::TrailingBytes { trailing: 1, .. })
        ));
        let msg = decode_spec(b"nope").unwrap_err().to_string();
        assert!(
            msg.contains("child spec") && msg.contains("header"),
            "{msg}"
        );
    }

    /// `levels` lists, each holding the next, around a null: the binary
    /// shape (tag 5 and a length of 1, per level), written out by hand as a
    /// crafted payload would be.
    fn nested_lists(levels: usize) -> Vec<u8> {
        let mut body = [5u8, 1].repeat(levels);
        body.push(0);
        body
    }

    /// A child spec whose user spec is `value` (encoded already).
    fn spec_around(value: &[u8]) -> Vec<u8> {
        let bytes = encode_spec(&ChildSpec::new("a", "t")).unwrap();
        // Header, then the name and worker type (a length byte and one
        // byte each), then the user spec (null: one byte).
        let at = 4 + 2 + 2;
        assert_eq!(bytes[at], 0);
        [&bytes[..at], value, &bytes[at + 1..]].concat()
    }

    fn nested_value(levels: usize) -> Value {
        (0..levels).fold(Value::Null, |v, _| Value::List(vec![v]))
    }

    #[test]
    fn a_payload_nested_too_deep_is_an_error_not_a_stack_overflow() {
        // On a thread with the usual 2 MiB stack, 100,000 levels overflow
        // it unless the depth is bounded.
        let decoded = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let deep = decode::<Value>(
                    "value",
                    &[
                        &[&MAGIC[..], &[FORMAT_VERSION]].concat()[..],
                        &nested_lists(100_000),
                    ]
                    .concat(),
                )
                .map(drop);
                let spec = decode_spec(&spec_around(&nested_lists(100_000))).map(drop);
                (deep, spec)
            })
            .unwrap()
            .join()
            .unwrap();
        for result in [decoded.0, decoded.1] {
            let err = result.unwrap_err();
            assert!(matches!(err, CodecError::Decode { .. }), "{err}");
            assert!(
                err.to_string()
                    .contains(&format!("nest more than {} levels", Value::MAX_DEPTH)),
                "{err}"
            );
        }
    }

    #[test]
    fn values_nested_up_to_the_limit_round_trip_and_one_more_level_is_refused() {
        let at_limit = ChildSpec::new("a", "t").with_spec(nested_value(Value::MAX_DEPTH));
        let bytes = encode_spec(&at_limit).unwrap();
        assert_eq!(decode_spec(&bytes).unwrap(), at_limit);
        assert_eq!(bytes, spec_around(&nested_lists(Value::MAX_DEPTH)));
        let too_deep = spec_around(&nested_lists(Value::MAX_DEPTH + 1));
        assert!(matches!(
            decode_spec(&too_deep),
            Err(CodecError::Decode { .. })
        ));
        // Maps count as levels too, and so does every format: here, reading
        // a value out of a value (as a worker's spec does).
        let deep_map = (0..=Value::MAX_DEPTH).fold(Value::Null, |v, _| Value::map([("k", v)]));
        let err = deep_map.decode::<Value>().unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("nest more than {} levels", Value::MAX_DEPTH)),
            "{err}"
        );
        assert_eq!(
            nested_value(Value::MAX_DEPTH).decode::<Value>().unwrap(),
            nested_value(Value::MAX_DEPTH)
        );
    }

    #[test]
    fn desired_state_round_trips() {
        let d = DesiredState::new("running").with_child(ChildSpec::new("c", "t"));
        assert_eq!(decode_desired(&encode_desired(&d).unwrap()).unwrap(), d);
    }
}
