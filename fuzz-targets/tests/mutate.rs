//! Brief fuzzing on stable Rust, in every `cargo test`: each target is run
//! on inputs mutated from its seed corpus (bit flips, bytes inserted,
//! removed and overwritten with edge values, chunks duplicated, two seeds
//! spliced), as libFuzzer's mutators do but without its coverage guidance.
//! The runs are seeded by the clock, so each `cargo test` tries new
//! inputs; a failure names its seed and input, and `FUZZ_SEED=<seed>`
//! replays the run. `FUZZ_MUTATIONS` sets the inputs per target (default
//! 2,000). The coverage-guided runs are documented in docs/reliability.md.

use std::path::Path;

use fsm_core::runtime::SplitMix64;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no corpus for `{target}` at {}: {e}", dir.display()))
        .map(|entry| entry.unwrap_or_else(|e| panic!("{e}")).path())
        .collect();
    // A stable order, so that a seed replays the same inputs.
    files.sort();
    files
        .iter()
        .map(|path| std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

fn below(rng: &mut SplitMix64, n: usize) -> usize {
    // `n` is a length, far below u64::MAX: the casts keep the value.
    (rng.next_u64() % n.max(1) as u64) as usize
}

const EDGE_BYTES: [u8; 10] = [0, 1, 0x7f, 0x80, 0xff, b'{', b'"', b'\\', b'}', b'%'];

/// One to four mutations of `data`.
fn mutate(rng: &mut SplitMix64, data: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    for _ in 0..=below(rng, 4) {
        let at = below(rng, out.len() + 1);
        match below(rng, 7) {
            0 if !out.is_empty() => {
                let i = below(rng, out.len());
                out[i] ^= 1 << below(rng, 8);
            }
            1 => out.insert(at, rng.next_u64() as u8),
            2 if !out.is_empty() => {
                let end = (at + 1 + below(rng, 8)).min(out.len());
                out.drain(at.min(out.len() - 1)..end);
            }
            3 if !out.is_empty() => {
                let i = below(rng, out.len());
                out[i] = EDGE_BYTES[below(rng, EDGE_BYTES.len())];
            }
            4 if !out.is_empty() => {
                let start = below(rng, out.len());
                let end = (start + 1 + below(rng, 16)).min(out.len());
                let chunk = out[start..end].to_vec();
                out.splice(at..at, chunk);
            }
            5 => {
                // Splice: our head, the other seed's tail.
                let cut = below(rng, other.len() + 1);
                out.truncate(at);
                out.extend_from_slice(&other[cut..]);
            }
            _ => out.truncate(at),
        }
    }
    out
}

#[test]
fn mutated_seed_inputs_break_no_target() {
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    let per_target: usize = std::env::var("FUZZ_MUTATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    // Invariant failures are reported below, with their input.
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = SplitMix64::new(seed);
    let mut failures = Vec::new();
    for (name, target) in fuzz_targets::TARGETS {
        let corpus = seeds(name);
        assert!(!corpus.is_empty(), "`{name}` has no seeds");
        for _ in 0..per_target {
            let data = &corpus[below(&mut rng, corpus.len())];
            let other = &corpus[below(&mut rng, corpus.len())];
            let input = mutate(&mut rng, data, other);
            if std::panic::catch_unwind(|| target(&input)).is_err() {
                failures.push(format!("{name}: {input:?}"));
            }
        }
    }
    let _ = std::panic::take_hook();
    assert!(
        failures.is_empty(),
        "FUZZ_SEED={seed}: inputs that break a target (add each to fuzz/corpus/<target>/ as regression-*, then fix):\n{}",
        failures.join("\n")
    );
}
