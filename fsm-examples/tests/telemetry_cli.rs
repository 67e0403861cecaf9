//! The demo writes a span file that `fsm-trace` reads: one root tick's trace
//! covers every node of the tree.

// Test helpers outside `#[test]` functions unwrap too: a panic fails the test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use fsm_actors::NodeSnapshot;

#[test]
fn a_recorded_run_reads_back_and_one_tick_covers_every_node() {
    let dir = std::env::temp_dir().join(format!("fsm-telemetry-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("trace.jsonl");
    // The demo changes its spec at the halfway tick and fails unless the
    // tree has converged by the last: twenty ticks (400 ms) after the
    // change leave a loaded machine room, where five did not.
    let demo = Command::new(env!("CARGO_BIN_EXE_fsm-demo"))
        .args(["--ticks", "40", "--tick-ms", "20", "--json", "--trace-out"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let snapshot: NodeSnapshot = serde_json::from_slice(&demo.stdout).unwrap();
    let nodes: BTreeSet<String> = snapshot.iter().map(|n| n.path.to_string()).collect();

    let summary = Command::new(env!("CARGO_BIN_EXE_fsm-trace"))
        .arg(&file)
        .arg("--summary")
        .output()
        .unwrap();
    assert!(
        summary.status.success(),
        "{}",
        String::from_utf8_lossy(&summary.stderr)
    );
    let text = String::from_utf8_lossy(&summary.stdout);
    assert!(
        text.lines().last().unwrap().starts_with("total: "),
        "{text}"
    );

    let mut by_trace: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in std::fs::read_to_string(&file).unwrap().lines() {
        let span: serde_json::Value = serde_json::from_str(line).unwrap();
        if span["name"] == "fsm.tick"
            && let Some(path) = span["attributes"]["node.path"].as_str()
        {
            by_trace
                .entry(span["trace_id"].as_str().unwrap().to_owned())
                .or_default()
                .insert(path.to_owned());
        }
    }
    assert!(
        by_trace.values().any(|paths| nodes.is_subset(paths)),
        "no trace covers all {} nodes",
        nodes.len()
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_demo_serves_prometheus_metrics_while_it_runs() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::process::Stdio;

    let mut demo = Command::new(env!("CARGO_BIN_EXE_fsm-demo"))
        .args([
            "--ticks",
            "150",
            "--tick-ms",
            "20",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(demo.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("fsm-demo: serving metrics on http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_owned();
    // Let a few ticks pass, then scrape until the tree has counted its
    // children and transitions.
    let mut body = String::new();
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(40));
        let mut stream = TcpStream::connect(&addr).unwrap();
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        body.clear();
        stream.read_to_string(&mut body).unwrap();
        if body.contains("fsmv2_children_count{worker_type=\"plant\"} 2")
            && body.contains("fsmv2_state_transitions_total{")
        {
            break;
        }
    }
    assert!(
        body.contains("fsmv2_children_count{worker_type=\"plant\"} 2"),
        "{body}"
    );
    let transitions: f64 = body
        .lines()
        .filter(|l| l.starts_with("fsmv2_state_transitions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(transitions > 0.0, "{body}");
    // The probes answer too: ready once converged, and the tree as JSON.
    let get = |path: &str| {
        let mut stream = TcpStream::connect(&addr).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    assert!(get("/healthz").starts_with("HTTP/1.1 200"));
    let ready = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        get("/readyz").starts_with("HTTP/1.1 200")
    });
    assert!(ready, "{}", get("/readyz"));
    let tree = get("/tree");
    let (_, json) = tree.split_once("\r\n\r\n").unwrap();
    let snapshot = NodeSnapshot::from_json(json).unwrap();
    assert_eq!(snapshot.path.to_string(), "plant");
    assert!(demo.wait().unwrap().success());
}
