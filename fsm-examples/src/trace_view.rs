//! Reading and rendering the span files written by the runtime's JSON-lines
//! exporter (`fsm_actors::telemetry::jsonl`), for the `fsm-trace` binary.
//!
//! A file holds one finished span per line. [`parse_spans`] reads it (a
//! malformed last line is skipped, since a file may be cut off while being
//! written; a malformed line elsewhere is an error naming the line),
//! [`Traces::build`] groups the spans into traces and each trace into a tree
//! (children under their parents, ordered by start time), [`select`] picks
//! the traces and spans to show, and the `render_*` functions print them:
//!
//! * [`render_trees`]: every selected trace as an indented tree;
//! * [`render_summary`]: one line per trace and a line of totals;
//! * [`render_slowest`]: the slowest spans as a flat list.
//!
//! Links are shown both ways: an action or restart span (which starts a
//! trace of its own) shows the tick it is linked to, and that tick shows
//! the spans linked from it.
//!
//! Spans that went wrong (status `error`, or an `outcome` attribute other
//! than `succeeded`) are flagged with a leading `!!`.

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// One finished span: one line of the file.
///
/// Fields the exporter writes but this view does not use (`duration_us`,
/// `events`) and unknown fields are ignored; the duration is computed from
/// the start and end times, to the nanosecond.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Span {
    /// The trace the span belongs to (32 hex digits).
    pub trace_id: String,
    /// The span's own id (16 hex digits).
    pub span_id: String,
    /// The parent span's id; `None` for the root of a trace.
    #[serde(default, deserialize_with = "parent_id")]
    pub parent_span_id: Option<String>,
    /// The span name, such as `fsm.tick`.
    pub name: String,
    /// Start time, nanoseconds since the Unix epoch.
    #[serde(deserialize_with = "nanos")]
    pub start_unix_nano: u64,
    /// End time, nanoseconds since the Unix epoch.
    #[serde(deserialize_with = "nanos")]
    pub end_unix_nano: u64,
    /// `unset`, `ok` or `error`.
    #[serde(default = "unset", deserialize_with = "status")]
    pub status: String,
    /// Why the span failed, when `status` is `error`.
    #[serde(default)]
    pub status_message: Option<String>,
    /// The span's attributes (`node.path`, `worker.type`, ...).
    #[serde(default, deserialize_with = "null_as_default")]
    pub attributes: Map<String, Value>,
    /// Spans this one is linked to (an action links to the tick that asked
    /// for it).
    #[serde(default, deserialize_with = "null_as_default")]
    pub links: Vec<Link>,
}

/// A link from one span to another, possibly in another trace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Link {
    /// The linked span's trace.
    pub trace_id: String,
    /// The linked span's id.
    pub span_id: String,
}

fn unset() -> String {
    "unset".to_owned()
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn status<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_else(unset))
}

/// A parent id that is absent, `null`, empty or all zeros means "no parent".
fn parent_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let id = Option::<String>::deserialize(d)?;
    Ok(id.filter(|id| !id.is_empty() && !id.bytes().all(|b| b == b'0')))
}

/// A timestamp written as a JSON number or as a decimal string (as OTLP's
/// JSON encoding does).
fn nanos<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Nanos {
        Number(u64),
        Text(String),
    }
    match Nanos::deserialize(d)? {
        Nanos::Number(n) => Ok(n),
        Nanos::Text(s) => s.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!("{s:?} is not a time in Unix nanoseconds"))
        }),
    }
}

impl Span {
    /// The span's duration in nanoseconds (0 if it ends before it starts).
    pub fn duration_ns(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }

    /// An attribute as text (numbers and booleans are formatted; `None` if
    /// absent or `null`).
    pub fn attr(&self, key: &str) -> Option<String> {
        match self.attributes.get(key)? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    /// An attribute as an integer (a number, or a string holding one).
    pub fn attr_i64(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key)? {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// The `node.path` attribute.
    pub fn node_path(&self) -> Option<String> {
        self.attr("node.path")
    }

    /// Whether the span's status is `error`.
    pub fn is_error(&self) -> bool {
        self.status.eq_ignore_ascii_case("error")
    }

    /// The `outcome` attribute when it is present and not `succeeded`.
    pub fn bad_outcome(&self) -> Option<String> {
        self.attr("outcome")
            .filter(|o| !o.eq_ignore_ascii_case("succeeded"))
    }

    /// Whether the span went wrong: status `error`, or an outcome other
    /// than `succeeded`. Flagged spans are printed with a leading `!!`.
    pub fn is_flagged(&self) -> bool {
        self.is_error() || self.bad_outcome().is_some()
    }
}

/// A line that could not be read as a span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The line number in the file, from 1.
    pub line: usize,
    /// The column in that line, from 1 (0 if unknown).
    pub column: usize,
    /// What is wrong with it.
    pub message: String,
}

impl ParseError {
    fn new(line: usize, e: &serde_json::Error) -> Self {
        // Each line is parsed on its own, so serde_json's own position
        // always says "line 1": drop it, keep the column.
        let text = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = text.strip_suffix(&suffix).unwrap_or(&text).to_owned();
        Self {
            line,
            column: e.column(),
            message,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if self.column > 0 {
            write!(f, ", column {}", self.column)?;
        }
        write!(f, ": not a span: {}", self.message)
    }
}

impl std::error::Error for ParseError {}

/// The spans read from a file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanFile {
    /// The spans, in file order.
    pub spans: Vec<Span>,
    /// The last line, when it was not a complete span and was skipped (the
    /// file was probably cut off while being written).
    pub skipped_last_line: Option<ParseError>,
}

/// Reads a JSON-lines span file: one span per line, blank lines ignored.
///
/// # Errors
///
/// When a line other than the last non-blank one is not a span. A
/// malformed last line is not an error: it is reported in
/// [`SpanFile::skipped_last_line`].
pub fn parse_spans(input: &[u8]) -> Result<SpanFile, ParseError> {
    let lines: Vec<(usize, &[u8])> = input
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(i, line)| (i + 1, line))
        .collect();
    let mut file = SpanFile::default();
    for (k, &(number, line)) in lines.iter().enumerate() {
        match serde_json::from_slice::<Span>(line) {
            Ok(span) => file.spans.push(span),
            Err(e) if k + 1 == lines.len() => {
                file.skipped_last_line = Some(ParseError::new(number, &e));
            }
            Err(e) => return Err(ParseError::new(number, &e)),
        }
    }
    Ok(file)
}

