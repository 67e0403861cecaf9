//! Three `fsm-node` processes on 127.0.0.1: the demo plant on node a, its
//! lines placed on b and c. Killing c moves its line to a live node within
//! two seconds; a restarted c runs nothing twice; a placement change moves
//! a line; a frozen node's line moves and the thawed node stops its copy;
//! a wrong cookie is refused.
//!
//! Every node runs with `--run-for` and is killed when its handle drops, so
//! no process outlives the test. Run with
//! `cargo test -p fsm-examples --features cluster --test cluster`.

// A test reports the failover time it measured (`--nocapture` shows it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fsm-node");
const COOKIE: &str = "the-plant-cookie";

/// A free port on 127.0.0.1 (bound once, released at once).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "fsm-cluster-{tag}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One `fsm-node` process, killed on drop.
struct Node {
    name: String,
    addr: SocketAddr,
    child: Child,
    status: PathBuf,
    log: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn start(
        dir: &Path,
        name: &str,
        addr: SocketAddr,
        cookie: &str,
        peers: &[SocketAddr],
        root: Option<&Path>,
    ) -> Node {
        let status = dir.join(format!("{name}.json"));
        let _ = std::fs::remove_file(&status);
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(BIN);
        cmd.args(["--name", name, "--cookie", cookie, "--run-for", "90"])
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--status-file")
            .arg(&status)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for p in peers {
            cmd.arg("--peer").arg(p.to_string());
        }
        if let Some(root) = root {
            cmd.arg("--root").arg(root);
        }
        Node {
            name: name.to_owned(),
            addr,
            child: cmd.spawn().unwrap(),
            status,
            log,
        }
    }

