//! [`TreeConfig`]: the one set of knobs of a tree.

use std::time::Duration;

use fsm_core::Supervision;

/// How a tree ticks, observes, runs actions and stops.
///
/// Start from [`TreeConfig::default`] and change what you need with the
/// `with_*` methods (one per field; every field's default is in its
/// documentation, and in `docs/configuration.md`).
///
/// Any duration may be as long as `Duration::MAX`, to mean "practically
/// never": a deadline beyond what the clock holds is taken as a far future
/// (about thirty years), never as a panic.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use fsm_actors::{ExecutorConfig, TreeConfig};
/// use fsm_core::{Map, Value};
///
/// let config = TreeConfig::default()
///     .with_tick_interval(Some(Duration::from_millis(100)))
///     .with_globals(Map::from([("broker".to_owned(), Value::from("mqtt://broker:1883"))]))
///     .with_executor(ExecutorConfig::default().with_concurrency(4));
/// config.validate()?;
/// # Ok::<(), fsm_actors::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TreeConfig {
    /// How often the root timer ticks the tree. `None`: no timer; the tree
    /// ticks only when [`Tree::tick`](crate::TreeHandle::tick) is called.
    /// Default: every 1 s.
    pub tick_interval: Option<Duration>,
    /// How long one `collect` may take before it counts as failed.
    /// Default: 2 s.
    pub observation_timeout: Duration,
    /// How old the last good observation may be before the node is stale
    /// (its state machine pauses until a fresh observation arrives). Must be
    /// longer than `observation_timeout`. Default: 10 s.
    pub stale_after: Duration,
    /// How long a node may go without a good observation before its
    /// collector counts as failed: the node is restarted (with backoff) and,
    /// if that keeps happening, escalates. Must be longer than `stale_after`.
    /// Default: 30 s.
    pub collector_restart_after: Duration,
    /// How a node supervises its children when its desired state declares
    /// nothing else; also how the invisible top node supervises the root.
    /// Default: [`Supervision::default`] (one_for_one, at most 10 restarts
    /// within 10 s, backoff from 100 ms doubling to 30 s with 20 % jitter,
    /// reset after 60 s of stable running).
    pub supervision: Supervision,
    /// How often a node whose circuit is open logs that its subtree is still
    /// recovering. Default: 10 s.
    pub recovery_heartbeat: Duration,
    /// Fleet-wide variables, `{{ global.* }}` in every node's templates.
    /// Default: none.
    pub globals: fsm_core::Map,
    /// How often nodes of a worker type are observed, by worker type (see
    /// [`with_observation_interval`](Self::with_observation_interval)).
    /// Default: empty, every node is observed on every tick.
    pub observation_intervals: std::collections::BTreeMap<String, Duration>,
    /// The meter the tree records its metrics on; `None` (the default): the
    /// global meter provider's (install
    /// [`Telemetry`](crate::telemetry::Telemetry) before spawning the tree).
    ///
    /// The meter is a type of the `opentelemetry` crate, in the version
    /// this crate is built against (a meter of another version is another
    /// type, and does not compile here): make it with
    /// [`fsm_actors::opentelemetry`](crate::opentelemetry) to be sure the
    /// versions match.
    pub meter: Option<opentelemetry::metrics::Meter>,
    /// Whether node metrics carry the node's `path` besides its
    /// `worker_type`, one series per node. Off by default: metrics are
    /// summed per worker type, which stays correct at any tree size.
    ///
    /// Per-node series are only sensible up to the cardinality limit of
    /// your meter provider's streams (the OpenTelemetry SDK's default is
    /// 2,000 series per metric; past it, new series are folded into one
    /// `otel.metric.overflow` series): for larger trees configure a larger
    /// limit on the provider's views, or leave this off. See
    /// `docs/observability.md`.
    pub per_node_metrics: bool,
    /// The seed of the per-node random generators (backoff jitter, fault
    /// injection). Each node mixes in its path, so siblings differ.
    /// Default: `0x5eed_f5a2`.
    pub seed: u64,
    /// The pooled action executor. Default: [`ExecutorConfig::default`].
    pub executor: ExecutorConfig,
    /// How long a node holds back an action that failed or timed out when
    /// its state machine asks for the same action again: `base` after the
    /// first failure, doubling with each failure in a row up to `max`, plus
    /// jitter; a success resets it, and so does a change of the node's spec
    /// (the failures were of the old one). (`reset_after` is not used here.)
    /// Default: 500 ms doubling to 60 s, 20 % jitter.
    pub action_backoff: fsm_core::Backoff,
    /// How long a removed or replaced child (with its subtree) may take to
    /// stop before it is killed. Default: 10 s.
    pub stop_timeout: Duration,
    /// How long a node that is removed, restarted on its own request, or
    /// stopped with the tree may take to drive itself to its `stopped` state
    /// (see [`fsm_core::State`]) before its stop hook runs anyway. Bounded
    /// also by the node's share of the stop deadline. `Duration::ZERO`: no
    /// node is driven to `stopped`; stop hooks run at once. Default: 5 s.
    pub removal_timeout: Duration,
    /// How long one node's stop hook may run before the node is killed and
    /// reported as forced; its siblings still get their own time.
    /// Default: 5 s.
    pub stop_hook_timeout: Duration,
    /// How long [`Tree::inspect`](crate::TreeHandle::inspect) waits for each node.
    /// Default: 5 s.
    pub inspect_timeout: Duration,
    /// While a subtree starts, its nodes' first reports arrive in a burst;
    /// a parent passes their counts up once the whole subtree has reported,
    /// or after this long, whichever comes first, so that the tree's status
    /// still moves during a long start. `Duration::ZERO`: pass every burst
    /// up at once. Default: 100 ms.
    pub starting_report_interval: Duration,
    /// Where the tree keeps what it is, so that a later process can
    /// restore it (see [`with_store`](Self::with_store) and
    /// `docs/persistence.md`). Default: `None`, nothing is stored, and
    /// nodes pay nothing for it.
    pub store: Option<crate::store::TreeStore>,
    /// The cluster this tree's placed children run in (the `cluster`
    /// feature; see [`Host::link`](crate::cluster::Host::link)). `None`
    /// (the default): a child with a placement runs beside its parent.
    #[cfg(feature = "cluster")]
    pub cluster: Option<crate::cluster::ClusterLink>,
}

