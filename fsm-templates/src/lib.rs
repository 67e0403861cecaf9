//! What flows down an fsmv2-rs tree besides specs: variables, strict
//! templates and ISA-95 locations.
//!
//! * [`VariableBundle`]: three namespaces — `user` (defined in specs,
//!   inherited and overridden down the tree; top level in templates:
//!   `{{ IP }}`), `global` (fleet-wide, from the tree's configuration:
//!   `{{ global.api_endpoint }}`) and `internal` (runtime metadata: id, path,
//!   parent path, worker type, creation time, location path:
//!   `{{ internal.path }}`). `user` and `global` serialise; `internal` never
//!   does.
//! * [`Templates`]: strict rendering with [`upon`], compiled once per source
//!   and cached. A missing variable is an error that names the variable, the
//!   template and the node path — never an empty string, never a panic.
//! * [`Location`]: ISA-95 levels (enterprise, site, area, line, work cell,
//!   and deeper levels), merged parent → child, with a dotted path
//!   (`acme.plant-a.packaging.line-1`).

#![forbid(unsafe_code)]
#![warn(unnameable_types)]

mod bundle;
mod error;
mod location;
mod render;

pub use bundle::{InternalVars, RESERVED_NAMES, VariableBundle};
pub use error::{LocationError, RenderError, VariableError};
pub use location::{GAP, LEVEL_NAMES, Location, MAX_LEVELS};
pub use render::{CacheStats, SpecRenderer, Templates, has_template};
