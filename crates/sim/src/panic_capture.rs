//! Panics from the core (its always-on assertions) are caught per event and reported as
//! violations. While a simulation runs on a thread, the panic hook records the message and
//! location instead of printing them, so a sweep's output stays one line per failing seed;
//! panics on other threads (a test's own assertions) still print as usual.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic;
use std::sync::Once;

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static INSTALL: Once = Once::new();

/// Silences panics on this thread until the guard is dropped.
pub struct QuietGuard {
    was_quiet: bool,
}

impl Drop for QuietGuard {
    fn drop(&mut self) {
        QUIET.with(|quiet| quiet.set(self.was_quiet));
    }
}

pub fn quiet() -> QuietGuard {
    INSTALL.call_once(|| {
        let default_hook = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                LAST_PANIC.with(|last| *last.borrow_mut() = Some(info.to_string()));
            } else {
                default_hook(info);
            }
        }));
    });
    QuietGuard { was_quiet: QUIET.with(|quiet| quiet.replace(true)) }
}

/// The message (with its location) of the panic whose payload is `payload`.
pub fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(recorded) = LAST_PANIC.with(|last| last.borrow_mut().take()) {
        return recorded;
    }
    if let Some(text) = payload.downcast_ref::<&str>() {
        return (*text).to_string();
    }
    payload.downcast_ref::<String>().cloned().unwrap_or_else(|| "a panic with no message".to_string())
}
