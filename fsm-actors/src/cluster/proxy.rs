//! The proxy: the local child that stands for a subtree placed on another
//! node. Its parent sees an ordinary child in its table — it ticks it,
//! maps states onto it, updates its spec, inspects it, stops it, and gets
//! its status reports — while the proxy forwards all of that to the host
//! that runs the subtree and renews the subtree's lease there.
//!
//! A proxy fails (and its parent's restart machinery starts a new one,
//! which places the subtree again from its declared spec and with the
//! records the subtree sent with its renewals, see [`mirror`](super::mirror))
//! when its host is lost: the host's actor leaves the hosts group (the node
//! session closed), or a renewal gets no answer within the detection time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fsm_core::placement::choose_node;
use fsm_core::{ChildSpec, NodePath, codec};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::time::Instant;

use super::wire::{self, HostMsg, RemoteStatus, Reply, Request};
use super::{ClusterLink, HOSTS_GROUP};
use crate::node::{ChildReport, NodeMsg, ParentContext};
use crate::snapshot::{NodeSnapshot, StopOutcome, StopRecord};

pub(crate) struct ProxyActor;

/// How a proxy starts: what its parent would have given the local child.
pub(crate) struct ProxyArgs {
    pub(crate) path: NodePath,
    pub(crate) spec: Arc<ChildSpec>,
    pub(crate) tree_generation: u64,
    pub(crate) tick_pending: Option<Arc<AtomicBool>>,
    pub(crate) parent: ActorRef<NodeMsg>,
    pub(crate) parent_state: Option<String>,
    pub(crate) context: Arc<ParentContext>,
    pub(crate) link: ClusterLink,
    /// The tree's metrics: the proxy counts as one node of its worker
    /// type, in the state of the remote subtree's root.
    pub(crate) metrics: Arc<crate::telemetry::metrics::Metrics>,
}