impl Default for TreeConfig {
    fn default() -> Self {
        Self {
            tick_interval: Some(Duration::from_secs(1)),
            observation_timeout: Duration::from_secs(2),
            stale_after: Duration::from_secs(10),
            collector_restart_after: Duration::from_secs(30),
            supervision: Supervision::default(),
            recovery_heartbeat: Duration::from_secs(10),
            globals: fsm_core::Map::new(),
            observation_intervals: std::collections::BTreeMap::new(),
            meter: None,
            per_node_metrics: false,
            seed: 0x5eed_f5a2,
            executor: ExecutorConfig::default(),
            action_backoff: fsm_core::Backoff {
                base: Duration::from_millis(500),
                max: Duration::from_secs(60),
                jitter: 0.2,
                reset_after: Duration::ZERO,
            },
            stop_timeout: Duration::from_secs(10),
            stop_hook_timeout: Duration::from_secs(5),
            removal_timeout: Duration::from_secs(5),
            inspect_timeout: Duration::from_secs(5),
            starting_report_interval: Duration::from_millis(100),
            store: None,
            #[cfg(feature = "cluster")]
            cluster: None,
        }
    }
}

impl TreeConfig {
    /// Keeps the tree in `store`: every node's identity, desired and
    /// observed documents and actions, and the root spec, written off the
    /// tick by one store actor per tree (see `docs/persistence.md`).
    ///
    /// ```
    /// use fsm_actors::TreeConfig;
    /// use fsm_core::store::MemoryStore;
    ///
    /// let config = TreeConfig::default().with_store(MemoryStore::new());
    /// assert!(config.store.is_some());
    /// ```
    #[must_use]
    pub fn with_store(mut self, store: impl fsm_core::store::Store + Send + 'static) -> Self {
        self.store = Some(crate::store::TreeStore::new(store));
        self
    }
}

