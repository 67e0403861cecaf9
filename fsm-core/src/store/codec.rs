//! The store's codec: how every stored record becomes bytes and back. The
//! one place that knows the store's record format; every backend goes
//! through it.
//!
//! A record is a store format byte ([`STORE_FORMAT`]) followed by the
//! workspace's binary encoding ([`crate::codec`], bincode 2 with its own
//! header). The format byte lets a future record layout be told apart from
//! this one; bytes that are not a record give a [`StoreError::Corrupt`]
//! naming the node, never a panic.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::CodecError;
use crate::path::NodePath;

use super::{
    ActionRecord, DesiredDocument, NodeIdentity, ObservedDocument, StoreError, StoredRoot,
};

/// The record format this build writes and reads.
pub const STORE_FORMAT: u8 = 1;

/// Which record a value is; names it in errors.
pub trait Record: Serialize + DeserializeOwned {
    /// The record's name in errors (`identity`, `desired document`, ...).
    const WHAT: &'static str;
}

impl Record for NodeIdentity {
    const WHAT: &'static str = "identity";
}
impl Record for DesiredDocument {
    const WHAT: &'static str = "desired document";
}
impl Record for ObservedDocument {
    const WHAT: &'static str = "observed document";
}
impl Record for ActionRecord {
    const WHAT: &'static str = "action record";
}
impl Record for StoredRoot {
    const WHAT: &'static str = "root spec";
}

/// Encodes a record of the node at `path`.
///
/// # Errors
///
/// [`StoreError::Encode`] when the value cannot be encoded.
pub fn encode<T: Record>(path: &NodePath, value: &T) -> Result<Vec<u8>, StoreError> {
    let body = codec::encode(T::WHAT, value).map_err(|source| StoreError::Encode {
        path: path.clone(),
        what: T::WHAT,
        source,
    })?;
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(STORE_FORMAT);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a record of the node at `path` written by [`encode`].
///
/// # Errors
///
/// [`StoreError::Corrupt`] naming `path` for bytes that are empty,
/// truncated, corrupt or of another format.
pub fn decode<T: Record>(path: &NodePath, bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |source| StoreError::Corrupt {
        path: path.clone(),
        what: T::WHAT,
        source,
    };
    match bytes.split_first() {
        None => Err(corrupt(CodecError::Decode {
            what: T::WHAT,
            len: 0,
            message: "no bytes".to_owned(),
        })),
        Some((&STORE_FORMAT, body)) => codec::decode(T::WHAT, body).map_err(corrupt),
        Some((&found, _)) => Err(corrupt(CodecError::Version {
            what: T::WHAT,
            found,
            expected: STORE_FORMAT,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ChildSpec;
    use crate::store::{LastAction, StoredOutcome};
    use crate::value::Value;

    fn observed() -> ObservedDocument {
        ObservedDocument {
            state: "running".to_owned(),
            observed_at_ms: Some(1_764_000_000_000),
            restarts: 3,
            backoff_attempt: 2,
            last_error: Some("connection refused".to_owned()),
            last_action: Some(LastAction {
                action: "connect".to_owned(),
                outcome: Some(StoredOutcome::Failed("refused".to_owned())),
            }),
        }
    }

    #[test]
    fn every_record_round_trips() {
        let path = NodePath::parse("plant/line-1");
        let desired = DesiredDocument {
            spec: ChildSpec::new("line-1", "line").with_spec(Value::from(3)),
            generation: 7,
        };
        let identity = NodeIdentity::new(path.clone(), "line");
        let action = ActionRecord {
            node: path.clone(),
            action: "connect".to_owned(),
            id: u64::MAX,
            started_at_ms: 5,
            outcome: None,
        };
        assert_eq!(
            decode::<DesiredDocument>(&path, &encode(&path, &desired).unwrap()).unwrap(),
            desired
        );
        assert_eq!(
            decode::<NodeIdentity>(&path, &encode(&path, &identity).unwrap()).unwrap(),
            identity
        );
        assert_eq!(
            decode::<ObservedDocument>(&path, &encode(&path, &observed()).unwrap()).unwrap(),
            observed()
        );
        assert_eq!(
            decode::<ActionRecord>(&path, &encode(&path, &action).unwrap()).unwrap(),
            action
        );
    }

    #[test]
    fn truncated_or_garbage_bytes_give_a_corrupt_error_naming_the_node() {
        let path = NodePath::parse("plant/line-1");
        let bytes = encode(&path, &observed()).unwrap();
        let mut future = bytes.clone();
        future[0] = STORE_FORMAT + 1;
        let cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            vec![STORE_FORMAT],
            bytes[..bytes.len() / 2].to_vec(),
            bytes[..bytes.len() - 1].to_vec(),
            b"not a record at all".to_vec(),
            [&bytes[..], &[0xff][..]].concat(),
            future,
        ];
        for case in cases {
            let err = decode::<ObservedDocument>(&path, &case).unwrap_err();
            assert!(
                matches!(&err, StoreError::Corrupt { path: p, what: "observed document", .. } if *p == path),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains("plant/line-1") && msg.contains("corrupt"),
                "{msg}"
            );
        }
    }
}