/// Where a span's parent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parent {
    /// The span is the root of its trace (it has no parent).
    None,
    /// The parent is this span of the same trace.
    Recorded(usize),
    /// The span has a parent, but it is not in the file: the span is shown
    /// as a root of its trace.
    NotRecorded,
    /// The span's parent chain loops back on itself (malformed input): the
    /// span is shown as a root of its trace.
    Loop,
}

/// The spans of one trace, as a tree.
#[derive(Debug, Clone)]
pub struct Trace {
    /// The trace id.
    pub trace_id: String,
    /// The spans, ordered by start time (file order among equal starts).
    pub spans: Vec<Span>,
    parents: Vec<Parent>,
    children: Vec<Vec<usize>>,
    roots: Vec<usize>,
}

impl Trace {
    fn new(trace_id: String, mut spans: Vec<Span>) -> Self {
        spans.sort_by_key(|s| s.start_unix_nano);
        let mut by_id: HashMap<&str, usize> = HashMap::new();
        for (i, span) in spans.iter().enumerate() {
            by_id.entry(span.span_id.as_str()).or_insert(i);
        }
        let parents: Vec<Parent> = spans
            .iter()
            .enumerate()
            .map(|(i, span)| match &span.parent_span_id {
                None => Parent::None,
                Some(p) => match by_id.get(p.as_str()) {
                    Some(&j) if j != i => Parent::Recorded(j),
                    Some(_) => Parent::Loop,
                    None => Parent::NotRecorded,
                },
            })
            .collect();
        let mut trace = Self {
            trace_id,
            parents,
            children: vec![Vec::new(); spans.len()],
            roots: Vec::new(),
            spans,
        };
        for i in 0..trace.spans.len() {
            match trace.parents[i] {
                Parent::Recorded(p) => trace.children[p].push(i),
                _ => trace.roots.push(i),
            }
        }
        trace.break_loops();
        trace
    }

    /// Makes every span reachable from a root: a span on (or under) a loop
    /// of parents becomes a root, earliest first.
    fn break_loops(&mut self) {
        let mut seen = vec![false; self.spans.len()];
        let mut stack = self.roots.clone();
        loop {
            while let Some(i) = stack.pop() {
                seen[i] = true;
                stack.extend(self.children[i].iter().copied().filter(|&c| !seen[c]));
            }
            let Some(u) = seen.iter().position(|&s| !s) else {
                break;
            };
            if let Parent::Recorded(p) = self.parents[u] {
                self.children[p].retain(|&c| c != u);
            }
            self.parents[u] = Parent::Loop;
            let at = self.roots.partition_point(|&r| r < u);
            self.roots.insert(at, u);
            stack.push(u);
        }
    }

    /// How the parent of span `i` stands.
    pub fn parent(&self, i: usize) -> Parent {
        self.parents[i]
    }

    /// The children of span `i`, ordered by start time.
    pub fn children(&self, i: usize) -> &[usize] {
        &self.children[i]
    }

    /// The spans shown as roots of the trace, ordered by start time: the
    /// trace's root, and spans whose parent is not in the file.
    pub fn roots(&self) -> &[usize] {
        &self.roots
    }

    /// When the trace's first span started (Unix nanoseconds).
    pub fn start_unix_nano(&self) -> u64 {
        self.spans.first().map_or(0, |s| s.start_unix_nano)
    }

    /// The duration of the trace's root span, or, when the root is not in
    /// the file, the time from the first start to the last end.
    pub fn root_duration_ns(&self) -> u64 {
        match self
            .roots
            .iter()
            .find(|&&r| self.parents[r] == Parent::None)
        {
            Some(&r) => self.spans[r].duration_ns(),
            None => {
                let end = self.spans.iter().map(|s| s.end_unix_nano).max();
                end.unwrap_or(0).saturating_sub(self.start_unix_nano())
            }
        }
    }
}

/// Why `--trace ID` did not pick a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceLookupError {
    /// No trace has that id (or an id starting with it).
    NotFound(String),
    /// Several traces have ids starting with it.
    Ambiguous(String, Vec<String>),
}

impl fmt::Display for TraceLookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound(id) => write!(f, "no trace {id} in the file"),
            Self::Ambiguous(id, ids) => {
                write!(f, "{id} matches {} traces: {}", ids.len(), ids.join(", "))
            }
        }
    }
}

impl std::error::Error for TraceLookupError {}

