//! The leader's clock entries: what makes deadlines pass on the log (`state/coord.rs` has
//! the rule and the guarantee).
//!
//! Every node runs [`tick_as_leader`]; it acts only while its node is the leader. It proposes
//! an [`Op::Tick`] with its reading of the cluster clock when a key's or a lease's deadline
//! is due, and at least every [`REFRESH`] while any deadline exists, so that a restarted node,
//! which reads the clock from the entries it replays, is never far behind.

use std::sync::Arc;
use std::time::Duration;

use skiff::Node;

use crate::state::{Command, KvStore, Op};
use crate::watch::Published;

/// How often the leader looks for a due deadline: the most an expiry waits past its deadline
/// on top of a commit.
pub const CHECK_EVERY: Duration = Duration::from_millis(10);
/// The longest gap between clock entries while some deadline exists.
pub const REFRESH: Duration = Duration::from_secs(1);

/// Proposes clock entries while `node` leads; runs until the node stops.
pub async fn tick_as_leader(node: Arc<Node<KvStore>>, published: Arc<Published>) {
    let mut checks = tokio::time::interval(CHECK_EVERY);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        checks.tick().await;
        let leading = node.leader().leader == Some(node.id());
        published.set_leading(leading);
        if !leading {
            continue;
        }
        let Some(next) = published.next_deadline() else { continue };
        let now = published.now_ms();
        let stale = now.saturating_sub(published.clock_ms()) >= REFRESH.as_millis() as u64;
        if next > now && !stale {
            continue;
        }
        // One at a time: the next check comes after this entry applied (or failed).
        match node.propose(Command { request: None, op: Op::Tick { now_ms: now } }).await {
            Ok(_) => {}
            Err(skiff::Error::Stopped { .. } | skiff::Error::ApplyThreadStopped) => return,
            Err(error) => tracing::debug!(%error, "a clock entry was not committed"),
        }
    }
}
