//! The store actor: one task per tree that writes what its nodes hand it
//! to the tree's [`Store`], off the tick.
//!
//! * Nodes send changes (a message each, only when something changed);
//!   the actor keeps them in a backlog **coalesced per record** (the latest
//!   change of a node's document replaces the one before), and writes the
//!   whole backlog as **one batch**, one transaction, on a blocking thread.
//!   Changes that arrive while a batch is written wait for the next, which
//!   that thread writes as soon as the batch before is committed: it does
//!   not wait for the actor's task to run again, which in a busy tree can
//!   take a whole round of ticks (a task woken from outside the runtime
//!   queues behind every node woken before it).
//! * A tick never waits for the disk. A slow disk makes the backlog grow,
//!   bounded by the number of nodes (three documents each) and
//!   [`MAX_ACTIONS_PER_NODE`] action records per node; past that, the
//!   oldest action records of a node are dropped, and counted.
//! * A failing write keeps the backlog, retries with backoff, shows a
//!   `store` problem on the root node and counts; the tree runs on.
//! * **An action's started record is written before the action runs**: the
//!   node hands the action to this actor with its record, and the actor
//!   passes it on to the executor once the batch holding the record is
//!   committed (or its write failed: a failing disk does not stop actions).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fsm_core::NodePath;
use fsm_core::store::{
    ActionRecord, Change, ObservedDocument, Store, StoreError, StoredOutcome, StoredRoot,
    StoredTree,
};
use ractor::ActorRef;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::executor::{ExecMsg, ExecutorHandle, Pending};
use crate::node::NodeMsg;
use crate::snapshot::{RestoreInfo, StoreStats};

/// How many action records of one node the backlog keeps while the store
/// cannot be written; older ones are dropped (and counted).
pub(crate) const MAX_ACTIONS_PER_NODE: usize = 16;

/// The first wait before a failed write is retried; it doubles up to
/// [`RETRY_MAX`].
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The store a tree writes to, shared with whoever made it.
pub(crate) type SharedStore = Arc<Mutex<Box<dyn Store + Send>>>;

/// A message to the store actor.
pub(crate) enum StoreMsg {
    /// A record changed (or a node was removed).
    Change(Change),
    /// An action is about to run: write its started record, then pass the
    /// action on to the executor.
    ActionStarted(ActionRecord, Pending),
    /// Write everything waiting, then answer; with `last`, end afterwards.
    Flush {
        reply: oneshot::Sender<()>,
        last: bool,
    },
}

/// The nodes' way to the store actor. Sending never waits.
#[derive(Clone)]
pub(crate) struct StoreLink {
    tx: mpsc::UnboundedSender<StoreMsg>,
}

impl StoreLink {
    /// Hands a change to the store actor. (Once the actor is gone, the
    /// tree is shutting down: the change is dropped.)
    pub(crate) fn send(&self, change: Change) {
        let _ = self.tx.send(StoreMsg::Change(change));
    }

    /// Hands an action to run after its started record is written. Should
    /// the actor be gone, the action is dropped unrun and its node hears
    /// that it failed.
    pub(crate) fn action_started(&self, record: ActionRecord, action: Pending) {
        let _ = self.tx.send(StoreMsg::ActionStarted(record, action));
    }

    /// Asks the actor to write everything waiting (and, with `last`, to
    /// end); the receiver answers when it has.
    pub(crate) fn flush(&self, last: bool) -> oneshot::Receiver<()> {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(StoreMsg::Flush { reply, last });
        rx
    }
}