/// One `with_*` builder method per field of the config struct.
macro_rules! builders {
    ($config:ident { $($(#[$doc:meta])* $with:ident => $field:ident: $ty:ty,)* }) => {
        impl $config {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $with(mut self, $field: $ty) -> Self {
                    self.$field = $field;
                    self
                }
            )*
        }
    };
}

builders!(TreeConfig {
    /// Sets [`tick_interval`](Self::tick_interval).
    with_tick_interval => tick_interval: Option<Duration>,
    /// Sets [`observation_timeout`](Self::observation_timeout).
    with_observation_timeout => observation_timeout: Duration,
    /// Sets [`stale_after`](Self::stale_after).
    with_stale_after => stale_after: Duration,
    /// Sets [`collector_restart_after`](Self::collector_restart_after).
    with_collector_restart_after => collector_restart_after: Duration,
    /// Sets [`supervision`](Self::supervision).
    with_supervision => supervision: Supervision,
    /// Sets [`recovery_heartbeat`](Self::recovery_heartbeat).
    with_recovery_heartbeat => recovery_heartbeat: Duration,
    /// Sets [`globals`](Self::globals).
    with_globals => globals: fsm_core::Map,
    /// Sets [`meter`](Self::meter) (from
    /// [`fsm_actors::opentelemetry`](crate::opentelemetry)).
    with_meter => meter: Option<opentelemetry::metrics::Meter>,
    /// Sets [`per_node_metrics`](Self::per_node_metrics).
    with_per_node_metrics => per_node_metrics: bool,
    /// Sets [`seed`](Self::seed).
    with_seed => seed: u64,
    /// Sets [`executor`](Self::executor).
    with_executor => executor: ExecutorConfig,
    /// Sets [`action_backoff`](Self::action_backoff).
    with_action_backoff => action_backoff: fsm_core::Backoff,
    /// Sets [`stop_timeout`](Self::stop_timeout).
    with_stop_timeout => stop_timeout: Duration,
    /// Sets [`removal_timeout`](Self::removal_timeout).
    with_removal_timeout => removal_timeout: Duration,
    /// Sets [`stop_hook_timeout`](Self::stop_hook_timeout).
    with_stop_hook_timeout => stop_hook_timeout: Duration,
    /// Sets [`inspect_timeout`](Self::inspect_timeout).
    with_inspect_timeout => inspect_timeout: Duration,
    /// Sets [`starting_report_interval`](Self::starting_report_interval).
    with_starting_report_interval => starting_report_interval: Duration,
});

/// The pooled action executor of a tree.
///
/// ```
/// use std::time::Duration;
/// use fsm_actors::ExecutorConfig;
///
/// let executor = ExecutorConfig::default()
///     .with_concurrency(64)
///     .with_default_timeout(Duration::from_secs(10));
/// assert_eq!(executor.queue_capacity, 4096);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ExecutorConfig {
    /// How many actions run at once. Default: 16.
    pub concurrency: usize,
    /// How many actions may wait; beyond it, an action is rejected.
    /// Default: 4,096.
    pub queue_capacity: usize,
    /// The timeout of an action that sets none itself. Default: 30 s.
    pub default_timeout: Duration,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            queue_capacity: 4096,
            default_timeout: Duration::from_secs(30),
        }
    }
}

builders!(ExecutorConfig {
    /// Sets [`concurrency`](Self::concurrency).
    with_concurrency => concurrency: usize,
    /// Sets [`queue_capacity`](Self::queue_capacity).
    with_queue_capacity => queue_capacity: usize,
    /// Sets [`default_timeout`](Self::default_timeout).
    with_default_timeout => default_timeout: Duration,
});

