//! The host actor: one per process, it runs the subtrees other nodes'
//! parents place here, each as a [`Tree`] of its own that ticks only when
//! its proxy forwards a tick, under a lease the proxy renews.
//!
//! * A placement carries an epoch; an older epoch than the latest seen for
//!   the same child is refused, a newer one replaces the running copy
//!   (stopped first, in order).
//! * Every renewal, tick, update, stop or inspection must carry the epoch
//!   of the running copy.
//! * Past its lease without a renewal, a subtree is stopped: its proxy has
//!   lost this host (or died), and its parent places it elsewhere only
//!   after longer than the lease (see [`LeaseTiming`](fsm_core::placement::LeaseTiming)).
//! * Each subtree runs on a store in memory ([`HostedStore`]); what it
//!   records goes back with each renewal, and a placement may bring the
//!   records of where the subtree ran before, to restore it from.

use std::collections::HashMap;
use std::time::Duration;

use fsm_core::placement::{epoch_is_stale, lease_expired};
use fsm_core::store::Change;
use fsm_core::{WorkerRegistry, codec};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::mirror::{HostedStore, MirrorDelta};
use super::wire::{self, HostMsg, HostedSubtree, RemoteStatus, Reply, Request};
use super::{HOSTS_GROUP, label_group};
use crate::{Tree, TreeConfig};

pub(crate) struct HostActor;

pub(crate) struct HostArgs {
    pub(crate) name: String,
    pub(crate) labels: Vec<String>,
    pub(crate) registry: WorkerRegistry,
    pub(crate) tree_config: TreeConfig,
    /// How often expired leases are looked for.
    pub(crate) reap_every: Duration,
}

struct Hosted {
    epoch: u64,
    tree: Tree,
    root: String,
    renewed: Instant,
    lease: Duration,
    /// The subtree's store.
    records: HostedStore,
}

pub(crate) struct HostState {
    name: String,
    registry: WorkerRegistry,
    tree_config: TreeConfig,
    hosted: HashMap<String, Hosted>,
    /// The latest epoch seen per placed child, kept after it stops, so that
    /// a late message of a replaced proxy is refused.
    epochs: HashMap<String, u64>,
    started: Instant,
    reaper: Option<JoinHandle<()>>,
}