/// The store actor's counters, read by [`TreeHandle::store_stats`].
///
/// [`TreeHandle::store_stats`]: crate::TreeHandle::store_stats
#[derive(Default)]
pub(crate) struct StoreCounters {
    batches: AtomicU64,
    changes: AtomicU64,
    failed_writes: AtomicU64,
    backlog: AtomicU64,
    overwritten: AtomicU64,
    dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl StoreCounters {
    pub(crate) fn stats(&self) -> StoreStats {
        StoreStats {
            batches: self.batches.load(Ordering::Relaxed),
            changes: self.changes.load(Ordering::Relaxed),
            failed_writes: self.failed_writes.load(Ordering::Relaxed),
            backlog: self.backlog.load(Ordering::Relaxed),
            overwritten: self.overwritten.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

/// Which record of a node a backlog entry is; in the order a batch writes
/// them (the identity first).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Identity,
    Desired,
    Observed,
    Action(u64),
}

/// The changes waiting to be written, one per record, each with the
/// number of the message it came in (to tell, once a batch is written,
/// whether a newer change of the same record came in meanwhile).
#[derive(Default)]
struct Backlog {
    seq: u64,
    root: Option<(u64, StoredRoot)>,
    removes: BTreeMap<NodePath, u64>,
    records: BTreeMap<(NodePath, Part), (u64, Change)>,
    /// Nodes with an identity (written or waiting): changes of other nodes
    /// come from nodes being removed, and are dropped.
    known: HashSet<NodePath>,
    overwritten: u64,
    dropped: u64,
}

/// What a batch wrote, to take out of the backlog once it is committed.
#[derive(Default)]
struct Written {
    root: Option<u64>,
    removes: Vec<(NodePath, u64)>,
    records: Vec<((NodePath, Part), u64)>,
}

impl Backlog {
    fn len(&self) -> usize {
        usize::from(self.root.is_some()) + self.removes.len() + self.records.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn absorb(&mut self, change: Change) {
        self.seq += 1;
        let seq = self.seq;
        let (path, part) = match &change {
            Change::Root(root) => {
                // The higher generation wins (two owners may race).
                if let Some((_, old)) = &self.root {
                    self.overwritten += 1;
                    if old.generation > root.generation {
                        return;
                    }
                }
                self.root = Some((seq, root.clone()));
                return;
            }
            Change::Remove(path) => {
                let path = path.clone();
                self.known.retain(|p| !p.starts_with(&path));
                let before = self.records.len() + self.removes.len();
                self.records.retain(|(p, _), _| !p.starts_with(&path));
                self.removes.retain(|p, _| !p.starts_with(&path));
                let superseded = before - self.records.len() - self.removes.len();
                self.overwritten += superseded as u64;
                self.removes.insert(path, seq);
                return;
            }
            Change::Identity(identity) => {
                self.known.insert(identity.path.clone());
                (identity.path.clone(), Part::Identity)
            }
            Change::Desired(path, _) => (path.clone(), Part::Desired),
            Change::Observed(path, _) => (path.clone(), Part::Observed),
            Change::Action(action) => (action.node.clone(), Part::Action(action.id)),
            // A kind of change this build does not know: not written.
            _ => return,
        };
        if !self.known.contains(&path) {
            return;
        }
        let is_action = matches!(part, Part::Action(_));
        if self
            .records
            .insert((path.clone(), part), (seq, change))
            .is_some()
        {
            self.overwritten += 1;
        }
        if is_action {
            let range = (path.clone(), Part::Action(0))..=(path, Part::Action(u64::MAX));
            let actions: Vec<_> = self.records.range(range).map(|(k, _)| k.clone()).collect();
            for key in actions
                .iter()
                .take(actions.len().saturating_sub(MAX_ACTIONS_PER_NODE))
            {
                self.records.remove(key);
                self.dropped += 1;
            }
        }
    }

    /// Everything waiting, as one batch: removals first (every change
    /// waiting for a removed node came after its removal), then the root,
    /// then each node's records, its identity first.
    fn batch(&self) -> (Vec<Change>, Written) {
        let mut batch = Vec::with_capacity(self.len());
        let mut written = Written::default();
        for (path, seq) in &self.removes {
            batch.push(Change::Remove(path.clone()));
            written.removes.push((path.clone(), *seq));
        }
        if let Some((seq, root)) = &self.root {
            batch.push(Change::Root(root.clone()));
            written.root = Some(*seq);
        }
        for (key, (seq, change)) in &self.records {
            batch.push(change.clone());
            written.records.push((key.clone(), *seq));
        }
        (batch, written)
    }

    /// Takes out what a committed batch wrote, but for records changed
    /// again since.
    fn committed(&mut self, written: Written) {
        if self.root.as_ref().map(|(seq, _)| *seq) == written.root && written.root.is_some() {
            self.root = None;
        }
        for (path, seq) in written.removes {
            if self.removes.get(&path) == Some(&seq) {
                self.removes.remove(&path);
            }
        }
        for (key, seq) in written.records {
            if self.records.get(&key).map(|(s, _)| *s) == Some(seq) {
                self.records.remove(&key);
            }
        }
    }
}

/// The backlog, shared by the store actor (which takes the nodes' changes
/// into it) and the thread writing it (which takes the next batch from it).
type SharedBacklog = Arc<Mutex<Backlog>>;

fn lock(backlog: &SharedBacklog) -> std::sync::MutexGuard<'_, Backlog> {
    // Nothing panics while holding it; taken over should anything.
    backlog.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The store actor's state.
struct StoreActor {
    store: SharedStore,
    counters: Arc<StoreCounters>,
    executor: ExecutorHandle,
    top: ActorRef<NodeMsg>,
    backlog: SharedBacklog,
    /// Whether the write running may go on with the next batch once its
    /// own is committed: not while the actor waits for it to end (actions
    /// riding on it or waiting for their records, a flush, the end).
    go_on: Arc<AtomicBool>,
    /// Actions waiting for their started records to go into a batch.
    gated: Vec<Pending>,
    /// The last write failed (and when to try again).
    failing: Option<tokio::time::Instant>,
    retry_delay: Duration,
    flushes: Vec<oneshot::Sender<()>>,
    last: bool,
}

/// Starts the store actor of a tree: nodes reach it through the returned
/// link; it ends after a last [`StoreLink::flush`] (or when every link is
/// gone).
pub(crate) fn start(
    store: SharedStore,
    counters: Arc<StoreCounters>,
    executor: ExecutorHandle,
) -> (StoreLink, Starter) {
    let (tx, rx) = mpsc::unbounded_channel();
    let starter = Starter {
        rx,
        store,
        counters,
        executor,
    };
    (StoreLink { tx }, starter)
}

/// The store actor before it runs: it needs the top node to report
/// problems to, which is spawned after the link is handed out.
pub(crate) struct Starter {
    rx: mpsc::UnboundedReceiver<StoreMsg>,
    store: SharedStore,
    counters: Arc<StoreCounters>,
    executor: ExecutorHandle,
}

impl Starter {
    /// Runs the actor, reporting problems to `top` (which passes them to
    /// the root node).
    pub(crate) fn run(self, top: ActorRef<NodeMsg>) -> JoinHandle<()> {
        let actor = StoreActor {
            store: self.store,
            counters: self.counters,
            executor: self.executor,
            top,
            backlog: SharedBacklog::default(),
            go_on: Arc::new(AtomicBool::new(false)),
            gated: Vec::new(),
            failing: None,
            retry_delay: RETRY_BASE,
            flushes: Vec::new(),
            last: false,
        };
        tokio::spawn(actor.run(self.rx))
    }
}

type WriteTask = JoinHandle<Result<(), StoreError>>;

impl StoreActor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<StoreMsg>) {
        let mut task: Option<WriteTask> = None;
        let mut riding: Option<Vec<Pending>> = None;
        let mut open = true;
        loop {
            let retry_at = self.failing;
            tokio::select! {
                msg = rx.recv(), if open => match msg {
                    Some(msg) => {
                        {
                            let shared = Arc::clone(&self.backlog);
                            let mut backlog = lock(&shared);
                            self.take(&mut backlog, msg);
                            // Take whatever else is waiting, to write it in one batch.
                            while let Ok(msg) = rx.try_recv() {
                                self.take(&mut backlog, msg);
                            }
                        }
                        self.update_go_on(riding.as_ref());
                    }
                    None => {
                        open = false;
                        self.last = true;
                    }
                },
                result = async {
                    match &mut task {
                        Some(t) => t.await,
                        None => std::future::pending().await,
                    }
                }, if task.is_some() => {
                    task = None;
                    let result = result.unwrap_or_else(|e| Err(StoreError::Backend {
                        location: "store".to_owned(),
                        message: format!("the write did not finish: {e}"),
                    }));
                    if let Some(actions) = riding.take() {
                        self.written(result, actions);
                    }
                }
                () = async {
                    if let Some(at) = retry_at {
                        tokio::time::sleep_until(at).await;
                    }
                }, if task.is_none() && retry_at.is_some() => {
                    self.failing = None;
                }
                else => {}
            }
            let empty = {
                let backlog = lock(&self.backlog);
                self.counters
                    .backlog
                    .store(backlog.len() as u64, Ordering::Relaxed);
                backlog.is_empty()
            };
            if task.is_some() {
                continue;
            }
            let due = self
                .failing
                .is_none_or(|at| at <= tokio::time::Instant::now());
            if !empty && (due || !self.flushes.is_empty()) {
                let (t, actions) = self.write();
                task = Some(t);
                riding = Some(actions);
                self.update_go_on(riding.as_ref());
                continue;
            }
            if empty {
                self.answer_flushes();
                // Nothing waits to be written, so no action waits for a
                // record: the record of an action of a node being removed
                // (stopping, say) is dropped, and the action must not wait
                // for a batch that nothing else may ever bring.
                self.release_all();
            }
            if self.last && self.flushes.is_empty() && (empty || self.failing.is_some() || !open) {
                self.release_all();
                return;
            }
        }
    }

    fn answer_flushes(&mut self) {
        for reply in self.flushes.drain(..) {
            let _ = reply.send(());
        }
    }

    /// Lets the write running go on with the next batch only while
    /// nothing waits for it to end.
    fn update_go_on(&self, riding: Option<&Vec<Pending>>) {
        let go_on = riding.is_none_or(Vec::is_empty)
            && self.gated.is_empty()
            && self.flushes.is_empty()
            && !self.last;
        self.go_on.store(go_on, Ordering::Relaxed);
    }

    fn take(&mut self, backlog: &mut Backlog, msg: StoreMsg) {
        match msg {
            StoreMsg::Change(change) => backlog.absorb(change),
            StoreMsg::ActionStarted(record, action) => {
                backlog.absorb(Change::Action(record));
                if self.failing.is_some() {
                    // The disk fails: the record waits in the backlog, the
                    // action does not.
                    self.release(action);
                } else {
                    self.gated.push(action);
                }
            }
            StoreMsg::Flush { reply, last } => {
                self.flushes.push(reply);
                self.last |= last;
            }
        }
        self.counters
            .overwritten
            .store(backlog.overwritten, Ordering::Relaxed);
        self.counters
            .dropped
            .store(backlog.dropped, Ordering::Relaxed);
    }

    /// Starts writing the whole backlog as one batch, on a blocking thread,
    /// and then, while `go_on` says so, what came meanwhile, batch after
    /// batch, until the backlog is empty or a write fails (which ends it:
    /// the actor retries). Each committed batch is counted, and taken out
    /// of the backlog, as soon as it is committed.
    fn write(&mut self) -> (WriteTask, Vec<Pending>) {
        let store = Arc::clone(&self.store);
        let backlog = Arc::clone(&self.backlog);
        let counters = Arc::clone(&self.counters);
        let go_on = Arc::clone(&self.go_on);
        // The first batch is taken now: it holds the records of the
        // actions riding on it.
        let mut next = lock(&backlog).batch();
        let task = tokio::task::spawn_blocking(move || {
            loop {
                let (batch, written) = next;
                store
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .write(&batch)?;
                tracing::trace!(changes = batch.len(), "store batch committed");
                counters.batches.fetch_add(1, Ordering::Relaxed);
                counters
                    .changes
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                let mut backlog = lock(&backlog);
                backlog.committed(written);
                counters
                    .backlog
                    .store(backlog.len() as u64, Ordering::Relaxed);
                if backlog.is_empty() || !go_on.load(Ordering::Relaxed) {
                    return Ok(());
                }
                next = backlog.batch();
            }
        });
        (task, std::mem::take(&mut self.gated))
    }

    fn written(&mut self, result: Result<(), StoreError>, actions: Vec<Pending>) {
        match result {
            Ok(()) => {
                // (Counted, and taken out of the backlog, by the write.)
                self.failing = None;
                if self.retry_delay != RETRY_BASE {
                    self.retry_delay = RETRY_BASE;
                    tracing::info!("store writable again; the backlog is written");
                    *self
                        .counters
                        .last_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = None;
                    self.problem(None);
                }
            }
            Err(e) => {
                let message = format!("store: {e}");
                self.counters.failed_writes.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    error = %e,
                    backlog = lock(&self.backlog).len(),
                    retry_in_ms = u64::try_from(self.retry_delay.as_millis()).unwrap_or(u64::MAX),
                    "store write failed; the changes are kept and written again"
                );
                *self
                    .counters
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(message.clone());
                self.problem(Some(message));
                self.failing = Some(crate::deadline::from_now(self.retry_delay));
                self.retry_delay = (self.retry_delay * 2).min(RETRY_MAX);
                // Actions do not wait for a failing disk.
                self.release_all();
            }
        }
        for action in actions {
            self.release(action);
        }
        // A flush waits for what was handed in before it: written, or
        // tried and failed (a failing disk is not waited for).
        if self.failing.is_some() || lock(&self.backlog).is_empty() {
            self.answer_flushes();
        }
    }

    fn problem(&self, problem: Option<String>) {
        let _ = self.top.cast(NodeMsg::StoreProblem(problem));
    }

    fn release(&self, action: Pending) {
        // Without an executor, the dropped message tells the node its
        // action failed.
        let _ = self.executor.cast(ExecMsg::Enqueue(action));
    }

    fn release_all(&mut self) {
        for action in std::mem::take(&mut self.gated) {
            self.release(action);
        }
    }
}

/// What a tree found in its store when it was spawned (see `restore`).
pub(crate) struct Restored {
    /// The root spec last committed.
    pub(crate) root: Option<StoredRoot>,
    /// Each node's records, until the node first starts and takes them.
    nodes: Mutex<HashMap<NodePath, RestoredNode>>,
    /// What was restored, for the tree's owner.
    pub(crate) info: RestoreInfo,
    /// The actions found started and never finished, now `interrupted`,
    /// with the worker type of their node.
    pub(crate) interrupted: Vec<(ActionRecord, String)>,
    /// The first action id after every stored one: this process numbers
    /// its actions from there, so that its records never overwrite those
    /// of an earlier process (records are keyed by node and id).
    pub(crate) next_action_id: u64,
}

/// One node's records, as restored.
pub(crate) struct RestoredNode {
    /// Its last observed document.
    pub(crate) observed: Option<ObservedDocument>,
    /// Its action found interrupted (the latest, if several).
    pub(crate) interrupted: Option<ActionRecord>,
}

impl Restored {
    /// How often the node at `path` had been restarted, and the backoff
    /// attempt its next failure was to use, as stored.
    pub(crate) fn restarts(&self, path: &NodePath) -> Option<(u64, u32)> {
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        let observed = nodes.get(path)?.observed.as_ref()?;
        Some((u64::from(observed.restarts), observed.backoff_attempt))
    }

