//! The pure reconcile path as the runtime runs it for 10, 100 and 10,000
//! children, when nothing changed and when 1 % of them did: each declared
//! child hashed once (`DesiredState::child_hashes`), then
//! `validate_children_hashed` + `plan_children_hashed`; and `ChildSpec::hash`
//! for a typical spec and for one holding 100 child specs.
//!
//! ```sh
//! cargo bench -p fsm-core --bench reconcile
//! ```

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fsm_core::{
    BoxError, ChildSpec, CollectContext, DeriveContext, DesiredState, NodePath, RunningChild,
    SpecHash, State, TickContext, Transition, Value, Worker, WorkerRegistry,
    runtime::plan_children_hashed, runtime::validate_children_hashed,
};
use serde::Deserialize;

/// The typed spec the children decode into (validation decodes every
/// changed child).
#[derive(Deserialize)]
#[allow(dead_code)] // decoded, never read: decoding is what is measured
struct ConnSpec {
    host: String,
    port: u16,
    tags: Vec<String>,
    timeout_ms: u64,
}

struct Conn;

#[derive(Clone, Debug)]
struct Up;

impl Worker for Conn {
    type Spec = ConnSpec;
    type Observed = ();
    type State = Up;

    fn initial_state(&self) -> Up {
        Up
    }

    async fn collect(&self, _ctx: &CollectContext<'_, ConnSpec>) -> Result<(), BoxError> {
        Ok(())
    }

    fn derive_desired(
        &self,
        _spec: &ConnSpec,
        _ctx: &DeriveContext<'_>,
    ) -> Result<DesiredState, BoxError> {
        Ok(DesiredState::new("up"))
    }
}

impl fsm_core::StateNames for Up {
    const NAMES: &'static [&'static str] = &["up"];

    fn name(&self) -> &'static str {
        "up"
    }
}

impl State<Conn> for Up {
    fn next(&self, _s: &TickContext<'_, Conn>) -> Transition<Up> {
        Transition::stay()
    }
}

/// A typical child: a connection with a host, a port, a few tags and a
/// state mapping.
fn typical(name: &str, port: u16) -> ChildSpec {
    ChildSpec::new(name, "conn")
        .with_spec(Value::map([
            ("host", Value::from("10.0.0.5")),
            ("port", Value::from(port)),
            (
                "tags",
                Value::from(vec!["temperature", "pressure", "flow", "level"]),
            ),
            ("timeout_ms", Value::from(2000)),
        ]))
        .map_state("running", "running")
        .map_state("stopped", "stopped")
}

fn declared(n: usize) -> Vec<ChildSpec> {
    (0..n)
        .map(|i| typical(&format!("conn-{i:05}"), 502))
        .collect()
}

/// The same declaration with every hundredth child's port changed.
fn one_percent_changed(n: usize) -> Vec<ChildSpec> {
    (0..n)
        .map(|i| {
            typical(
                &format!("conn-{i:05}"),
                if i % 100 == 0 { 503 } else { 502 },
            )
        })
        .collect()
}

fn registry() -> WorkerRegistry {
    let mut registry = WorkerRegistry::new();
    // A fresh registry: the name is free.
    #[allow(clippy::unwrap_used)]
    registry.register("conn", |_| Conn).unwrap();
    registry
}

fn reconcile(c: &mut Criterion) {
    let registry = registry();
    let path = NodePath::top().child("plant");
    let mut group = c.benchmark_group("reconcile");
    for n in [10usize, 100, 10_000] {
        let running_specs = declared(n);
        let hashes: Vec<SpecHash> = running_specs.iter().map(ChildSpec::hash).collect();
        let running: Vec<RunningChild<'_>> = running_specs
            .iter()
            .zip(&hashes)
            .map(|(s, h)| RunningChild {
                name: &s.name,
                worker_type: &s.worker_type,
                hash: *h,
            })
            .collect();
        group.throughput(Throughput::Elements(n as u64));
        for (case, declared) in [
            ("unchanged", declared(n)),
            ("1pct_changed", one_percent_changed(n)),
        ] {
            group.bench_with_input(BenchmarkId::new(case, n), &declared, |b, declared| {
                b.iter(|| {
                    let hashes: Vec<SpecHash> = declared.iter().map(ChildSpec::hash).collect();
                    let valid =
                        validate_children_hashed(&path, declared, &hashes, &running, &registry);
                    let plan = plan_children_hashed(&running, declared, &hashes);
                    black_box((valid.is_ok(), plan))
                });
            });
        }
    }
    group.finish();
}

fn hashing(c: &mut Criterion) {
    let mut group = c.benchmark_group("spec_hash");
    let one = typical("conn-00001", 502);
    group.bench_function("typical", |b| b.iter(|| black_box(&one).hash()));
    // A parent whose spec holds its children's specs (as a probe's does).
    let children = declared(100);
    #[allow(clippy::unwrap_used)] // plain data always converts
    let nested = ChildSpec::new("line", "line").with_spec(Value::map([(
        "children",
        Value::from_serialize(&children).unwrap(),
    )]));
    group.bench_function("holding_100_children", |b| {
        b.iter(|| black_box(&nested).hash());
    });
    group.finish();
}

criterion_group!(benches, reconcile, hashing);
criterion_main!(benches);
