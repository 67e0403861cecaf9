//! JSON for [`NodeSnapshot`]s of any depth.
//!
//! The derived serde implementations recurse once per level, and
//! `serde_json` refuses input nested deeper than 128 (a snapshot of about
//! 60 levels); deeper still, a recursive walk overflows a thread's stack.
//! Here the tree is walked with explicit stacks: each node's own fields go
//! through serde (they are shallow), its `children` are handled here. The
//! text is the same as the derived implementations'.

use serde::Serialize;
use serde::de::Error as _;

use fsm_core::{ActionReport, NodePath};

use crate::snapshot::{CollectError, NodeSnapshot, RestartingInfo};

/// A node's fields but its children, in the order of [`NodeSnapshot`]'s
/// (serialised first, then `children`, its last field).
#[derive(Serialize)]
struct Fields<'a> {
    path: &'a NodePath,
    name: &'a str,
    worker_type: &'a str,
    state: &'a str,
    desired_state: &'a str,
    healthy: bool,
    last_error: &'a Option<String>,
    converged: bool,
    stale: bool,
    state_reason: &'a str,
    ticks: u64,
    collect_failures: u64,
    last_collect_error: &'a Option<CollectError>,
    action_in_flight: &'a Option<String>,
    last_action: &'a Option<ActionReport>,
    restarts: u64,
    generation: u64,
    observed_generation: u64,
    restarting: &'a Option<RestartingInfo>,
    circuit_open: bool,
    in_state_for_ms: u64,
    location_path: &'a str,
    restored: &'a Option<fsm_core::store::ObservedDocument>,
}

impl<'a> From<&'a NodeSnapshot> for Fields<'a> {
    fn from(n: &'a NodeSnapshot) -> Self {
        Self {
            path: &n.path,
            name: &n.name,
            worker_type: &n.worker_type,
            state: &n.state,
            desired_state: &n.desired_state,
            healthy: n.healthy,
            last_error: &n.last_error,
            converged: n.converged,
            stale: n.stale,
            state_reason: &n.state_reason,
            ticks: n.ticks,
            collect_failures: n.collect_failures,
            last_collect_error: &n.last_collect_error,
            action_in_flight: &n.action_in_flight,
            last_action: &n.last_action,
            restarts: n.restarts,
            generation: n.generation,
            observed_generation: n.observed_generation,
            restarting: &n.restarting,
            circuit_open: n.circuit_open,
            in_state_for_ms: n.in_state_for_ms,
            location_path: &n.location_path,
            restored: &n.restored,
        }
    }
}

/// Compact JSON of `root`, as `serde_json::to_string` writes it.
pub(crate) fn to_json(root: &NodeSnapshot) -> Result<String, serde_json::Error> {
    let mut out = Vec::new();
    // What is left to write: a node, or the end of a node's children.
    enum Next<'a> {
        Node(&'a NodeSnapshot, bool),
        Close,
    }
    let mut stack = vec![Next::Node(root, false)];
    while let Some(next) = stack.pop() {
        match next {
            Next::Close => out.extend_from_slice(b"]}"),
            Next::Node(node, comma) => {
                if comma {
                    out.push(b',');
                }
                serde_json::to_writer(&mut out, &Fields::from(node))?;
                // Reopen the object for its last field.
                out.pop();
                out.extend_from_slice(b",\"children\":[");
                stack.push(Next::Close);
                for (i, child) in node.children.iter().enumerate().rev() {
                    stack.push(Next::Node(child, i > 0));
                }
            }
        }
    }
    // serde_json writes UTF-8 only.
    String::from_utf8(out).map_err(serde_json::Error::custom)
}

/// Pretty JSON of `root`, as `serde_json::to_string_pretty` writes it.
pub(crate) fn to_json_pretty(root: &NodeSnapshot) -> Result<String, serde_json::Error> {
    Ok(indent(&to_json(root)?))
}

