//! `fsm-trace`: prints the spans that the runtime's JSON-lines exporter
//! wrote, as trees, a summary per trace, or the slowest spans.
//!
//! ```text
//! fsm-trace spans.jsonl                           # every trace as a tree
//! fsm-trace spans.jsonl --summary                 # one line per trace, then totals
//! fsm-trace spans.jsonl --trace 4bf92f35          # one trace (a unique id prefix will do)
//! fsm-trace spans.jsonl --path plant/line-1       # spans on that subtree (ancestors as context)
//! fsm-trace spans.jsonl --slowest 10              # the ten slowest spans
//! fsm-trace spans.jsonl --trace 4bf92f35 --slowest 5
//! ```
//!
//! Spans that went wrong (status `error`, or an action outcome other than
//! `succeeded`) start with `!!`. Exit status: 0 on success, 1 when the file
//! cannot be read or `--trace` matches no trace, 2 on bad arguments.

// A command-line program prints its output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use fsm_examples::trace_view::{
    Style, Traces, parse_spans, render_slowest, render_summary, render_trees, select,
};

/// Print the spans recorded by the JSON-lines trace exporter of fsmv2-rs.
#[derive(Parser, Debug)]
#[command(name = "fsm-trace", version)]
struct Args {
    /// The JSON-lines span file (`-` reads standard input).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// One line per trace (start, id, spans, distinct nodes, root duration,
    /// errors) and a line of totals, instead of the trees.
    #[arg(long)]
    summary: bool,
    /// Only this trace (its id, or a unique prefix of it).
    #[arg(long, value_name = "ID")]
    trace: Option<String>,
    /// Only spans whose node.path is PREFIX or under PREFIX/ (trees show
    /// their ancestors too, marked "(context)").
    #[arg(long, value_name = "PREFIX")]
    path: Option<String>,
    /// List the N slowest (selected) spans, slowest first, instead of the
    /// trees.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    slowest: Option<u64>,
    /// When to colour the output.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = Colour::Auto)]
    color: Colour,
}

/// When to colour the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Colour {
    /// When standard output is a terminal and `NO_COLOR` is not set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(output) => {
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(output.as_bytes())
                .and_then(|()| stdout.flush())
            {
                // `fsm-trace ... | head` is fine.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("fsm-trace: cannot write the output: {e}");
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("fsm-trace: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read_input(path: &Path) -> Result<Vec<u8>, String> {
    if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        Ok(bytes)
    } else {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    }
}

/// Reads the file and renders what was asked for.
fn run(args: &Args) -> Result<String, String> {
    let name = args.file.display();
    let bytes = read_input(&args.file)?;
    let file = parse_spans(&bytes).map_err(|e| format!("{name}: {e}"))?;
    if let Some(skipped) = &file.skipped_last_line {
        eprintln!(
            "fsm-trace: warning: {name}: skipped the last line, which is not a complete span \
             (was the file still being written?): {skipped}"
        );
    }
    let traces = Traces::build(file.spans);
    let trace = match &args.trace {
        None => None,
        Some(id) => Some(traces.find(id).map_err(|e| format!("{name}: {e}"))?),
    };
    if traces.traces.is_empty() {
        return Ok(format!("no spans in {name}\n"));
    }
    let views = select(&traces, trace, args.path.as_deref());
    if views.is_empty() {
        let path = args.path.as_deref().unwrap_or_default();
        return Ok(format!("no spans in {name} on path {path}\n"));
    }
    let style = Style {
        color: match args.color {
            Colour::Always => true,
            Colour::Never => false,
            Colour::Auto => {
                std::io::stdout().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        },
    };
    let mut out = String::new();
    if args.summary {
        out.push_str(&render_summary(&traces, &views, style));
    }
    if let Some(n) = args.slowest {
        if !out.is_empty() {
            out.push('\n');
        }
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        out.push_str(&render_slowest(&traces, &views, n, style));
    }
    if out.is_empty() {
        out = render_trees(&traces, &views, style);
    }
    Ok(out)
}
