//! Links into `docs/runbook.md`, carried by the errors and warnings that
//! need an operator.

/// A supervisor exceeded its restart intensity and escalated.
pub(crate) const INTENSITY: &str = "docs/runbook.md#restart-intensity-exceeded";