/// Indents compact JSON by two spaces a level, one member or element a line.
fn indent(compact: &str) -> String {
    let bytes = compact.as_bytes();
    let mut out = String::with_capacity(compact.len() * 2);
    let mut depth = 0usize;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    };
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'"' => {
                let end = string_end(bytes, i).unwrap_or(bytes.len());
                out.push_str(&compact[i..end]);
                i = end;
                continue;
            }
            b'{' | b'[' => {
                if matches!(bytes.get(i + 1), Some(b'}' | b']')) {
                    out.push_str(&compact[i..i + 2]);
                    i += 2;
                    continue;
                }
                out.push(char::from(b));
                depth += 1;
                newline(&mut out, depth);
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(char::from(b));
            }
            b',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            b':' => out.push_str(": "),
            _ => {
                // Numbers and literals: ASCII up to the next delimiter.
                let end = bytes[i..]
                    .iter()
                    .position(|c| matches!(c, b',' | b'}' | b']' | b'"' | b':'))
                    .map_or(bytes.len(), |p| i + p);
                out.push_str(&compact[i..end]);
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// The position just past the string that starts at `start` (a `"`).
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

fn malformed(what: &str, at: usize) -> serde_json::Error {
    serde_json::Error::custom(format!("malformed node snapshot JSON: {what} at byte {at}"))
}

/// For every `{` and `[` outside strings, the position of its match.
fn matching(bytes: &[u8]) -> Result<foldhash::HashMap<usize, usize>, serde_json::Error> {
    let mut pairs = foldhash::HashMap::default();
    let mut open: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i = string_end(bytes, i).ok_or_else(|| malformed("unterminated string", i))?;
                continue;
            }
            b'{' | b'[' => open.push(i),
            c @ (b'}' | b']') => {
                let start = open
                    .pop()
                    .ok_or_else(|| malformed("unmatched bracket", i))?;
                let expected = if bytes[start] == b'{' { b'}' } else { b']' };
                if c != expected {
                    return Err(malformed("mismatched bracket", i));
                }
                pairs.insert(start, i);
            }
            _ => {}
        }
        i += 1;
    }
    match open.pop() {
        Some(at) => Err(malformed("unclosed bracket", at)),
        None => Ok(pairs),
    }
}

/// Where the value that starts at `i` ends (just past it).
fn value_end(
    bytes: &[u8],
    pairs: &foldhash::HashMap<usize, usize>,
    i: usize,
) -> Result<usize, serde_json::Error> {
    match bytes.get(i) {
        Some(b'{' | b'[') => pairs
            .get(&i)
            .map(|end| end + 1)
            .ok_or_else(|| malformed("unmatched bracket", i)),
        Some(b'"') => string_end(bytes, i).ok_or_else(|| malformed("unterminated string", i)),
        Some(_) => Ok(bytes[i..]
            .iter()
            .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
            .map_or(bytes.len(), |p| i + p)),
        None => Err(malformed("missing value", i)),
    }
}

/// One node object of the text: its own fields (with `children` emptied),
/// and where its children's objects are.
struct Split {
    own: String,
    children: Vec<(usize, usize)>,
}

/// Splits the object at `start..end` into its fields and its children.
fn split_node(
    text: &str,
    pairs: &foldhash::HashMap<usize, usize>,
    start: usize,
    end: usize,
) -> Result<Split, serde_json::Error> {
    let bytes = text.as_bytes();
    if bytes.get(start) != Some(&b'{') {
        return Err(malformed("a node that is not an object", start));
    }
    let mut i = skip_ws(bytes, start + 1);
    let mut children_span = None;
    if bytes.get(i) != Some(&b'}') {
        loop {
            let key_end = value_end(bytes, pairs, i)?;
            if bytes.get(i) != Some(&b'"') {
                return Err(malformed("a member without a name", i));
            }
            let key: String = serde_json::from_str(&text[i..key_end])?;
            i = skip_ws(bytes, key_end);
            if bytes.get(i) != Some(&b':') {
                return Err(malformed("a member without `:`", i));
            }
            i = skip_ws(bytes, i + 1);
            let value_start = i;
            i = value_end(bytes, pairs, i)?;
            if key == "children" && children_span.is_none() && bytes[value_start] == b'[' {
                children_span = Some((value_start, i));
            }
            i = skip_ws(bytes, i);
            match bytes.get(i) {
                Some(b',') => i = skip_ws(bytes, i + 1),
                Some(b'}') if i + 1 == end => break,
                _ => return Err(malformed("expected `,` or `}`", i)),
            }
        }
    }
    let Some((c_start, c_end)) = children_span else {
        // No children array: serde says what is wrong, if anything.
        return Ok(Split {
            own: text[start..end].to_owned(),
            children: Vec::new(),
        });
    };
    let mut children = Vec::new();
    let mut j = skip_ws(bytes, c_start + 1);
    if bytes.get(j) != Some(&b']') {
        loop {
            if bytes.get(j) != Some(&b'{') {
                return Err(malformed("a child that is not an object", j));
            }
            let child_end = value_end(bytes, pairs, j)?;
            children.push((j, child_end));
            j = skip_ws(bytes, child_end);
            match bytes.get(j) {
                Some(b',') => j = skip_ws(bytes, j + 1),
                Some(b']') if j + 1 == c_end => break,
                _ => return Err(malformed("expected `,` or `]`", j)),
            }
        }
    }
    let mut own = String::with_capacity(end - start - (c_end - c_start) + 2);
    own.push_str(&text[start..c_start]);
    own.push_str("[]");
    own.push_str(&text[c_end..end]);
    Ok(Split { own, children })
}

