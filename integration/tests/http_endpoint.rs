//! The HTTP endpoint against a running tree: probes, the tree as JSON, the
//! metrics (checked by a strict parser of the exposition format), and
//! clients that misbehave. Real sockets on 127.0.0.1 and real time, with
//! short limits configured so that every test takes a few seconds at most.

// Test helpers outside `#[test]` functions unwrap too: a panic fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use fsm_actors::telemetry::http::{HttpServer, HttpServerBuilder};
use fsm_actors::telemetry::prometheus::PrometheusExporter;
use fsm_actors::{NodeSnapshot, Tree};
use integration::exposition::{self, Kind};
use integration::{Fault, ProbeSpec, ProbeWorld, probe_registry, small_tree, test_config};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

const LOCALHOST: &str = "127.0.0.1:0";
const WAIT: Duration = Duration::from_secs(10);

/// A status code and a body.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

/// One GET over a fresh connection, answered within `within` or a panic.
fn get_within(addr: SocketAddr, path: &str, within: Duration) -> Answer {
    let mut stream = TcpStream::connect_timeout(&addr, within).unwrap();
    stream.set_read_timeout(Some(within)).unwrap();
    stream.set_write_timeout(Some(within)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("GET {path}: no complete answer within {within:?}: {e}"));
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    Answer {
        status,
        body: body.to_owned(),
    }
}

/// A GET from a blocking thread, so that the test's runtime goes on.
async fn get(addr: SocketAddr, path: &'static str) -> Answer {
    tokio::task::spawn_blocking(move || get_within(addr, path, Duration::from_secs(5)))
        .await
        .unwrap()
}

fn metered_server(limits: HttpServerBuilder) -> (SdkMeterProvider, HttpServer) {
    let exporter = PrometheusExporter::new();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let server = limits
        .metrics(provider.clone(), exporter)
        .bind(LOCALHOST.parse().unwrap())
        .unwrap();
    (provider, server)
}

fn fast_config() -> fsm_actors::TreeConfig {
    let mut config = test_config();
    config.tick_interval = Some(Duration::from_millis(10));
    config
}

