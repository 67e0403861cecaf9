//! Registry, validation and driver behaviour, without any runtime.

// Test helpers outside `#[test]` functions unwrap too: a panic fails the test.
#![allow(clippy::unwrap_used)]

use fsm_core::{Backoff, Supervision};
use fsm_core::{
    BoxError, ChildSpec, CollectContext, DeclarationProblem, DeriveContext, DesiredState, NodePath,
    RunningChild, Signal, SpecError, SpecHash, State, TickContext, Transition, Value, Worker,
    WorkerRegistry, runtime::StepInput, runtime::decode_children_hashed, validate_children,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct CounterSpec {
    target: u32,
    #[serde(default)]
    panic_in: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pumps: Vec<Pump>,
    /// The backoff jitter of the supervision it declares, if any.
    #[serde(default)]
    jitter: Option<f64>,
}

#[derive(Deserialize)]
struct Pump {
    #[allow(dead_code)]
    enabled: bool,
}

struct Counter;

#[derive(Clone, Debug)]
enum Count {
    Below(u32),
    Reached,
}

impl Worker for Counter {
    type Spec = CounterSpec;
    type Observed = u32;
    type State = Count;

    fn initial_state(&self) -> Count {
        Count::Below(0)
    }

    async fn collect(&self, _ctx: &CollectContext<'_, CounterSpec>) -> Result<u32, BoxError> {
        Ok(7)
    }

    fn derive_desired(
        &self,
        spec: &CounterSpec,
        _ctx: &DeriveContext<'_>,
    ) -> Result<DesiredState, BoxError> {
        match spec.panic_in.as_deref() {
            Some("derive") => panic!("derive blew up"),
            Some("derive-error") => Err("no good".into()),
            _ => Ok(match spec.jitter {
                Some(jitter) => DesiredState::new("reached").with_supervision(
                    Supervision::default().with_backoff(Backoff {
                        jitter,
                        ..Backoff::default()
                    }),
                ),
                None => DesiredState::new("reached"),
            }),
        }
    }
}

impl fsm_core::StateNames for Count {
    const NAMES: &'static [&'static str] = &["below", "reached"];

    fn name(&self) -> &'static str {
        match self {
            Count::Below(_) => "below",
            Count::Reached => "reached",
        }
    }
}

impl State<Counter> for Count {
    fn next(&self, s: &TickContext<'_, Counter>) -> Transition<Count> {
        if s.spec().panic_in.as_deref() == Some("next") {
            panic!("next blew up");
        }
        match self {
            Count::Below(_) if *s.observed() >= s.spec().target => {
                Transition::to(Count::Reached).because("target reached")
            }
            Count::Below(n) => Transition::to(Count::Below(n + 1)),
            Count::Reached if s.desired() == "gone" => Transition::signal(Signal::NeedsRemoval),
            Count::Reached => Transition::stay(),
        }
    }
}

fn registry() -> WorkerRegistry {
    let mut r = WorkerRegistry::new();
    r.register("counter", |_| Counter).unwrap();
    r
}

fn spec(name: &str, target: i64) -> ChildSpec {
    ChildSpec::new(name, "counter").with_spec(Value::map([("target", Value::from(target))]))
}

