//! Subtrees on other processes (the `cluster` feature): one [`Host`] per
//! process, on `ractor_cluster`.
//!
//! A host is a `ractor_cluster` node server (cookie-authenticated
//! connections to its peers) and an actor that announces itself in the
//! `fsmv2.hosts` process group (and one `fsmv2.label.<label>` group per
//! label). A tree whose [`TreeConfig::cluster`](crate::TreeConfig) holds a
//! host's [`ClusterLink`] runs every child that declares a
//! [`Placement`](fsm_core::Placement) through a *proxy*: a local child, in
//! its parent's table like any other, that asks the chosen node's host to
//! run the subtree from the child's spec, forwards ticks, mapped states and
//! spec changes, renews the subtree's lease, and reports the subtree's
//! status to its parent. Without a link, a placed child runs beside its
//! parent as if it had no placement.
//!
//! See `docs/cluster.md` for running nodes, failover timing and what is
//! guaranteed.

mod host;
mod mirror;
mod proxy;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fsm_core::WorkerRegistry;
use fsm_core::placement::{LeaseTiming, LiveNode};
use ractor::{Actor, ActorCell, ActorRef};
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};
use tokio::sync::broadcast;

use crate::TreeConfig;
pub(crate) use proxy::{ProxyActor, ProxyArgs};
pub use wire::{HostMsg, HostedSubtree};

/// The process group every host joins.
pub(crate) const HOSTS_GROUP: &str = "fsmv2.hosts";
const HOST_PREFIX: &str = "fsmv2.host.";
const LABEL_PREFIX: &str = "fsmv2.label.";

fn label_group(label: &str) -> String {
    format!("{LABEL_PREFIX}{label}")
}

fn node_name_of(cell: &ActorCell) -> Option<String> {
    cell.get_name()?
        .strip_prefix(HOST_PREFIX)
        .map(str::to_owned)
}

/// The nodes whose hosts this process sees now, with their labels.
pub(crate) fn live_nodes() -> Vec<LiveNode> {
    let mut nodes: Vec<LiveNode> = ractor::pg::get_members(&HOSTS_GROUP.to_owned())
        .iter()
        .filter_map(node_name_of)
        .map(|name| LiveNode::new(name, Vec::<String>::new()))
        .collect();
    for group in ractor::pg::which_groups() {
        let Some(label) = group.strip_prefix(LABEL_PREFIX) else {
            continue;
        };
        for cell in ractor::pg::get_members(&group) {
            if let Some(name) = node_name_of(&cell)
                && let Some(node) = nodes.iter_mut().find(|n| n.name == name)
            {
                node.labels.push(label.to_owned());
            }
        }
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    nodes.dedup_by(|a, b| a.name == b.name);
    nodes
}

/// The host actor of the node of this name, while it is live.
pub(crate) fn host_of(name: &str) -> Option<ActorRef<HostMsg>> {
    ractor::pg::get_members(&HOSTS_GROUP.to_owned())
        .into_iter()
        .find(|cell| node_name_of(cell).as_deref() == Some(name))
        .map(ActorRef::from)
}

/// How a cluster detects loss and keeps subtrees from running twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterTiming {
    /// How often a proxy renews its subtree's lease (and takes its status).
    /// Default: 200 ms.
    pub heartbeat: Duration,
    /// How long a renewal may go unanswered before the host counts as lost
    /// (a closed node session is noticed at once). Default: 1 s.
    pub detection: Duration,
    /// How long a renewal keeps a subtree running on its host. Must be
    /// shorter than `detection` (see `docs/cluster.md`). Default: 700 ms.
    pub lease: Duration,
}

impl Default for ClusterTiming {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(200),
            detection: Duration::from_secs(1),
            lease: Duration::from_millis(700),
        }
    }
}

impl ClusterTiming {
    /// These timings (check them with [`validate`](Self::validate)).
    #[must_use]
    pub fn new(heartbeat: Duration, detection: Duration, lease: Duration) -> Self {
        Self {
            heartbeat,
            detection,
            lease,
        }
    }

