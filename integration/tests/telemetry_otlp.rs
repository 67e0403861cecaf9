//! OTLP export reaches a real OTLP/HTTP endpoint: a receiver started by the
//! test on loopback decodes what the exporter sends. Installing telemetry is
//! global to a process, so this file holds one test.

// Test helpers outside `#[test]` functions unwrap too: a panic fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fsm_actors::Tree;
use fsm_actors::telemetry::Telemetry;
use integration::{ProbeWorld, probe_registry, probe_spec, test_config};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;

/// The bodies received, by request path.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A minimal OTLP/HTTP receiver: answers every POST with 200 and keeps the
/// body.
fn receiver() -> (SocketAddr, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let received: Received = Arc::default();
    let sink = Arc::clone(&received);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let sink = Arc::clone(&sink);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut request = String::new();
                    if reader.read_line(&mut request).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let mut length = 0usize;
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).unwrap();
                        if header == "\r\n" || header.is_empty() {
                            break;
                        }
                        if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:")
                        {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    sink.lock().unwrap().push((path, body));
                    let mut out = stream.try_clone().unwrap();
                    out.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")
                        .unwrap();
                }
            });
        }
    });
    (addr, received)
}

fn string_attr(
    kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<String> {
    kvs.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

#[tokio::test(start_paused = true)]
async fn spans_and_metrics_reach_an_otlp_endpoint() {
    let (addr, received) = receiver();
    let telemetry = Telemetry::new("fsm-otlp-test")
        .without_logs()
        .otlp(format!("http://{addr}"))
        .install()
        .unwrap();
    let world = ProbeWorld::default();
    let spec = probe_spec(
        "root",
        vec![probe_spec("a", vec![probe_spec("a1", vec![])])],
    );
    let tree = Tree::spawn(spec, probe_registry(&world), test_config())
        .await
        .unwrap();
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();
    tree.shutdown(Duration::from_secs(5)).await;
    telemetry.flush();

    let received = received.lock().unwrap().clone();
    let mut tick_paths = Vec::new();
    let mut service = None;
    for (_, body) in received.iter().filter(|(p, _)| p == "/v1/traces") {
        let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        for resource in &request.resource_spans {
            if let Some(r) = &resource.resource {
                service = string_attr(&r.attributes, "service.name");
            }
            for scope in &resource.scope_spans {
                for span in scope.spans.iter().filter(|s| s.name == "fsm.tick") {
                    tick_paths.extend(string_attr(&span.attributes, "node.path"));
                }
            }
        }
    }
    assert_eq!(service.as_deref(), Some("fsm-otlp-test"));
    for path in ["root", "root/a", "root/a/a1"] {
        assert!(
            tick_paths.iter().any(|p| p == path),
            "no tick span of {path} arrived"
        );
    }

    let mut metric_names = Vec::new();
    for (_, body) in received.iter().filter(|(p, _)| p == "/v1/metrics") {
        let request = ExportMetricsServiceRequest::decode(body.as_slice()).unwrap();
        for resource in &request.resource_metrics {
            for scope in &resource.scope_metrics {
                metric_names.extend(scope.metrics.iter().map(|m| m.name.clone()));
            }
        }
    }
    assert!(
        metric_names.iter().any(|n| n == "fsmv2_children_count"),
        "{metric_names:?}"
    );
    assert!(
        metric_names
            .iter()
            .any(|n| n == "fsmv2_state_transitions_total"),
        "{metric_names:?}"
    );
    drop(telemetry);
}
