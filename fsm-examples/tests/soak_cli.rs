//! `fsm-soak` on a small plant for a few seconds: it prints one CSV sample
//! per interval, injects faults that the tree recovers from, exports its
//! telemetry, counts metric series, and shuts down cleanly.

use std::process::Command;

#[test]
fn a_short_soak_prints_its_curve_under_faults_and_shuts_down_cleanly() {
    let out = Command::new(env!("CARGO_BIN_EXE_fsm-soak"))
        .args([
            "--workers",
            "300",
            "--minutes",
            "0.1",
            "--warmup-minutes",
            "0.02",
            "--sample-secs",
            "0.25",
            "--tick-ms",
            "20",
            "--chaos",
            "0.005",
            "--kills",
            "1",
            // A few seconds are no warm-up: the flatness of a real soak is
            // the unit tests' and the hour's business.
            "--tolerance",
            "100",
        ])
        .env("RUST_LOG", "error")
        .output()
        .expect("fsm-soak runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");

    let mut lines = stdout.lines();
    let header = lines.next().expect("a header");
    assert!(header.starts_with("elapsed_s,rss_bytes,heap_bytes,open_fds,metric_series,tasks"));
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|v| v.parse().expect("a number")).collect())
        .collect();
    // 6 s at one sample per 250 ms (fewer on a busy machine).
    assert!(
        rows.len() >= 10,
        "{} samples:\n{stdout}\nstderr:\n{stderr}",
        rows.len()
    );
    let column = |name: &str| header.split(',').position(|h| h == name).unwrap();
    let last = rows.last().unwrap();
    // The measures whose flatness the soak checks.
    let flat = [
        "rss_bytes",
        "heap_bytes",
        "open_fds",
        "metric_series",
        "tasks",
    ];
    for measure in flat.iter().chain(&["live_nodes"]) {
        assert!(
            rows.iter().all(|r| r[column(measure)] > 0.0),
            "{measure} missing in a sample:\n{stdout}"
        );
    }
    assert!(last[column("restarts")] > 0.0, "no restart:\n{stdout}");
    assert!(last[column("kills")] > 0.0, "no kill:\n{stdout}");
    assert!(stderr.contains("shutdown clean"), "{stderr}");
    let received: u64 = stderr
        .split(" OTLP requests received")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the OTLP count");
    assert!(received > 0, "nothing exported:\n{stderr}");
    for measure in flat {
        assert!(
            stderr.contains(measure),
            "{measure} not summarised:\n{stderr}"
        );
    }
}