    /// Checks the timings: a heartbeat shorter than the lease, and a lease
    /// that runs out before a lost host is detected.
    ///
    /// # Errors
    ///
    /// A sentence naming the timing to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat.is_zero() || self.heartbeat >= self.lease {
            return Err(format!(
                "the heartbeat ({:?}) must be shorter than the lease ({:?}), or every lease runs out",
                self.heartbeat, self.lease
            ));
        }
        LeaseTiming {
            lease: self.lease,
            detection: self.detection,
            replacement: Duration::ZERO,
            max_delay: self.heartbeat / 2,
        }
        .check()
    }
}

/// What a tree needs to place children on other nodes: the local node's
/// name and the cluster's timings. Get it from [`Host::link`] and set it as
/// [`TreeConfig::cluster`](crate::TreeConfig).
#[derive(Clone, Debug)]
pub struct ClusterLink {
    node_name: String,
    timing: ClusterTiming,
    last_epoch: Arc<AtomicU64>,
    /// Per placed child (its key), the node it was last lost on: not
    /// chosen again while another qualifies (a node cut off but not dead
    /// is still in the hosts group).
    lost: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
    /// Per placed child, what its subtree recorded of its nodes, to place
    /// it again with (see [`mirror`]).
    mirrors: mirror::Mirrors,
}

impl ClusterLink {
    /// The local node's name.
    #[must_use]
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    fn note_lost(&self, key: &str, node: &str) {
        if let Ok(mut lost) = self.lost.lock() {
            lost.insert(key.to_owned(), node.to_owned());
        }
    }

    fn lost_node(&self, key: &str) -> Option<String> {
        self.lost.lock().ok()?.get(key).cloned()
    }

    fn placed(&self, key: &str) {
        if let Ok(mut lost) = self.lost.lock() {
            lost.remove(key);
        }
    }

    /// An epoch later than every one this process gave out, and (by the
    /// wall clock) than those an earlier process did.
    fn next_epoch(&self) -> u64 {
        let now = crate::node::unix_ms_now();
        let mut last = self.last_epoch.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self.last_epoch.compare_exchange_weak(
                last,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }
}

/// How a [`Host`] runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HostConfig {
    /// The node's name, unique in the cluster.
    pub name: String,
    /// Where the node server listens (`127.0.0.1:4001`).
    pub listen: SocketAddr,
    /// The shared secret every node of the cluster must hold.
    pub cookie: String,
    /// The node's labels, for placements by label.
    pub labels: Vec<String>,
    /// Detection and lease timings.
    pub timing: ClusterTiming,
    /// How long [`Host::connect`] waits for a peer to authenticate.
    /// Default: 5 s.
    pub connect_timeout: Duration,
}

impl HostConfig {
    /// A host named `name` on `listen` with `cookie`, no labels, default
    /// timings.
    #[must_use]
    pub fn new(name: impl Into<String>, listen: SocketAddr, cookie: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            listen,
            cookie: cookie.into(),
            labels: Vec::new(),
            timing: ClusterTiming::default(),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Sets the labels.
    #[must_use]
    pub fn with_labels(mut self, labels: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.labels = labels.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the timings.
    #[must_use]
    pub fn with_timing(mut self, timing: ClusterTiming) -> Self {
        self.timing = timing;
        self
    }
}

/// A host could not start or join its peers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The configuration cannot work.
    #[error("host `{name}`: {why}")]
    Config {
        /// The node.
        name: String,
        /// What to change.
        why: String,
    },
    /// An actor of the host could not start.
    #[error("host `{name}` could not start: {why}")]
    Start {
        /// The node.
        name: String,
        /// Why.
        why: String,
    },
    /// The peer could not be reached.
    #[error("node `{name}` could not connect to {peer}: {why}; is a node listening there?")]
    Connect {
        /// The node.
        name: String,
        /// The peer's address.
        peer: SocketAddr,
        /// Why.
        why: String,
    },
    /// The peer closed the connection before it was authenticated: most
    /// often, the two nodes hold different cookies.
    #[error(
        "node `{name}` was refused by {peer}: the connection closed during authentication; \
         check that both nodes use the same --cookie"
    )]
    Refused {
        /// The node.
        name: String,
        /// The peer's address.
        peer: SocketAddr,
    },
    /// The peer did not finish authenticating in time.
    #[error("node `{name}`: {peer} did not finish authenticating within {timeout:?}")]
    Timeout {
        /// The node.
        name: String,
        /// The peer's address.
        peer: SocketAddr,
        /// How long it waited.
        timeout: Duration,
    },
}