    fn status(&self) -> Option<Value> {
        let text = std::fs::read_to_string(&self.status).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The keys this node hosts, with their live node counts.
    fn hosted(&self) -> BTreeMap<String, u64> {
        self.status()
            .and_then(|s| s.get("hosted").cloned())
            .and_then(|h| h.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|h| {
                (
                    h["key"].as_str().unwrap_or_default().to_owned(),
                    h["live_nodes"].as_u64().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Of the subtree `key` this node hosts, the nodes restored from what
    /// they recorded where the subtree ran before.
    fn restored_nodes(&self, key: &str) -> Option<u64> {
        let status = self.status()?;
        let hosted = status.get("hosted")?.as_array()?;
        hosted
            .iter()
            .find(|h| h["key"] == key)
            .and_then(|h| h["restored_nodes"].as_u64())
    }

    fn root_converged(&self) -> bool {
        self.status()
            .is_some_and(|s| s["root"]["converged"].as_bool() == Some(true))
    }

    fn sees(&self, name: &str) -> bool {
        self.status().is_some_and(|s| {
            s["live_nodes"]
                .as_array()
                .is_some_and(|l| l.iter().any(|n| n.as_str() == Some(name)))
        })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn wait_until(what: &str, timeout: Duration, nodes: &[&Node], mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let logs: Vec<String> = nodes
        .iter()
        .map(|n| {
            let text = n.log_text();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            format!(
                "--- {} status {:?}\n{}",
                n.name,
                n.status(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect();
    panic!("timed out waiting for {what}\n{}", logs.join("\n"));
}

/// Where each placed key runs, over all nodes given: key → [(node, live nodes)].
fn placements(nodes: &[&Node]) -> BTreeMap<String, Vec<(String, u64)>> {
    let mut all: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for n in nodes {
        for (key, live) in n.hosted() {
            all.entry(key).or_default().push((n.name.clone(), live));
        }
    }
    all
}

fn runs_on(nodes: &[&Node], key: &str) -> Vec<String> {
    placements(nodes)
        .get(key)
        .map(|v| v.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default()
}

fn cluster_spec(dir: &Path, line_1_on: &str) -> PathBuf {
    let out = Command::new(BIN).arg("--print-spec").output().unwrap();
    assert!(out.status.success());
    let mut spec: Value = serde_json::from_slice(&out.stdout).unwrap();
    spec["user_spec"]["lines"][0]["placement"]["node"] = Value::from(line_1_on);
    let path = dir.join("root.json");
    let tmp = dir.join("root.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

const LINE_1: &str = "a:plant/line-1";
const LINE_2: &str = "a:plant/line-2";

#[test]
fn lines_fail_over_within_two_seconds_never_run_twice_and_move_with_their_placement() {
    let dir = temp_dir("failover");
    let (a_addr, b_addr, c_addr) = (free_addr(), free_addr(), free_addr());
    let root = cluster_spec(&dir, "b");
    let b = Node::start(&dir, "b", b_addr, COOKIE, &[], None);
    let mut c = Node::start(&dir, "c", c_addr, COOKIE, &[], None);
    let a = Node::start(&dir, "a", a_addr, COOKIE, &[b_addr, c_addr], Some(&root));

    // Placed as declared, and the whole tree converges across processes.
    wait_until(
        "the lines placed on b and c, converged",
        Duration::from_secs(30),
        &[&a, &b, &c],
        || {
            a.root_converged()
                && runs_on(&[&a, &b, &c], LINE_1) == ["b"]
                && runs_on(&[&a, &b, &c], LINE_2) == ["c"]
        },
    );
    let line_1_nodes = placements(&[&a, &b, &c])[LINE_1][0].1;
    let line_2_nodes = placements(&[&a, &b, &c])[LINE_2][0].1;
    assert!(
        line_1_nodes > 1 && line_2_nodes > 1,
        "each line's subtree counts its workers: {line_1_nodes}, {line_2_nodes}"
    );

    // SIGKILL c: its line runs on a live node within 2 s.
    c.child.kill().unwrap();
    let killed = Instant::now();
    c.child.wait().unwrap();
    wait_until(
        "line-2 on a live node",
        Duration::from_secs(5),
        &[&a, &b],
        || runs_on(&[&a, &b], LINE_2).len() == 1,
    );
    let failover = killed.elapsed();
    println!("line-2 ran again {failover:?} after node c was killed");
    assert!(
        failover < Duration::from_secs(2),
        "line-2 ran again after {failover:?}"
    );
    wait_until(
        "the tree converged again",
        Duration::from_secs(15),
        &[&a, &b],
        || a.root_converged(),
    );
    // From its declared spec, and restored from what its nodes recorded on
    // c (sent to a with each renewal): every one of them.
    let restored: Vec<u64> = [&a, &b]
        .iter()
        .filter_map(|n| n.restored_nodes(LINE_2))
        .collect();
    assert_eq!(restored, [line_2_nodes], "line-2's nodes restored");

    // Restart c: nothing runs twice, and every worker instance is counted
    // once.
    drop(c);
    let c = Node::start(&dir, "c", c_addr, COOKIE, &[a_addr], None);
    wait_until(
        "a sees c again",
        Duration::from_secs(15),
        &[&a, &b, &c],
        || a.sees("c") && c.status().is_some(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let all = placements(&[&a, &b, &c]);
    for key in [LINE_1, LINE_2] {
        assert_eq!(all[key].len(), 1, "{key} runs once: {all:?}");
    }
    assert_eq!(
        all[LINE_2][0].1, line_2_nodes,
        "line-2's workers, once each: {all:?}"
    );
    assert!(
        c.hosted().is_empty(),
        "the restarted c runs nothing: {all:?}"
    );

    // A placement change moves line-1 from b to c: stopped there, started here.
    let _ = cluster_spec(&dir, "c");
    wait_until(
        "line-1 moved to c",
        Duration::from_secs(15),
        &[&a, &b, &c],
        || runs_on(&[&a, &b, &c], LINE_1) == ["c"] && a.root_converged(),
    );
    let all = placements(&[&a, &b, &c]);
    for key in [LINE_1, LINE_2] {
        assert_eq!(all[key].len(), 1, "{key} runs once: {all:?}");
    }
    // (Its nodes may not all be up yet: the count is of those restored.)
    assert_eq!(
        c.restored_nodes(LINE_1),
        Some(line_1_nodes),
        "line-1 moved with what its nodes recorded on b"
    );

    // Freeze c (a hung process: its connections stay open, it answers
    // nothing): the renewals time out, line-1 runs on a live node, and c,
    // thawed, stops its copy (the lease ran out) instead of running it too.
    signal(&c, "STOP");
    wait_until(
        "line-1 off the frozen c",
        Duration::from_secs(5),
        &[&a, &b],
        || runs_on(&[&a, &b], LINE_1).len() == 1,
    );
    signal(&c, "CONT");
    wait_until(
        "the thawed c stops its copy",
        Duration::from_secs(5),
        &[&a, &b, &c],
        || {
            c.status().is_some_and(|s| {
                s["hosted"]
                    .as_array()
                    .is_some_and(|h| !h.iter().any(|e| e["key"] == LINE_1))
            })
        },
    );
    let all = placements(&[&a, &b, &c]);
    for key in [LINE_1, LINE_2] {
        assert_eq!(all[key].len(), 1, "{key} runs once: {all:?}");
    }
    wait_until(
        "the tree converged again",
        Duration::from_secs(15),
        &[&a, &b, &c],
        || a.root_converged(),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends a signal to a node's process (`STOP`, `CONT`).
fn signal(node: &Node, name: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(node.child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} {}", node.child.id());
}

#[test]
fn a_node_with_the_wrong_cookie_is_refused_with_a_clear_error() {
    let dir = temp_dir("cookie");
    let a_addr = free_addr();
    let a = Node::start(&dir, "a", a_addr, COOKIE, &[], None);
    wait_until("a up", Duration::from_secs(15), &[&a], || {
        a.status().is_some()
    });
    let out = Command::new(BIN)
        .args([
            "--name",
            "intruder",
            "--cookie",
            "not-the-cookie",
            "--run-for",
            "20",
        ])
        .arg("--listen")
        .arg(free_addr().to_string())
        .arg("--peer")
        .arg(a.addr.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("same --cookie"), "{stderr}");
    assert!(stderr.contains(&a.addr.to_string()), "{stderr}");
    // And a runs on, alone.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!a.sees("intruder"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The spans of a `--trace-out` file.
fn spans(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn a_root_tick_is_one_trace_across_processes() {
    let dir = temp_dir("trace");
    let (a_addr, b_addr) = (free_addr(), free_addr());
    // Both lines on b (c is not there: the others go to a live node).
    let root = cluster_spec(&dir, "b");
    let run = |name: &str, addr: SocketAddr, peers: &[SocketAddr], root: Option<&Path>| {
        let trace = dir.join(format!("{name}.jsonl"));
        let mut cmd = Command::new(BIN);
        cmd.args(["--name", name, "--cookie", COOKIE, "--run-for", "4"])
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--trace-out")
            .arg(&trace)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for p in peers {
            cmd.arg("--peer").arg(p.to_string());
        }
        if let Some(root) = root {
            cmd.arg("--root").arg(root);
        }
        (cmd.spawn().unwrap(), trace)
    };
    let (mut b, b_trace) = run("b", b_addr, &[], None);
    let (mut a, a_trace) = run("a", a_addr, &[b_addr], Some(&root));
    // Both stop by themselves and flush their span files.
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    let (a_spans, b_spans) = (spans(&a_trace), spans(&b_trace));
    let id = |s: &Value, k: &str| s[k].as_str().unwrap_or_default().to_owned();
    // On b: the tick of line-1, under the span of the forwarded tick, whose
    // parent is the plant's tick on a, in the same trace.
    let line_ticks: Vec<&Value> = b_spans
        .iter()
        .filter(|s| s["name"] == "fsm.tick" && s["attributes"]["node.path"] == "line-1")
        .collect();
    assert!(!line_ticks.is_empty(), "no tick of line-1 on b");
    let crossed = line_ticks.iter().any(|tick| {
        let Some(remote) = b_spans.iter().find(|s| {
            s["name"] == "fsm.remote_tick" && id(s, "span_id") == id(tick, "parent_span_id")
        }) else {
            return false;
        };
        a_spans.iter().any(|p| {
            p["name"] == "fsm.tick"
                && p["attributes"]["node.path"] == "plant"
                && id(p, "span_id") == id(remote, "parent_span_id")
                && id(p, "trace_id") == id(tick, "trace_id")
        })
    });
    assert!(
        crossed,
        "no tick of line-1 on b continues a plant tick's trace from a"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
