//! The fuzz targets of fsmv2-rs: every decoder that reads bytes from outside
//! the process, as a plain `fn(&[u8])`.
//!
//! A target returns normally for any input the code under test handles
//! correctly, refusals included, and panics when an invariant breaks (a
//! decode → encode → decode round trip that changes the value, two parsers
//! that disagree, an error that does not name its node). The same functions
//! run in two places:
//!
//! * `cargo test -p fuzz-targets` replays every file of the seed corpus
//!   (`fuzz/corpus/<target>/`) through its target: stable Rust, no tools;
//! * the cargo-fuzz project in `fuzz/` drives each one with libFuzzer, one
//!   binary per target of the same name (see `docs/reliability.md`,
//!   "Fuzzing").

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use fsm_actors::NodeSnapshot;
use fsm_core::store::{
    ActionRecord, DesiredDocument, NodeIdentity, ObservedDocument, StoreError, StoredRoot,
};
use fsm_core::{ChildSpec, DesiredState, Map, NodePath, Value, codec};
use fsm_examples::communicator::client::{classify, jwt_expiry, parse_retry_after};
use fsm_examples::protocol::{LoginResponse, Messages};
use fsm_templates::{Templates, VariableBundle, has_template};

/// A fuzz target: takes any bytes, panics when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus directory and libFuzzer binary.
pub const TARGETS: [(&str, Target); 6] = [
    ("spec_json", spec_json),
    ("codec", binary_codec),
    ("templates", templates),
    ("snapshot_json", snapshot_json),
    ("store_record", store_record),
    ("relay_response", relay_response),
];

/// The target called `name`, if there is one.
#[must_use]
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Child specs and desired states (a root spec is a child spec) read from
/// JSON, as `fsm-demo` and the tree's configuration read them.
///
/// Invariants: what decodes writes back to JSON that decodes to a value
/// writing the same JSON, with the same content hash.
pub fn spec_json(data: &[u8]) {
    if let Ok(spec) = serde_json::from_slice::<ChildSpec>(data) {
        let first = json(&spec);
        let again: ChildSpec = match serde_json::from_str(&first) {
            Ok(again) => again,
            Err(e) => panic!("a child spec's own JSON does not decode: {e}\n{first}"),
        };
        assert_eq!(json(&again), first, "child spec JSON does not round-trip");
        assert_eq!(again.hash(), spec.hash(), "round trip changed the hash");
    }
    if let Ok(desired) = serde_json::from_slice::<DesiredState>(data) {
        let first = json(&desired);
        let again: DesiredState = match serde_json::from_str(&first) {
            Ok(again) => again,
            Err(e) => panic!("a desired state's own JSON does not decode: {e}\n{first}"),
        };
        assert_eq!(
            json(&again),
            first,
            "desired state JSON does not round-trip"
        );
        assert_eq!(again.children_hash(), desired.children_hash());
    }
}

/// The binary codec ([`fsm_core::codec`]): child specs, desired states and
/// bare values.
///
/// Invariants: a value that decodes encodes, and its encoding decodes to a
/// value with the same encoding and hash (floats may be NaN, so values are
/// compared by their bytes, not with `==`).
pub fn binary_codec(data: &[u8]) {
    if let Ok(spec) = codec::decode_spec(data) {
        let bytes = ok(codec::encode_spec(&spec), "encode a decoded spec");
        let again = ok(codec::decode_spec(&bytes), "decode an encoded spec");
        assert_eq!(
            ok(codec::encode_spec(&again), "encode again"),
            bytes,
            "spec encoding does not round-trip"
        );
        assert_eq!(again.hash(), spec.hash());
    }
    if let Ok(desired) = codec::decode_desired(data) {
        let bytes = ok(codec::encode_desired(&desired), "encode a desired state");
        let again = ok(codec::decode_desired(&bytes), "decode a desired state");
        assert_eq!(
            ok(codec::encode_desired(&again), "encode again"),
            bytes,
            "desired state encoding does not round-trip"
        );
    }
    if let Ok(value) = codec::decode::<Value>("value", data) {
        let bytes = ok(codec::encode("value", &value), "encode a value");
        let again: Value = ok(codec::decode("value", &bytes), "decode a value");
        assert_eq!(
            ok(codec::encode("value", &again), "encode again"),
            bytes,
            "value encoding does not round-trip"
        );
    }
}

