//! A strict parser of the Prometheus text exposition format, version 0.0.4,
//! for tests: what a scrape returns is checked against the format, not by
//! looking for substrings.
//!
//! Checked: metric and label names, label value escapes (`\\`, `\"`,
//! `\n`), sample values (floats, `NaN`, `+Inf`, `-Inf`) and optional
//! timestamps, `# HELP` (escapes `\\`, `\n`) and `# TYPE` lines (at most one
//! each per family, before the family's samples), families not
//! interleaved, no duplicate series, counters not negative, and for
//! histograms: every series has `_bucket`s with increasing `le` bounds and
//! non-decreasing counts, a `+Inf` bucket equal to `_count`, and a `_sum`.

use std::collections::{BTreeMap, HashSet};

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram`.
    Histogram,
    /// `summary`.
    Summary,
    /// `untyped`, or no `# TYPE` line.
    Untyped,
}

/// Label names and values, in the order written.
pub type Labels = Vec<(String, String)>;

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The series name (`x_bucket` for a histogram `x`).
    pub name: String,
    /// The labels, in the order written.
    pub labels: Labels,
    /// The value.
    pub value: f64,
    /// The timestamp (ms), if written.
    pub timestamp: Option<i64>,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    #[must_use]
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A metric family: its `# HELP`, `# TYPE` and samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// The family name.
    pub name: String,
    /// The help text, unescaped.
    pub help: Option<String>,
    /// The type.
    pub kind: Kind,
    /// The samples, in order.
    pub samples: Vec<Sample>,
}

/// A parsed exposition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exposition {
    /// The families, in order.
    pub families: Vec<Family>,
}

impl Exposition {
    /// The family called `name`.
    #[must_use]
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// The sum of the values of the samples called `name` that have every
    /// label of `labels`.
    #[must_use]
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.families
            .iter()
            .flat_map(|f| &f.samples)
            .filter(|s| s.name == name)
            .filter(|s| labels.iter().all(|(k, v)| s.label(k) == Some(v)))
            .map(|s| s.value)
            .sum()
    }
}

/// The text is not a valid exposition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// The 1-based line number (0: the text as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        message: message.into(),
    })
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

fn parse_value(s: &str, line: usize) -> Result<f64, ParseError> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ if s.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) => s
            .parse()
            .or_else(|_| err(line, format!("`{s}` is not a number"))),
        _ => err(line, format!("`{s}` is not a number")),
    }
}

/// The help text of a `# HELP` line: only `\\` and `\n` are escapes.
fn unescape_help(s: &str, line: usize) -> Result<String, ParseError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                other => return err(line, format!("invalid escape `\\{other:?}` in HELP")),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Parses `{a="x",b="y"}` at the start of `s`; returns the labels and the
/// rest of the line.
fn parse_labels(s: &str, line: usize) -> Result<(Labels, &str), ParseError> {
    let mut labels = Labels::new();
    let mut rest = s
        .strip_prefix('{')
        .ok_or_else(|| ParseError {
            line,
            message: "expected `{`".to_owned(),
        })?
        .trim_start_matches([' ', '\t']);
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or_else(|| ParseError {
            line,
            message: "a label without `=`".to_owned(),
        })?;
        let name = rest[..eq].trim_matches([' ', '\t']);
        if !is_label_name(name) {
            return err(line, format!("`{name}` is not a valid label name"));
        }
        if labels.iter().any(|(k, _)| k == name) {
            return err(line, format!("label `{name}` appears twice"));
        }
        rest = rest[eq + 1..].trim_start_matches([' ', '\t']);
        rest = rest.strip_prefix('"').ok_or_else(|| ParseError {
            line,
            message: format!("the value of label `{name}` is not quoted"),
        })?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return err(line, format!("the value of label `{name}` is not closed")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => {
                        return err(
                            line,
                            format!("invalid escape {other:?} in the value of label `{name}`"),
                        );
                    }
                },
                Some((_, '\n')) => return err(line, "a raw newline in a label value"),
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_owned(), value));
        rest = rest[end + 1..].trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start_matches([' ', '\t']);
        } else if !rest.starts_with('}') {
            return err(line, "expected `,` or `}` after a label");
        }
    }
}

fn parse_sample(text: &str, line: usize) -> Result<Sample, ParseError> {
    let name_end = text.find(['{', ' ', '\t']).unwrap_or(text.len());
    let name = &text[..name_end];
    if !is_metric_name(name) {
        return err(line, format!("`{name}` is not a valid metric name"));
    }
    let mut rest = &text[name_end..];
    let mut labels = Vec::new();
    if rest.starts_with('{') {
        let (parsed, after) = parse_labels(rest, line)?;
        labels = parsed;
        rest = after;
    }
    if !rest.starts_with([' ', '\t']) {
        return err(line, "expected whitespace before the value");
    }
    let mut fields = rest.split([' ', '\t']).filter(|f| !f.is_empty());
    let value = match fields.next() {
        Some(v) => parse_value(v, line)?,
        None => return err(line, "a sample without a value"),
    };
    let timestamp = match fields.next() {
        Some(t) => Some(
            t.parse::<i64>()
                .or_else(|_| err(line, format!("`{t}` is not a timestamp")))?,
        ),
        None => None,
    };
    if let Some(extra) = fields.next() {
        return err(line, format!("unexpected `{extra}` after the sample"));
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
        timestamp,
    })
}