/// A [`TreeConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A duration that must be positive is zero.
    #[error("`{field}` is zero; it must be a positive duration")]
    ZeroDuration {
        /// The field.
        field: &'static str,
    },
    /// The stale threshold does not exceed the observation timeout.
    #[error(
        "`stale_after` ({stale_after:?}) must be longer than `observation_timeout` ({observation_timeout:?}), or every slow observation would mark the node stale"
    )]
    StaleBeforeTimeout {
        /// The stale threshold.
        stale_after: Duration,
        /// The observation timeout.
        observation_timeout: Duration,
    },
    /// The collector restart threshold does not exceed the stale threshold.
    #[error(
        "`collector_restart_after` ({collector_restart_after:?}) must be longer than `stale_after` ({stale_after:?}): a node goes stale before its collector is restarted"
    )]
    RestartBeforeStale {
        /// The collector restart threshold.
        collector_restart_after: Duration,
        /// The stale threshold.
        stale_after: Duration,
    },
    /// The backoff's jitter is negative or not a number.
    #[error("`supervision.backoff.jitter` is {0}; it must be a number of at least 0")]
    BadJitter(String),
    /// The executor runs nothing.
    #[error("`executor.concurrency` is zero; at least one action must be able to run")]
    NoConcurrency,
    /// A worker type's observation interval is zero.
    #[error(
        "the observation interval of worker type `{worker_type}` is zero; give it a positive duration, or remove it to observe on every tick"
    )]
    ZeroObservationInterval {
        /// The worker type.
        worker_type: String,
    },
}

impl TreeConfig {
    /// Observes nodes of `worker_type` only every `interval`, not on every
    /// tick: a node of that type starts a collect only once `interval` has
    /// passed since its last collect started (and at once when an action
    /// of it ends), and its observation counts as stale only once older
    /// than `interval + stale_after` (its collector as hung only past
    /// `interval + collector_restart_after`). For workers whose collect is
    /// costly or whose world changes slowly.
    ///
    /// ```
    /// use std::time::Duration;
    /// use fsm_actors::TreeConfig;
    ///
    /// let config = TreeConfig::default()
    ///     .with_observation_interval("inventory", Duration::from_secs(60));
    /// config.validate()?;
    /// # Ok::<(), fsm_actors::ConfigError>(())
    /// ```
    #[must_use]
    pub fn with_observation_interval(
        mut self,
        worker_type: impl Into<String>,
        interval: Duration,
    ) -> Self {
        self.observation_intervals
            .insert(worker_type.into(), interval);
        self
    }

