//! `fsm-demo --store FILE`: a second run restores the first's tree, and a
//! file that is no usable store is refused, named and left as it was.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};
use support::TempStore;

fn demo(store: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fsm-demo"))
        .args(["--ticks", "20", "--store"])
        .arg(store)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_second_run_on_the_same_store_restores_the_first_s_tree_with_its_halfway_change() {
    let store = TempStore::new("fsm-demo-store");
    let first = demo(&store.0);
    let (out, err) = (text(&first.stdout), text(&first.stderr));
    assert!(first.status.success(), "{out}\n{err}");
    assert!(out.contains("spec changed halfway"), "{out}");
    assert!(!err.contains("restored"), "{err}");

    let second = demo(&store.0);
    let (out, err) = (text(&second.stdout), text(&second.stderr));
    assert!(second.status.success(), "{out}\n{err}");
    let said = err
        .lines()
        .find(|l| l.starts_with("fsm-demo: restored "))
        .unwrap_or_else(|| panic!("the second run did not say it restored:\n{err}"));
    assert!(said.contains(&store.0.display().to_string()), "{said}");
    assert!(said.contains("last written "), "{said}");
    // The first run's final tree has 14 nodes or so; whatever the number,
    // it is the one the second run prints.
    let nodes: u64 = said["fsm-demo: restored ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(out.contains(&format!("\n{nodes} nodes,")), "{said}\n{out}");
    // No change was applied in this run, yet the tree is the changed one.
    assert!(!out.contains("spec changed halfway"), "{out}");
    assert!(out.contains("line-3"), "{out}");
    assert!(!out.contains("line-2"), "{out}");
}

fn assert_refused(store: &Path, expect: &str) {
    let before = std::fs::read(store).unwrap();
    let run = demo(store);
    let err = text(&run.stderr);
    assert!(!run.status.success(), "{err}");
    assert!(err.contains(&store.display().to_string()), "{err}");
    assert!(err.contains(expect), "{err}");
    assert_eq!(
        std::fs::read(store).unwrap(),
        before,
        "the refused file was changed"
    );
}

#[test]
fn a_file_that_is_not_a_store_is_refused_naming_it_and_left_unchanged() {
    let store = TempStore::new("fsm-demo-store");
    std::fs::write(&store.0, b"not a store, just some text ".repeat(40)).unwrap();
    assert_refused(&store.0, "not a store");
}

#[test]
fn a_store_with_an_unreadable_record_is_refused_naming_it_and_left_unchanged() {
    let store = TempStore::new("fsm-demo-store");
    assert!(demo(&store.0).status.success());
    rusqlite::Connection::open(&store.0)
        .unwrap()
        .execute("UPDATE observed SET doc = x'01ff' WHERE path = 'plant'", [])
        .unwrap();
    assert_refused(&store.0, "node `plant`");
}

#[test]
fn a_store_of_a_newer_schema_is_refused_naming_it_and_left_unchanged() {
    let store = TempStore::new("fsm-demo-store");
    assert!(demo(&store.0).status.success());
    rusqlite::Connection::open(&store.0)
        .unwrap()
        .execute("UPDATE schema_version SET version = 99", [])
        .unwrap();
    assert_refused(&store.0, "schema version 99");
}
