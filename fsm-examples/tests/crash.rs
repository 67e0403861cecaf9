//! The crash test: `fsm-store-churn` (the demo plant on a SQLite store,
//! changing its spec again and again) is killed with `SIGKILL` at random
//! moments — while it spawns, changes its spec, runs actions, shuts down —
//! and started again on the same store, each time. After every kill:
//!
//! * the store opens;
//! * every action in it has exactly one outcome once loaded, and an outcome
//!   once stored never changes (no record is lost or overwritten by a later
//!   process); the actions found without one are the ones the next process
//!   says it interrupted;
//! * the next process restores the desired tree last committed (the plant's
//!   lines in the stored root spec are the lines it converges to);
//!
//! and at the end, a last run without a kill converges and shuts down
//! cleanly, and the accounting holds over all runs: actions started =
//! succeeded + failed + timed out + cancelled + rejected + interrupted.
//!
//! 20 kills by default; `CRASH_KILLS=100` for the long run,
//! `CRASH_SEED=N` for another sequence of kill moments.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::TempStore;

use fsm_actors::store::SqliteStore;
use fsm_core::NodePath;
use fsm_core::runtime::SplitMix64;
use fsm_core::store::{Store, StoredOutcome, StoredTree};
use fsm_examples::workers::PlantSpec;

/// A duration in `0..max`, from the seeded source of kill moments.
fn below(rng: &mut SplitMix64, max: Duration) -> Duration {
    let max_us = u64::try_from(max.as_micros()).unwrap().max(1);
    Duration::from_micros(rng.next_u64() % max_us)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A running `fsm-store-churn` and the phase lines it printed.
struct Run {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// Its stderr, read as it comes (a full pipe would block it).
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Run {
    fn start(store: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fsm-store-churn"))
            .args(["--changes", "4", "--tick-ms", "10", "--store"])
            .arg(store)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
            err
        });
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
        }
    }

    /// Takes the lines printed so far.
    fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// The phase it was last in (`spawning`, `change`, ...).
    fn phase(&self) -> &str {
        self.seen
            .last()
            .and_then(|l| l.strip_prefix("phase "))
            .and_then(|l| l.split(' ').next())
            .unwrap_or("starting")
    }

    /// The value of `key=` on its `phase WHAT ...` line, if it printed it.
    fn said(&self, what: &str, key: &str) -> Option<String> {
        let line = self
            .seen
            .iter()
            .find(|l| l.starts_with(&format!("phase {what} ")))?;
        line.split(' ')
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .map(str::to_owned)
    }

    /// Kills it with `SIGKILL` after `delay` (or lets it end first).
    fn kill_after(mut self, delay: Duration) -> Self {
        std::thread::sleep(delay);
        // `Child::kill` sends SIGKILL on unix; an error means it had ended.
        let _ = self.child.kill();
        let _ = self.child.wait().unwrap();
        // The reader ends with the pipe; give it a moment to hand over the
        // last lines.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() > deadline => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
        self
    }

    /// Waits for it to end by itself; its stderr if it failed.
    fn finish(mut self) -> (Self, Result<(), String>) {
        let status = self.child.wait().unwrap();
        let err = self
            .stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(50)) {
            self.seen.push(line);
            if Instant::now() > deadline {
                break;
            }
        }
        let result = if status.success() {
            Ok(())
        } else {
            Err(format!("{status}: {err}"))
        };
        (self, result)
    }
}

/// The names of the plant's lines in a stored root spec.
fn stored_lines(tree: &StoredTree) -> Option<String> {
    let root = tree.root.as_ref()?;
    let plant: PlantSpec = root.spec.user_spec.decode().unwrap();
    let names: Vec<&str> = plant.lines.iter().map(|l| l.name.as_str()).collect();
    Some(names.join(","))
}

/// What the crash test keeps over all runs.
#[derive(Default)]
struct Ledger {
    /// Every action ever seen in the store, by node and id, with its
    /// outcome once it had one.
    actions: BTreeMap<(NodePath, u64), Option<StoredOutcome>>,
    /// The actions found without an outcome after the last kill: what the
    /// next process must say it interrupted.
    unfinished: Vec<(NodePath, u64)>,
    /// How many actions were found without an outcome, over all kills
    /// (an action found again, its restore cut off, counts again).
    unfinished_total: u64,
}