/// Every trace of a file, ordered by start time.
#[derive(Debug, Clone, Default)]
pub struct Traces {
    /// The traces, ordered by their first span's start time.
    pub traces: Vec<Trace>,
    index: HashMap<(String, String), (usize, usize)>,
    linked_from: HashMap<(usize, usize), Vec<(usize, usize)>>,
}

impl Traces {
    /// Groups spans into traces and each trace into a tree.
    pub fn build(spans: Vec<Span>) -> Self {
        let mut order: Vec<String> = Vec::new();
        let mut groups: HashMap<String, Vec<Span>> = HashMap::new();
        for span in spans {
            let group = groups.entry(span.trace_id.clone()).or_insert_with(|| {
                order.push(span.trace_id.clone());
                Vec::new()
            });
            group.push(span);
        }
        let mut traces: Vec<Trace> = order
            .into_iter()
            .filter_map(|id| {
                let spans = groups.remove(&id)?;
                Some(Trace::new(id, spans))
            })
            .collect();
        traces.sort_by_key(Trace::start_unix_nano);
        let mut index = HashMap::new();
        for (t, trace) in traces.iter().enumerate() {
            for (i, span) in trace.spans.iter().enumerate() {
                index
                    .entry((span.trace_id.clone(), span.span_id.clone()))
                    .or_insert((t, i));
            }
        }
        let mut traces = Self {
            traces,
            index,
            linked_from: HashMap::new(),
        };
        for (t, trace) in traces.traces.iter().enumerate() {
            for (i, span) in trace.spans.iter().enumerate() {
                for link in &span.links {
                    if let Some(target) = traces.resolve(link) {
                        traces.linked_from.entry(target).or_default().push((t, i));
                    }
                }
            }
        }
        traces
    }

    /// The (trace, span) indices of the spans that link to span `i` of
    /// trace `t` (the actions and restarts that a tick led to), ordered by
    /// trace, then start time.
    pub fn linked_from(&self, t: usize, i: usize) -> &[(usize, usize)] {
        self.linked_from.get(&(t, i)).map_or(&[], Vec::as_slice)
    }

    /// The number of spans in every trace.
    pub fn span_count(&self) -> usize {
        self.traces.iter().map(|t| t.spans.len()).sum()
    }

    /// The (trace, span) indices of a linked span, if it is in the file.
    pub fn resolve(&self, link: &Link) -> Option<(usize, usize)> {
        self.index
            .get(&(link.trace_id.clone(), link.span_id.clone()))
            .copied()
    }

    /// The index of the trace with this id; a unique prefix of an id (in
    /// any case) will do.
    ///
    /// # Errors
    ///
    /// When no trace, or more than one, matches.
    pub fn find(&self, id: &str) -> Result<usize, TraceLookupError> {
        let id = id.trim();
        if let Some(t) = self.traces.iter().position(|t| t.trace_id == id) {
            return Ok(t);
        }
        let lower = id.to_ascii_lowercase();
        let matches: Vec<usize> = (0..self.traces.len())
            .filter(|&t| {
                !lower.is_empty()
                    && self.traces[t]
                        .trace_id
                        .to_ascii_lowercase()
                        .starts_with(&lower)
            })
            .collect();
        match matches.as_slice() {
            [] => Err(TraceLookupError::NotFound(id.to_owned())),
            [t] => Ok(*t),
            many => Err(TraceLookupError::Ambiguous(
                id.to_owned(),
                many.iter()
                    .map(|&t| self.traces[t].trace_id.clone())
                    .collect(),
            )),
        }
    }
}

/// Whether a span is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// Not shown.
    Hidden,
    /// Shown only as the ancestor of a selected span (`--path`).
    Context,
    /// Selected.
    Selected,
}

/// The spans of one trace to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceView {
    /// The trace's index in [`Traces::traces`].
    pub trace: usize,
    /// For each span of the trace, whether it is shown.
    pub shown: Vec<Shown>,
}

impl TraceView {
    /// The indices of the selected spans.
    pub fn selected(&self) -> impl Iterator<Item = usize> + '_ {
        self.shown
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == Shown::Selected)
            .map(|(i, _)| i)
    }
}

/// Whether a `node.path` is `prefix` or under it (`prefix/...`). A
/// trailing `/` on the prefix is ignored; an empty prefix matches every
/// path.
pub fn path_matches(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Selects what to show: one trace or all of them, and within them every
/// span or only those on `path` (see [`path_matches`]) plus their
/// ancestors for context. Traces with no selected span are left out.
pub fn select(traces: &Traces, trace: Option<usize>, path: Option<&str>) -> Vec<TraceView> {
    let indices: Vec<usize> = match trace {
        Some(t) => vec![t],
        None => (0..traces.traces.len()).collect(),
    };
    indices
        .into_iter()
        .filter_map(|t| {
            let tr = traces.traces.get(t)?;
            let mut shown: Vec<Shown> = tr
                .spans
                .iter()
                .map(|s| match path {
                    None => Shown::Selected,
                    Some(p) if s.node_path().is_some_and(|np| path_matches(&np, p)) => {
                        Shown::Selected
                    }
                    Some(_) => Shown::Hidden,
                })
                .collect();
            for i in 0..shown.len() {
                if shown[i] != Shown::Selected {
                    continue;
                }
                let mut at = tr.parents[i];
                while let Parent::Recorded(p) = at {
                    if shown[p] != Shown::Hidden {
                        break;
                    }
                    shown[p] = Shown::Context;
                    at = tr.parents[p];
                }
            }
            shown
                .contains(&Shown::Selected)
                .then_some(TraceView { trace: t, shown })
        })
        .collect()
}

/// How to print.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Style {
    /// Colour with ANSI escapes (flagged spans red or yellow, context
    /// spans dim).
    pub color: bool,
}

