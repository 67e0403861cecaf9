//! The contexts handed to a worker's callbacks.

use std::any::TypeId;

use fsm_core::{CollectContext, NodePath, StopContext};

#[derive(Debug, PartialEq)]
struct PumpSpec {
    port: u16,
}

#[test]
fn the_stop_hook_has_a_context_type_of_its_own() {
    assert_ne!(
        TypeId::of::<StopContext<'static, PumpSpec>>(),
        TypeId::of::<CollectContext<'static, PumpSpec>>(),
        "StopContext is still CollectContext under another name"
    );
    let path = NodePath::parse("plant/pump");
    let spec = PumpSpec { port: 502 };
    let fresh = StopContext::new(&path, &spec);
    assert_eq!((fresh.state(), fresh.desired()), ("", ""));
    let ctx = fresh.with_states("stopped", "stopped");
    assert_eq!(ctx.path(), &path);
    assert_eq!(ctx.spec(), &PumpSpec { port: 502 });
    assert_eq!((ctx.state(), ctx.desired()), ("stopped", "stopped"));
}
