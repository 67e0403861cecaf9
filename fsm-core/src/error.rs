//! Errors of the pure model. Each says what went wrong, where (the node
//! path), and what to do about it.

use std::fmt;

use crate::path::NodePath;
use crate::worker::BoxError;

/// Registering a worker type failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The type is registered already.
    #[error(
        "worker type `{worker_type}` is registered twice; register each type once, or pick another name"
    )]
    DuplicateWorkerType {
        /// The type registered twice.
        worker_type: String,
    },
    /// The type name is empty.
    #[error("a worker type name may not be empty")]
    EmptyWorkerType,
}

/// A node's spec could not be turned into a running worker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// No worker type of that name is registered.
    #[error(
        "node `{path}`: unknown worker type `{worker_type}`; registered types are [{}]. Register the type or fix the spec",
        known.join(", ")
    )]
    UnknownWorkerType {
        /// The node that asked for it.
        path: NodePath,
        /// The unknown type.
        worker_type: String,
        /// The registered types, sorted.
        known: Vec<String>,
    },
    /// The user spec does not decode into the worker's typed spec.
    #[error(
        "node `{path}`: user spec does not decode into the spec of worker type `{worker_type}`: {message}; fix the spec"
    )]
    Undecodable {
        /// The node whose spec is bad.
        path: NodePath,
        /// The worker type whose `Spec` it should decode into.
        worker_type: String,
        /// serde's message.
        message: String,
    },
    /// A state named for the node (its desired state, or a parent's state
    /// mapping for it) is not a state of its worker type.
    #[error(
        "node `{path}`: {what} \"{state}\" is not a state of worker type \"{worker_type}\" (its states: {}); fix the {what}",
        known.join(", ")
    )]
    UnknownState {
        /// The node the state is meant for.
        path: NodePath,
        /// Its worker type.
        worker_type: String,
        /// Where the state was named: `desired state`, or `state mapping
        /// for parent state "..."`.
        what: String,
        /// The unknown state.
        state: String,
        /// The worker type's states ([`StateNames::NAMES`](crate::StateNames::NAMES)).
        known: Vec<String>,
    },
    /// The registered constructor panicked.
    #[error("node `{path}`: the constructor of worker type `{worker_type}` panicked: {message}")]
    ConstructorPanicked {
        /// The node being created.
        path: NodePath,
        /// The worker type.
        worker_type: String,
        /// The panic message.
        message: String,
    },
    /// The constructor registered with
    /// [`WorkerRegistry::try_register`](crate::WorkerRegistry::try_register)
    /// returned an error.
    #[error(
        "node `{path}`: the constructor of worker type `{worker_type}` failed: {message}; the node counts as failed to start and its parent's restart policy applies"
    )]
    ConstructorFailed {
        /// The node being created.
        path: NodePath,
        /// The worker type.
        worker_type: String,
        /// The constructor's error message.
        message: String,
    },
}

impl SpecError {
    /// The error for a state `state`, named in `what` (`"desired state"`),
    /// that worker type `worker_type` (whose states are `known`) does not
    /// have.
    #[must_use]
    pub fn unknown_state(
        path: NodePath,
        worker_type: &str,
        what: impl Into<String>,
        state: &str,
        known: &[&str],
    ) -> Self {
        Self::UnknownState {
            path,
            worker_type: worker_type.to_owned(),
            what: what.into(),
            state: state.to_owned(),
            known: known.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// The path of the node the error is about.
    #[must_use]
    pub fn path(&self) -> &NodePath {
        match self {
            Self::UnknownWorkerType { path, .. }
            | Self::Undecodable { path, .. }
            | Self::UnknownState { path, .. }
            | Self::ConstructorPanicked { path, .. }
            | Self::ConstructorFailed { path, .. } => path,
        }
    }
}

/// A spec that decodes but makes no sense (a port of 0, an empty address):
/// return it from [`Worker::derive_desired`](crate::Worker::derive_desired)
/// to mark the node unhealthy with this message, keep its last good desired
/// state, and wait for a corrected spec. Any other error from
/// `derive_desired` is a failure and restarts the node, like a panic.
///
/// # Examples
///
/// ```
/// use fsm_core::{BoxError, InvalidSpec};
///
/// fn check(port: u16) -> Result<(), BoxError> {
///     if port == 0 {
///         return Err(InvalidSpec::new("port must not be 0").into());
///     }
///     Ok(())
/// }
/// assert!(check(0).unwrap_err().downcast_ref::<InvalidSpec>().is_some());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid spec: {0}")]
pub struct InvalidSpec(pub String);

impl InvalidSpec {
    /// An invalid-spec error with this explanation.
    #[must_use]
    pub fn new(why: impl Into<String>) -> Self {
        Self(why.into())
    }
}

/// Supervision settings that make no sense. (Settings that are merely
/// large are not errors: waits saturate.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisionError {
    /// The backoff's jitter is negative, infinite or not a number.
    #[error(
        "`backoff.jitter` is {jitter}; it must be a number of at least 0 (the fraction of each wait added at random)"
    )]
    BadJitter {
        /// The value, as written.
        jitter: String,
    },
    /// The restart-intensity period is zero.
    #[error(
        "`intensity.period` is zero, so no restart would ever count towards the limit; give a period of at least 1 ms"
    )]
    ZeroPeriod,
}

/// Which user callback failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Callback {
    /// [`Worker::collect`](crate::Worker::collect).
    Collect,
    /// [`Worker::derive_desired`](crate::Worker::derive_desired).
    DeriveDesired,
    /// [`State::next`](crate::State::next).
    Next,
}

