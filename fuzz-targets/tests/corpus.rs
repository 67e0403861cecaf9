//! Replays the seed corpus (`fuzz/corpus/<target>/`) through the fuzz
//! targets: what CI runs of the fuzzing, on stable Rust. A crash libFuzzer
//! finds is added to its target's corpus, so that it stays fixed.

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

#[test]
fn every_corpus_file_passes_through_its_target_without_breaking_an_invariant() {
    let mut failures = Vec::new();
    for (name, target) in fuzz_targets::TARGETS {
        let dir = corpus(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("no corpus for `{name}` at {}: {e}", dir.display()));
        let mut files = 0;
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            files += 1;
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failures.push(path.display().to_string());
            }
        }
        assert!(
            files >= 12,
            "`{name}` has {files} seed files; keep a few dozen, valid and invalid"
        );
    }
    assert!(
        failures.is_empty(),
        "inputs that break a target: {failures:#?}"
    );
}

#[test]
fn every_target_has_a_corpus_and_a_libfuzzer_binary_of_its_name() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/Cargo.toml"))
            .unwrap_or_else(|e| panic!("fuzz/Cargo.toml: {e}"));
    for (name, _) in fuzz_targets::TARGETS {
        assert!(corpus(name).is_dir(), "no corpus directory for `{name}`");
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] `{name}`"
        );
        assert!(fuzz_targets::target(name).is_some());
    }
}