/// Whether a sample called `sample` belongs to family `family`.
fn belongs(family: &Family, sample: &str) -> bool {
    let suffix = sample.strip_prefix(family.name.as_str());
    match family.kind {
        Kind::Histogram => matches!(suffix, Some("_bucket" | "_sum" | "_count")),
        Kind::Summary => matches!(suffix, Some("" | "_sum" | "_count")),
        _ => suffix == Some(""),
    }
}

/// Parses `text` strictly as the Prometheus text format 0.0.4.
///
/// # Errors
///
/// The first violation found, with its line.
pub fn parse(text: &str) -> Result<Exposition, ParseError> {
    if !text.is_empty() && !text.ends_with('\n') {
        return err(0, "the text does not end with a newline");
    }
    let mut families: Vec<Family> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.contains('\r') {
            return err(line, "a carriage return");
        }
        if raw.trim().is_empty() {
            continue;
        }
        if let Some(comment) = raw.strip_prefix('#') {
            let comment = comment.trim_start_matches([' ', '\t']);
            let (keyword, rest) = comment.split_once([' ', '\t']).unwrap_or((comment, ""));
            if keyword != "HELP" && keyword != "TYPE" {
                continue; // an ordinary comment
            }
            let rest = rest.trim_start_matches([' ', '\t']);
            let (name, arg) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
            if !is_metric_name(name) {
                return err(line, format!("`{name}` is not a valid metric name"));
            }
            // Start the family, or add to the one just started.
            let current = match families.last_mut() {
                Some(f) if f.name == name && f.samples.is_empty() => f,
                _ => {
                    if !seen.insert(name.to_owned()) {
                        return err(
                            line,
                            format!("{keyword} for `{name}`, whose family appeared before"),
                        );
                    }
                    families.push(Family {
                        name: name.to_owned(),
                        help: None,
                        kind: Kind::Untyped,
                        samples: Vec::new(),
                    });
                    families.last_mut().ok_or_else(|| ParseError {
                        line,
                        message: "unreachable".to_owned(),
                    })?
                }
            };
            if keyword == "HELP" {
                if current.help.is_some() {
                    return err(line, format!("a second HELP for `{name}`"));
                }
                current.help = Some(unescape_help(arg, line)?);
            } else {
                if current.kind != Kind::Untyped {
                    return err(line, format!("a second TYPE for `{name}`"));
                }
                current.kind = match arg.trim_end_matches([' ', '\t']) {
                    "counter" => Kind::Counter,
                    "gauge" => Kind::Gauge,
                    "histogram" => Kind::Histogram,
                    "summary" => Kind::Summary,
                    "untyped" => Kind::Untyped,
                    other => return err(line, format!("unknown type `{other}`")),
                };
            }
            continue;
        }
        let sample = parse_sample(raw, line)?;
        match families.last_mut() {
            Some(f) if belongs(f, &sample.name) => f.samples.push(sample),
            _ => {
                if !seen.insert(sample.name.clone()) {
                    return err(
                        line,
                        format!(
                            "a sample of `{}`, whose family appeared before (families must not interleave)",
                            sample.name
                        ),
                    );
                }
                families.push(Family {
                    name: sample.name.clone(),
                    help: None,
                    kind: Kind::Untyped,
                    samples: vec![sample],
                });
            }
        }
    }
    for family in &families {
        check_family(family)?;
    }
    Ok(Exposition { families })
}

/// The labels of a sample as a key, without `le` (histogram buckets) or
/// `quantile`.
fn series_key(sample: &Sample) -> Labels {
    let mut key: Labels = sample
        .labels
        .iter()
        .filter(|(k, _)| k != "le" && k != "quantile")
        .cloned()
        .collect();
    key.sort();
    key
}