const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

impl Style {
    fn paint(self, code: Option<&str>, text: &str) -> String {
        match code {
            Some(code) if self.color => format!("{code}{text}{RESET}"),
            _ => text.to_owned(),
        }
    }

    fn span_colour(span: &Span) -> Option<&'static str> {
        if span.is_error() {
            Some(RED)
        } else if span.is_flagged() {
            Some(YELLOW)
        } else {
            None
        }
    }
}

fn gutter(flagged: bool) -> &'static str {
    if flagged { "!! " } else { "   " }
}

/// A duration, readable: `850ns`, `120µs`, `1.52ms`, `2.350s`.
pub fn format_duration(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{}µs", ns / 1_000),
        1_000_000..1_000_000_000 => {
            format!("{}.{:02}ms", ns / 1_000_000, ns % 1_000_000 / 10_000)
        }
        _ => format!(
            "{}.{:03}s",
            ns / 1_000_000_000,
            ns % 1_000_000_000 / 1_000_000
        ),
    }
}

/// The civil date (year, month, day) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], from March
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in range by construction.
    (year, month as u32, day as u32)
}

/// A time in Unix nanoseconds as UTC, RFC 3339 with milliseconds:
/// `2025-11-27T00:00:00.000Z`.
pub fn format_unix_nanos(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let millis = ns % 1_000_000_000 / 1_000_000;
    // u64::MAX / 86400e9 is about 213 503: the cast cannot wrap.
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3_600,
        sod % 3_600 / 60,
        sod % 60
    )
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn render(f: impl FnOnce(&mut String) -> fmt::Result) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = f(&mut out);
    out
}

/// The details of one span after its name, path and duration.
fn span_details(traces: &Traces, t: usize, i: usize) -> Vec<String> {
    let trace = &traces.traces[t];
    let span = &trace.spans[i];
    let mut parts = Vec::new();
    let before = span.attr("state.before");
    let after = span.attr("state.after");
    if before.is_some() || after.is_some() {
        parts.push(format!(
            "{}→{}",
            before.as_deref().unwrap_or("?"),
            after.as_deref().unwrap_or("?")
        ));
    }
    let counts: Vec<String> = ["spawned", "updated", "replaced", "stopped"]
        .iter()
        .filter_map(|k| {
            span.attr_i64(k)
                .filter(|&n| n != 0)
                .map(|n| format!("{k}={n}"))
        })
        .collect();
    if !counts.is_empty() {
        parts.push(counts.join(" "));
    }
    let action: Vec<String> = ["action", "outcome"]
        .iter()
        .filter_map(|k| span.attr(k).map(|v| format!("{k}={v}")))
        .collect();
    if !action.is_empty() {
        parts.push(action.join(" "));
    }
    if let Some(failure) = span.attr("failure") {
        parts.push(format!("failure: {failure}"));
    }
    let message = span.status_message.as_deref().filter(|m| !m.is_empty());
    if span.is_error() {
        parts.push(format!("error: {}", message.unwrap_or("(no message)")));
    } else if let Some(m) = message {
        parts.push(format!("status {}: {m}", span.status));
    }
    match trace.parents[i] {
        Parent::NotRecorded => parts.push("(parent not recorded)".to_owned()),
        Parent::Loop => parts.push("(parent chain loops)".to_owned()),
        Parent::None | Parent::Recorded(_) => {}
    }
    for link in &span.links {
        parts.push(match traces.resolve(link) {
            Some((lt, li)) => {
                let linked = &traces.traces[lt].spans[li];
                let mut text = format!(
                    "→ linked to {} {}",
                    linked.name,
                    linked.node_path().unwrap_or_else(|| "-".to_owned())
                );
                if lt != t {
                    let _ = write!(text, " (trace {})", link.trace_id);
                }
                text
            }
            None => format!("→ linked to span {} (not recorded)", link.span_id),
        });
    }
    for &(lt, li) in traces.linked_from(t, i) {
        let from = &traces.traces[lt].spans[li];
        let mut text = format!(
            "← linked from {} {}",
            from.name,
            from.node_path().unwrap_or_else(|| "-".to_owned())
        );
        if lt != t {
            let _ = write!(text, " (trace {})", from.trace_id);
        }
        parts.push(text);
    }
    parts
}

