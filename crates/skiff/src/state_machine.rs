//! The application's state machine: what Skiff replicates.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;

use serde::Serialize;
use serde::de::DeserializeOwned;
use skiff_raft::Index;

/// The state an application replicates with Skiff. Every node holds a copy; Skiff feeds
/// each copy the same commands in the same order.
///
/// The contract (break it and the copies diverge, silently):
/// - **`apply` is deterministic.** Its output and the new state depend only on the state and
///   the command: no clocks, no randomness, no reading files or the network, no iteration
///   over a `HashMap`'s order. Anything nondeterministic must be decided by the proposer and
///   put into the command.
/// - **`apply` never fails for a committed command.** A command is committed before it is
///   applied, on every node; there is no going back. A command that is invalid for the
///   current state must be applied as a no-op that returns an error *value* in `Output`.
/// - **Commands are applied exactly once, in index order**, each with the log index it has
///   (use it as a revision). After a restart, the state machine is restored from the last
///   snapshot and the commands after it are applied again: a state machine that keeps state
///   outside `snapshot` must be idempotent by index.
/// - **`snapshot` captures exactly the state after the last applied index**, and
///   `restore(snapshot)` recreates it exactly, on any node.
pub trait StateMachine: Send + 'static {
    /// What a proposal carries.
    type Command: Serialize + DeserializeOwned + Send + 'static;
    /// What applying a command returns to its proposer (possibly on another node).
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Applies a committed command at log `index`.
    fn apply(&mut self, index: Index, command: Self::Command) -> Self::Output;

    /// Writes the whole state to `out`.
    fn snapshot(&self, out: &mut dyn Write) -> std::io::Result<()>;

    /// Replaces the whole state by the one `snapshot` wrote.
    fn restore(&mut self, snapshot: &mut dyn Read) -> std::io::Result<()>;

    /// A writer of the state as it is now, that may run later on another thread while
    /// `apply` goes on: what `snapshot` would write now, byte for byte, so that a snapshot
    /// need not stop writes. `None` (the default) when the state machine cannot provide one
    /// cheaply (a copy-on-write view, for instance); then `snapshot` runs in place.
    #[allow(clippy::type_complexity)]
    fn snapshot_view(&self) -> Option<Box<dyn FnOnce(&mut dyn Write) -> std::io::Result<()> + Send>> {
        None
    }

    /// What the leader does to a command a follower forwarded, before proposing it: fills
    /// in what only the leader knows. The KV store stamps the command with the leader's
    /// reading of its cluster clock, so that a follower whose reading lags (one that just
    /// restarted reads the clock from the entries it replayed) cannot give a TTL an old
    /// start. Asked once, when the node starts; the hook runs on the driver for every
    /// forwarded command, so it must be quick and must not block. `None` (the default):
    /// forwarded commands are proposed as they came.
    fn forwarded_hook(&self) -> Option<ForwardedHook<Self::Command>> {
        None
    }
}

/// See [`StateMachine::forwarded_hook`].
pub type ForwardedHook<C> = Arc<dyn Fn(&mut C) + Send + Sync>;

/// What a leader does with an encoded command a follower forwarded, given its state
/// machine's [`StateMachine::forwarded_hook`]: decodes it, runs the hook, and encodes it
/// again. One that does not decode goes on as it came (the apply thread answers it with the
/// decoding error, as it would have). Public so that a state machine's benchmark measures
/// the very work its hook adds to a forwarded write (`crates/kv/benches/state.rs`).
pub fn run_forwarded_hook<C: Serialize + DeserializeOwned>(hook: &ForwardedHook<C>, command: &Bytes) -> Bytes {
    let Ok(mut decoded) = postcard::from_bytes::<C>(command) else { return command.clone() };
    hook(&mut decoded);
    // Sized for the command as it came (a hook changes little): no regrowing.
    let buffer = Vec::with_capacity(command.len() + 16);
    postcard::to_extend(&decoded, buffer).map_or_else(|_| command.clone(), Bytes::from)
}
