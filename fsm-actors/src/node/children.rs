//! A node's table of children, kept in start order (the order in which they
//! restart, and, reversed, the order in which they stop). A child keeps its
//! slot across restarts. Each slot is either running (an actor) or waiting
//! to start (a first start behind a stopping predecessor, or a restart
//! behind its backoff).
//!
//! The table also remembers the children being stopped on purpose (whose
//! exit must not be mistaken for a failure) and the children that ended for
//! good under their restart policy (not started again while their
//! declaration is unchanged).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};

use foldhash::HashMap;
use hashbrown::HashTable;
use std::sync::Arc;

use fsm_core::{ChildSpec, ChildStatus, NodePath, RunningChild, SpecHash, runtime::DecodedSpec};
use ractor::{ActorId, ActorRef};
use tokio::time::Instant;

use super::messages::{ChildReport, NodeMsg};
use crate::snapshot::SubtreeCounts;

/// Whether a child runs or waits to start.
pub(crate) enum ChildRun {
    Running {
        actor: ActorRef<NodeMsg>,
        started: Instant,
    },
    Waiting {
        due: Instant,
        /// Why it is waiting: `None` for a first start, the failure for a
        /// restart.
        failure: Option<String>,
    },
}

/// One child slot.
///
/// What the parent's every tick reads of each child (`started_in_tick`,
/// `tick_pending`, `run`) comes first, and a slot starts on a cache line
/// (`repr(C, align(64))`): forwarding a tick then reads one line per child,
/// not three scattered over the slot.
#[repr(C, align(64))]
pub(crate) struct ChildEntry {
    /// The parent's tick count when its running incarnation started (it
    /// ticks once on start, so the tick that started it skips it).
    pub(crate) started_in_tick: u64,
    /// Set when this node sends the child a tick, cleared by the child when
    /// it handles one: while set, further ticks are skipped, so that a
    /// child's mailbox never holds more than one tick.
    pub(crate) tick_pending: Arc<AtomicBool>,
    pub(crate) run: ChildRun,
    pub(crate) path: NodePath,
    /// Shared with the child actor, which keeps it as its own spec.
    pub(crate) spec: Arc<ChildSpec>,
    pub(crate) hash: SpecHash,
    pub(crate) subtree: SubtreeCounts,
    /// The mapped desired state last sent to the child.
    pub(crate) sent_parent_state: Option<String>,
    /// The hash of the inherited variables and location last sent.
    pub(crate) sent_context: SpecHash,
    /// How many times it was restarted.
    pub(crate) restarts: u64,
    /// The backoff attempt its next failure will use.
    pub(crate) attempt: u32,
    /// Its spec as this node decoded it to validate the declaration, for
    /// the next start (the child then does not decode it again).
    pub(crate) decoded: Option<DecodedSpec>,
    /// Its running incarnation and all of that incarnation's subtree have
    /// reported at least once (see [`Table::all_settled`]).
    pub(crate) settled: bool,
    /// The generation of its spec: 1 when declared, bumped with every
    /// change of its declared spec.
    pub(crate) generation: u64,
    /// The tree generation its running incarnation's whole subtree has
    /// acted on, as last reported.
    pub(crate) synced: u64,
}

// The fields a tick reads of each child fit in the slot's first cache line.
const _: () = assert!(
    std::mem::offset_of!(ChildEntry, run) + std::mem::size_of::<ChildRun>() <= 64,
    "a tick reads `started_in_tick`, `tick_pending` and `run`: keep them in the first 64 bytes"
);