    /// The node's records, once: its first incarnation in this process
    /// takes them.
    pub(crate) fn take(&self, path: &NodePath) -> Option<RestoredNode> {
        self.nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(path)
    }
}

/// Reads the tree a store holds, if any, applying the interrupted-action
/// rule once and for all: the actions found without an outcome are written
/// back as `interrupted`, so that the next restore does not find (and
/// count) them again.
///
/// # Errors
///
/// The store's, when it cannot be read (corrupt records, an unreachable
/// file).
pub(crate) async fn restore(store: &SharedStore) -> Result<Option<Restored>, StoreError> {
    let store = Arc::clone(store);
    let read = tokio::task::spawn_blocking(move || {
        let mut store = store.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(mut tree) = store.read_all()? else {
            return Ok(None);
        };
        let mut interrupted = Vec::new();
        for record in tree.nodes.values() {
            for action in record.actions.values().filter(|a| a.outcome.is_none()) {
                interrupted.push((action.clone(), record.identity.worker_type.clone()));
            }
        }
        tree.interrupt_unfinished();
        let batch: Vec<Change> = interrupted
            .iter()
            .map(|(a, _)| Change::Action(a.clone().finished(StoredOutcome::Interrupted)))
            .collect();
        if let Err(e) = store.write(&batch) {
            // The tree still starts; the next restore will count them again.
            tracing::warn!(error = %e, actions = batch.len(), "could not record the interrupted actions in the store");
        }
        Ok(Some((tree, interrupted)))
    })
    .await
    .map_err(|e| StoreError::Backend {
        location: "store".to_owned(),
        message: format!("reading the store did not finish: {e}"),
    })??;
    Ok(read.map(|(tree, interrupted)| Restored::new(tree, interrupted)))
}

impl Restored {
    fn new(tree: StoredTree, interrupted: Vec<(ActionRecord, String)>) -> Self {
        let mut saved_at_ms = None::<u64>;
        let mut next_action_id = 0;
        let mut nodes = HashMap::with_capacity(tree.nodes.len());
        for (path, record) in tree.nodes {
            if let Some(last) = record.actions.keys().next_back() {
                next_action_id = next_action_id.max(last.saturating_add(1));
            }
            let latest = record
                .observed
                .as_ref()
                .and_then(|o| o.observed_at_ms)
                .into_iter()
                .chain(record.actions.values().map(|a| a.started_at_ms))
                .max();
            saved_at_ms = saved_at_ms.max(latest);
            let last_interrupted = interrupted
                .iter()
                .filter(|(a, _)| a.node == path)
                .max_by_key(|(a, _)| a.id)
                .map(|(a, _)| a.clone().finished(StoredOutcome::Interrupted));
            nodes.insert(
                path,
                RestoredNode {
                    observed: record.observed,
                    interrupted: last_interrupted,
                },
            );
        }
        Self {
            info: RestoreInfo {
                nodes: nodes.len() as u64,
                generation: tree.root.as_ref().map_or(0, |r| r.generation),
                saved_at_ms,
                interrupted: interrupted.len() as u64,
            },
            root: tree.root,
            nodes: Mutex::new(nodes),
            interrupted,
            next_action_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fsm_core::store::conformance;

    fn path(p: &str) -> NodePath {
        NodePath::parse(p)
    }

    #[test]
    fn the_backlog_keeps_the_latest_change_of_each_record_and_counts_the_rest() {
        let mut backlog = Backlog::default();
        backlog.absorb(conformance::identity("plant"));
        backlog.absorb(Change::Observed(
            path("plant"),
            conformance::observed("a", 0),
        ));
        backlog.absorb(Change::Observed(
            path("plant"),
            conformance::observed("b", 0),
        ));
        assert_eq!(backlog.len(), 2);
        assert_eq!(backlog.overwritten, 1);
        let (batch, _) = backlog.batch();
        assert_eq!(
            batch,
            [
                conformance::identity("plant"),
                Change::Observed(path("plant"), conformance::observed("b", 0)),
            ]
        );
    }

    #[test]
    fn a_committed_batch_leaves_the_changes_that_came_after_it() {
        let mut backlog = Backlog::default();
        backlog.absorb(conformance::identity("plant"));
        backlog.absorb(Change::Observed(
            path("plant"),
            conformance::observed("a", 0),
        ));
        let (_, written) = backlog.batch();
        backlog.absorb(Change::Observed(
            path("plant"),
            conformance::observed("b", 0),
        ));
        backlog.committed(written);
        let (batch, _) = backlog.batch();
        assert_eq!(
            batch,
            [Change::Observed(
                path("plant"),
                conformance::observed("b", 0)
            )]
        );
    }

    #[test]
    fn a_removal_drops_the_subtree_s_waiting_changes_and_later_ones() {
        let mut backlog = Backlog::default();
        for p in ["plant", "plant/a", "plant/a/x", "plant/ab"] {
            backlog.absorb(conformance::identity(p));
        }
        backlog.absorb(Change::Remove(path("plant/a")));
        // A removed node still stopping sends its last documents: dropped.
        backlog.absorb(Change::Observed(
            path("plant/a/x"),
            conformance::observed("s", 0),
        ));
        let (batch, _) = backlog.batch();
        assert_eq!(
            batch,
            [
                Change::Remove(path("plant/a")),
                conformance::identity("plant"),
                conformance::identity("plant/ab"),
            ]
        );
    }

    #[test]
    fn a_node_s_action_records_are_bounded_and_the_dropped_ones_counted() {
        let mut backlog = Backlog::default();
        backlog.absorb(conformance::identity("plant"));
        let extra = 5;
        for id in 0..(MAX_ACTIONS_PER_NODE + extra) as u64 {
            backlog.absorb(Change::Action(conformance::action("plant", id, None)));
        }
        assert_eq!(backlog.len(), 1 + MAX_ACTIONS_PER_NODE);
        assert_eq!(backlog.dropped, extra as u64);
        let (batch, _) = backlog.batch();
        assert_eq!(
            batch.get(1),
            Some(&Change::Action(conformance::action(
                "plant",
                extra as u64,
                None
            ))),
            "the oldest go first"
        );
    }
}