/// Reads until the server closes the connection; returns how long that
/// took, or `None` if it stayed open for `patience`.
fn time_to_close(mut stream: TcpStream, patience: Duration) -> (Option<Duration>, Vec<u8>) {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < patience {
        match stream.read(&mut buf) {
            Ok(0) => return (Some(start.elapsed()), answer),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // Reset by the server: closed too.
            Err(_) => return (Some(start.elapsed()), answer),
        }
    }
    (None, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_and_a_huge_header_neither_delay_a_scrape_and_both_are_cut_off() {
    let header_timeout = Duration::from_millis(500);
    let (_provider, server) = metered_server(
        HttpServer::builder()
            .header_read_timeout(header_timeout)
            .max_header_bytes(16 * 1024),
    );
    let addr = server.local_addr();

    // A client that sends its headers one byte at a time, slowly: it never
    // finishes within the header timeout.
    let slow = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
        let reader = stream.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            // At most 40 bytes, one per 100 ms: 4 s if never cut off.
            for byte in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n" {
                if stream.write_all(&[*byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let closed = time_to_close(reader, Duration::from_secs(5)).0;
        writer.join().unwrap();
        closed
    });

    // A client that sends a 10 MB header.
    let huge = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let reader = stream.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let chunk = vec![b'a'; 64 * 1024];
            let mut sent = stream
                .write(b"GET /metrics HTTP/1.1\r\nX-Huge: ")
                .unwrap_or(0);
            while sent < 10 * 1024 * 1024 {
                match stream.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(_) => return (sent, true),
                }
            }
            (sent, false)
        });
        let (closed, answer) = time_to_close(reader, Duration::from_secs(5));
        (closed, answer, writer.join().unwrap())
    });

    // Both are connected and sending: a scrape is answered at once anyway.
    std::thread::sleep(Duration::from_millis(150));
    let scrape_started = Instant::now();
    let scrape =
        tokio::task::spawn_blocking(move || get_within(addr, "/metrics", Duration::from_secs(1)))
            .await
            .unwrap();
    assert_eq!(scrape.status, 200, "{scrape:?}");
    assert!(
        scrape_started.elapsed() < Duration::from_secs(1),
        "{:?}",
        scrape_started.elapsed()
    );

    let slow_closed = slow.join().unwrap().expect("the slow client to be cut off");
    assert!(
        slow_closed >= header_timeout - Duration::from_millis(100)
            && slow_closed < header_timeout + Duration::from_secs(1),
        "cut off after {slow_closed:?}"
    );
    let (huge_closed, answer, (sent, write_failed)) = huge.join().unwrap();
    let huge_closed = huge_closed.expect("the huge header to be cut off");
    assert!(huge_closed < Duration::from_secs(2), "{huge_closed:?}");
    assert!(
        write_failed && sent < 10 * 1024 * 1024,
        "the server took all {sent} bytes"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_follow_the_tree_from_spawn_to_convergence_to_shutdown() {
    let server = HttpServer::builder()
        .bind(LOCALHOST.parse().unwrap())
        .unwrap();
    let addr = server.local_addr();
    // Before any tree: the process is alive, but not ready.
    assert_eq!(get(addr, "/healthz").await.status, 200);
    let readyz = get(addr, "/readyz").await;
    assert_eq!(readyz.status, 503);
    assert!(readyz.body.contains("no tree"), "{readyz:?}");
    assert_eq!(get(addr, "/tree").await.status, 503);

    // A tree ticked by hand: not converged until it has ticked.
    let mut config = fast_config();
    config.tick_interval = None;
    let world = ProbeWorld::default();
    let tree = Tree::spawn(small_tree(), probe_registry(&world), config)
        .await
        .unwrap();
    server.serve_tree(&tree);
    assert_eq!(get(addr, "/healthz").await.status, 200);
    let readyz = get(addr, "/readyz").await;
    assert_eq!(readyz.status, 503, "{readyz:?}");
    assert!(readyz.body.contains("not converged"), "{readyz:?}");

    let deadline = Instant::now() + WAIT;
    while !tree.status().converged || tree.status().observed_generation < tree.generation() {
        assert!(Instant::now() < deadline, "{:?}", tree.status());
        tree.tick().unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let readyz = get(addr, "/readyz").await;
    assert_eq!(readyz.status, 200, "{readyz:?}");

    // A new root spec: not ready until the tree has acted on it.
    let generation = tree
        .update_root_spec(ProbeSpec::default().named("root"))
        .unwrap();
    let readyz = get(addr, "/readyz").await;
    assert_eq!(readyz.status, 503, "{readyz:?}");
    while tree.status().observed_generation < generation || !tree.status().converged {
        assert!(Instant::now() < deadline, "{:?}", tree.status());
        tree.tick().unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get(addr, "/readyz").await.status, 200);

    // Gone: neither alive nor ready.
    tree.shutdown(WAIT).await;
    let healthz = get(addr, "/healthz").await;
    assert_eq!(healthz.status, 503, "{healthz:?}");
    assert!(healthz.body.contains("stopped"), "{healthz:?}");
    assert_eq!(get(addr, "/readyz").await.status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_that_gave_up_is_neither_healthy_nor_ready_and_says_why() {
    let server = HttpServer::builder()
        .bind(LOCALHOST.parse().unwrap())
        .unwrap();
    let addr = server.local_addr();
    let world = ProbeWorld::default();
    let (config, root) = integration::giving_up(fast_config());
    let tree = Tree::spawn(root, probe_registry(&world), config)
        .await
        .unwrap();
    server.serve_tree(&tree);
    tree.wait_converged(WAIT).await.unwrap();
    assert_eq!(get(addr, "/readyz").await.status, 200);

    world.arm("root/leaf", Fault::Crash, u32::MAX);
    tokio::time::timeout(WAIT, tree.wait_fatal())
        .await
        .expect("the tree to give up")
        .unwrap();
    for path in ["/healthz", "/readyz"] {
        let answer = get(addr, path).await;
        assert_eq!(answer.status, 503, "{path}: {answer:?}");
        assert!(answer.body.contains("gave up"), "{path}: {answer:?}");
    }
    tree.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tree_endpoint_serves_a_snapshot_that_reads_back() {
    let server = HttpServer::builder()
        .bind(LOCALHOST.parse().unwrap())
        .unwrap();
    let addr = server.local_addr();
    let world = ProbeWorld::default();
    let tree = Tree::spawn(small_tree(), probe_registry(&world), fast_config())
        .await
        .unwrap();
    server.serve_tree(&tree);
    tree.wait_converged(WAIT).await.unwrap();

    let answer = get(addr, "/tree").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let snapshot = NodeSnapshot::from_json(&answer.body).unwrap();
    assert_eq!(snapshot.path.to_string(), "root");
    assert!(snapshot.find("root/a/a1").is_some(), "{snapshot:#?}");
    assert_eq!(snapshot.len(), 4);
    tree.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_of_a_running_tree_are_valid_exposition_text() {
    let (provider, server) = metered_server(HttpServer::builder());
    let addr = server.local_addr();
    let mut config = fast_config();
    config.meter = Some(provider.meter("fsmv2"));
    let world = ProbeWorld::default();
    let tree = Tree::spawn(small_tree(), probe_registry(&world), config)
        .await
        .unwrap();
    server.serve_tree(&tree);
    tree.wait_converged(WAIT).await.unwrap();

    let answer = get(addr, "/metrics").await;
    assert_eq!(answer.status, 200);
    let text = exposition::parse(&answer.body).unwrap_or_else(|e| panic!("{e}\n{}", answer.body));
    let family = |name: &str| {
        text.family(name)
            .unwrap_or_else(|| panic!("no {name} in\n{}", answer.body))
    };
    assert_eq!(family("fsmv2_state_transitions_total").kind, Kind::Counter);
    assert!(text.sum("fsmv2_state_transitions_total", &[]) >= 4.0);
    assert_eq!(family("fsmv2_children_count").kind, Kind::Gauge);
    let reconcile = family("fsmv2_reconciliation_duration_seconds");
    assert_eq!(reconcile.kind, Kind::Histogram);
    assert!(reconcile.help.as_deref().is_some_and(|h| !h.is_empty()));
    assert!(text.sum("fsmv2_reconciliation_duration_seconds_count", &[]) >= 1.0);
    tree.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_server_stops_listening_before_the_drop_returns() {
    let server = HttpServer::builder()
        .bind(LOCALHOST.parse().unwrap())
        .unwrap();
    let addr = server.local_addr();
    assert_eq!(get(addr, "/healthz").await.status, 200);
    // An open connection that has sent nothing yet.
    let idle = TcpStream::connect(addr).unwrap();
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
    let (closed, _) = time_to_close(idle, Duration::from_secs(1));
    assert!(closed.is_some(), "the open connection was left open");
}