fn write_tree(out: &mut String, traces: &Traces, view: &TraceView, style: Style) -> fmt::Result {
    let trace = &traces.traces[view.trace];
    let selected = view.selected().count();
    let header = format!(
        "trace {}  {}  {}  {}",
        trace.trace_id,
        format_unix_nanos(trace.start_unix_nano()),
        if selected == trace.spans.len() {
            plural(selected, "span", "spans")
        } else {
            format!("{selected} of {} spans", trace.spans.len())
        },
        format_duration(trace.root_duration_ns()),
    );
    writeln!(out, "{}", style.paint(Some(BOLD), &header))?;
    let mut stack: Vec<(usize, usize)> = trace.roots.iter().rev().map(|&r| (r, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        let shown = view.shown[i];
        if shown == Shown::Hidden {
            continue;
        }
        let span = &trace.spans[i];
        let flagged = shown == Shown::Selected && span.is_flagged();
        let mut line = format!(
            "{}{}{}  {}  {}",
            gutter(flagged),
            "  ".repeat(depth),
            span.name,
            span.node_path().unwrap_or_else(|| "-".to_owned()),
            format_duration(span.duration_ns()),
        );
        for part in span_details(traces, view.trace, i) {
            line.push_str("  ");
            line.push_str(&part);
        }
        let colour = if shown == Shown::Context {
            line.push_str("  (context)");
            Some(DIM)
        } else {
            Style::span_colour(span)
        };
        writeln!(out, "{}", style.paint(colour, &line))?;
        stack.extend(trace.children[i].iter().rev().map(|&c| (c, depth + 1)));
    }
    Ok(())
}

/// Every view's trace as an indented tree, one span per line, traces
/// separated by a blank line.
pub fn render_trees(traces: &Traces, views: &[TraceView], style: Style) -> String {
    render(|out| {
        for (k, view) in views.iter().enumerate() {
            if k > 0 {
                writeln!(out)?;
            }
            write_tree(out, traces, view, style)?;
        }
        Ok(())
    })
}

/// The numbers of one trace (of its selected spans).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSummary {
    /// The trace id.
    pub trace_id: String,
    /// When the trace's first span started (Unix nanoseconds).
    pub start_unix_nano: u64,
    /// Selected spans.
    pub spans: usize,
    /// Distinct `node.path`s among the selected spans.
    pub nodes: usize,
    /// The duration of the trace's root (see [`Trace::root_duration_ns`]).
    pub duration_ns: u64,
    /// Selected spans with status `error`.
    pub errors: usize,
}

fn selected_nodes<'a>(
    traces: &'a Traces,
    view: &'a TraceView,
) -> impl Iterator<Item = String> + 'a {
    let trace = &traces.traces[view.trace];
    view.selected().filter_map(|i| trace.spans[i].node_path())
}

/// The numbers of one view's trace.
pub fn summarize(traces: &Traces, view: &TraceView) -> TraceSummary {
    let trace = &traces.traces[view.trace];
    TraceSummary {
        trace_id: trace.trace_id.clone(),
        start_unix_nano: trace.start_unix_nano(),
        spans: view.selected().count(),
        nodes: selected_nodes(traces, view).collect::<HashSet<_>>().len(),
        duration_ns: trace.root_duration_ns(),
        errors: view
            .selected()
            .filter(|&i| trace.spans[i].is_error())
            .count(),
    }
}

