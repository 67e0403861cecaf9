//! The names of a state machine's states, and [`states!`](crate::states),
//! which writes them for an enum so that no one maintains a `match` of
//! names by hand.

/// The names of a state machine's states: what snapshots show and what a
/// desired state or a state mapping is compared with.
///
/// Write it with [`states!`](crate::states) (the names are the variants'
/// names in `snake_case`), or by hand when the names must differ from the
/// variants'.
///
/// # Examples
///
/// By hand:
///
/// ```
/// use fsm_core::StateNames;
///
/// #[derive(Clone, Debug)]
/// enum Valve { Shut, Open }
///
/// impl StateNames for Valve {
///     const NAMES: &'static [&'static str] = &["shut", "open"];
///
///     fn name(&self) -> &'static str {
///         match self { Valve::Shut => "shut", Valve::Open => "open" }
///     }
/// }
///
/// assert_eq!(Valve::Open.name(), "open");
/// ```
pub trait StateNames {
    /// Every name [`name`](StateNames::name) can return, in any order. The
    /// framework refuses a desired state or a state mapping that names none
    /// of them, as a configuration error.
    const NAMES: &'static [&'static str];

    /// The state's name, as it appears in snapshots and is compared with the
    /// desired state (`"running"`, `"stopped"`, ...).
    fn name(&self) -> &'static str;
}

/// `name` as the static name among `names` that equals it, or owned if
/// none does: a state name kept or sent without allocating, whatever named
/// it.
///
/// # Examples
///
/// ```
/// use std::borrow::Cow;
///
/// let names: &'static [&'static str] = &["stopped", "running"];
/// assert!(matches!(fsm_core::runtime::known_state(names, "running"), Cow::Borrowed("running")));
/// assert!(matches!(fsm_core::runtime::known_state(names, "paused"), Cow::Owned(_)));
/// ```
#[must_use]
pub fn known_state(names: &'static [&'static str], name: &str) -> std::borrow::Cow<'static, str> {
    names.iter().find(|known| **known == name).map_or_else(
        || std::borrow::Cow::Owned(name.to_owned()),
        |known| std::borrow::Cow::Borrowed(*known),
    )
}

/// Declares a state enum and its [`StateNames`]: each variant's name is the
/// variant in `snake_case` (`WaitingForAuth` → `"waiting_for_auth"`).
/// Variants may carry data, as tuple or struct variants; attributes and doc
/// comments are kept.
///
/// # Examples
///
/// ```
/// use fsm_core::StateNames;
///
/// fsm_core::states! {
///     /// The states of a pump.
///     #[derive(Clone, Debug, PartialEq)]
///     pub enum PumpState {
///         Stopped,
///         Starting { attempt: u32 },
///         Running,
///         WaitingForPressure(u16),
///     }
/// }
///
/// assert_eq!(PumpState::NAMES, ["stopped", "starting", "running", "waiting_for_pressure"]);
/// assert_eq!(PumpState::Starting { attempt: 2 }.name(), "starting");
/// assert_eq!(PumpState::WaitingForPressure(3).name(), "waiting_for_pressure");
/// ```
///
/// The state machine itself is then an `impl State<MyWorker> for PumpState`
/// with only [`next`](crate::State::next) in it.
#[macro_export]
macro_rules! states {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident
                $( ( $( $(#[$tmeta:meta])* $tty:ty ),* $(,)? ) )?
                $( { $( $(#[$fmeta:meta])* $field:ident : $fty:ty ),* $(,)? } )?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $(
                $(#[$vmeta])*
                $variant
                $( ( $( $(#[$tmeta])* $tty ),* ) )?
                $( { $( $(#[$fmeta])* $field : $fty ),* } )?
            ),*
        }

        impl $crate::StateNames for $name {
            const NAMES: &'static [&'static str] = &[$($crate::__state_name!($variant)),*];

            fn name(&self) -> &'static str {
                match self {
                    $(Self::$variant { .. } => $crate::__state_name!($variant),)*
                }
            }
        }
    };
}

/// The `snake_case` name of a variant, computed at compile time.
#[doc(hidden)]
#[macro_export]
macro_rules! __state_name {
    ($variant:ident) => {{
        const LEN: usize = $crate::__private::snake_case_len(stringify!($variant));
        const BYTES: [u8; LEN] = $crate::__private::snake_case(stringify!($variant));
        const NAME: &str = match ::core::str::from_utf8(&BYTES) {
            Ok(name) => name,
            Err(_) => panic!("a state name is not UTF-8"),
        };
        NAME
    }};
}

/// Whether an underscore goes before byte `i` of an identifier turned into
/// `snake_case`: at a word start (`aB`, `1B`), and before the last capital of
/// an acronym that starts a word (`HTTPError` → `http_error`).
const fn underscore_before(s: &[u8], i: usize) -> bool {
    if i == 0 || !s[i].is_ascii_uppercase() {
        return false;
    }
    let prev = s[i - 1];
    if prev == b'_' {
        return false;
    }
    if prev.is_ascii_lowercase() || prev.is_ascii_digit() {
        return true;
    }
    prev.is_ascii_uppercase() && i + 1 < s.len() && s[i + 1].is_ascii_lowercase()
}

/// The length of `ident` in `snake_case`.
#[doc(hidden)]
#[must_use]
pub const fn snake_case_len(ident: &str) -> usize {
    let s = ident.as_bytes();
    let mut len = s.len();
    let mut i = 0;
    while i < s.len() {
        if underscore_before(s, i) {
            len += 1;
        }
        i += 1;
    }
    len
}

/// `ident` in `snake_case`, as `N` bytes (`N` from [`snake_case_len`]).
#[doc(hidden)]
#[must_use]
pub const fn snake_case<const N: usize>(ident: &str) -> [u8; N] {
    let s = ident.as_bytes();
    let mut out = [0u8; N];
    let (mut i, mut o) = (0, 0);
    while i < s.len() {
        if underscore_before(s, i) {
            out[o] = b'_';
            o += 1;
        }
        out[o] = s[i].to_ascii_lowercase();
        o += 1;
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::StateNames;

    fn snake(ident: &str) -> String {
        let len = super::snake_case_len(ident);
        let bytes: [u8; 64] = super::snake_case(ident);
        String::from_utf8(bytes[..len].to_vec()).unwrap_or_default()
    }

    #[test]
    fn variant_names_become_snake_case() {
        assert_eq!(snake("Running"), "running");
        assert_eq!(snake("WaitingForAuth"), "waiting_for_auth");
        assert_eq!(snake("HTTPError"), "http_error");
        assert_eq!(snake("Retry2Times"), "retry2_times");
        assert_eq!(snake("Already_Snake"), "already_snake");
        assert_eq!(snake("A"), "a");
    }

    crate::states! {
        /// A state set with every variant shape.
        #[derive(Clone, Debug, PartialEq)]
        enum Shapes {
            /// A unit variant.
            Idle,
            Backoff { attempt: u32, reason: String },
            Degraded(u8),
        }
    }

    #[test]
    fn the_macro_names_every_variant_shape() {
        assert_eq!(Shapes::NAMES, ["idle", "backoff", "degraded"]);
        assert_eq!(Shapes::Idle.name(), "idle");
        let backoff = Shapes::Backoff {
            attempt: 1,
            reason: "x".into(),
        };
        assert_eq!(backoff.name(), "backoff");
        assert_eq!(Shapes::Degraded(2).name(), "degraded");
    }
}