/// The store's record codec ([`fsm_core::store::codec`]), for every record.
///
/// Invariants: a record that decodes round-trips byte for byte through
/// encode → decode → encode; bytes that do not decode give
/// [`StoreError::Corrupt`] naming the node.
pub fn store_record(data: &[u8]) {
    let path = NodePath::parse("plant/line-1");
    record::<NodeIdentity>(&path, data);
    record::<DesiredDocument>(&path, data);
    record::<ObservedDocument>(&path, data);
    record::<ActionRecord>(&path, data);
    record::<StoredRoot>(&NodePath::top(), data);
}

fn record<T: fsm_core::store::codec::Record>(path: &NodePath, data: &[u8]) {
    use fsm_core::store::codec::{decode, encode};
    match decode::<T>(path, data) {
        Ok(value) => {
            let bytes = ok(encode(path, &value), "encode a decoded record");
            let again: T = ok(decode(path, &bytes), "decode an encoded record");
            assert_eq!(
                ok(encode(path, &again), "encode again"),
                bytes,
                "{} does not round-trip",
                T::WHAT
            );
        }
        Err(StoreError::Corrupt { path: p, what, .. }) => {
            assert_eq!(&p, path, "a corrupt record names another node");
            assert_eq!(what, T::WHAT);
        }
        Err(e) => panic!("undecodable {} is not `Corrupt`: {e}", T::WHAT),
    }
}

/// Snapshot JSON ([`NodeSnapshot::from_json`], the depth-unbounded parser).
///
/// Invariants: what parses writes JSON that parses to the same snapshot;
/// that JSON is `serde_json`'s (for trees shallow enough for it); and
/// whatever `serde_json` itself reads as a snapshot, `from_json` reads the
/// same.
pub fn snapshot_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = NodeSnapshot::from_json(text);
    if let Ok(snapshot) = &parsed {
        let written = ok(snapshot.to_json(), "write a parsed snapshot");
        let again = ok(
            NodeSnapshot::from_json(&written),
            "parse a written snapshot",
        );
        assert_eq!(&again, snapshot, "snapshot JSON does not round-trip");
        if depth(snapshot) <= 32 {
            assert_eq!(
                written,
                json(snapshot),
                "to_json differs from serde_json::to_string"
            );
            let pretty = ok(snapshot.to_json_pretty(), "write pretty");
            assert_eq!(
                pretty,
                ok(serde_json::to_string_pretty(snapshot), "serde pretty"),
                "to_json_pretty differs from serde_json::to_string_pretty"
            );
        }
    }
    if let Ok(by_serde) = serde_json::from_str::<NodeSnapshot>(text) {
        match parsed {
            Ok(snapshot) => assert_eq!(snapshot, by_serde, "from_json and serde_json disagree"),
            Err(e) => panic!("from_json refuses a snapshot serde_json reads: {e}"),
        }
    }
}

fn depth(snapshot: &NodeSnapshot) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(snapshot, 1)];
    while let Some((node, d)) = stack.pop() {
        deepest = deepest.max(d);
        stack.extend(node.children.iter().map(|c| (c, d + 1)));
    }
    deepest
}

/// What the communicator reads from the relay: the pull answer's and the
/// login answer's bodies, the status and body classification, the
/// `Retry-After` header and the JWT's expiry.
///
/// Input: two bytes of status (big-endian, modulo 600), then the body.
///
/// Invariants: message lists and login answers round-trip through JSON; a
/// 2xx answer that is not an HTML page is a success and any status from 400
/// up an error; a `Retry-After` of plain seconds is that many seconds.
pub fn relay_response(data: &[u8]) {
    let (status, body) = match data {
        [a, b, body @ ..] => (u16::from_be_bytes([*a, *b]) % 600, body),
        _ => (200, data),
    };
    if let Ok(messages) = serde_json::from_slice::<Messages>(body) {
        let again: Messages = ok(serde_json::from_str(&json(&messages)), "messages");
        assert_eq!(again, messages, "pull answer does not round-trip");
    }
    if let Ok(login) = serde_json::from_slice::<LoginResponse>(body) {
        let again: LoginResponse = ok(serde_json::from_str(&json(&login)), "login");
        assert_eq!(again, login, "login answer does not round-trip");
    }
    let text = String::from_utf8_lossy(body);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
    let error = classify(status, Some(&text), &text, now);
    let html = {
        let head = text.trim_start().chars().take(14).collect::<String>();
        let head = head.to_ascii_lowercase();
        head.starts_with("<!doctype html") || head.starts_with("<html")
    };
    if (200..300).contains(&status) && !html {
        assert!(
            error.is_none(),
            "a {status} JSON answer is an error: {error:?}"
        );
    }
    if status >= 400 {
        assert!(error.is_some(), "a {status} answer is a success");
    }
    if let Ok(seconds) = text.trim().parse::<u64>() {
        assert_eq!(
            parse_retry_after(&text, now),
            Some(Duration::from_secs(seconds))
        );
    }
    let _ = jwt_expiry(&text);
}