impl ChildEntry {
    pub(crate) fn new(path: NodePath, spec: Arc<ChildSpec>, hash: SpecHash, now: Instant) -> Self {
        Self {
            path,
            hash,
            spec,
            run: ChildRun::Waiting {
                due: now,
                failure: None,
            },
            subtree: SubtreeCounts::default(),
            sent_parent_state: None,
            sent_context: SpecHash::from_u128(0),
            restarts: 0,
            attempt: 0,
            started_in_tick: u64::MAX,
            decoded: None,
            settled: false,
            generation: 1,
            synced: 0,
            tick_pending: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.spec.name
    }

    pub(crate) fn actor(&self) -> Option<&ActorRef<NodeMsg>> {
        match &self.run {
            ChildRun::Running { actor, .. } => Some(actor),
            ChildRun::Waiting { .. } => None,
        }
    }

    pub(crate) fn is_restarting(&self) -> bool {
        matches!(
            self.run,
            ChildRun::Waiting {
                failure: Some(_),
                ..
            }
        )
    }

    /// Failed, waiting to restart, or stale: what opens the parent's circuit.
    fn is_faulty(&self, status: &ChildStatus) -> bool {
        match &self.run {
            ChildRun::Running { .. } => status.stale,
            ChildRun::Waiting { failure, .. } => failure.is_some(),
        }
    }

    /// The subtree counts this slot contributes.
    pub(crate) fn counts(&self) -> SubtreeCounts {
        match &self.run {
            ChildRun::Running { .. } => self.subtree,
            ChildRun::Waiting { failure, .. } => SubtreeCounts {
                nodes: 1,
                converged: 0,
                unhealthy: u64::from(failure.is_some()),
                restarting: u64::from(failure.is_some()),
            },
        }
    }
}

/// The status of a child that has not reported yet.
fn first_status(name: &str) -> ChildStatus {
    ChildStatus {
        name: name.to_owned(),
        state: std::borrow::Cow::Borrowed(""),
        desired: std::borrow::Cow::Borrowed(""),
        healthy: true,
        stale: false,
        converged: false,
    }
}

/// What one slot contributes to the table's aggregates.
#[derive(Clone, Copy, Default)]
struct Contribution {
    counts: SubtreeCounts,
    not_converged: usize,
    waiting: usize,
    faulty: usize,
    restarting: usize,
    unsettled: usize,
    lagging: usize,
}

impl Contribution {
    /// `floor`: the tree generation the parent has applied.
    fn of(e: &ChildEntry, status: &ChildStatus, floor: u64) -> Self {
        let running = matches!(e.run, ChildRun::Running { .. });
        Self {
            lagging: usize::from(running && e.synced < floor),
            counts: e.counts(),
            not_converged: usize::from(!(running && status.converged)),
            waiting: usize::from(!running),
            faulty: usize::from(e.is_faulty(status)),
            restarting: usize::from(e.is_restarting()),
            unsettled: usize::from(running && !e.settled),
        }
    }
}

/// Sums over all slots, kept up to date on every change so that reading
/// them costs nothing however many children there are.
#[derive(Clone, Copy, Default)]
struct Aggregates {
    counts: SubtreeCounts,
    not_converged: usize,
    waiting: usize,
    faulty: usize,
    restarting: usize,
    unsettled: usize,
    /// Running children whose subtree has not acted on the tree generation
    /// the parent has applied.
    lagging: usize,
}

impl Aggregates {
    fn add(&mut self, c: Contribution) {
        self.counts.add(c.counts);
        self.not_converged += c.not_converged;
        self.waiting += c.waiting;
        self.faulty += c.faulty;
        self.restarting += c.restarting;
        self.unsettled += c.unsettled;
        self.lagging += c.lagging;
    }

    fn sub(&mut self, c: Contribution) {
        self.counts.nodes -= c.counts.nodes;
        self.counts.converged -= c.counts.converged;
        self.counts.unhealthy -= c.counts.unhealthy;
        self.counts.restarting -= c.counts.restarting;
        self.not_converged -= c.not_converged;
        self.waiting -= c.waiting;
        self.faulty -= c.faulty;
        self.restarting -= c.restarting;
        self.unsettled -= c.unsettled;
        self.lagging -= c.lagging;
    }
}

/// Slots by child name: the table stores slot numbers only, hashed and
/// compared through the slots' own names.
#[derive(Default)]
struct NameIndex {
    slots: HashTable<usize>,
    hasher: foldhash::fast::RandomState,
}

impl NameIndex {
    fn hash(&self, name: &str) -> u64 {
        self.hasher.hash_one(name)
    }

    fn find(&self, name: &str, entries: &[ChildEntry]) -> Option<usize> {
        let hash = self.hash(name);
        self.slots
            .find(hash, |&i| entries.get(i).is_some_and(|e| e.name() == name))
            .copied()
    }

    /// Indexes slot `i`, named `name`; `entries` holds every slot already
    /// indexed (to rehash them if the table grows).
    fn insert(&mut self, name: &str, i: usize, entries: &[ChildEntry]) {
        let hash = self.hash(name);
        let hasher = &self.hasher;
        self.slots.insert_unique(hash, i, |&j| {
            entries.get(j).map_or(0, |e| hasher.hash_one(e.name()))
        });
    }

