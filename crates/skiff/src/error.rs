//! Errors a [`crate::Node`] returns.

use skiff_raft::NodeId;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// No leader is known right now (an election is under way, or no quorum).
    #[error("no leader is known (an election may be under way, or a majority is unreachable); retry shortly")]
    NoLeader,
    /// The request did not complete in time. A write may still commit.
    #[error("timed out after {0:?}; a write may still commit")]
    Timeout(std::time::Duration),
    /// Leadership changed before the request completed; it may be retried.
    #[error("leadership changed before the request completed; retry")]
    LeadershipLost,
    /// The leader changed while a forwarded request was in flight: it may or may not have
    /// been applied. Not safe to retry blindly.
    #[error("the leader changed while the request was in flight; it may or may not have been applied")]
    OutcomeUnknown,
    /// The consensus core refused the request.
    #[error(transparent)]
    Raft(#[from] skiff_raft::Error),
    /// The leader refused a forwarded request.
    #[error("the leader {leader} refused the request: {message}")]
    Remote { leader: NodeId, message: String },
    /// A command or output could not be encoded or decoded.
    #[error("could not encode or decode a command or its output: {0}")]
    Codec(String),
    /// The node stopped (shut down, or a storage failure stopped it).
    #[error("the node has stopped: {0}")]
    Stopped(String),
    #[error("{0}")]
    Config(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("transport: {0}")]
    Transport(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