#[derive(Clone, Debug)]
enum SessionEvent {
    Ready(String),
    Disconnected { addr: String, authenticated: bool },
}

/// Forwards the node server's session events (and logs them).
struct Events {
    node: String,
    tx: broadcast::Sender<SessionEvent>,
    authenticated: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        tracing::debug!(node = %self.node, peer = %ses.peer_addr, "node session opened");
    }

    fn node_session_disconnected(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        let authenticated = self
            .authenticated
            .lock()
            .map(|mut a| a.remove(&ses.peer_addr))
            .unwrap_or(false);
        let peer = ses.peer_name.as_ref().map(|p| p.name.clone());
        if authenticated {
            tracing::warn!(node = %self.node, peer = %ses.peer_addr, peer_name = ?peer, "node session closed: the peer is lost");
        } else {
            tracing::error!(
                node = %self.node,
                peer = %ses.peer_addr,
                "a node session closed before it was authenticated: wrong cookie? (every node must use the same --cookie)"
            );
        }
        let _ = self.tx.send(SessionEvent::Disconnected {
            addr: ses.peer_addr,
            authenticated,
        });
    }

    fn node_session_authenticated(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        if let Ok(mut a) = self.authenticated.lock() {
            a.insert(ses.peer_addr.clone());
        }
        let peer = ses.peer_name.as_ref().map(|p| p.name.clone());
        tracing::info!(node = %self.node, peer = %ses.peer_addr, peer_name = ?peer, "node session authenticated");
    }

    fn node_session_ready(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        let _ = self.tx.send(SessionEvent::Ready(ses.peer_addr));
    }
}