    /// Checks that the settings can work together.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field and what to change.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("observation_timeout", self.observation_timeout),
            ("stale_after", self.stale_after),
            ("stop_timeout", self.stop_timeout),
            ("stop_hook_timeout", self.stop_hook_timeout),
            ("inspect_timeout", self.inspect_timeout),
            ("collector_restart_after", self.collector_restart_after),
            ("recovery_heartbeat", self.recovery_heartbeat),
            (
                "supervision.intensity.period",
                self.supervision.intensity.period,
            ),
            ("executor.default_timeout", self.executor.default_timeout),
        ];
        for (field, d) in positive {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration { field });
            }
        }
        if self.tick_interval.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::ZeroDuration {
                field: "tick_interval",
            });
        }
        if self.stale_after <= self.observation_timeout {
            return Err(ConfigError::StaleBeforeTimeout {
                stale_after: self.stale_after,
                observation_timeout: self.observation_timeout,
            });
        }
        if self.collector_restart_after <= self.stale_after {
            return Err(ConfigError::RestartBeforeStale {
                collector_restart_after: self.collector_restart_after,
                stale_after: self.stale_after,
            });
        }
        let jitter = self.supervision.backoff.jitter;
        if !jitter.is_finite() || jitter < 0.0 {
            return Err(ConfigError::BadJitter(jitter.to_string()));
        }
        if self.executor.concurrency == 0 {
            return Err(ConfigError::NoConcurrency);
        }
        if let Some((worker_type, _)) = self
            .observation_intervals
            .iter()
            .find(|(_, interval)| interval.is_zero())
        {
            return Err(ConfigError::ZeroObservationInterval {
                worker_type: worker_type.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each builder sets its own field and no other: a builder that
    /// wrote the wrong field would show up as a difference here.
    #[test]
    fn every_builder_sets_its_own_field() {
        let d = TreeConfig::default();
        let c = TreeConfig::default()
            .with_tick_interval(None)
            .with_observation_timeout(Duration::from_millis(1))
            .with_stale_after(Duration::from_millis(2))
            .with_collector_restart_after(Duration::from_millis(3))
            .with_supervision(Supervision::new(fsm_core::Strategy::OneForAll))
            .with_recovery_heartbeat(Duration::from_millis(4))
            .with_globals(fsm_core::Map::from([(
                "site".to_owned(),
                fsm_core::Value::from("plant-a"),
            )]))
            .with_per_node_metrics(true)
            .with_seed(7)
            .with_executor(
                ExecutorConfig::default()
                    .with_concurrency(1)
                    .with_queue_capacity(2)
                    .with_default_timeout(Duration::from_millis(5)),
            )
            .with_action_backoff(fsm_core::Backoff {
                base: Duration::from_millis(6),
                ..fsm_core::Backoff::default()
            })
            .with_stop_timeout(Duration::from_millis(7))
            .with_removal_timeout(Duration::from_millis(8))
            .with_stop_hook_timeout(Duration::from_millis(9))
            .with_inspect_timeout(Duration::from_millis(10))
            .with_starting_report_interval(Duration::from_millis(11));
        assert_eq!(c.tick_interval, None);
        assert_ne!(d.tick_interval, None);
        assert_eq!(c.observation_timeout, Duration::from_millis(1));
        assert_eq!(c.stale_after, Duration::from_millis(2));
        assert_eq!(c.collector_restart_after, Duration::from_millis(3));
        assert_eq!(c.supervision.strategy, fsm_core::Strategy::OneForAll);
        assert_ne!(d.supervision.strategy, fsm_core::Strategy::OneForAll);
        assert_eq!(c.recovery_heartbeat, Duration::from_millis(4));
        assert_eq!(
            c.globals.get("site"),
            Some(&fsm_core::Value::from("plant-a"))
        );
        assert!(c.per_node_metrics && !d.per_node_metrics);
        assert_eq!(c.seed, 7);
        assert_eq!(c.executor.concurrency, 1);
        assert_eq!(c.executor.queue_capacity, 2);
        assert_eq!(c.executor.default_timeout, Duration::from_millis(5));
        assert_eq!(c.action_backoff.base, Duration::from_millis(6));
        assert_eq!(c.stop_timeout, Duration::from_millis(7));
        assert_eq!(c.removal_timeout, Duration::from_millis(8));
        assert_eq!(c.stop_hook_timeout, Duration::from_millis(9));
        assert_eq!(c.inspect_timeout, Duration::from_millis(10));
        assert_eq!(c.starting_report_interval, Duration::from_millis(11));
        assert!(c.meter.is_none());
        let meter = crate::opentelemetry::global::meter("config-test");
        assert!(
            TreeConfig::default()
                .with_meter(Some(meter))
                .meter
                .is_some()
        );
    }

    #[test]
    fn a_config_prints_with_debug() {
        let printed = format!("{:?}", TreeConfig::default().with_seed(42));
        assert!(printed.contains("seed: 42"), "{printed}");
    }

    #[test]
    fn a_zero_observation_interval_is_refused_naming_the_worker_type() {
        let c = TreeConfig::default()
            .with_observation_interval("fast", Duration::from_secs(1))
            .with_observation_interval("inventory", Duration::ZERO);
        let e = c.validate().unwrap_err();
        assert_eq!(
            e,
            ConfigError::ZeroObservationInterval {
                worker_type: "inventory".into()
            }
        );
        assert!(e.to_string().contains("`inventory`"), "{e}");
        let c = TreeConfig::default().with_observation_interval("fast", Duration::from_secs(1));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn default_is_valid() {
        assert_eq!(TreeConfig::default().validate(), Ok(()));
    }

    #[test]
    fn stale_threshold_must_exceed_observation_timeout() {
        let c = TreeConfig {
            stale_after: TreeConfig::default().observation_timeout,
            ..TreeConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::StaleBeforeTimeout { .. })
        ));
    }

    #[test]
    fn collector_restart_must_come_after_staleness() {
        let c = TreeConfig {
            collector_restart_after: TreeConfig::default().stale_after,
            ..TreeConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::RestartBeforeStale { .. })
        ));
    }

    #[test]
    fn zero_durations_and_concurrency_are_refused() {
        let c = TreeConfig {
            tick_interval: Some(Duration::ZERO),
            ..TreeConfig::default()
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroDuration {
                field: "tick_interval"
            })
        );
        let mut c = TreeConfig::default();
        c.executor.concurrency = 0;
        assert_eq!(c.validate(), Err(ConfigError::NoConcurrency));
    }
}