/// Template rendering with arbitrary template text and arbitrary variables.
///
/// Input: the variables first (a count, then for each a name
/// and a value, user variables then global ones), then the template text.
///
/// Invariants: text without template syntax is left as it is; rendering is
/// deterministic (the second render comes from the cache and is the same);
/// a string rendered inside a spec is the string rendered alone; an error
/// names the node.
pub fn templates(data: &[u8]) {
    static TEMPLATES: OnceLock<Templates> = OnceLock::new();
    let templates = TEMPLATES.get_or_init(Templates::new);
    let mut input = Bytes(data);
    let user = input.variables();
    let global = input.variables();
    let text = String::from_utf8_lossy(input.0).into_owned();
    let ctx = VariableBundle::default()
        .with_user(user)
        .with_global(global)
        .flatten();
    let node = NodePath::parse("plant/line-1/press");

    let spec = Value::String(text.clone());
    let as_value = templates.render_value(&spec, &ctx, &node);
    if !has_template(&text) {
        assert_eq!(
            as_value.as_ref().ok(),
            Some(&spec),
            "plain text was changed"
        );
        return;
    }
    let first = templates.render_str(&text, &ctx, &node);
    let second = templates.render_str(&text, &ctx, &node);
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "rendering is not deterministic"),
        (Err(a), Err(b)) => {
            assert_eq!(a.node, node, "the error names another node");
            assert_eq!(a.to_string(), b.to_string(), "errors differ");
        }
        _ => panic!("rendering is not deterministic: {first:?} then {second:?}"),
    }
    if let (Ok(Value::String(in_spec)), Ok(alone)) = (&as_value, &first) {
        assert_eq!(in_spec, alone, "a spec string renders differently alone");
    }
    let nested = Value::map([("field", Value::List(vec![spec]))]);
    match (templates.render_value(&nested, &ctx, &node), &as_value) {
        (Ok(Value::Map(m)), Ok(v)) => {
            assert_eq!(m.get("field"), Some(&Value::List(vec![v.clone()])));
        }
        (Err(e), Err(_)) => {
            assert_eq!(e.node, node);
            assert_eq!(e.field, "field.0", "the error names the wrong field");
        }
        (nested, alone) => panic!("nested and alone disagree: {nested:?} vs {alone:?}"),
    }
}

/// Structured input read off the front of a byte string; reads past the end
/// give zeros, so every input is a valid one.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn string(&mut self) -> String {
        let n = usize::from(self.byte() % 16);
        String::from_utf8_lossy(self.take(n)).into_owned()
    }

    /// A name: usually one templates are likely to use, sometimes any.
    fn name(&mut self) -> String {
        const NAMES: [&str; 7] = ["IP", "PORT", "x", "name", "global", "internal", "a"];
        match self.byte() {
            b @ 0..=199 => NAMES[usize::from(b) % NAMES.len()].to_owned(),
            _ => self.string(),
        }
    }

    fn variables(&mut self) -> Map {
        let n = self.byte() % 5;
        (0..n).map(|_| (self.name(), self.value(0))).collect()
    }

    fn value(&mut self, depth: u8) -> Value {
        let mut eight = [0u8; 8];
        match self.byte() % 7 {
            0 => Value::Null,
            1 => Value::Bool(self.byte() % 2 == 1),
            2 => {
                let b = self.take(8);
                eight[..b.len()].copy_from_slice(b);
                Value::Int(i64::from_le_bytes(eight))
            }
            3 => {
                let b = self.take(8);
                eight[..b.len()].copy_from_slice(b);
                Value::Float(f64::from_le_bytes(eight))
            }
            4 => Value::String(self.string()),
            5 if depth < 3 => {
                let n = self.byte() % 4;
                Value::List((0..n).map(|_| self.value(depth + 1)).collect())
            }
            6 if depth < 3 => {
                let n = self.byte() % 4;
                Value::Map(
                    (0..n)
                        .map(|_| (self.name(), self.value(depth + 1)))
                        .collect(),
                )
            }
            _ => Value::String(self.string()),
        }
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    ok(serde_json::to_string(value), "write JSON")
}

/// The value, or a panic: in a fuzz target a failure the input cannot cause
/// is a finding.
fn ok<T, E: std::fmt::Display>(result: Result<T, E>, doing: &str) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{doing}: {e}"),
    }
}
