//! Fault injection for chaos testing: see
//! [`Tree::inject_faults`](crate::Tree::inject_faults).

/// The end of the panic message of every injected fault.
pub(crate) const INJECTED_FAULT_MARKER: &str = "(injected fault)";

/// Installs a panic hook that turns injected faults into `debug` log events
/// instead of panic messages (and, with `RUST_BACKTRACE` set, backtraces,
/// which are slow to capture). Every other panic still goes to the hook that
/// was installed before. Call it once, before injecting faults.
pub fn quiet_injected_faults() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.ends_with(INJECTED_FAULT_MARKER) {
            tracing::debug!(panic = message, "injected fault");
        } else {
            previous(info);
        }
    }));
}
