//! Template rendering: one typical child spec (templates already compiled),
//! and a parent's fan-out of 100 children rendered one after another.

// Benchmarks unwrap: a failure should stop them loudly.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fsm_core::{Map, NodePath, Value};
use fsm_templates::{InternalVars, Templates, VariableBundle};

fn bundle(i: usize) -> VariableBundle {
    VariableBundle::default()
        .with_user(Map::from([
            (
                "IP".to_owned(),
                Value::from(format!("10.0.{}.{}", i / 250, i % 250)),
            ),
            ("PORT".to_owned(), Value::from(502)),
            ("LINE".to_owned(), Value::from("line-1")),
            (
                "TAGS".to_owned(),
                Value::from(vec!["temperature", "pressure", "speed"]),
            ),
        ]))
        .with_global(Map::from([(
            "broker".to_owned(),
            Value::from("tcp://broker:1883"),
        )]))
        .with_internal(InternalVars::new(
            i.to_string(),
            NodePath::parse("plant/line-1/b"),
            "bridge",
            0,
        ))
}

fn child_spec() -> Value {
    Value::map([
        ("name", Value::from("bridge")),
        (
            "connection",
            Value::map([
                ("address", Value::from("{{ IP }}:{{ PORT }}")),
                ("port", Value::from("{{ PORT }}")),
                ("protocol", Value::from("modbus")),
            ]),
        ),
        (
            "read",
            Value::map([
                (
                    "topic",
                    Value::from("umh/v1/{{ LINE | lower }}/{{ internal.path }}"),
                ),
                ("tags", Value::from("{{ TAGS }}")),
                ("output", Value::from("{{ global.broker }}")),
            ]),
        ),
        ("interval_ms", Value::from(1000)),
    ])
}

fn benches(c: &mut Criterion) {
    let templates = Templates::new();
    let spec = child_spec();
    let node = NodePath::parse("plant/line-1/b");
    let ctx = bundle(0).flatten();
    templates.render_value(&spec, &ctx, &node).unwrap();
    c.bench_function("render typical child spec (precompiled)", |b| {
        b.iter(|| {
            templates
                .render_value(black_box(&spec), black_box(&ctx), &node)
                .unwrap()
        });
    });
    let contexts: Vec<Value> = (0..100).map(|i| bundle(i).flatten()).collect();
    c.bench_function("render 100-child fan-out", |b| {
        b.iter(|| {
            for ctx in &contexts {
                black_box(templates.render_value(&spec, ctx, &node).unwrap());
            }
        });
    });
}

criterion_group!(render, benches);
criterion_main!(render);