    /// Forgets slot `i`, named `name`.
    fn remove(&mut self, name: &str, i: usize) {
        let hash = self.hash(name);
        if let Ok(entry) = self.slots.find_entry(hash, |&j| j == i) {
            entry.remove();
        }
    }

    /// Slot `from`, named `name`, is now slot `to`.
    fn renumber(&mut self, name: &str, from: usize, to: usize) {
        let hash = self.hash(name);
        if let Some(slot) = self.slots.find_mut(hash, |&j| j == from) {
            *slot = to;
        }
    }

    fn reserve(&mut self, additional: usize, entries: &[ChildEntry]) {
        let hasher = &self.hasher;
        self.slots.reserve(additional, |&j| {
            entries.get(j).map_or(0, |e| hasher.hash_one(e.name()))
        });
    }
}

/// A [`ChildTable`]'s lookup maps.
#[derive(Default)]
struct Index {
    by_name: NameIndex,
    by_id: HashMap<ActorId, usize>,
    /// Children stopping on purpose: actor id → (name, actor).
    stopping: HashMap<ActorId, (String, ActorRef<NodeMsg>)>,
    stopping_names: HashMap<String, usize>,
    /// Children that ended for good: name → the declaration they ended with.
    completed: HashMap<String, SpecHash>,
}

/// A node's children; see [`Table`]. Allocated on first change: most nodes
/// of a large tree are leaves, and a leaf reads its (empty) table on every
/// tick, so it should cost a leaf one pointer, not 136 bytes of its state.
#[derive(Default)]
pub(crate) struct ChildTable(Option<Box<Table>>);

/// The table of a node that has never had a child.
static EMPTY: Table = Table {
    version: 0,
    entries: Vec::new(),
    totals: Aggregates {
        counts: SubtreeCounts {
            nodes: 0,
            converged: 0,
            unhealthy: 0,
            restarting: 0,
        },
        not_converged: 0,
        waiting: 0,
        faulty: 0,
        restarting: 0,
        unsettled: 0,
        lagging: 0,
    },
    index: None,
    statuses: Vec::new(),
    floor: 0,
};

impl ChildTable {
    /// The node has never had a child (nor anything stopping or ended).
    pub(crate) fn is_unallocated(&self) -> bool {
        self.0.is_none()
    }
}

impl std::ops::Deref for ChildTable {
    type Target = Table;

    fn deref(&self) -> &Table {
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl std::ops::DerefMut for ChildTable {
    fn deref_mut(&mut self) -> &mut Table {
        self.0.get_or_insert_with(Box::default)
    }
}

#[derive(Default)]
pub(crate) struct Table {
    /// Bumped whenever a slot is added, removed or gets a new actor: the
    /// children that may need their mapped state and context sent.
    version: u64,
    entries: Vec<ChildEntry>,
    totals: Aggregates,
    /// The lookup maps, allocated on first use: most nodes in a large tree
    /// are leaves, and five empty maps inline would cost each of them
    /// 240 bytes.
    index: Option<Box<Index>>,
    /// Each entry's status, in start order (`statuses[i]` is that of
    /// `entries[i]`; the state machine reads them as one slice).
    statuses: Vec<ChildStatus>,
    /// The tree generation the node has applied: children whose subtree
    /// has not acted on it yet count as lagging.
    floor: u64,
}

impl Table {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn index(&self) -> Option<&Index> {
        self.index.as_deref()
    }

    fn index_mut(&mut self) -> &mut Index {
        self.index.get_or_insert_with(Box::default)
    }

    /// No slot, nothing stopping, nothing ended for good.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.index.is_none()
    }

    pub(crate) fn entries(&self) -> &[ChildEntry] {
        &self.entries
    }

    /// Changes slot `i` through `f`, keeping the aggregates right.
    pub(crate) fn update<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut ChildEntry) -> T,
    ) -> Option<T> {
        self.update_with_status(i, |e, _| f(e))
    }