/// Parses what [`to_json`] (or `serde_json`) wrote, at any depth.
pub(crate) fn from_json(text: &str) -> Result<NodeSnapshot, serde_json::Error> {
    let bytes = text.as_bytes();
    let pairs = matching(bytes)?;
    let start = skip_ws(bytes, 0);
    let end = value_end(bytes, &pairs, start)?;
    if skip_ws(bytes, end) != bytes.len() {
        return Err(malformed("trailing characters", end));
    }
    // Depth first; a node is complete once all of its children are, and is
    // then moved into its parent.
    struct Open {
        node: NodeSnapshot,
        pending: std::vec::IntoIter<(usize, usize)>,
    }
    let parse = |start: usize, end: usize| -> Result<Open, serde_json::Error> {
        let split = split_node(text, &pairs, start, end)?;
        let node: NodeSnapshot = serde_json::from_str(&split.own)?;
        Ok(Open {
            node,
            pending: split.children.into_iter(),
        })
    };
    let mut stack = vec![parse(start, end)?];
    loop {
        let Some(top) = stack.last_mut() else {
            return Err(malformed("no node", start));
        };
        if let Some((s, e)) = top.pending.next() {
            let child = parse(s, e)?;
            stack.push(child);
            continue;
        }
        let Some(done) = stack.pop() else {
            return Err(malformed("no node", start));
        };
        match stack.last_mut() {
            Some(parent) => parent.node.children.push(done.node),
            None => return Ok(done.node),
        }
    }
}

#[cfg(test)]
mod tests {
    use fsm_core::ActionOutcome;

    use super::*;

    /// A chain of `depth` nodes, with every kind of field set somewhere.
    fn chain(depth: usize) -> NodeSnapshot {
        let mut nodes = Vec::with_capacity(depth);
        for i in 0..depth {
            // Short paths: a real chain's grow with depth, which would make
            // this test's JSON quadratic in size.
            let path = NodePath::top().child(&format!("n{i}"));
            let mut n = NodeSnapshot::placeholder(
                path,
                "w\"orker",
                "running",
                (i % 3 == 0).then(|| format!("error {i}: \\ \"quoted\" é {{ [ ,")),
            );
            n.last_action = Some(ActionReport {
                action: "start".to_owned(),
                outcome: ActionOutcome::Failed("x, y: [z]".to_owned()),
            });
            n.restarting = (i % 2 == 0).then(|| RestartingInfo {
                attempt: 2,
                next_try_in_ms: u64::MAX,
                last_failure: "}".to_owned(),
            });
            n.restarts = i as u64;
            nodes.push(n);
        }
        let mut child: Option<NodeSnapshot> = None;
        while let Some(mut n) = nodes.pop() {
            if let Some(c) = child.take() {
                // A leaf sibling too, so that nodes have several children.
                let leaf = NodeSnapshot::placeholder(n.path.child("leaf"), "w", "idle", None);
                n.children = vec![leaf, c];
            }
            child = Some(n);
        }
        child.unwrap_or_else(|| NodeSnapshot::placeholder(NodePath::top(), "w", "x", None))
    }

    #[test]
    fn the_json_is_the_same_as_serde_jsons() {
        let snap = chain(5);
        assert_eq!(
            snap.to_json().unwrap(),
            serde_json::to_string(&snap).unwrap()
        );
        assert_eq!(
            snap.to_json_pretty().unwrap(),
            serde_json::to_string_pretty(&snap).unwrap()
        );
        let pretty = serde_json::to_string_pretty(&snap).unwrap();
        assert_eq!(NodeSnapshot::from_json(&pretty).unwrap(), snap);
    }

    #[test]
    fn a_snapshot_of_any_depth_round_trips_through_json_on_a_small_stack() {
        // A tokio worker's or a test's stack: 2 MiB.
        let ran = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let snap = chain(5_000);
                assert_eq!(snap.height(), 5_000);
                let json = snap.to_json().unwrap();
                let back = NodeSnapshot::from_json(&json).unwrap();
                assert_eq!(back.len(), 10_000 - 1);
                assert_eq!(back.height(), 5_000);
                assert!(back == snap);
                // Indented JSON grows with the square of the depth: deep
                // enough for serde_json's limit, no deeper.
                let snap = chain(300);
                let pretty = snap.to_json_pretty().unwrap();
                assert!(serde_json::from_str::<NodeSnapshot>(&pretty).is_err());
                assert!(NodeSnapshot::from_json(&pretty).unwrap() == snap);
            })
            .unwrap()
            .join();
        assert!(ran.is_ok());
    }

    #[test]
    fn malformed_json_is_an_error_not_a_panic() {
        let good = chain(3).to_json().unwrap();
        for bad in [
            "",
            "{",
            "[]",
            "{\"children\":[1]}",
            &good[..good.len() - 1],
            &format!("{good} x"),
            &good.replace("\"children\":[", "\"children\":[{},"),
            &good.replacen(',', ";", 1),
        ] {
            assert!(NodeSnapshot::from_json(bad).is_err(), "{bad}");
        }
    }
}