pub(crate) struct ProxyState {
    path: NodePath,
    spec: Arc<ChildSpec>,
    tick_pending: Option<Arc<AtomicBool>>,
    parent: ActorRef<NodeMsg>,
    parent_state: Option<String>,
    context: Arc<ParentContext>,
    link: ClusterLink,
    host: ActorRef<HostMsg>,
    host_name: String,
    key: String,
    epoch: u64,
    /// The tree generation the parent has applied (from its ticks).
    tree_generation: u64,
    /// The remote tree generation of the last spec sent; the subtree has
    /// acted on the parent's generation once it observed this one.
    awaited_remote: u64,
    /// The tree generation reported as acted on.
    synced: u64,
    last: RemoteStatus,
    reported: Option<(RemoteStatus, u64)>,
    /// When the last renewal was sent (answered or not).
    last_sent: Instant,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    /// The proxy stops on purpose: the remote subtree is stopped already.
    stopping: bool,
    /// The next renewal asks for the subtree's records whole: the first
    /// of a placement, and after a change that did not fit the mirror.
    want_whole: bool,
    metrics: Arc<crate::telemetry::metrics::Metrics>,
    worker_type: Arc<str>,
    /// The state the proxy is counted in, and since when.
    counted: Option<(&'static str, Instant)>,
}

/// The key under which a host holds a placed child: its owner node and
/// its path.
fn key_of(link: &ClusterLink, path: &NodePath) -> String {
    format!("{}:{}", link.node_name, path)
}

/// The spec the host runs: the declared one, with what the parent passes
/// down folded in (its mapped state as the mapping from the host tree's
/// top, its variables and location as the subtree root's own), and no
/// placement (the root runs where it is placed).
fn remote_spec(spec: &ChildSpec, parent_state: Option<&str>, context: &ParentContext) -> ChildSpec {
    let mut remote = spec.clone();
    remote.placement = None;
    remote.state_mapping.clear();
    if let Some(mapped) = parent_state {
        // The host tree's top always wants `running`.
        remote
            .state_mapping
            .insert("running".to_owned(), mapped.to_owned());
    }
    for (k, v) in &context.user {
        remote.variables.get_or_insert_with(k.clone(), || v.clone());
    }
    for (k, v) in context.location.named() {
        remote.location.entry(k).or_insert(v);
    }
    remote
}

/// State names as `&'static str`, as reports carry them: a subtree's
/// states come from a fixed set of worker types, so each distinct name is
/// kept once for the life of the process.
fn intern(name: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let names = NAMES.get_or_init(|| Mutex::new(HashSet::new()));
    let mut names = names
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(n) = names.get(name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

async fn ask(
    host: &ActorRef<HostMsg>,
    request: &Request,
    timeout: Duration,
) -> Result<Reply, String> {
    let bytes = wire::encode(request);
    match host
        .call(|reply| HostMsg::Call(bytes, reply), Some(timeout))
        .await
    {
        Ok(CallResult::Success(answer)) => wire::decode(&answer),
        Ok(CallResult::Timeout) => Err(format!("no answer within {timeout:?}")),
        Ok(CallResult::SenderError) | Err(_) => Err("the host is gone".to_owned()),
    }
}

/// Chooses a live node for the child (not the one it was last lost on,
/// while another qualifies).
fn choose(
    link: &ClusterLink,
    path: &NodePath,
    spec: &ChildSpec,
) -> Result<(ActorRef<HostMsg>, String), String> {
    let key = key_of(link, path);
    let live = super::live_nodes();
    let placement = spec.placement.clone().unwrap_or_default();
    let avoid = link.lost_node(&key);
    let name = choose_node(&key, &placement, &live, avoid.as_deref())
        .map_err(|e| e.to_string())?
        .to_owned();
    let host = super::host_of(&name).ok_or_else(|| format!("node `{name}` left meanwhile"))?;
    Ok((host, name))
}

/// Places the child's subtree on `host`, with the records it sent from
/// where it ran before.
async fn place(
    link: &ClusterLink,
    path: &NodePath,
    (host, name): (&ActorRef<HostMsg>, &str),
    remote: &ChildSpec,
    epoch: u64,
) -> Result<(), String> {
    let key = key_of(link, path);
    let bytes = codec::encode_spec(remote).map_err(|e| e.to_string())?;
    let request = Request::Place {
        key: key.clone(),
        epoch,
        spec: bytes,
        lease_ms: u64::try_from(link.timing.lease.as_millis()).unwrap_or(u64::MAX),
        restore: link.mirrors.records(&key),
    };
    // Starting a subtree takes longer than a renewal: a generous bound.
    match ask(host, &request, link.timing.detection * 5).await? {
        Reply::Done(_) => {
            link.placed(&key);
            tracing::info!(node.path = %path, node = %name, epoch, "subtree placed");
            Ok(())
        }
        Reply::Refused(why) => Err(why),
        other => Err(format!("unexpected answer to a placement: {other:?}")),
    }
}

impl Actor for ProxyActor {
    type Msg = NodeMsg;
    type State = ProxyState;
    type Arguments = ProxyArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NodeMsg>,
        args: ProxyArgs,
    ) -> Result<ProxyState, ActorProcessingErr> {
        // Later than any epoch an earlier incarnation (in this process or
        // an earlier one) used for this child.
        let epoch = args.link.next_epoch();
        // Only the choice here: the parent waits for `pre_start`, and the
        // placement itself (a round trip, a subtree to start) is done in
        // `post_start`, on the proxy's own time.
        let (host, host_name) = choose(&args.link, &args.path, &args.spec)
            .map_err(|why| format!("placing `{}`: {why}", args.path))?;
        // Told when a host joins or leaves the hosts group.
        ractor::pg::monitor(HOSTS_GROUP.to_owned(), myself.get_cell());
        let heartbeat = myself.send_interval(args.link.timing.heartbeat, || NodeMsg::FlushReport);
        let worker_type = Arc::from(args.spec.worker_type.as_str());
        Ok(ProxyState {
            key: key_of(&args.link, &args.path),
            path: args.path,
            spec: args.spec,
            tick_pending: args.tick_pending,
            parent: args.parent,
            parent_state: args.parent_state,
            context: args.context,
            link: args.link,
            host,
            host_name,
            epoch,
            tree_generation: args.tree_generation,
            awaited_remote: 0,
            synced: 0,
            last: RemoteStatus::default(),
            reported: None,
            last_sent: Instant::now(),
            heartbeat: Some(heartbeat),
            stopping: false,
            want_whole: true,
            worker_type,
            metrics: args.metrics,
            counted: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<NodeMsg>,
        state: &mut ProxyState,
    ) -> Result<(), ActorProcessingErr> {
        let remote = remote_spec(&state.spec, state.parent_state.as_deref(), &state.context);
        let target = (&state.host, state.host_name.as_str());
        if let Err(why) = place(&state.link, &state.path, target, &remote, state.epoch).await {
            // Nothing runs there: fail at once, no lease to wait out.
            state.stopping = true;
            return Err(format!(
                "placing `{}` on node `{}`: {why}",
                state.path, state.host_name
            )
            .into());
        }
        state.renew(&myself).await
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        msg: NodeMsg,
        state: &mut ProxyState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeMsg::Tick(span, generation) => {
                if let Some(pending) = &state.tick_pending {
                    pending.store(false, Ordering::Relaxed);
                }
                state.tree_generation = generation;
                let trace = crate::telemetry::traceparent(&span);
                let bytes = wire::encode(&Request::Tick {
                    key: state.key.clone(),
                    epoch: state.epoch,
                    trace,
                });
                if state.host.cast(HostMsg::Cast(bytes)).is_err() {
                    return Err(state.lost("it cannot be reached").await);
                }
            }
            // The proxy's own heartbeat (see `pre_start`).
            NodeMsg::FlushReport => state.renew(&myself).await?,
            NodeMsg::UpdateSpec { spec, .. } => {
                let moved = spec.placement != state.spec.placement;
                state.spec = spec;
                if moved {
                    state.relocate(&myself).await?;
                } else {
                    state.send_spec().await?;
                }
            }
            NodeMsg::ParentState(mapped) if mapped != state.parent_state => {
                state.parent_state = mapped;
                state.send_spec().await?;
            }
            NodeMsg::ParentContext(context) if context.hash != state.context.hash => {
                state.context = context;
                state.send_spec().await?;
            }
            NodeMsg::Inspect { deadline, reply } => {
                let wait = deadline.saturating_duration_since(Instant::now());
                let request = Request::Inspect {
                    key: state.key.clone(),
                    epoch: state.epoch,
                };
                let host = state.host.clone();
                let path = state.path.clone();
                let worker_type = state.spec.worker_type.clone();
                let host_name = state.host_name.clone();
                tokio::spawn(async move {
                    let snapshot = match ask(&host, &request, wait).await {
                        Ok(Reply::Snapshot(s)) => relocate_snapshot(*s, &path),
                        Ok(other) => unavailable(
                            &path,
                            &worker_type,
                            &format!("node `{host_name}`: {other:?}"),
                        ),
                        Err(why) => {
                            unavailable(&path, &worker_type, &format!("node `{host_name}`: {why}"))
                        }
                    };
                    let _ = reply.send(snapshot);
                });
            }
            NodeMsg::ReadObservation(request) => {
                // Observations stay on the node that makes them.
                let _ = request
                    .reply
                    .send(crate::latest::ObservationReply::NoSuchNode);
            }
            NodeMsg::Shutdown { deadline, reply } => {
                let records = state.stop_remote(deadline).await;
                state.stopping = true;
                // Removed or shut down: nothing to place again.
                state.link.mirrors.forget(&state.key);
                let _ = reply.send(records);
                myself.stop(Some(crate::node::EXIT_SHUTDOWN.to_owned()));
            }
            _ => {}
        }
        state.report(&myself);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<NodeMsg>,
        event: SupervisionEvent,
        state: &mut ProxyState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ProcessGroupChanged(change) = event
            && change.get_group() == HOSTS_GROUP
            && super::host_of(&state.host_name).is_none()
        {
            return Err(state.lost("its node left the cluster").await);
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<NodeMsg>,
        state: &mut ProxyState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(h) = state.heartbeat.take() {
            h.abort();
        }
        if let Some((counted, _)) = state.counted.take() {
            state.series().ended(counted, None, false);
        }
        ractor::pg::demonitor(HOSTS_GROUP.to_owned(), myself.get_id());
        if !state.stopping {
            // Failed or killed: do not leave the subtree to its lease alone
            // if the host can still be told.
            let bytes = wire::encode(&Request::Stop {
                key: state.key.clone(),
                epoch: state.epoch,
                timeout_ms: 1000,
            });
            let host = state.host.clone();
            tokio::spawn(async move {
                let _ = host
                    .call(
                        |reply| HostMsg::Call(bytes, reply),
                        Some(Duration::from_secs(1)),
                    )
                    .await;
            });
        }
        Ok(())
    }
}

impl ProxyState {
    fn series(&self) -> crate::telemetry::metrics::NodeSeries<'_> {
        crate::telemetry::metrics::NodeSeries {
            metrics: &self.metrics,
            worker_type: &self.worker_type,
            path: &self.path,
            counted: true,
        }
    }

    /// Counts the proxy in the remote root's state.
    fn count(&mut self, state: &'static str) {
        let now = Instant::now();
        match self.counted {
            None => self.series().started(state),
            Some((from, _)) if std::ptr::eq(from, state) => return,
            Some((from, since)) => {
                self.series()
                    .transition(from, state, now.saturating_duration_since(since));
            }
        }
        self.counted = Some((state, now));
    }

    /// The host is lost: the proxy fails, so that its parent places the
    /// subtree again — but not before the subtree's lease there has run out
    /// (a host cut off, not dead, stops it then): past the last renewal
    /// sent, the lease, and a heartbeat for its delay and the host's reaper.
    async fn lost(&self, why: &str) -> ActorProcessingErr {
        tracing::warn!(node.path = %self.path, node = %self.host_name, why, "lost the node running the subtree; waiting out its lease");
        self.link.note_lost(&self.key, &self.host_name);
        let timing = &self.link.timing;
        tokio::time::sleep_until(self.last_sent + timing.lease + timing.heartbeat).await;
        format!(
            "node `{}` running `{}` was lost: {why}",
            self.host_name, self.path
        )
        .into()
    }

    /// Renews the lease and takes the subtree's status; fails when the host
    /// does not answer within the detection time.
    async fn renew(&mut self, myself: &ActorRef<NodeMsg>) -> Result<(), ActorProcessingErr> {
        let request = Request::Renew {
            key: self.key.clone(),
            epoch: self.epoch,
            whole: self.want_whole,
        };
        self.last_sent = Instant::now();
        match ask(&self.host, &request, self.link.timing.detection).await {
            Ok(Reply::Status(status, delta)) => {
                self.want_whole = match self.link.mirrors.apply(&self.key, delta) {
                    Ok(()) => false,
                    Err(e) => {
                        tracing::warn!(node.path = %self.path, error = %e, "the subtree's records did not fit those kept; asking for them whole");
                        true
                    }
                };
                self.last = status;
                self.report(myself);
                Ok(())
            }
            Ok(Reply::Refused(why)) => Err(self.lost(&why).await),
            Ok(other) => Err(self.lost(&format!("unexpected answer {other:?}")).await),
            Err(why) => Err(self.lost(&why).await),
        }
    }

    /// Sends the spec (with the parent's state and context folded in).
    async fn send_spec(&mut self) -> Result<(), ActorProcessingErr> {
        let remote = remote_spec(&self.spec, self.parent_state.as_deref(), &self.context);
        let bytes = codec::encode_spec(&remote).map_err(|e| e.to_string())?;
        let request = Request::Update {
            key: self.key.clone(),
            epoch: self.epoch,
            spec: bytes,
        };
        match ask(&self.host, &request, self.link.timing.detection).await {
            Ok(Reply::Done(generation)) => {
                self.awaited_remote = generation;
                Ok(())
            }
            Ok(Reply::Refused(why)) => Err(self.lost(&why).await),
            Ok(other) => Err(self.lost(&format!("unexpected answer {other:?}")).await),
            Err(why) => Err(self.lost(&why).await),
        }
    }

    /// The placement changed: stop the subtree where it runs (in order),
    /// then place it again.
    async fn relocate(&mut self, myself: &ActorRef<NodeMsg>) -> Result<(), ActorProcessingErr> {
        let (host, name) = choose(&self.link, &self.path, &self.spec)?;
        if name == self.host_name {
            // The new placement picks the node it runs on already.
            return self.send_spec().await;
        }
        let deadline = Instant::now() + self.link.timing.detection * 5;
        let from = self.host_name.clone();
        self.stop_remote(deadline).await;
        let epoch = self.link.next_epoch();
        let remote = remote_spec(&self.spec, self.parent_state.as_deref(), &self.context);
        place(&self.link, &self.path, (&host, &name), &remote, epoch).await?;
        tracing::info!(node.path = %self.path, from = %from, to = %name, "subtree moved: its placement changed");
        self.host = host;
        self.host_name = name;
        self.epoch = epoch;
        self.awaited_remote = 0;
        self.reported = None;
        self.want_whole = true;
        self.renew(myself).await
    }

    async fn stop_remote(&mut self, deadline: Instant) -> Vec<StopRecord> {
        let wait = deadline.saturating_duration_since(Instant::now());
        let request = Request::Stop {
            key: self.key.clone(),
            epoch: self.epoch,
            timeout_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        };
        let parent = self.path.parent().unwrap_or_else(NodePath::top);
        match ask(&self.host, &request, wait + Duration::from_millis(100)).await {
            Ok(Reply::Stopped(records)) => records
                .into_iter()
                .map(|r| StopRecord {
                    path: under(&parent, &r.path),
                    outcome: r.outcome,
                })
                .collect(),
            Ok(other) => vec![forced(
                &self.path,
                &format!("node `{}`: {other:?}", self.host_name),
            )],
            Err(why) => vec![forced(
                &self.path,
                &format!("node `{}`: {why}", self.host_name),
            )],
        }
    }

    /// Tells the parent what changed, in the report a local child sends.
    fn report(&mut self, myself: &ActorRef<NodeMsg>) {
        if !self.last.reported || self.stopping {
            return;
        }
        if self.last.observed_generation >= self.last.generation
            && self.last.generation >= self.awaited_remote
        {
            self.synced = self.tree_generation;
        }
        let desired_changed = self
            .reported
            .as_ref()
            .is_none_or(|(s, _)| s.desired != self.last.desired);
        if self
            .reported
            .as_ref()
            .is_some_and(|(s, synced)| *s == self.last && *synced == self.synced)
        {
            return;
        }
        let state = intern(&self.last.state);
        self.count(state);
        let _ = self.parent.cast(NodeMsg::ChildReport(Box::new(ChildReport {
            from: myself.get_id(),
            state,
            desired: desired_changed.then(|| self.last.desired.clone().into()),
            healthy: self.last.healthy,
            stale: self.last.stale,
            converged: self.last.converged,
            subtree: self.last.counts,
            settled: true,
            synced: self.synced,
        })));
        self.reported = Some((self.last.clone(), self.synced));
    }
}

/// `path` of the host's tree (its root first) as a path under `parent`.
fn under(parent: &NodePath, path: &NodePath) -> NodePath {
    path.segments().fold(parent.clone(), |p, s| p.child(s))
}

fn relocate_snapshot(mut snapshot: NodeSnapshot, proxy: &NodePath) -> NodeSnapshot {
    let parent = proxy.parent().unwrap_or_else(NodePath::top);
    fn walk(s: &mut NodeSnapshot, parent: &NodePath) {
        s.path = under(parent, &s.path);
        for c in &mut s.children {
            walk(c, parent);
        }
    }
    walk(&mut snapshot, &parent);
    snapshot
}

fn unavailable(path: &NodePath, worker_type: &str, why: &str) -> NodeSnapshot {
    NodeSnapshot::placeholder(
        path.clone(),
        worker_type,
        "unavailable",
        Some(why.to_owned()),
    )
}

fn forced(path: &NodePath, why: &str) -> StopRecord {
    StopRecord {
        path: path.clone(),
        outcome: StopOutcome::Forced(why.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fsm_core::{Map, Value};

    #[test]
    fn the_remote_spec_carries_the_mapped_state_and_the_inherited_context_but_no_placement() {
        let spec = ChildSpec::new("line-1", "line")
            .with_placement(fsm_core::Placement::node("b"))
            .map_state("running", "active")
            .with_variable("SUBNET", "10.0.1");
        let context = ParentContext::new(
            Map::from([
                ("BROKER".to_owned(), Value::from("tcp://x")),
                ("SUBNET".to_owned(), Value::from("inherited")),
            ]),
            fsm_templates::Location::default(),
        );
        let remote = remote_spec(&spec, Some("active"), &context);
        assert_eq!(remote.placement, None);
        assert_eq!(remote.mapped_state("running"), Some("active"));
        assert_eq!(
            remote.variables.get("BROKER"),
            Some(&Value::from("tcp://x"))
        );
        // The child's own variable wins over the inherited one.
        assert_eq!(remote.variables.get("SUBNET"), Some(&Value::from("10.0.1")));
        let unmapped = remote_spec(&spec, None, &context);
        assert!(unmapped.state_mapping.is_empty());
    }

    #[test]
    fn remote_paths_are_shown_under_the_proxys_parent() {
        let proxy = NodePath::parse("plant/line-1");
        let mut s = unavailable(&NodePath::parse("line-1"), "line", "x");
        s.children
            .push(unavailable(&NodePath::parse("line-1/press"), "bridge", "x"));
        let s = relocate_snapshot(s, &proxy);
        assert_eq!(s.path, proxy);
        assert_eq!(s.children[0].path, NodePath::parse("plant/line-1/press"));
    }

    #[test]
    fn interned_names_are_kept_once() {
        let a = intern("running");
        let b = intern(&String::from("running"));
        assert!(std::ptr::eq(a, b));
    }
}