/// This process's part in a cluster: a node server that authenticates its
/// peers by cookie, and the host actor that runs the subtrees placed here.
pub struct Host {
    config: HostConfig,
    server: ActorRef<NodeServerMessage>,
    actor: ActorRef<HostMsg>,
    link: ClusterLink,
    events: broadcast::Sender<SessionEvent>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("name", &self.config.name)
            .field("listen", &self.config.listen)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// Starts the node server and the host. Subtrees placed here are built
    /// from `registry` and run with `tree_config` (its tick timer is not
    /// used: a placed subtree ticks when its parent does).
    ///
    /// # Errors
    ///
    /// [`HostError::Config`] for unworkable timings or names,
    /// [`HostError::Start`] when an actor does not start.
    pub async fn start(
        config: HostConfig,
        registry: WorkerRegistry,
        mut tree_config: TreeConfig,
    ) -> Result<Self, HostError> {
        let name = config.name.clone();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(HostError::Config {
                name,
                why: "a node name must be non-empty, without spaces".to_owned(),
            });
        }
        config.timing.validate().map_err(|why| HostError::Config {
            name: name.clone(),
            why,
        })?;
        let server = NodeServer::new(
            config.listen.port(),
            config.cookie.clone(),
            name.clone(),
            config.listen.ip().to_string(),
            None,
            None,
        )
        .with_listen_addr(config.listen.ip());
        let start_err = |why: String| HostError::Start {
            name: name.clone(),
            why,
        };
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| start_err(e.to_string()))?;
        let (events, _) = broadcast::channel(64);
        server
            .cast(NodeServerMessage::SubscribeToEvents {
                id: "fsmv2.host".to_owned(),
                subscription: Box::new(Events {
                    node: name.clone(),
                    tx: events.clone(),
                    authenticated: std::sync::Mutex::default(),
                }),
            })
            .map_err(|e| start_err(e.to_string()))?;
        tree_config.tick_interval = None;
        let link = ClusterLink {
            node_name: name.clone(),
            timing: config.timing,
            last_epoch: Arc::new(AtomicU64::new(0)),
            lost: Arc::default(),
            mirrors: mirror::Mirrors::default(),
        };
        // Subtrees placed here may place their own children in turn.
        tree_config.cluster = Some(link.clone());
        let args = host::HostArgs {
            name: name.clone(),
            labels: config.labels.clone(),
            registry,
            tree_config,
            reap_every: config.timing.lease / 8,
        };
        let (actor, _) = Actor::spawn(Some(format!("{HOST_PREFIX}{name}")), host::HostActor, args)
            .await
            .map_err(|e| {
                server.stop(None);
                start_err(e.to_string())
            })?;
        tracing::info!(node = %name, listen = %config.listen, labels = ?config.labels, "host started");
        Ok(Self {
            config,
            server,
            actor,
            link,
            events,
        })
    }

    /// The link to set as [`TreeConfig::cluster`](crate::TreeConfig) of a
    /// tree whose children may be placed on other nodes.
    #[must_use]
    pub fn link(&self) -> ClusterLink {
        self.link.clone()
    }

    /// The node's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Connects to the node listening at `peer` and waits until the
    /// connection is authenticated and the nodes have exchanged their
    /// process groups.
    ///
    /// # Errors
    ///
    /// [`HostError::Connect`] when nothing answers there,
    /// [`HostError::Refused`] when the peer closes the connection while
    /// authenticating (a different cookie), [`HostError::Timeout`].
    pub async fn connect(&self, peer: SocketAddr) -> Result<(), HostError> {
        let name = self.config.name.clone();
        let mut events = self.events.subscribe();
        ractor_cluster::client_connect(&self.server, peer)
            .await
            .map_err(|e| HostError::Connect {
                name: name.clone(),
                peer,
                why: e.to_string(),
            })?;
        let want = peer.to_string();
        let timeout = self.config.connect_timeout;
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(SessionEvent::Ready(addr)) if addr == want => return Ok(()),
                    Ok(SessionEvent::Disconnected {
                        addr,
                        authenticated: false,
                    }) if addr == want => {
                        return Err(HostError::Refused {
                            name: name.clone(),
                            peer,
                        });
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(HostError::Refused {
                            name: name.clone(),
                            peer,
                        });
                    }
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(HostError::Timeout {
                name: name.clone(),
                peer,
                timeout,
            }),
        }
    }

    /// The names of the nodes this host sees now (itself included).
    #[must_use]
    pub fn live_nodes(&self) -> Vec<String> {
        live_nodes().into_iter().map(|n| n.name).collect()
    }

    /// The subtrees this host runs now.
    ///
    /// # Errors
    ///
    /// A sentence when the host does not answer.
    pub async fn hosted(&self) -> Result<Vec<HostedSubtree>, String> {
        let bytes = wire::encode(&wire::Request::List);
        match self
            .actor
            .call(
                |reply| HostMsg::Call(bytes, reply),
                Some(Duration::from_secs(5)),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(answer)) => match wire::decode(&answer)? {
                wire::Reply::Hosted(list) => Ok(list),
                other => Err(format!("unexpected answer {other:?}")),
            },
            _ => Err("the host did not answer".to_owned()),
        }
    }

    /// Stops the subtrees placed here, the host and the node server.
    pub async fn stop(self) {
        let _ = self
            .actor
            .stop_and_wait(None, Some(Duration::from_secs(15)))
            .await;
        self.server.stop(None);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timings_that_could_run_a_subtree_twice_are_refused() {
        assert!(ClusterTiming::default().validate().is_ok());
        let ms = Duration::from_millis;
        let why = ClusterTiming::new(ms(200), ms(1000), ms(1000))
            .validate()
            .unwrap_err();
        assert!(why.contains("shorten the lease"), "{why}");
        let why = ClusterTiming::new(ms(700), ms(1000), ms(700))
            .validate()
            .unwrap_err();
        assert!(why.contains("heartbeat"), "{why}");
        assert!(
            ClusterTiming::new(Duration::ZERO, ms(1000), ms(700))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn epochs_only_grow_even_within_one_millisecond() {
        let link = ClusterLink {
            node_name: "a".into(),
            timing: ClusterTiming::default(),
            last_epoch: Arc::new(AtomicU64::new(0)),
            lost: Arc::default(),
            mirrors: mirror::Mirrors::default(),
        };
        let mut last = 0;
        for _ in 0..1000 {
            let e = link.next_epoch();
            assert!(e > last);
            last = e;
        }
        // A restarted process starts above what this one gave out: the
        // wall clock in milliseconds.
        assert!(last >= crate::node::unix_ms_now());
    }
}
