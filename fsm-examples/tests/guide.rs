//! The guide's application runs as the guide says, and every Rust block of
//! `docs/guide.md` is code of `src/guide.rs` (so the guide compiles).

/// `text` with each line's indentation removed: a block of the guide may be
/// dedented from the module it comes from.
fn unindented(text: &str) -> String {
    text.lines()
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join("\n")
}

use std::time::Duration;

use fsm_examples::guide::{self, World};

#[test]
fn every_rust_block_of_the_guide_is_code_of_the_guide_module() {
    let markdown = include_str!("../../docs/guide.md");
    let source = unindented(include_str!("../src/guide.rs"));
    let mut blocks = 0;
    let mut rest = markdown;
    while let Some(start) = rest.find("```rust\n") {
        let body = &rest[start + "```rust\n".len()..];
        let end = body.find("\n```").expect("an unclosed code block");
        let block = &body[..end];
        assert!(
            source.contains(&unindented(block)),
            "this block of docs/guide.md is not in fsm-examples/src/guide.rs:\n{block}"
        );
        blocks += 1;
        rest = &body[end..];
    }
    assert!(blocks >= 8, "only {blocks} Rust blocks in the guide");
}

#[tokio::test(start_paused = true)]
async fn the_guides_site_converges_changes_and_stops_as_the_guide_says() {
    let world = World::default();
    let tree = guide::start(&world).await.unwrap();

    let snapshot = tree.inspect().await.unwrap();
    let printed = guide::print_tree(&snapshot);
    assert_eq!(snapshot.len(), 5, "{printed}");
    let state = |path: &str| snapshot.find(path).map(|n| n.state.clone());
    assert_eq!(state("site").as_deref(), Some("running"));
    assert_eq!(state("site/pump-1").as_deref(), Some("running"));
    assert_eq!(state("site/pump-1/inlet").as_deref(), Some("normal"));
    assert_eq!(state("site/pump-1/outlet").as_deref(), Some("normal"));
    assert_eq!(state("site/pump-2").as_deref(), Some("stopped"));
    // The guide shows this output as it is.
    let guide = include_str!("../../docs/guide.md");
    assert!(
        guide.contains(&printed),
        "docs/guide.md should show:\n{printed}"
    );
    let pump = snapshot.find("site/pump-1").unwrap();
    assert_eq!(pump.location_path, "acme.plant-a.water.pump-1");
    assert!(world.motor_on("site/pump-1") && !world.motor_on("site/pump-2"));

    // Above its limit, a sensor is `high`: not what it should be.
    world.set_pressure("10.0.0.1:502", 6.5);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let inlet = tree.inspect().await.unwrap();
    let inlet = inlet.find("site/pump-1/inlet").unwrap();
    assert_eq!(inlet.state, "high");
    assert!(!inlet.converged);
    world.set_pressure("10.0.0.1:502", 4.0);

    // A jammed motor: the switch-on action fails and is retried until the
    // motor is free again.
    world.jam("site/pump-2", true);
    let before = tree.generation();
    let change = {
        let tree = tree.handle();
        tokio::spawn(async move {
            let generation = guide::switch_on_pump_2(&tree).await;
            generation.map_err(|e| e.to_string())
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let jammed = tree.inspect().await.unwrap();
    let pump_2 = jammed.find("site/pump-2").unwrap();
    let last = pump_2.last_action.as_ref().unwrap();
    assert_eq!(last.action, "switch-on");
    assert_eq!(last.outcome.label(), "failed");
    world.jam("site/pump-2", false);
    let generation = change.await.unwrap().unwrap();
    assert_eq!(generation, before + 1);
    let after = tree.inspect().await.unwrap();
    assert_eq!(after.find("site/pump-2").unwrap().state, "running");
    assert_eq!(after.observed_generation, generation);
    assert!(world.motor_on("site/pump-2"));

    // A root spec that does not decode is refused, naming the field; the
    // tree runs on unchanged.
    let bad = guide::SITE_JSON.replace(r#""on": false"#, r#""on": "yes""#);
    let bad: fsm_core::ChildSpec = serde_json::from_str(&bad).unwrap();
    let error = tree.update_root_spec(bad).unwrap_err().to_string();
    assert!(
        guide.contains(&error),
        "docs/guide.md should show:\n{error}"
    );
    assert_eq!(tree.generation(), generation);

    let report = guide::stop(tree).await;
    assert!(report.all_clean(), "{report:?}");
    assert_eq!(report.stopped.len(), 5);
}
