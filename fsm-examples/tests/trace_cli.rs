//! The `fsm-trace` command line, run on the checked-in span file
//! `testdata/sample.jsonl`: a root tick with ticks three levels deep, a
//! reconcile with a spawn and a stop, a failed action and a restart (each
//! in a trace of its own, linked to the tick they came from, as the runtime
//! records them), and a second root tick whose `plant/line-1` tick was
//! dropped, with an action that timed out.

// Test helpers outside `#[test]` functions unwrap too: a panic fails the test.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

const T1: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const T2: &str = "0af7651916cd43dd8448eb211c80319c";
const FAILED_ACTION: &str = "7d3ac2f1e0b94c5f8a6b2e1d0c9f8e7a";
const RESTART: &str = "5e1b9c0d2a3f4e6b8c7d9a0b1c2d3e4f";
const TIMED_OUT_ACTION: &str = "c4d2e6f80a1b3c5d7e9f0a2b4c6d8e0f";

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/sample.jsonl")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fsm-trace"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs on the sample file; expects success and returns stdout.
fn ok(args: &[&str]) -> String {
    let file = sample();
    let mut all = vec![file.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = run(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    assert!(stderr.is_empty(), "{args:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn default_output_is_every_trace_as_a_tree() {
    let out = ok(&[]);
    // Not a terminal: no colour.
    assert!(!out.contains('\x1b'), "{out}");
    let first = format!(
        "trace {T1}  2025-11-27T00:00:00.000Z  10 spans  1.52ms
   fsm.tick  plant  1.52ms  running→running
     fsm.reconcile  plant  125µs  spawned=1 updated=1 stopped=1
       fsm.child.spawn  plant/line-3  65µs
       fsm.child.stop  plant/line-2  35µs
     fsm.tick  plant/line-1  1.15ms  running→running  ← linked from fsm.child.restart plant/line-1/bridge-b (trace {RESTART})
       fsm.tick  plant/line-1/bridge-a  910µs  running→degraded
         fsm.tick  plant/line-1/bridge-a/connection  670µs  connecting→connecting  ← linked from fsm.action plant/line-1/bridge-a/connection (trace {FAILED_ACTION})
           fsm.collect  plant/line-1/bridge-a/connection  240µs
     fsm.tick  plant/line-3  120µs  stopped→starting
     fsm.collect  plant  45µs
"
    );
    assert!(out.starts_with(&first), "{out}");
    // Traces follow one another by start time, separated by blank lines.
    let headers: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("trace "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(headers, [T1, FAILED_ACTION, RESTART, T2, TIMED_OUT_ACTION]);
    assert_eq!(out.matches("\n\ntrace ").count(), 4, "{out}");
    // The failed action is flagged, with its error and its link.
    assert!(out.contains(&format!(
        "!! fsm.action  plant/line-1/bridge-a/connection  5.00ms  action=connect outcome=failed  \
         error: connection refused (10.0.7.21:502)  \
         → linked to fsm.tick plant/line-1/bridge-a/connection (trace {T1})\n"
    )), "{out}");
    // So is an outcome other than `succeeded`, without an error status.
    assert!(out.contains(
        "!! fsm.action  plant/line-1/bridge-a  10.00ms  action=poll outcome=timed_out  → linked to"
    ), "{out}");
    assert!(out.contains(
        "   fsm.child.restart  plant/line-1/bridge-b  16µs  failure: panicked: injected fault  → linked to fsm.tick plant/line-1"
    ), "{out}");
    // A span whose parent was dropped is a root of its trace.
    assert!(
        out.contains(
            "   fsm.tick  plant/line-1/bridge-a  240µs  degraded→running  (parent not recorded)"
        ),
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("!!")).count(),
        2,
        "{out}"
    );
}

#[test]
fn colour_on_request() {
    let out = ok(&["--color", "always"]);
    assert!(out.contains("\x1b[31m!! fsm.action"), "{out}");
    assert!(out.contains("\x1b[33m!! fsm.action"), "{out}");
}

#[test]
fn summary_is_one_line_per_trace_and_totals() {
    let out = ok(&["--summary"]);
    let expected = format!(
        "   2025-11-27T00:00:00.000Z  {T1}  10 spans  6 nodes   1.52ms  0 errors
!! 2025-11-27T00:00:00.000Z  {FAILED_ACTION}    1 span   1 node   5.00ms  1 error
   2025-11-27T00:00:00.002Z  {RESTART}    1 span   1 node     16µs  0 errors
   2025-11-27T00:00:00.050Z  {T2}   3 spans  3 nodes    410µs  0 errors
   2025-11-27T00:00:00.050Z  {TIMED_OUT_ACTION}    1 span   1 node  10.00ms  0 errors
total: 5 traces, 16 spans, 7 nodes, 1 error, 16.94ms of root time
"
    );
    assert_eq!(out, expected);
}

#[test]
fn one_trace_by_id_or_prefix() {
    let out = ok(&["--trace", T2]);
    let expected = format!(
        "trace {T2}  2025-11-27T00:00:00.050Z  3 spans  410µs
   fsm.tick  plant  410µs  running→running
     fsm.tick  plant/line-3  70µs  starting→running
   fsm.tick  plant/line-1/bridge-a  240µs  degraded→running  (parent not recorded)  ← linked from fsm.action plant/line-1/bridge-a (trace {TIMED_OUT_ACTION})
"
    );
    assert_eq!(out, expected);
    assert_eq!(ok(&["--trace", "0AF76519"]), expected);
    let summary = ok(&["--trace", "7d3a", "--summary"]);
    assert_eq!(summary.lines().count(), 2, "{summary}");
    assert!(summary.starts_with(&format!("!! 2025-11-27T00:00:00.000Z  {FAILED_ACTION}")));
    assert!(summary.ends_with("total: 1 trace, 1 span, 1 node, 1 error, 5.00ms of root time\n"));
}

#[test]
fn an_unknown_trace_is_an_error() {
    let file = sample();
    let out = run(&[file.to_str().unwrap(), "--trace", "ffff"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no trace ffff"), "{stderr}");
}

#[test]
fn path_keeps_the_subtree_and_its_ancestors() {
    let out = ok(&["--path", "plant/line-1/bridge-a/"]);
    let expected = format!(
        "trace {T1}  2025-11-27T00:00:00.000Z  3 of 10 spans  1.52ms
   fsm.tick  plant  1.52ms  running→running  (context)
     fsm.tick  plant/line-1  1.15ms  running→running  ← linked from fsm.child.restart plant/line-1/bridge-b (trace {RESTART})  (context)
       fsm.tick  plant/line-1/bridge-a  910µs  running→degraded
         fsm.tick  plant/line-1/bridge-a/connection  670µs  connecting→connecting  ← linked from fsm.action plant/line-1/bridge-a/connection (trace {FAILED_ACTION})
           fsm.collect  plant/line-1/bridge-a/connection  240µs

trace {FAILED_ACTION}  2025-11-27T00:00:00.000Z  1 span  5.00ms
"
    );
    assert!(out.starts_with(&expected), "{out}");
    assert!(
        !out.contains("line-3") && !out.contains("bridge-b  16µs"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "trace {T2}  2025-11-27T00:00:00.050Z  1 of 3 spans"
        )),
        "{out}"
    );
    assert!(out.contains(&format!("trace {TIMED_OUT_ACTION}")), "{out}");
    // A prefix matches whole path segments only.
    let out = ok(&["--path", "plant/line"]);
    assert_eq!(
        out,
        "no spans in {} on path plant/line\n".replace("{}", sample().to_str().unwrap())
    );
    // With --summary, only the matching spans count.
    let out = ok(&["--path", "plant/line-3", "--summary"]);
    assert!(
        out.ends_with("total: 2 traces, 3 spans, 1 node, 0 errors, 1.93ms of root time\n"),
        "{out}"
    );
}

#[test]
fn slowest_spans_first() {
    let out = ok(&["--slowest", "4"]);
    let expected = format!(
        "!! 10.00ms  fsm.action  plant/line-1/bridge-a             {TIMED_OUT_ACTION}
!!  5.00ms  fsm.action  plant/line-1/bridge-a/connection  {FAILED_ACTION}
    1.52ms  fsm.tick    plant                             {T1}
    1.15ms  fsm.tick    plant/line-1                      {T1}
"
    );
    assert_eq!(out, expected);
    // Combined with --trace and --path.
    let out = ok(&["--trace", T1, "--slowest", "2"]);
    assert_eq!(
        out,
        format!(
            "   1.52ms  fsm.tick  plant         {T1}\n   1.15ms  fsm.tick  plant/line-1  {T1}\n"
        )
    );
    let out = ok(&[
        "--path",
        "plant/line-1/bridge-a/connection",
        "--slowest",
        "100",
    ]);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines()
            .all(|l| l.contains("plant/line-1/bridge-a/connection")),
        "{out}"
    );
    // With --summary, both.
    let out = ok(&["--summary", "--slowest", "1"]);
    assert!(
        out.contains("of root time\n\n!! 10.00ms  fsm.action"),
        "{out}"
    );
}

#[test]
fn a_truncated_last_line_is_skipped_with_a_warning() {
    let mut text = std::fs::read_to_string(sample()).unwrap();
    text.push_str(r#"{"trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"7081"#);
    let path = temp_file("truncated.jsonl", &text);
    let out = run(&[path.to_str().unwrap(), "--summary"]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning"), "{stderr}");
    assert!(stderr.contains("line 17"), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("total: 5 traces, 16 spans"), "{stdout}");
}

#[test]
fn a_malformed_middle_line_is_an_error() {
    let text = std::fs::read_to_string(sample()).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(5, "not json");
    let path = temp_file("malformed.jsonl", &lines.join("\n"));
    let out = run(&[path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 6, column 2: not a span"), "{stderr}");
}

#[test]
fn empty_and_missing_files() {
    let path = temp_file("empty.jsonl", "");
    let out = run(&[path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("no spans in "));

    let out = run(&["/nonexistent/spans.jsonl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/spans.jsonl"));
}

#[test]
fn bad_arguments_exit_with_2() {
    let file = sample();
    let file = file.to_str().unwrap();
    assert_eq!(run(&[]).status.code(), Some(2));
    assert_eq!(run(&[file, "--slowest", "0"]).status.code(), Some(2));
    assert_eq!(run(&[file, "--slowest", "many"]).status.code(), Some(2));
    assert_eq!(run(&[file, "--bogus"]).status.code(), Some(2));
}