#[test]
fn unknown_worker_type_names_the_path_and_the_known_types() {
    let path = NodePath::parse("plant/line-1");
    let err = registry()
        .validate(&path.child("x"), &ChildSpec::new("x", "conter"))
        .unwrap_err();
    assert!(matches!(err, SpecError::UnknownWorkerType { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("plant/line-1/x") && msg.contains("`conter`") && msg.contains("[counter]"),
        "{msg}"
    );
}

#[test]
fn undecodable_spec_names_the_path_and_the_serde_message() {
    let path = NodePath::parse("plant/c");
    let bad = ChildSpec::new("c", "counter").with_spec(Value::map([("target", "ten".into())]));
    let err = registry().validate(&path, &bad).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("plant/c") && msg.contains("invalid type: string \"ten\""),
        "{msg}"
    );
}

/// A counter whose third pump has `"enabled": enabled`.
fn pumps(enabled: Value) -> Value {
    let pump = |on: Value| Value::map([("enabled", on)]);
    Value::map([
        ("target", Value::from(1)),
        (
            "pumps",
            Value::List(vec![pump(true.into()), pump(false.into()), pump(enabled)]),
        ),
    ])
}

const PUMP_ERROR: &str = "pumps[2].enabled: invalid type: string \"yes\", expected a boolean";

#[test]
fn an_undecodable_field_is_named_by_its_path_in_the_declaration_error() {
    let parent = NodePath::parse("plant");
    let bad = ChildSpec::new("c", "counter").with_spec(pumps(Value::from("yes")));
    let err = validate_children(&parent, &[bad], &[], &registry()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("plant/c") && msg.contains(PUMP_ERROR), "{msg}");
}

#[test]
fn a_driver_names_the_undecodable_field_with_and_without_templates() {
    struct Yes;
    impl fsm_core::TemplateRenderer for Yes {
        fn render(&self, _template: &str, _field: &str) -> Result<Value, String> {
            Ok(Value::from("yes"))
        }
    }
    let path = NodePath::parse("plant/c");
    let mut d = registry().construct(&path, "counter").unwrap();
    let err = d.set_spec(&pumps(Value::from("yes"))).unwrap_err();
    assert_eq!(err.to_string(), PUMP_ERROR);
    assert_eq!(err.path(), Some("pumps[2].enabled"));
    // The template renders to "yes", which is no boolean either.
    let err = d
        .set_spec_rendered(&pumps(Value::from("{{ PUMP_ON }}")), &Yes)
        .unwrap_err();
    assert_eq!(err.to_string(), PUMP_ERROR);
    assert!(!d.has_spec());
}

#[test]
fn validation_reports_every_problem_at_once() {
    let path = NodePath::parse("p");
    let declared = vec![
        spec("a", 1),
        spec("", 1),
        spec("a", 2),
        ChildSpec::new("b", "nope"),
        spec("c/d", 1),
        ChildSpec::new("e", "counter"),
    ];
    let err = validate_children(&path, &declared, &[], &registry()).unwrap_err();
    assert_eq!(err.path, path);
    assert_eq!(err.problems.len(), 5, "{err}");
    assert!(matches!(
        err.problems[0],
        DeclarationProblem::EmptyName { index: 1, .. }
    ));
    assert!(matches!(
        err.problems[1],
        DeclarationProblem::DuplicateName {
            first: 0,
            second: 2,
            ..
        }
    ));
    assert!(matches!(
        &err.problems[2],
        DeclarationProblem::Spec(SpecError::UnknownWorkerType { path, .. }) if path.as_str() == "p/b"
    ));
    assert!(matches!(
        err.problems[3],
        DeclarationProblem::InvalidName { .. }
    ));
    assert!(matches!(
        &err.problems[4],
        DeclarationProblem::Spec(SpecError::Undecodable { path, .. }) if path.as_str() == "p/e"
    ));
    let msg = err.to_string();
    assert!(
        msg.contains("running children were left as they are"),
        "{msg}"
    );
}

#[test]
fn unchanged_running_children_are_not_decoded_again() {
    // A child that is running with exactly this spec passed validation when
    // it started; validation does not redo the decode.
    let undecodable_but_running = ChildSpec::new("e", "counter");
    let running = [RunningChild {
        name: "e",
        worker_type: "counter",
        hash: undecodable_but_running.hash(),
    }];
    assert!(
        validate_children(
            &NodePath::top(),
            &[undecodable_but_running],
            &running,
            &registry()
        )
        .is_ok()
    );
}

#[test]
fn a_constructor_error_is_a_typed_error_naming_the_node_and_the_worker_type() {
    let mut r = WorkerRegistry::new();
    r.try_register("counter", |init| {
        if init.path().as_str().ends_with("bad") {
            Err("no licence file at /etc/counter.lic".into())
        } else {
            Ok(Counter)
        }
    })
    .unwrap();
    assert!(
        r.construct(&NodePath::parse("plant/good"), "counter")
            .is_ok()
    );
    let Err(err) = r.construct(&NodePath::parse("plant/bad"), "counter") else {
        panic!("the constructor's error was lost");
    };
    assert_eq!(
        err,
        SpecError::ConstructorFailed {
            path: NodePath::parse("plant/bad"),
            worker_type: "counter".into(),
            message: "no licence file at /etc/counter.lic".into(),
        }
    );
    assert_eq!(err.path().as_str(), "plant/bad");
    let msg = err.to_string();
    assert!(
        msg.contains("plant/bad") && msg.contains("`counter`") && msg.contains("no licence file"),
        "{msg}"
    );
    // `create` (construct, then install the spec) fails the same way.
    assert!(matches!(
        r.create(&NodePath::parse("plant/bad"), &spec("bad", 1)),
        Err(SpecError::ConstructorFailed { .. })
    ));
    // The name is taken like any other.
    assert!(r.try_register("counter", |_| Ok(Counter)).is_err());
}

#[test]
fn registering_twice_or_empty_is_refused() {
    let mut r = registry();
    assert!(r.register("counter", |_| Counter).is_err());
    assert!(r.register("", |_| Counter).is_err());
}

#[test]
fn driver_runs_the_state_machine_only_with_an_observation() {
    let path = NodePath::parse("c");
    let mut d = registry().create(&path, &spec("c", 2)).unwrap();
    assert_eq!(d.state_name(), "below");
    assert!(d.step(&StepInput::new(&path, "reached")).unwrap().is_none());

    let obs = futures::executor::block_on(d.collect(&path)).unwrap();
    assert!(d.set_observation(obs));
    let out = d.step(&StepInput::new(&path, "reached")).unwrap().unwrap();
    assert_eq!((out.from, out.to), ("below", Some("reached")));
    assert_eq!(out.reason, "target reached");
    assert_eq!(d.state_name(), "reached");

    let out = d.step(&StepInput::new(&path, "gone")).unwrap().unwrap();
    assert_eq!(out.signal, Some(Signal::NeedsRemoval));
    assert_eq!(out.to, None);
}

#[test]
fn a_parent_decodes_new_children_once_and_a_child_installs_what_it_decoded() {
    let parent = NodePath::parse("plant");
    let registry = registry();
    let keep = spec("keep", 100);
    let templated =
        ChildSpec::new("t", "counter").with_spec(Value::map([("target", "{{ user.n }}".into())]));
    let declared = vec![keep.clone(), spec("new", 3), templated];
    let hashes: Vec<SpecHash> = declared.iter().map(ChildSpec::hash).collect();
    let running = [RunningChild {
        name: "keep",
        worker_type: "counter",
        hash: keep.hash(),
    }];
    let mut decoded =
        decode_children_hashed(&parent, &declared, &hashes, &running, &registry).unwrap();
    assert_eq!(decoded.len(), 3);
    assert!(
        decoded[0].is_none(),
        "running and unchanged: not decoded again"
    );
    assert!(
        decoded[2].is_none(),
        "templated: only the child can decode it"
    );

    // The child installs the decoded spec (target 3, which 7 reaches).
    let path = parent.child("new");
    let mut child = registry.construct(&path, "counter").unwrap();
    assert!(!child.has_spec());
    child.set_decoded_spec(decoded[1].take().unwrap()).unwrap();
    assert!(child.has_spec());
    let obs = futures::executor::block_on(child.collect(&path)).unwrap();
    assert!(child.set_observation(obs));
    child.step(&StepInput::new(&path, "reached")).unwrap();
    assert_eq!(child.state_name(), "reached");

    // A bad spec is refused as validation refuses it, naming the child.
    let bad = vec![ChildSpec::new("b", "counter").with_spec(Value::map([("target", "x".into())]))];
    let err = decode_children_hashed(&parent, &bad, &[], &[], &registry).unwrap_err();
    assert!(err.to_string().contains("plant/b"), "{err}");
}

#[test]
fn a_decoded_spec_of_another_worker_type_is_given_back() {
    let path = NodePath::parse("c");
    let mut registry = registry();
    registry.register("other", |_| Other).unwrap();
    let declared = vec![ChildSpec::new("o", "other").with_spec(Value::from("hello"))];
    let mut decoded = decode_children_hashed(&path, &declared, &[], &[], &registry).unwrap();
    let mut counter = registry.construct(&path, "counter").unwrap();
    let refused = counter.set_decoded_spec(decoded[0].take().unwrap());
    assert!(refused.is_err());
    assert!(!counter.has_spec());
}

/// A worker whose spec is a string.
struct Other;

#[derive(Clone, Debug)]
struct Idle;

impl Worker for Other {
    type Spec = String;
    type Observed = ();
    type State = Idle;

    fn initial_state(&self) -> Idle {
        Idle
    }

    async fn collect(&self, _ctx: &CollectContext<'_, String>) -> Result<(), BoxError> {
        Ok(())
    }

    fn derive_desired(&self, _: &String, _: &DeriveContext<'_>) -> Result<DesiredState, BoxError> {
        Ok(DesiredState::new("idle"))
    }
}

impl fsm_core::StateNames for Idle {
    const NAMES: &'static [&'static str] = &["idle"];

    fn name(&self) -> &'static str {
        "idle"
    }
}

