//! A span exporter that writes one JSON object per line to a file, for
//! offline inspection with `fsm-trace`.
//!
//! Each line is one finished span:
//!
//! ```json
//! {"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7",
//!  "parent_span_id":"53995c3f42cd8ad8","name":"fsm.tick",
//!  "start_unix_nano":1764201600000000000,"end_unix_nano":1764201600000120000,
//!  "duration_us":120,"status":"unset","status_message":null,
//!  "attributes":{"node.path":"plant/line-1","worker.type":"line"},
//!  "links":[],"events":[]}
//! ```
//!
//! `parent_span_id` is `null` for the root of a trace; `status` is `unset`,
//! `ok` or `error` (then `status_message` says why); `links` hold
//! `{"trace_id", "span_id"}` of linked spans (an action links to the tick
//! that asked for it); `events` hold `{"name", "time_unix_nano",
//! "attributes"}`.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, Status};
use opentelemetry::{KeyValue, Value as OtelValue};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use serde_json::{Map, Value, json};

/// Writes finished spans to a file, one JSON object per line.
pub struct JsonLinesExporter {
    path: PathBuf,
    out: Mutex<Option<BufWriter<File>>>,
}

impl fmt::Debug for JsonLinesExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesExporter")
            .field("path", &self.path)
            .finish()
    }
}

impl JsonLinesExporter {
    /// Creates (or truncates) the file at `path`.
    ///
    /// # Errors
    ///
    /// When the file cannot be created.
    pub fn create(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        Ok(Self {
            path,
            out: Mutex::new(Some(BufWriter::new(file))),
        })
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn otel_value(v: &OtelValue) -> Value {
    match v {
        OtelValue::Bool(b) => json!(b),
        OtelValue::I64(i) => json!(i),
        OtelValue::F64(f) => json!(f),
        OtelValue::String(s) => json!(s.as_str()),
        OtelValue::Array(a) => json!(a.to_string()),
        _ => json!(v.to_string()),
    }
}

fn attributes(kvs: &[KeyValue]) -> Value {
    let mut map = Map::new();
    for kv in kvs {
        map.insert(kv.key.as_str().to_owned(), otel_value(&kv.value));
    }
    Value::Object(map)
}

/// The JSON line of one span.
pub(crate) fn span_json(span: &SpanData) -> Value {
    let start = unix_nanos(span.start_time);
    let end = unix_nanos(span.end_time);
    let (status, message) = match &span.status {
        Status::Unset => ("unset", None),
        Status::Ok => ("ok", None),
        Status::Error { description } => ("error", Some(description.to_string())),
    };
    let parent = (span.parent_span_id != SpanId::INVALID).then(|| span.parent_span_id.to_string());
    let links: Vec<Value> = span
        .links
        .iter()
        .map(|l| {
            json!({
                "trace_id": l.span_context.trace_id().to_string(),
                "span_id": l.span_context.span_id().to_string(),
            })
        })
        .collect();
    let events: Vec<Value> = span
        .events
        .iter()
        .map(|e| {
            json!({
                "name": e.name.as_ref(),
                "time_unix_nano": unix_nanos(e.timestamp),
                "attributes": attributes(&e.attributes),
            })
        })
        .collect();
    json!({
        "trace_id": span.span_context.trace_id().to_string(),
        "span_id": span.span_context.span_id().to_string(),
        "parent_span_id": parent,
        "name": span.name.as_ref(),
        "start_unix_nano": start,
        "end_unix_nano": end,
        "duration_us": end.saturating_sub(start) / 1000,
        "status": status,
        "status_message": message,
        "attributes": attributes(&span.attributes),
        "links": links,
        "events": events,
    })
}

impl SpanExporter for JsonLinesExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut guard = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(out) = guard.as_mut() else {
            return Err(OTelSdkError::AlreadyShutdown);
        };
        for span in &batch {
            let line = span_json(span);
            writeln!(out, "{line}").map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?;
        }
        out.flush()
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))
    }

    fn shutdown_with_timeout(&self, _timeout: std::time::Duration) -> OTelSdkResult {
        let mut guard = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(mut out) = guard.take() {
            out.flush()
                .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?;
        }
        Ok(())
    }
}
