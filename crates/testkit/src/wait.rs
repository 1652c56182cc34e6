//! Waiting for a condition that holds eventually: a leader elected, a write replicated, a
//! port released. Every wait has a deadline, and a failure names what was awaited (and,
//! for the `_ok` forms, the last thing seen instead).

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How long any awaited condition may take before the test fails. Generous: a loaded
/// machine runs many test clusters at once, and only a failing test ever waits this long.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// How often a condition is checked.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Blocks until `condition` holds; fails the test after [`TIMEOUT`], naming `what`.
pub fn eventually(what: impl Display, mut condition: impl FnMut() -> bool) {
    eventually_ok(what, || if condition() { Ok(()) } else { Err("not yet") });
}

/// Blocks until `attempt` succeeds and returns its value; fails the test after [`TIMEOUT`],
/// naming `what` and the last error.
pub fn eventually_ok<T, E: Display>(what: impl Display, mut attempt: impl FnMut() -> Result<T, E>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(error) if Instant::now() >= deadline => panic!("not within {TIMEOUT:?}: {what} (last: {error})"),
            Err(_) => std::thread::sleep(POLL_INTERVAL),
        }
    }
}

/// Waits (asynchronously) until `condition` holds; fails the test after [`TIMEOUT`],
/// naming `what`.
pub async fn eventually_async(what: impl Display, mut condition: impl AsyncFnMut() -> bool) {
    eventually_ok_async(what, async || if condition().await { Ok(()) } else { Err("not yet") }).await;
}

/// Waits (asynchronously) until `attempt` succeeds and returns its value; fails the test
/// after [`TIMEOUT`], naming `what` and the last error.
pub async fn eventually_ok_async<T, E: Display>(
    what: impl Display,
    mut attempt: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(error) if Instant::now() >= deadline => panic!("not within {TIMEOUT:?}: {what} (last: {error})"),
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}