impl State<Other> for Idle {
    fn next(&self, _: &TickContext<'_, Other>) -> Transition<Idle> {
        Transition::stay()
    }
}

#[test]
fn driver_refuses_an_observation_of_another_type() {
    let path = NodePath::parse("c");
    let mut d = registry().create(&path, &spec("c", 2)).unwrap();
    assert!(!d.set_observation(Box::new("not a u32")));
    assert!(!d.has_observation());
}

#[test]
fn a_declared_supervision_that_makes_no_sense_is_an_invalid_spec() {
    let path = NodePath::parse("c");
    let with = |jitter: f64| {
        ChildSpec::new("c", "counter").with_spec(Value::map([
            ("target", 1.into()),
            ("jitter", jitter.into()),
        ]))
    };
    for jitter in [-1.0, f64::NAN] {
        let d = registry().create(&path, &with(jitter)).unwrap();
        let err = d.derive(&path).unwrap_err();
        assert!(err.is_invalid_spec(), "{err}");
        assert!(err.to_string().contains("`backoff.jitter`"), "{err}");
    }
    // Large is not nonsense: waits saturate.
    let d = registry().create(&path, &with(5.0)).unwrap();
    let desired = d.derive(&path).unwrap();
    assert_eq!(desired.supervision.unwrap().backoff.jitter, 5.0);
}