/// One line per view's trace (start time, id, spans, distinct nodes, root
/// duration, errors), ordered by start time, then a line of totals.
pub fn render_summary(traces: &Traces, views: &[TraceView], style: Style) -> String {
    let mut rows: Vec<TraceSummary> = views.iter().map(|v| summarize(traces, v)).collect();
    rows.sort_by(|a, b| (a.start_unix_nano, &a.trace_id).cmp(&(b.start_unix_nano, &b.trace_id)));
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            [
                plural(r.spans, "span", "spans"),
                plural(r.nodes, "node", "nodes"),
                format_duration(r.duration_ns),
                plural(r.errors, "error", "errors"),
            ]
        })
        .collect();
    let width = |k: usize| {
        cells
            .iter()
            .map(|c| c[k].chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths = [width(0), width(1), width(2)];
    let all_nodes: HashSet<String> = views
        .iter()
        .flat_map(|v| selected_nodes(traces, v))
        .collect();
    render(|out| {
        for (row, c) in rows.iter().zip(&cells) {
            let line = format!(
                "{}{}  {}  {:>w0$}  {:>w1$}  {:>w2$}  {}",
                gutter(row.errors > 0),
                format_unix_nanos(row.start_unix_nano),
                row.trace_id,
                c[0],
                c[1],
                c[2],
                c[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
            );
            let colour = (row.errors > 0).then_some(RED);
            writeln!(out, "{}", style.paint(colour, &line))?;
        }
        writeln!(
            out,
            "total: {}, {}, {}, {}, {} of root time",
            plural(rows.len(), "trace", "traces"),
            plural(rows.iter().map(|r| r.spans).sum(), "span", "spans"),
            plural(all_nodes.len(), "node", "nodes"),
            plural(rows.iter().map(|r| r.errors).sum(), "error", "errors"),
            format_duration(rows.iter().map(|r| r.duration_ns).sum()),
        )
    })
}

/// The `n` slowest selected spans of the views, as (trace, span) indices,
/// slowest first (ties: earlier start first).
pub fn slowest(traces: &Traces, views: &[TraceView], n: usize) -> Vec<(usize, usize)> {
    let mut all: Vec<(usize, usize)> = views
        .iter()
        .flat_map(|v| v.selected().map(move |i| (v.trace, i)))
        .collect();
    let span = |&(t, i): &(usize, usize)| &traces.traces[t].spans[i];
    all.sort_by(|a, b| {
        let (sa, sb) = (span(a), span(b));
        sb.duration_ns()
            .cmp(&sa.duration_ns())
            .then(sa.start_unix_nano.cmp(&sb.start_unix_nano))
            .then(a.cmp(b))
    });
    all.truncate(n);
    all
}

/// The `n` slowest selected spans as a flat list: duration, name,
/// `node.path`, trace id.
pub fn render_slowest(traces: &Traces, views: &[TraceView], n: usize, style: Style) -> String {
    let rows: Vec<(&Span, [String; 3])> = slowest(traces, views, n)
        .into_iter()
        .map(|(t, i)| {
            let span = &traces.traces[t].spans[i];
            let cells = [
                format_duration(span.duration_ns()),
                span.name.clone(),
                span.node_path().unwrap_or_else(|| "-".to_owned()),
            ];
            (span, cells)
        })
        .collect();
    let width = |k: usize| {
        rows.iter()
            .map(|(_, c)| c[k].chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths = [width(0), width(1), width(2)];
    render(|out| {
        for (span, c) in &rows {
            let line = format!(
                "{}{:>w0$}  {:<w1$}  {:<w2$}  {}",
                gutter(span.is_flagged()),
                c[0],
                c[1],
                c[2],
                span.trace_id,
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
            );
            writeln!(out, "{}", style.paint(Style::span_colour(span), &line))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const T2: &str = "0af7651916cd43dd8448eb211c80319c";
    const BASE: u64 = 1_764_201_600_000_000_000;

    fn line(
        trace: &str,
        id: &str,
        parent: Option<&str>,
        name: &str,
        path: &str,
        start_us: u64,
        dur_us: u64,
    ) -> String {
        let parent = parent.map_or("null".to_owned(), |p| format!("\"{p}\""));
        let start = BASE + start_us * 1_000;
        let end = start + dur_us * 1_000;
        format!(
            "{{\"trace_id\":\"{trace}\",\"span_id\":\"{id}\",\"parent_span_id\":{parent},\"name\":\"{name}\",\
             \"start_unix_nano\":{start},\"end_unix_nano\":{end},\"duration_us\":{dur_us},\"status\":\"unset\",\
             \"status_message\":null,\"attributes\":{{\"node.path\":\"{path}\",\"worker.type\":\"x\"}},\"links\":[],\"events\":[]}}"
        )
    }

    /// A root tick on `plant`, ticks three levels deep, a reconcile, a
    /// failed action and a second trace.
    fn sample() -> String {
        let failed_action = format!(
            "{{\"trace_id\":\"{T1}\",\"span_id\":\"a1\",\"parent_span_id\":\"t3\",\"name\":\"fsm.action\",\
             \"start_unix_nano\":{},\"end_unix_nano\":{},\"status\":\"error\",\"status_message\":\"refused\",\
             \"attributes\":{{\"node.path\":\"plant/line-1/bridge/conn\",\"worker.type\":\"conn\",\
             \"action\":\"connect\",\"outcome\":\"failed\"}},\"links\":[{{\"trace_id\":\"{T1}\",\"span_id\":\"t3\"}}],\
             \"events\":[],\"extra\":{{\"ignored\":true}}}}",
            BASE + 400_000,
            BASE + 2_400_000
        );
        let reconcile = format!(
            "{{\"trace_id\":\"{T1}\",\"span_id\":\"r0\",\"parent_span_id\":\"t0\",\"name\":\"fsm.reconcile\",\
             \"start_unix_nano\":{},\"end_unix_nano\":{},\"status\":\"unset\",\"status_message\":null,\
             \"attributes\":{{\"node.path\":\"plant\",\"worker.type\":\"plant\",\"spawned\":2,\"updated\":0,\
             \"replaced\":0,\"stopped\":1}},\"links\":[],\"events\":[]}}",
            BASE + 10_000,
            BASE + 60_000
        );
        [
            failed_action,
            line(
                T1,
                "t3",
                Some("t2"),
                "fsm.tick",
                "plant/line-1/bridge/conn",
                300,
                200,
            ),
            line(
                T1,
                "t2",
                Some("t1"),
                "fsm.tick",
                "plant/line-1/bridge",
                200,
                400,
            ),
            line(T1, "t1", Some("t0"), "fsm.tick", "plant/line-1", 100, 600),
            line(T1, "t4", Some("t0"), "fsm.tick", "plant/line-10", 150, 100),
            reconcile,
            line(T1, "t0", None, "fsm.tick", "plant", 0, 1_000),
            line(
                T1,
                "x0",
                Some("ffffffffffffffff"),
                "fsm.tick",
                "plant/orphan",
                50,
                10,
            ),
            line(T2, "u1", Some("u0"), "fsm.tick", "plant/line-1", 50_010, 30),
            line(T2, "u0", None, "fsm.tick", "plant", 50_000, 80),
        ]
        .join("\n")
            + "\n"
    }

    fn traces() -> Traces {
        Traces::build(parse_spans(sample().as_bytes()).unwrap().spans)
    }

    #[test]
    fn parses_every_field_and_ignores_unknown_ones() {
        let file = parse_spans(sample().as_bytes()).unwrap();
        assert_eq!(file.spans.len(), 10);
        assert_eq!(file.skipped_last_line, None);
        let action = &file.spans[0];
        assert_eq!(action.name, "fsm.action");
        assert_eq!(action.parent_span_id.as_deref(), Some("t3"));
        assert_eq!(action.duration_ns(), 2_000_000);
        assert!(action.is_error());
        assert_eq!(action.bad_outcome().as_deref(), Some("failed"));
        assert_eq!(
            action.links,
            vec![Link {
                trace_id: T1.into(),
                span_id: "t3".into()
            }]
        );
        assert_eq!(file.spans[5].attr_i64("spawned"), Some(2));
        assert_eq!(file.spans[6].parent_span_id, None);
    }

    #[test]
    fn lenient_fields() {
        let text = r#"{"trace_id":"a","span_id":"b","parent_span_id":"0000000000000000","name":"n","start_unix_nano":"5","end_unix_nano":9,"status":null,"attributes":null,"links":null}"#;
        let span = &parse_spans(text.as_bytes()).unwrap().spans[0];
        assert_eq!(span.parent_span_id, None);
        assert_eq!(span.start_unix_nano, 5);
        assert_eq!(span.duration_ns(), 4);
        assert_eq!(span.status, "unset");
        assert!(span.attributes.is_empty() && span.links.is_empty());
        assert!(!span.is_flagged());
    }

    #[test]
    fn empty_and_blank_files_have_no_spans() {
        assert_eq!(parse_spans(b"").unwrap(), SpanFile::default());
        assert_eq!(parse_spans(b"\n  \n\r\n").unwrap(), SpanFile::default());
    }

    #[test]
    fn a_truncated_last_line_is_skipped() {
        let mut text = sample();
        text.push_str(r#"{"trace_id":"4bf92f35","span_id":"zz","na"#);
        let file = parse_spans(text.as_bytes()).unwrap();
        assert_eq!(file.spans.len(), 10);
        let skipped = file.skipped_last_line.unwrap();
        assert_eq!(skipped.line, 11);
        // Trailing blank lines do not make it a middle line.
        text.push_str("\n\n");
        assert_eq!(parse_spans(text.as_bytes()).unwrap().spans.len(), 10);
    }

    #[test]
    fn a_malformed_middle_line_is_an_error_with_its_number() {
        let mut lines: Vec<String> = sample().lines().map(str::to_owned).collect();
        lines.insert(3, "{\"trace_id\": oops}".to_owned());
        let err = parse_spans(lines.join("\n").as_bytes()).unwrap_err();
        assert_eq!(err.line, 4);
        assert_eq!(err.column, 14);
        let text = err.to_string();
        assert!(
            text.starts_with("line 4, column 14: not a span: "),
            "{text}"
        );
        assert!(!text.contains("line 1"), "{text}");
        // A complete JSON object that is not a span is malformed too.
        lines[3] = "{\"trace_id\":\"a\"}".to_owned();
        let err = parse_spans(lines.join("\n").as_bytes()).unwrap_err();
        assert_eq!(err.line, 4);
        assert!(err.message.contains("missing field"), "{err}");
    }

    #[test]
    fn builds_trees_ordered_by_start_time() {
        let traces = traces();
        assert_eq!(traces.traces.len(), 2);
        assert_eq!(traces.span_count(), 10);
        let t = &traces.traces[0];
        assert_eq!(t.trace_id, T1);
        let name = |i: usize| t.spans[i].span_id.as_str();
        let roots: Vec<&str> = t.roots().iter().map(|&r| name(r)).collect();
        assert_eq!(roots, ["t0", "x0"]);
        assert_eq!(t.parent(t.roots()[1]), Parent::NotRecorded);
        let root_children: Vec<&str> = t.children(t.roots()[0]).iter().map(|&c| name(c)).collect();
        assert_eq!(root_children, ["r0", "t1", "t4"]);
        assert_eq!(t.root_duration_ns(), 1_000_000);
        assert_eq!(traces.traces[1].trace_id, T2);
        assert_eq!(traces.traces[1].roots().len(), 1);
        let action = t.spans.iter().position(|s| s.span_id == "a1").unwrap();
        let tick = t.spans.iter().position(|s| s.span_id == "t3").unwrap();
        assert_eq!(traces.resolve(&t.spans[action].links[0]), Some((0, tick)));
        assert_eq!(traces.linked_from(0, tick), [(0, action)]);
        assert!(traces.linked_from(0, action).is_empty());
    }

    #[test]
    fn a_parent_loop_is_broken() {
        let text = [
            line(T1, "a", Some("b"), "fsm.tick", "p", 0, 5),
            line(T1, "b", Some("a"), "fsm.tick", "p", 1, 5),
            line(T1, "c", Some("c"), "fsm.tick", "p", 2, 5),
        ]
        .join("\n");
        let traces = Traces::build(parse_spans(text.as_bytes()).unwrap().spans);
        let t = &traces.traces[0];
        assert_eq!(t.roots(), [0, 2]);
        assert_eq!(t.parent(0), Parent::Loop);
        assert_eq!(t.children(0), [1]);
        assert_eq!(t.parent(2), Parent::Loop);
        let out = render_trees(&traces, &select(&traces, None, None), Style::default());
        assert_eq!(out.lines().count(), 4, "{out}");
    }

    #[test]
    fn tree_rendering() {
        let traces = traces();
        let out = render_trees(&traces, &select(&traces, None, None), Style::default());
        let expected = format!(
            "trace {T1}  2025-11-27T00:00:00.000Z  8 spans  1.00ms
   fsm.tick  plant  1.00ms
     fsm.reconcile  plant  50µs  spawned=2 stopped=1
     fsm.tick  plant/line-1  600µs
       fsm.tick  plant/line-1/bridge  400µs
         fsm.tick  plant/line-1/bridge/conn  200µs  ← linked from fsm.action plant/line-1/bridge/conn
!!         fsm.action  plant/line-1/bridge/conn  2.00ms  action=connect outcome=failed  error: refused  → linked to fsm.tick plant/line-1/bridge/conn
     fsm.tick  plant/line-10  100µs
   fsm.tick  plant/orphan  10µs  (parent not recorded)

trace {T2}  2025-11-27T00:00:00.050Z  2 spans  80µs
   fsm.tick  plant  80µs
     fsm.tick  plant/line-1  30µs
"
        );
        assert_eq!(out, expected);
        assert!(!out.contains('\x1b'));
        let coloured = render_trees(&traces, &select(&traces, None, None), Style { color: true });
        assert!(coloured.contains(&format!("{RED}!!")), "{coloured}");
    }

    #[test]
    fn path_filter_keeps_matches_and_their_ancestors() {
        assert!(path_matches("plant/line-1", "plant/line-1"));
        assert!(path_matches("plant/line-1/bridge", "plant/line-1"));
        assert!(path_matches("plant/line-1/bridge", "plant/line-1/"));
        assert!(!path_matches("plant/line-10", "plant/line-1"));
        assert!(!path_matches("plant", "plant/line-1"));
        assert!(path_matches("anything", ""));

        let traces = traces();
        let views = select(&traces, None, Some("plant/line-1/bridge"));
        assert_eq!(views.len(), 1);
        let t = &traces.traces[0];
        let ids = |which: Shown| -> Vec<&str> {
            (0..t.spans.len())
                .filter(|&i| views[0].shown[i] == which)
                .map(|i| t.spans[i].span_id.as_str())
                .collect()
        };
        assert_eq!(ids(Shown::Selected), ["t2", "t3", "a1"]);
        assert_eq!(ids(Shown::Context), ["t0", "t1"]);
        let out = render_trees(&traces, &views, Style::default());
        assert!(out.contains("3 of 8 spans"), "{out}");
        assert!(
            out.contains("   fsm.tick  plant  1.00ms  (context)\n"),
            "{out}"
        );
        assert!(
            !out.contains("line-10") && !out.contains("reconcile"),
            "{out}"
        );

        // plant/line-1 is in both traces; nothing matches nowhere.
        assert_eq!(select(&traces, None, Some("plant/line-1")).len(), 2);
        assert!(select(&traces, None, Some("nowhere")).is_empty());
        assert_eq!(select(&traces, Some(1), Some("plant/line-1")).len(), 1);
    }

    #[test]
    fn summary_counts() {
        let traces = traces();
        let views = select(&traces, None, None);
        let s = summarize(&traces, &views[0]);
        assert_eq!(
            s,
            TraceSummary {
                trace_id: T1.into(),
                start_unix_nano: BASE,
                spans: 8,
                nodes: 6,
                duration_ns: 1_000_000,
                errors: 1,
            }
        );
        let out = render_summary(&traces, &views, Style::default());
        let expected = format!(
            "!! 2025-11-27T00:00:00.000Z  {T1}  8 spans  6 nodes  1.00ms  1 error
   2025-11-27T00:00:00.050Z  {T2}  2 spans  2 nodes    80µs  0 errors
total: 2 traces, 10 spans, 6 nodes, 1 error, 1.08ms of root time
"
        );
        assert_eq!(out, expected);
        let filtered = select(&traces, None, Some("plant/line-1"));
        let s = summarize(&traces, &filtered[0]);
        assert_eq!((s.spans, s.nodes, s.errors), (4, 3, 1));
    }

    #[test]
    fn slowest_first() {
        let traces = traces();
        let views = select(&traces, None, None);
        let names: Vec<&str> = slowest(&traces, &views, 4)
            .into_iter()
            .map(|(t, i)| traces.traces[t].spans[i].span_id.as_str())
            .collect();
        assert_eq!(names, ["a1", "t0", "t1", "t2"]);
        assert_eq!(slowest(&traces, &views, 100).len(), 10);
        let out = render_slowest(&traces, &views, 2, Style::default());
        let expected = format!(
            "!! 2.00ms  fsm.action  plant/line-1/bridge/conn  {T1}\n   1.00ms  fsm.tick    plant                     {T1}\n"
        );
        assert_eq!(out, expected);
        let only_t2 = select(&traces, Some(1), None);
        let ids: Vec<(usize, usize)> = slowest(&traces, &only_t2, 5);
        assert_eq!(ids.len(), 2);
        assert!(ids.iter().all(|&(t, _)| t == 1));
    }

    #[test]
    fn finds_traces_by_id_or_unique_prefix() {
        let traces = traces();
        assert_eq!(traces.find(T2), Ok(1));
        assert_eq!(traces.find("4BF9"), Ok(0));
        assert_eq!(
            traces.find("ff"),
            Err(TraceLookupError::NotFound("ff".into()))
        );
        assert!(matches!(
            traces.find(""),
            Err(TraceLookupError::NotFound(_))
        ));
        let both = Traces::build(
            parse_spans(
                [
                    line("ab1", "a", None, "n", "p", 0, 1),
                    line("ab2", "b", None, "n", "p", 0, 1),
                ]
                .join("\n")
                .as_bytes(),
            )
            .unwrap()
            .spans,
        );
        assert!(
            matches!(both.find("ab"), Err(TraceLookupError::Ambiguous(_, ids)) if ids.len() == 2)
        );
    }

    #[test]
    fn durations_and_dates() {
        assert_eq!(format_duration(0), "0ns");
        assert_eq!(format_duration(999), "999ns");
        assert_eq!(format_duration(1_000), "1µs");
        assert_eq!(format_duration(120_500), "120µs");
        assert_eq!(format_duration(1_520_000), "1.52ms");
        assert_eq!(format_duration(999_999_999), "999.99ms");
        assert_eq!(format_duration(2_350_000_000), "2.350s");

        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(format_unix_nanos(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_unix_nanos(BASE), "2025-11-27T00:00:00.000Z");
        assert_eq!(
            format_unix_nanos(1_704_067_199_999_999_999),
            "2023-12-31T23:59:59.999Z"
        );
        assert_eq!(
            format_unix_nanos(1_709_210_096_789_000_000),
            "2024-02-29T12:34:56.789Z"
        );
    }
}