impl fmt::Display for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Collect => "collect",
            Self::DeriveDesired => "derive_desired",
            Self::Next => "next",
        })
    }
}

/// A user callback returned an error or panicked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallbackError {
    /// The callback returned `Err`.
    #[error("{callback} failed: {source}")]
    Failed {
        /// Which callback.
        callback: Callback,
        /// What it returned.
        #[source]
        source: BoxError,
    },
    /// The callback panicked.
    #[error("{callback} panicked: {message}")]
    Panicked {
        /// Which callback.
        callback: Callback,
        /// The panic message.
        message: String,
    },
}

impl CallbackError {
    /// Which callback failed.
    #[must_use]
    pub fn callback(&self) -> Callback {
        match self {
            Self::Failed { callback, .. } | Self::Panicked { callback, .. } => *callback,
        }
    }

    /// Whether the callback panicked (as opposed to returning an error).
    #[must_use]
    pub fn is_panic(&self) -> bool {
        matches!(self, Self::Panicked { .. })
    }

    /// Whether the callback reported an [`InvalidSpec`]: a configuration
    /// problem that restarting cannot fix. The error need not be the
    /// `InvalidSpec` itself: one that wraps it (adding context, with the
    /// `InvalidSpec` as its [`source`](std::error::Error::source), however
    /// deep) counts too.
    #[must_use]
    pub fn is_invalid_spec(&self) -> bool {
        let Self::Failed { source, .. } = self else {
            return false;
        };
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
        while let Some(error) = next {
            if error.is::<InvalidSpec>() {
                return true;
            }
            next = error.source();
        }
        false
    }
}

/// Turns a panic payload into its message.
#[must_use]
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// One problem in a node's declared children.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeclarationProblem {
    /// A child has an empty name.
    #[error(
        "child #{index} (worker type `{worker_type}`) has an empty name; give every child a name"
    )]
    EmptyName {
        /// Its position among the declared children.
        index: usize,
        /// Its worker type.
        worker_type: String,
    },
    /// A child's name contains the path separator.
    #[error("child name `{name}` contains `/`, which separates path segments; rename it")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// Two children share a name.
    #[error(
        "child name `{name}` is declared twice (#{first} and #{second}); names must be unique among siblings"
    )]
    DuplicateName {
        /// The name.
        name: String,
        /// Position of the first declaration.
        first: usize,
        /// Position of the second.
        second: usize,
    },
    /// A child's spec cannot become a worker (unknown type, undecodable spec).
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A name is declared both by the spec (`derive_desired`) and by the
    /// worker's state (`Transition::with_children`).
    #[error(
        "child name `{name}` is declared both by derive_desired (#{derived_index}) and from the worker's state by Transition::with_children (#{state_index}); names must be unique among siblings, rename one"
    )]
    DeclaredByBoth {
        /// The name.
        name: String,
        /// Its position among the derived children.
        derived_index: usize,
        /// Its position among the children declared from state.
        state_index: usize,
    },
}

/// A node's declared children are invalid. Nothing was changed: the running
/// children keep running, and the node reports this error until the
/// declaration is fixed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DeclarationError {
    /// The node whose declaration is invalid.
    pub path: NodePath,
    /// Every problem found (not just the first).
    pub problems: Vec<DeclarationProblem>,
}

impl fmt::Display for DeclarationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node `{}` declares invalid children ({} problem{}); the running children were left as they are: ",
            self.path,
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Encoding or decoding bytes failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("could not encode {what}: {message}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's message.
        message: String,
    },
    /// The bytes are not a valid encoding.
    #[error(
        "could not decode {what} from {len} bytes: {message}; the bytes are corrupt, truncated or from an incompatible version"
    )]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// How many bytes were given.
        len: usize,
        /// The decoder's message.
        message: String,
    },
    /// The bytes were decoded but some were left over.
    #[error(
        "decoded {what} but {trailing} trailing bytes remain; the input is not a single encoded value"
    )]
    TrailingBytes {
        /// What was decoded.
        what: &'static str,
        /// How many bytes were left.
        trailing: usize,
    },
    /// The format version in the header is not one this build reads.
    #[error("{what} is in format version {found}, this build reads version {expected}")]
    Version {
        /// What was being decoded.
        what: &'static str,
        /// The version found.
        found: u8,
        /// The version expected.
        expected: u8,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that adds context to another, as `anyhow`'s `context` or a
    /// hand-written wrapper does.
    #[derive(Debug, thiserror::Error)]
    #[error("while reading the pump table: {source}")]
    struct Context {
        source: BoxError,
    }

    fn failed(source: BoxError) -> CallbackError {
        CallbackError::Failed {
            callback: Callback::DeriveDesired,
            source,
        }
    }

    #[test]
    fn an_invalid_spec_wrapped_in_other_errors_is_still_a_configuration_error() {
        let invalid = || -> BoxError { InvalidSpec::new("port must not be 0").into() };
        assert!(failed(invalid()).is_invalid_spec());
        let once = Context { source: invalid() };
        assert!(failed(once.into()).is_invalid_spec());
        let twice = Context {
            source: Context { source: invalid() }.into(),
        };
        let err = failed(twice.into());
        assert!(err.is_invalid_spec());
        assert!(err.to_string().contains("port must not be 0"), "{err}");
        // Anything else is a failure.
        assert!(!failed("disk full".into()).is_invalid_spec());
        assert!(
            !failed(
                Context {
                    source: "disk full".into()
                }
                .into()
            )
            .is_invalid_spec()
        );
        let panicked = CallbackError::Panicked {
            callback: Callback::DeriveDesired,
            message: "invalid spec".into(),
        };
        assert!(!panicked.is_invalid_spec());
    }
}