    /// Changes slot `i` and its status through `f`, keeping the aggregates
    /// right.
    fn update_with_status<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut ChildEntry, &mut ChildStatus) -> T,
    ) -> Option<T> {
        let e = self.entries.get_mut(i)?;
        let status = self.statuses.get_mut(i)?;
        let before = Contribution::of(e, status, self.floor);
        let out = f(e, status);
        let after = Contribution::of(e, status, self.floor);
        self.totals.sub(before);
        self.totals.add(after);
        Some(out)
    }

    /// Visits every slot to send it messages; the aggregates do not change.
    pub(crate) fn for_each_mapped(&mut self, mut f: impl FnMut(&mut ChildEntry)) {
        for e in &mut self.entries {
            f(e);
        }
    }

    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.index()?.by_name.find(name, &self.entries)
    }

    pub(crate) fn index_of_actor(&self, id: ActorId) -> Option<usize> {
        self.index()?.by_id.get(&id).copied()
    }

    /// Makes room for `additional` more children at once, rather than
    /// growing (and copying) the table child by child.
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.entries.reserve(additional);
        self.statuses.reserve(additional);
        let index = self.index.get_or_insert_with(Box::default);
        index.by_name.reserve(additional, &self.entries);
        index.by_id.reserve(additional);
    }

    pub(crate) fn push(&mut self, entry: ChildEntry) -> usize {
        let i = self.entries.len();
        let index = self.index.get_or_insert_with(Box::default);
        index.by_name.insert(entry.name(), i, &self.entries);
        if let Some(actor) = entry.actor() {
            index.by_id.insert(actor.get_id(), i);
        }
        let status = first_status(entry.name());
        self.totals
            .add(Contribution::of(&entry, &status, self.floor));
        self.statuses.push(status);
        self.entries.push(entry);
        self.version += 1;
        i
    }

    /// See [`Table::version`] (the field).
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Puts a started actor into slot `i`.
    pub(crate) fn set_running(
        &mut self,
        i: usize,
        actor: ActorRef<NodeMsg>,
        now: Instant,
        tick: u64,
    ) {
        self.index_mut().by_id.insert(actor.get_id(), i);
        self.version += 1;
        self.update_with_status(i, |e, status| {
            e.run = ChildRun::Running {
                actor,
                started: now,
            };
            e.subtree = SubtreeCounts {
                nodes: 1,
                ..SubtreeCounts::default()
            };
            status.converged = false;
            status.stale = false;
            status.healthy = true;
            e.settled = false;
            e.synced = 0;
            // A new incarnation, with an empty mailbox.
            e.tick_pending.store(false, Ordering::Relaxed);
            e.started_in_tick = tick;
        });
    }

    /// Makes slot `i` wait until `due`; returns the actor it ran, if any.
    pub(crate) fn set_waiting(
        &mut self,
        i: usize,
        due: Instant,
        failure: Option<String>,
    ) -> Option<ActorRef<NodeMsg>> {
        let previous = self.update_with_status(i, |e, status| {
            let previous = std::mem::replace(&mut e.run, ChildRun::Waiting { due, failure });
            status.converged = false;
            status.healthy = !e.is_restarting();
            previous
        })?;
        match previous {
            ChildRun::Running { actor, .. } => {
                self.index_mut().by_id.remove(&actor.get_id());
                Some(actor)
            }
            ChildRun::Waiting { .. } => None,
        }
    }

    /// Removes slot `i`, keeping the others in order.
    pub(crate) fn remove_at(&mut self, i: usize) -> ChildEntry {
        let entry = self.entries.remove(i);
        let status = self.statuses.remove(i);
        self.version += 1;
        self.totals
            .sub(Contribution::of(&entry, &status, self.floor));
        let index = self.index.get_or_insert_with(Box::default);
        index.by_name.remove(entry.name(), i);
        if let Some(actor) = entry.actor() {
            index.by_id.remove(&actor.get_id());
        }
        // Only the slots after `i` moved, each down by one.
        for (j, e) in self.entries.iter().enumerate().skip(i) {
            index.by_name.renumber(e.name(), j + 1, j);
            if let Some(actor) = e.actor() {
                index.by_id.insert(actor.get_id(), j);
            }
        }
        entry
    }

    /// The children as the reconcile plan sees them: every slot, running or
    /// waiting.
    pub(crate) fn planned(&self) -> Vec<RunningChild<'_>> {
        self.entries
            .iter()
            .map(|e| RunningChild {
                name: e.name(),
                worker_type: &e.spec.worker_type,
                hash: e.hash,
            })
            .collect()
    }

    /// Records a child's report; `false` if it is from an actor that no
    /// longer holds a slot (an incarnation replaced since).
    pub(crate) fn record_report(&mut self, report: ChildReport) -> bool {
        let Some(i) = self.index_of_actor(report.from) else {
            return false;
        };
        self.update_with_status(i, |e, status| {
            status.state = std::borrow::Cow::Borrowed(report.state);
            if let Some(desired) = report.desired {
                status.desired = desired;
            }
            status.healthy = report.healthy;
            status.stale = report.stale;
            status.converged = report.converged;
            e.subtree = report.subtree;
            e.settled = report.settled;
            e.synced = report.synced;
        });
        true
    }

    /// The children's statuses in start order, for the state machine.
    pub(crate) fn statuses(&self) -> &[ChildStatus] {
        &self.statuses
    }

    /// The desired state child `i` last reported (empty before it has).
    pub(crate) fn desired_of(&self, i: usize) -> &str {
        self.statuses.get(i).map_or("", |s| &*s.desired)
    }

    // ----- stopping on purpose --------------------------------------------

    pub(crate) fn mark_stopping(&mut self, name: &str, actor: ActorRef<NodeMsg>) {
        let index = self.index_mut();
        *index.stopping_names.entry(name.to_owned()).or_default() += 1;
        index
            .stopping
            .insert(actor.get_id(), (name.to_owned(), actor));
    }

    pub(crate) fn finish_stopping(&mut self, id: ActorId) -> Option<String> {
        let index = self.index.as_deref_mut()?;
        let (name, _) = index.stopping.remove(&id)?;
        if let Some(n) = index.stopping_names.get_mut(&name) {
            *n -= 1;
            if *n == 0 {
                index.stopping_names.remove(&name);
            }
        }
        Some(name)
    }

    pub(crate) fn is_stopping(&self, id: ActorId) -> bool {
        self.index().is_some_and(|x| x.stopping.contains_key(&id))
    }

    pub(crate) fn is_name_stopping(&self, name: &str) -> bool {
        self.index()
            .is_some_and(|x| x.stopping_names.contains_key(name))
    }

    pub(crate) fn stopping_count(&self) -> usize {
        self.index().map_or(0, |x| x.stopping.len())
    }

    /// The children still stopping.
    pub(crate) fn stopping_actors(&self) -> Vec<ActorRef<NodeMsg>> {
        self.index().map_or_else(Vec::new, |x| {
            x.stopping.values().map(|(_, a)| a.clone()).collect()
        })
    }

    // ----- ended for good ------------------------------------------------

    pub(crate) fn complete(&mut self, name: &str, hash: SpecHash) {
        self.index_mut().completed.insert(name.to_owned(), hash);
    }

    /// Whether the child `name` ended for good with this very declaration
    /// (`hash`).
    pub(crate) fn is_completed(&self, name: &str, hash: SpecHash) -> bool {
        self.index()
            .and_then(|x| x.completed.get(name))
            .is_some_and(|h| *h == hash)
    }

    /// Forgets completions whose declaration is gone or changed.
    /// `hashes[i]` is the hash of `declared[i]`.
    pub(crate) fn retain_completed(&mut self, declared: &[ChildSpec], hashes: &[SpecHash]) {
        let Some(index) = self.index.as_deref_mut() else {
            return;
        };
        if index.completed.is_empty() {
            return;
        }
        let current: HashMap<&str, SpecHash> = declared
            .iter()
            .zip(hashes)
            .map(|(c, h)| (c.name.as_str(), *h))
            .collect();
        index
            .completed
            .retain(|name, hash| current.get(name.as_str()) == Some(hash));
    }

    pub(crate) fn completed_count(&self) -> usize {
        self.index().map_or(0, |x| x.completed.len())
    }

    // ----- aggregates ------------------------------------------------------

    pub(crate) fn subtree_counts(&self) -> SubtreeCounts {
        self.totals.counts
    }

    pub(crate) fn all_converged(&self) -> bool {
        self.totals.not_converged == 0
    }

    /// Every running child, and every node below it, has reported since it
    /// started. While a subtree starts, its nodes report in a burst, each
    /// changing its parent's counts; a parent waits for the burst to end
    /// before it reports those counts on (see `NodeMsg::FlushReport`).
    pub(crate) fn all_settled(&self) -> bool {
        self.totals.unsettled == 0
    }

    /// Whether every running child's subtree has acted on the tree
    /// generation last passed to [`set_floor`](Self::set_floor).
    pub(crate) fn none_lagging(&self) -> bool {
        self.totals.lagging == 0
    }

    /// Sets the tree generation the node has applied. Recounts the lagging
    /// children: a walk over the table, once per root spec change.
    pub(crate) fn set_floor(&mut self, floor: u64) {
        if floor == self.floor {
            return;
        }
        self.floor = floor;
        self.totals.lagging = self
            .entries
            .iter()
            .filter(|e| matches!(e.run, ChildRun::Running { .. }) && e.synced < floor)
            .count();
    }

    pub(crate) fn all_running(&self) -> bool {
        self.totals.waiting == 0
    }

    pub(crate) fn any_faulty(&self) -> bool {
        self.totals.faulty > 0
    }

    pub(crate) fn restarting_count(&self) -> usize {
        self.totals.restarting
    }

    /// The earliest time a waiting child is due, if any.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        if self.totals.waiting == 0 {
            return None;
        }
        self.entries
            .iter()
            .filter_map(|e| match e.run {
                ChildRun::Waiting { due, .. } => Some(due),
                ChildRun::Running { .. } => None,
            })
            .min()
    }

    /// Removes the most recently started running-or-waiting slot.
    pub(crate) fn pop_last(&mut self) -> Option<ChildEntry> {
        let last = self.entries.len().checked_sub(1)?;
        Some(self.remove_at(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::{Actor, ActorProcessingErr};

    /// An actor that only holds a `NodeMsg` mailbox.
    struct Mailbox;

    impl Actor for Mailbox {
        type Msg = NodeMsg;
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _myself: ActorRef<NodeMsg>,
            _args: (),
        ) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    fn report(from: ActorId, settled: bool) -> ChildReport {
        ChildReport {
            from,
            state: "running",
            desired: None,
            healthy: true,
            stale: false,
            converged: true,
            subtree: SubtreeCounts {
                nodes: 1,
                converged: 1,
                unhealthy: 0,
                restarting: 0,
            },
            settled,
            synced: 0,
        }
    }

    fn entry(name: &str) -> ChildEntry {
        let spec = Arc::new(ChildSpec::new(name, "w"));
        let hash = spec.hash();
        ChildEntry::new(NodePath::parse("p").child(name), spec, hash, Instant::now())
    }

    #[test]
    fn slots_are_found_by_name_across_removals_and_growth() {
        let mut table = ChildTable::default();
        assert_eq!(table.index_of("a"), None);
        table.reserve(2);
        let names: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
        for name in &names {
            table.push(entry(name));
        }
        for (i, name) in names.iter().enumerate() {
            assert_eq!(table.index_of(name), Some(i), "{name}");
        }
        // Removing a slot moves every later one down by one.
        let removed = table.remove_at(3);
        assert_eq!(removed.name(), "c3");
        assert_eq!(table.index_of("c3"), None);
        assert_eq!(table.index_of("c2"), Some(2));
        assert_eq!(table.index_of("c4"), Some(3));
        assert_eq!(table.index_of("c39"), Some(38));
        let last = table.pop_last().map(|e| e.name().to_owned());
        assert_eq!(last.as_deref(), Some("c39"));
        assert_eq!(table.index_of("c39"), None);
        // A name can come back, in a new slot.
        let i = table.push(entry("c3"));
        assert_eq!(table.index_of("c3"), Some(i));
        assert_eq!(table.statuses().len(), table.len());
        assert_eq!(table.statuses()[i].name, "c3");
    }

    #[tokio::test]
    async fn a_running_child_is_settled_once_it_reports_its_subtree_settled() {
        let mut table = ChildTable::default();
        let now = Instant::now();
        let path = NodePath::parse("p/c");
        let spec = Arc::new(ChildSpec::new("c", "w"));
        let i = table.push(ChildEntry::new(path, Arc::clone(&spec), spec.hash(), now));
        // Waiting to start: nothing to hear from.
        assert!(table.all_settled());

        let (actor, _) = Actor::spawn(None, Mailbox, ()).await.unwrap();
        let id = actor.get_id();
        table.set_running(i, actor.clone(), now, 1);
        assert!(!table.all_settled(), "started, not yet reported");
        assert!(table.record_report(report(id, false)));
        assert!(!table.all_settled(), "reported, its own subtree not yet");
        assert!(table.record_report(report(id, true)));
        assert!(table.all_settled());

        // A new incarnation must report again.
        table.set_waiting(i, now, Some("failed".to_owned()));
        assert!(table.all_settled(), "restarting: nothing to hear from");
        table.set_running(i, actor.clone(), now, 2);
        assert!(!table.all_settled());
        table.remove_at(i);
        assert!(table.all_settled());
        actor.stop(None);
    }
}