fn check_family(family: &Family) -> Result<(), ParseError> {
    let whole = |message: String| ParseError { line: 0, message };
    let mut series = HashSet::new();
    for s in &family.samples {
        let mut labels = s.labels.clone();
        labels.sort();
        if !series.insert((s.name.clone(), labels)) {
            return Err(whole(format!(
                "`{}` has the series {:?} twice",
                s.name, s.labels
            )));
        }
        if family.kind == Kind::Counter && (s.value.is_nan() || s.value < 0.0) {
            return Err(whole(format!(
                "counter `{}` has the value {}",
                s.name, s.value
            )));
        }
    }
    if family.kind != Kind::Histogram {
        return Ok(());
    }
    #[derive(Default)]
    struct Series {
        buckets: Vec<(f64, f64)>,
        sum: Option<f64>,
        count: Option<f64>,
    }
    let mut by_series: BTreeMap<Labels, Series> = BTreeMap::new();
    let name = &family.name;
    for s in &family.samples {
        let entry = by_series.entry(series_key(s)).or_default();
        let suffix = &s.name[name.len()..];
        match suffix {
            "_bucket" => {
                let le = s.label("le").ok_or_else(|| {
                    whole(format!("a bucket of `{name}` without `le`: {:?}", s.labels))
                })?;
                let bound = parse_value(le, 0)?;
                entry.buckets.push((bound, s.value));
            }
            "_sum" => entry.sum = Some(s.value),
            _ => entry.count = Some(s.value),
        }
    }
    for (key, s) in by_series {
        let what = format!("histogram `{name}` {key:?}");
        if s.sum.is_none() {
            return Err(whole(format!("{what} has no _sum")));
        }
        let Some(count) = s.count else {
            return Err(whole(format!("{what} has no _count")));
        };
        for pair in s.buckets.windows(2) {
            if pair[0].0.partial_cmp(&pair[1].0) != Some(std::cmp::Ordering::Less) {
                return Err(whole(format!("{what}: bucket bounds not increasing")));
            }
            if pair[0].1 > pair[1].1 {
                return Err(whole(format!("{what}: bucket counts decrease")));
            }
        }
        match s.buckets.last() {
            Some(&(bound, inf)) if bound == f64::INFINITY => {
                if inf != count {
                    return Err(whole(format!(
                        "{what}: the +Inf bucket ({inf}) differs from _count ({count})"
                    )));
                }
            }
            _ => return Err(whole(format!("{what} has no +Inf bucket"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# HELP req_seconds How long, in \\\\seconds\\n.\n\
# TYPE req_seconds histogram\n\
req_seconds_bucket{path=\"/a\\\"b\\\\c\\n\",le=\"0.5\"} 1\n\
req_seconds_bucket{path=\"/a\\\"b\\\\c\\n\",le=\"+Inf\"} 3\n\
req_seconds_sum{path=\"/a\\\"b\\\\c\\n\"} 2.5\n\
req_seconds_count{path=\"/a\\\"b\\\\c\\n\"} 3\n\
# a comment\n\
# TYPE up gauge\n\
up 1 1700000000000\n\
plain_untyped{a=\"1\",} NaN\n";

    #[test]
    fn a_valid_exposition_parses_with_its_escapes_undone() {
        let e = parse(GOOD).unwrap();
        let h = e.family("req_seconds").unwrap();
        assert_eq!(h.kind, Kind::Histogram);
        assert_eq!(h.help.as_deref(), Some("How long, in \\seconds\n."));
        assert_eq!(h.samples[0].label("path"), Some("/a\"b\\c\n"));
        assert_eq!(
            e.family("up").unwrap().samples[0].timestamp,
            Some(1_700_000_000_000)
        );
        assert!(e.family("plain_untyped").unwrap().samples[0].value.is_nan());
        assert_eq!(e.sum("req_seconds_count", &[]), 3.0);
    }

    fn rejects(text: &str) {
        assert!(parse(text).is_err(), "accepted:\n{text}");
    }

    #[test]
    fn violations_of_the_format_are_rejected() {
        rejects("1bad 1\n");
        rejects("ok{1a=\"x\"} 1\n");
        rejects("ok{__reserved=\"x\"} 1\n");
        rejects("ok{a=\"x\\t\"} 1\n");
        rejects("ok{a=x} 1\n");
        rejects("ok{a=\"x\",a=\"y\"} 1\n");
        rejects("ok one\n");
        rejects("ok 1 1.5\n");
        rejects("ok 1");
        rejects("ok 1\nok 2\n");
        rejects("a 1\nb 1\na 2\n");
        rejects("# TYPE a gauge\n# TYPE a gauge\na 1\n");
        rejects("a 1\n# TYPE a gauge\n");
        rejects("# TYPE a thing\n");
        rejects("# TYPE c counter\nc -1\n");
        rejects("# HELP a bad \\t escape\n");
    }

    #[test]
    fn inconsistent_histograms_are_rejected() {
        let h = |lines: &str| format!("# TYPE h histogram\n{lines}");
        // No +Inf bucket.
        rejects(&h("h_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n"));
        // +Inf differs from the count.
        rejects(&h("h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n"));
        // Counts decrease.
        rejects(&h(
            "h_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        ));
        // Bounds not increasing.
        rejects(&h(
            "h_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        ));
        // No sum.
        rejects(&h("h_bucket{le=\"+Inf\"} 1\nh_count 1\n"));
        assert!(
            parse(&h(
                "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"
            ))
            .is_ok()
        );
    }
}