impl Ledger {
    /// Reads the store as the killed process left it, checks it, and
    /// returns the plant's lines in its root spec.
    fn after_kill(&mut self, store: &Path, kill: usize) -> Option<String> {
        let store = SqliteStore::open(store)
            .unwrap_or_else(|e| panic!("kill {kill}: the store does not open: {e}"));
        let raw = store.read_all().unwrap().unwrap_or_default();
        let loaded = store.load().unwrap().unwrap_or_default();
        for record in loaded.nodes.values() {
            for action in record.actions.values() {
                assert!(
                    action.outcome.is_some(),
                    "kill {kill}: an action without an outcome after load: {action:?}"
                );
            }
        }
        self.unfinished.clear();
        for record in raw.nodes.values() {
            for action in record.actions.values() {
                let key = (action.node.clone(), action.id);
                let before = self.actions.insert(key, action.outcome.clone());
                if let Some(Some(before)) = before {
                    assert_eq!(
                        Some(&before),
                        action.outcome.as_ref(),
                        "kill {kill}: the stored outcome of {} action {} changed",
                        action.node,
                        action.id
                    );
                }
                if action.outcome.is_none() {
                    self.unfinished.push((action.node.clone(), action.id));
                    self.unfinished_total += 1;
                }
            }
        }
        stored_lines(&raw)
    }

    /// A process said it restored the store and interrupted `count`
    /// actions: those the last read found unfinished. They are
    /// `interrupted` now, even if their nodes (and so their records) are
    /// removed before the next read.
    fn interrupted(&mut self, count: u64, kill: usize) {
        assert_eq!(
            count,
            self.unfinished.len() as u64,
            "kill {kill}: the actions interrupted are not those left unfinished: {:?}",
            self.unfinished
        );
        for key in self.unfinished.drain(..) {
            let outcome = self.actions.entry(key).or_default();
            if outcome.is_none() {
                *outcome = Some(StoredOutcome::Interrupted);
            }
        }
    }
}

#[test]
fn a_process_killed_at_random_moments_restores_its_last_committed_tree_and_accounts_for_every_action()
 {
    let kills = usize::try_from(env_u64("CRASH_KILLS", 20)).unwrap();
    let mut rng = SplitMix64::new(env_u64("CRASH_SEED", 0x5eed));
    let store = TempStore::new("fsm-crash");
    let started = Instant::now();

    // Two runs without a kill (the first on an empty store, the second
    // restoring it), to learn how long one takes.
    let mut ledger = Ledger::default();
    let mut run_time = Duration::MAX;
    for _ in 0..2 {
        let begun = Instant::now();
        let (run, result) = Run::start(&store.0).finish();
        result.unwrap();
        assert_eq!(run.phase(), "done", "{:?}", run.seen);
        run_time = run_time.min(begun.elapsed());
    }
    let mut expected_lines = ledger.after_kill(&store.0, 0);
    let mut phases: BTreeMap<String, u64> = BTreeMap::new();

    for kill in 1..=kills {
        let mut run = Run::start(&store.0);
        // Kill moments cover the whole run, its start and end included.
        run.drain();
        let run = run.kill_after(below(&mut rng, run_time));
        *phases.entry(run.phase().to_owned()).or_default() += 1;
        if let Some(interrupted) = run.said("spawned", "interrupted") {
            // It restored the store as the last kill left it.
            ledger.interrupted(interrupted.parse().unwrap(), kill);
        }
        if let Some(lines) = run
            .said("converged", "lines")
            .filter(|_| expected_lines.is_some())
        {
            // What it converged to before its first change of its own:
            // the desired tree restored.
            assert_eq!(
                Some(&lines),
                expected_lines.as_ref(),
                "kill {kill}: the restored tree is not the last committed one"
            );
        }
        expected_lines = ledger.after_kill(&store.0, kill);
    }

    // A last run, not killed: it converges and ends cleanly.
    let (last, result) = Run::start(&store.0).finish();
    result.unwrap_or_else(|e| panic!("the last run failed: {e}\n{:?}", last.seen));
    assert_eq!(last.phase(), "done", "{:?}", last.seen);
    assert_eq!(
        last.said("converged", "lines").as_ref(),
        expected_lines.as_ref(),
        "the last run did not restore the last committed tree"
    );
    ledger.interrupted(
        last.said("spawned", "interrupted")
            .unwrap()
            .parse()
            .unwrap(),
        kills + 1,
    );
    ledger.after_kill(&store.0, kills + 1);
    assert_eq!(
        ledger.unfinished,
        [],
        "a clean shutdown leaves every action with its outcome"
    );

    // Every action ever stored has exactly one outcome.
    let mut outcomes: BTreeMap<&str, u64> = BTreeMap::new();
    for outcome in ledger.actions.values() {
        let outcome = outcome.as_ref().expect("an action left without an outcome");
        *outcomes.entry(outcome.label()).or_default() += 1;
    }
    let started_actions = ledger.actions.len() as u64;
    assert_eq!(started_actions, outcomes.values().sum::<u64>());
    assert!(started_actions > 0, "no action was stored");
    eprintln!(
        "crash test: {kills} kills in {:.1?}; killed while {phases:?}; {started_actions} actions: {outcomes:?}; {} found unfinished and interrupted",
        started.elapsed(),
        ledger.unfinished_total
    );
    assert!(
        phases.len() >= 2,
        "every kill fell in the same phase: {phases:?}"
    );
}