impl Actor for HostActor {
    type Msg = HostMsg;
    type State = HostState;
    type Arguments = HostArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<HostMsg>,
        args: HostArgs,
    ) -> Result<HostState, ActorProcessingErr> {
        ractor::pg::join(HOSTS_GROUP.to_owned(), vec![myself.get_cell()]);
        for label in &args.labels {
            ractor::pg::join(label_group(label), vec![myself.get_cell()]);
        }
        let reaper = myself.send_interval(args.reap_every, || HostMsg::Reap);
        Ok(HostState {
            name: args.name,
            registry: args.registry,
            tree_config: args.tree_config,
            hosted: HashMap::new(),
            epochs: HashMap::new(),
            started: Instant::now(),
            reaper: Some(reaper),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<HostMsg>,
        msg: HostMsg,
        state: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        // Before anything else: a host that was frozen (or starved) past a
        // lease must not act on that subtree again, not even on a tick
        // that waited in its mailbox.
        state.reap();
        match msg {
            HostMsg::Reap => {}
            HostMsg::Cast(bytes) => match wire::decode::<Request>(&bytes) {
                Ok(Request::Tick { key, epoch, trace }) => state.tick(&key, epoch, trace),
                Ok(other) => {
                    tracing::warn!(host = %state.name, request = ?other, "a request that needs an answer came as a cast; ignored")
                }
                Err(e) => tracing::warn!(host = %state.name, error = %e, "ignored"),
            },
            HostMsg::Call(bytes, reply) => match wire::decode::<Request>(&bytes) {
                Ok(request) => state.call(request, reply).await,
                Err(e) => {
                    let _ = reply.send(wire::encode(&Reply::Refused(e)));
                }
            },
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<HostMsg>,
        state: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(reaper) = state.reaper.take() {
            reaper.abort();
        }
        let stop_timeout = state.tree_config.stop_timeout;
        for (key, hosted) in state.hosted.drain() {
            tracing::info!(key = %key, "host stopping: stopping its subtree");
            hosted.tree.shutdown(stop_timeout).await;
        }
        Ok(())
    }
}

impl HostState {
    fn clock(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.started)
    }

    /// Stops the subtrees whose lease has run out.
    fn reap(&mut self) {
        let now = self.clock(Instant::now());
        let expired: Vec<String> = self
            .hosted
            .iter()
            .filter(|(_, h)| lease_expired(self.clock(h.renewed), h.lease, now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            if let Some(hosted) = self.hosted.remove(&key) {
                tracing::warn!(
                    host = %self.name,
                    key = %key,
                    epoch = hosted.epoch,
                    lease_ms = hosted.lease.as_millis() as u64,
                    "lease expired without renewal: stopping the subtree (its parent may place it elsewhere)"
                );
                let timeout = self.tree_config.stop_timeout;
                tokio::spawn(async move {
                    hosted.tree.shutdown(timeout).await;
                });
            }
        }
    }

    fn tick(&self, key: &str, epoch: u64, trace: Option<String>) {
        if let Some(hosted) = self.hosted.get(key).filter(|h| h.epoch == epoch) {
            let parent = trace
                .as_deref()
                .map_or_else(tracing::Span::none, crate::telemetry::remote_parent_span);
            let _ = hosted.tree.tick_in(parent);
        }
    }

    /// The running copy under `key`, if `epoch` is its epoch.
    fn current(&mut self, key: &str, epoch: u64) -> Result<&mut Hosted, String> {
        let name = &self.name;
        match self.hosted.get_mut(key) {
            Some(h) if h.epoch == epoch => Ok(h),
            Some(h) => Err(format!(
                "stale epoch {epoch} for `{key}` on node `{name}`: epoch {} holds it",
                h.epoch
            )),
            None => Err(format!(
                "`{key}` is not running on node `{name}` (its lease expired, or it was stopped)"
            )),
        }
    }

    async fn call(&mut self, request: Request, reply: RpcReplyPort<Vec<u8>>) {
        let answer = match request {
            Request::Place {
                key,
                epoch,
                spec,
                lease_ms,
                restore,
            } => self.place(key, epoch, &spec, lease_ms, restore).await,
            Request::Renew { key, epoch, whole } => self.current(&key, epoch).map(|h| {
                h.renewed = Instant::now();
                let delta = h.records.take(whole).unwrap_or_else(|e| {
                    // Sent whole once it can be read again.
                    tracing::warn!(key = %key, error = %e, "the subtree's records cannot be read");
                    MirrorDelta::default()
                });
                Reply::Status(status_of(&h.tree), delta)
            }),
            Request::Tick { key, epoch, trace } => {
                self.tick(&key, epoch, trace);
                Ok(Reply::Done(0))
            }
            Request::Update { key, epoch, spec } => match self.current(&key, epoch) {
                Ok(h) => codec::decode_spec(&spec)
                    .map_err(|e| e.to_string())
                    .and_then(|spec| h.tree.update_root_spec(spec).map_err(|e| e.to_string()))
                    .map(Reply::Done),
                Err(e) => Err(e),
            },
            Request::Stop {
                key,
                epoch,
                timeout_ms,
            } => {
                // A later epoch may stop an earlier copy too (a move).
                if epoch_is_stale(self.hosted.get(&key).map(|h| h.epoch), epoch) {
                    Err(format!("stale epoch {epoch} for `{key}`: not stopped"))
                } else {
                    match self.hosted.remove(&key) {
                        Some(h) => {
                            tracing::info!(host = %self.name, key = %key, epoch, "stopping a placed subtree, as its parent asked");
                            tokio::spawn(async move {
                                let report =
                                    h.tree.shutdown(Duration::from_millis(timeout_ms)).await;
                                let _ = reply.send(wire::encode(&Reply::Stopped(report.stopped)));
                            });
                            return;
                        }
                        None => Ok(Reply::Stopped(Vec::new())),
                    }
                }
            }
            Request::Inspect { key, epoch } => match self.current(&key, epoch) {
                Ok(h) => {
                    let handle = h.tree.handle();
                    tokio::spawn(async move {
                        let answer = match handle.inspect().await {
                            Ok(s) => Reply::Snapshot(Box::new(s)),
                            Err(e) => Reply::Refused(e.to_string()),
                        };
                        let _ = reply.send(wire::encode(&answer));
                    });
                    return;
                }
                Err(e) => Err(e),
            },
            Request::List => {
                let mut list: Vec<HostedSubtree> = self
                    .hosted
                    .iter()
                    .map(|(key, h)| HostedSubtree {
                        key: key.clone(),
                        epoch: h.epoch,
                        root: h.root.clone(),
                        live_nodes: h.tree.live_nodes(),
                        converged: h.tree.status().converged,
                        restored_nodes: h.tree.restored().map_or(0, |r| r.nodes),
                    })
                    .collect();
                list.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(Reply::Hosted(list))
            }
        };
        let answer = answer.unwrap_or_else(Reply::Refused);
        let _ = reply.send(wire::encode(&answer));
    }

    async fn place(
        &mut self,
        key: String,
        epoch: u64,
        spec: &[u8],
        lease_ms: u64,
        restore: Vec<Change>,
    ) -> Result<Reply, String> {
        let held = self.epochs.get(&key).copied();
        if epoch_is_stale(held, epoch) {
            return Err(format!(
                "stale epoch {epoch} for `{key}` on node `{}`: epoch {} replaced it; not placed",
                self.name,
                held.unwrap_or_default()
            ));
        }
        if let Some(h) = self.hosted.get_mut(&key)
            && h.epoch == epoch
        {
            h.renewed = Instant::now();
            return Ok(Reply::Done(0));
        }
        let spec = codec::decode_spec(spec).map_err(|e| e.to_string())?;
        self.epochs.insert(key.clone(), epoch);
        if let Some(old) = self.hosted.remove(&key) {
            // Replaced by a later epoch: the old copy stops before the new
            // one starts.
            tracing::info!(host = %self.name, key = %key, old = old.epoch, new = epoch, "a later epoch replaces a running subtree");
            old.tree.shutdown(self.tree_config.stop_timeout).await;
        }
        let root = spec.name.clone();
        let carried = restore.len();
        let records = HostedStore::new(&spec, restore).map_err(|e| {
            format!(
                "node `{}` could not take the records `{key}` carried: {e}",
                self.name
            )
        })?;
        let mut config = self.tree_config.clone();
        config.store = Some(crate::store::TreeStore::new(records.clone()));
        let tree = Tree::spawn(spec, self.registry.clone(), config)
            .await
            .map_err(|e| format!("node `{}` could not start `{key}`: {e}", self.name))?;
        tracing::info!(host = %self.name, key = %key, epoch, carried, "placed subtree started");
        self.hosted.insert(
            key,
            Hosted {
                epoch,
                tree,
                root,
                renewed: Instant::now(),
                lease: Duration::from_millis(lease_ms),
                records,
            },
        );
        Ok(Reply::Done(1))
    }
}

fn status_of(tree: &Tree) -> RemoteStatus {
    let s = tree.status();
    RemoteStatus {
        reported: !s.root_state.is_empty(),
        state: s.root_state,
        desired: s.root_desired,
        healthy: s.root_healthy && s.fatal.is_none(),
        stale: s.root_stale,
        converged: s.converged,
        counts: s.counts,
        generation: s.generation,
        observed_generation: s.observed_generation,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fsm_core::{
        BoxError, ChildSpec, DeriveContext, DesiredState, State, TickContext, Transition, Worker,
        WorkerRegistry, codec,
    };
    use ractor::rpc::CallResult;

    use super::super::wire::{self, HostMsg, Reply, Request};
    use super::super::{Host, HostConfig};
    use crate::TreeConfig;

    fsm_core::states! { #[derive(Clone, Debug)] enum Idle { Idle } }
    struct Noop;
    impl Worker for Noop {
        type Spec = ();
        type Observed = ();
        type State = Idle;
        fn initial_state(&self) -> Idle {
            Idle::Idle
        }
        fn derive_desired(&self, _: &(), _: &DeriveContext<'_>) -> Result<DesiredState, BoxError> {
            Ok(DesiredState::new("idle"))
        }
    }
    impl State<Noop> for Idle {
        fn next(&self, _: &TickContext<'_, Noop>) -> Transition<Idle> {
            Transition::stay()
        }
    }

    async fn ask(host: &Host, request: &Request) -> Reply {
        let bytes = wire::encode(request);
        match host
            .actor
            .call(
                |reply| HostMsg::Call(bytes, reply),
                Some(Duration::from_secs(5)),
            )
            .await
        {
            Ok(CallResult::Success(answer)) => wire::decode(&answer).unwrap(),
            _ => panic!("no answer"),
        }
    }

    fn place(epoch: u64) -> Request {
        Request::Place {
            key: "owner:root/leaf".into(),
            epoch,
            spec: codec::encode_spec(&ChildSpec::new("leaf", "noop")).unwrap(),
            lease_ms: 700,
            restore: Vec::new(),
        }
    }

    /// A host on 127.0.0.1 that runs `noop` workers.
    async fn noop_host(name: &str) -> Host {
        let mut registry = WorkerRegistry::new();
        registry.register("noop", |_| Noop).unwrap();
        let listen = "127.0.0.1:0".parse().unwrap();
        Host::start(
            HostConfig::new(name, listen, "c"),
            registry,
            TreeConfig::default(),
        )
        .await
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_subtree_stops_when_its_lease_runs_out_and_a_stale_epoch_is_refused() {
        let host = noop_host("lease-test").await;
        assert!(matches!(ask(&host, &place(5)).await, Reply::Done(1)));
        assert_eq!(host.hosted().await.unwrap().len(), 1);
        // An older epoch is refused, for a placement and a renewal alike.
        let Reply::Refused(why) = ask(&host, &place(4)).await else {
            panic!("an older epoch was accepted");
        };
        assert!(why.contains("stale epoch 4"), "{why}");
        let renew = |epoch| Request::Renew {
            key: "owner:root/leaf".into(),
            epoch,
            whole: false,
        };
        assert!(matches!(ask(&host, &renew(4)).await, Reply::Refused(_)));
        // Renewed within the lease, it runs on.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(matches!(ask(&host, &renew(5)).await, Reply::Status(..)));
        }
        assert_eq!(host.hosted().await.unwrap().len(), 1);
        // Not renewed: stopped once the lease has passed.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            host.hosted().await.unwrap().len(),
            1,
            "stopped before its lease ran out"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            host.hosted().await.unwrap().is_empty(),
            "still running past its lease"
        );
        assert!(matches!(ask(&host, &renew(5)).await, Reply::Refused(_)));
        // A later epoch places it again; the earlier one stays refused.
        assert!(matches!(ask(&host, &place(6)).await, Reply::Done(1)));
        assert!(matches!(ask(&host, &place(5)).await, Reply::Refused(_)));
        host.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_subtree_placed_with_the_records_it_carried_is_restored_from_them() {
        use fsm_core::NodePath;
        use fsm_core::store::{Change, NodeIdentity, ObservedDocument};

        let host = noop_host("restore-test").await;
        let leaf = NodePath::parse("leaf");
        let carried = ObservedDocument {
            state: "idle".into(),
            observed_at_ms: Some(1_000),
            restarts: 3,
            last_error: Some("lost with its node".into()),
            ..ObservedDocument::default()
        };
        let Request::Place {
            key,
            epoch,
            spec,
            lease_ms,
            ..
        } = place(5)
        else {
            unreachable!()
        };
        let placed = Request::Place {
            key: key.clone(),
            epoch,
            spec,
            // Not renewed in this test: a lease that outlasts it.
            lease_ms: lease_ms * 100,
            restore: vec![
                Change::Identity(NodeIdentity::new(leaf.clone(), "noop")),
                Change::Observed(leaf.clone(), carried.clone()),
            ],
        };
        assert!(matches!(ask(&host, &placed).await, Reply::Done(1)));
        let hosted = host.hosted().await.unwrap();
        assert_eq!(hosted[0].restored_nodes, 1, "{hosted:?}");
        // Its nodes start with the first tick its parent forwards.
        let tick = Request::Tick {
            key: key.clone(),
            epoch,
            trace: None,
        };
        assert!(matches!(ask(&host, &tick).await, Reply::Done(0)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let inspect = Request::Inspect {
            key: key.clone(),
            epoch,
        };
        let snapshot = match ask(&host, &inspect).await {
            Reply::Snapshot(snapshot) => snapshot,
            other => panic!("{other:?}"),
        };
        assert_eq!(snapshot.restored.as_ref(), Some(&carried));
        assert_eq!(snapshot.restarts, 3);

        // Asked whole, the records come back with what the new copy wrote.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let renew = Request::Renew {
            key,
            epoch,
            whole: true,
        };
        let Reply::Status(_, delta) = ask(&host, &renew).await else {
            panic!("not renewed");
        };
        assert!(delta.whole);
        assert!(
            delta
                .changes
                .iter()
                .any(|c| matches!(c, Change::Identity(i) if i.path == leaf)),
            "{:?}",
            delta.changes
        );
        host.stop().await;
    }
}
