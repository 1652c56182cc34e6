//! Heavy reads: listings (`?recurse`, `?keys`), `KEYS` and `SCAN` walk a view of the
//! keyspace on a blocking thread. At most one per core but one runs at once; the others
//! wait their turn without holding a thread. Fifty `KEYS *` on a large keyspace would
//! otherwise take fifty threads and every core, and the consensus thread, starved of CPU,
//! would miss its heartbeats: followers would elect a new leader, again and again.

use std::sync::LazyLock;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Heavy reads running at once, in this process.
static SLOTS: LazyLock<std::sync::Arc<Semaphore>> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    std::sync::Arc::new(Semaphore::new(cores.saturating_sub(1).max(1)))
});

/// Waits for a turn to run a heavy read; the turn ends when the permit is dropped. Take it
/// before the view, so that a read waiting its turn pins no old copy of the keyspace.
pub(crate) async fn turn() -> OwnedSemaphorePermit {
    match std::sync::Arc::clone(&SLOTS).acquire_owned().await {
        Ok(permit) => permit,
        // The semaphore is never closed.
        Err(_) => unreachable!("the heavy-read semaphore is never closed"),
    }
}