#[test]
fn panics_and_errors_in_callbacks_are_caught_and_typed() {
    let path = NodePath::parse("c");
    let with = |how: &str| {
        ChildSpec::new("c", "counter")
            .with_spec(Value::map([("target", 1.into()), ("panic_in", how.into())]))
    };
    let d = registry().create(&path, &with("derive")).unwrap();
    let err = d.derive(&path).unwrap_err();
    assert!(
        err.is_panic() && err.to_string().contains("derive blew up"),
        "{err}"
    );

    let d = registry().create(&path, &with("derive-error")).unwrap();
    let err = d.derive(&path).unwrap_err();
    assert!(
        !err.is_panic() && err.to_string().contains("no good"),
        "{err}"
    );

    let mut d = registry().create(&path, &with("next")).unwrap();
    let obs = futures::executor::block_on(d.collect(&path)).unwrap();
    d.set_observation(obs);
    let err = d.step(&StepInput::new(&path, "reached")).unwrap_err();
    assert!(
        err.is_panic() && err.to_string().contains("next blew up"),
        "{err}"
    );
}

#[test]
fn set_spec_keeps_the_old_spec_on_error() {
    let path = NodePath::parse("c");
    let mut d = registry().create(&path, &spec("c", 100)).unwrap();
    assert!(d.set_spec(&Value::from("garbage")).is_err());
    let obs = futures::executor::block_on(d.collect(&path)).unwrap();
    d.set_observation(obs);
    // target is still 100, so 7 has not reached it
    let out = d.step(&StepInput::new(&path, "reached")).unwrap().unwrap();
    assert_eq!(out.to, None);
    d.set_spec(&Value::map([("target", Value::from(5))]))
        .unwrap();
    let out = d.step(&StepInput::new(&path, "reached")).unwrap().unwrap();
    assert_eq!(out.to, Some("reached"));
}

#[test]
fn a_state_mapping_to_a_state_the_child_does_not_have_is_a_declaration_problem() {
    let path = NodePath::parse("plant");
    let declared = vec![
        spec("good", 1).map_state("running", "reached"),
        spec("typo", 1).map_state("running", "reachd"),
    ];
    let err = validate_children(&path, &declared, &[], &registry()).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert!(
        matches!(
            &err.problems[0],
            DeclarationProblem::Spec(SpecError::UnknownState { state, known, .. })
                if state == "reachd" && known == &["below", "reached"]
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("plant/typo")
            && msg.contains("\"reachd\" is not a state of worker type \"counter\"")
            && msg.contains("(its states: below, reached)")
            && msg.contains("parent state \"running\""),
        "{msg}"
    );
    // The decoding path used by the runtime says the same.
    let hashes: Vec<SpecHash> = declared.iter().map(ChildSpec::hash).collect();
    assert!(decode_children_hashed(&path, &declared, &hashes, &[], &registry()).is_err());
}

#[test]
fn the_registry_and_the_driver_know_the_worker_states() {
    assert_eq!(
        registry().state_names("counter"),
        Some(&["below", "reached"][..])
    );
    assert_eq!(registry().state_names("nope"), None);
    let d = registry()
        .create(&NodePath::parse("c"), &spec("c", 1))
        .unwrap();
    assert_eq!(d.state_names(), &["below", "reached"]);
    assert!(d.state_names().contains(&d.state_name()));
}
