//! Errors a [`crate::Node`] returns.
//!
//! Each failure has one variant, whatever layer it came from: a storage failure is
//! [`Error::Storage`] whether the disk store, the core's `Storage` calls or the state
//! machine's snapshot reported it (the core's [`skiff_raft::Error::Storage`] is lifted into
//! it), and the typed cause stays its `source`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use skiff_raft::{Index, NodeId, StorageError};
use thiserror::Error;

use crate::config::ConfigError;

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
    /// The consensus core refused the request. Never [`skiff_raft::Error::Storage`]: a
    /// storage failure is [`Error::Storage`].
    #[error(transparent)]
    Raft(skiff_raft::Error),
    /// The leader refused a forwarded request: `message` is its error as text, `kind` what
    /// the leader's error was ([`Error::kind`] on the leader), so the caller here can tell
    /// a retry from a failure.
    #[error("the leader {leader} refused the request: {message}")]
    Remote { leader: NodeId, kind: ErrorKind, message: String },
    /// A command or output could not be encoded or decoded.
    #[error("could not encode or decode a command or its output: {0}")]
    Codec(#[from] postcard::Error),
    /// The node has more reads waiting for its state machine than it takes on
    /// ([`crate::NodeOptions`]'s `max_queued_reads`): refused at once, certainly not run.
    #[error("the node is overloaded: {waiting} reads already wait for its state machine; retry shortly")]
    Overloaded { waiting: usize },
    /// The node is paused ([`crate::Node::set_paused`]): it takes no requests until resumed.
    #[error("the node is paused (an experiment: resume it with DELETE /v1/skiff/pause); retry on another node")]
    Paused,
    /// The node stopped: shut down (no cause), or stopped by the failure `cause`.
    #[error("the node has stopped{}", stop_cause(.cause))]
    Stopped {
        #[source]
        cause: Option<Arc<Error>>,
    },
    /// The apply thread ended without saying why; the node stops.
    #[error("the apply thread stopped")]
    ApplyThreadStopped,
    /// The driver thread panicked (a bug in Skiff: its log has the panic); the node stopped.
    #[error("the consensus thread panicked (a bug: the log has its message)")]
    DriverPanicked,
    /// The state machine panicked; the node stops.
    #[error("the state machine panicked: {0}")]
    StateMachinePanicked(String),
    /// The cluster file does not describe this node.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An address of the cluster file does not resolve.
    #[error("the peer listen address {address} of {id} does not resolve")]
    Unresolved { id: NodeId, address: String },
    /// The store failed: the node stops.
    #[error("storage: {0}")]
    Storage(#[from] StorageFailure),
    #[error("transport: {0}")]
    Transport(#[from] std::io::Error),
    /// The bootstrap check's state file could not be read or written.
    #[error("bootstrap check: {0}")]
    Bootstrap(String),
    /// This node's data directory is new, but a peer holds the cluster's data and has no
    /// record of this node starting empty: its data was lost. It stops rather than vote.
    #[error(
        "{id}'s data directory is new, but {peer} holds the cluster's log and did not see {id} start empty: \
         {id}'s data was lost (a wiped or unmounted disk, a wrong --data-dir), and it must not vote in terms it \
         may have voted in before. Check the data directory; to rejoin with an empty one, start it with \
         `skiff serve --join http://<a member's HTTP address> ...` (it is added back as a learner, then promoted \
         once caught up), or replace it by a new node (`skiff members replace {id} --with ...`)"
    )]
    LostData { id: NodeId, peer: NodeId },
}

fn stop_cause(cause: &Option<Arc<Error>>) -> String {
    cause.as_ref().map_or_else(|| ": shut down".to_string(), |cause| format!(": {cause}"))
}

/// What a caller should do about an [`Error`]. Every API maps errors through this one
/// classification (the HTTP API to a status, the Redis protocol to an error prefix), so an
/// error has the same meaning whichever way a client came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// Certainly not applied, and likely to succeed shortly: no leader, leadership moving,
    /// back-pressure. Retry.
    Unavailable,
    /// Perhaps applied, perhaps not (a timeout, a leader change mid-flight). Retry only
    /// what is idempotent (or carries an idempotency key).
    Indeterminate,
    /// Refused by the cluster's state: an invalid or a pending membership change, a target
    /// that is not a voter. Retrying as is will not help.
    Conflict,
    /// The node failed (storage, a stopped node, a bug): not the client's doing.
    Internal,
}

impl Error {
    /// What a caller should do about this error. The match has no catch-all: a new
    /// variant must be classified here.
    pub fn kind(&self) -> ErrorKind {
        use skiff_raft::Error as R;
        match self {
            Error::NoLeader | Error::LeadershipLost | Error::Overloaded { .. } | Error::Paused => {
                ErrorKind::Unavailable
            }
            Error::Timeout(_) | Error::OutcomeUnknown => ErrorKind::Indeterminate,
            Error::Remote { kind, .. } => *kind,
            Error::Raft(refused) => match refused {
                R::NotLeader { .. }
                | R::TransferInProgress { .. }
                | R::TooManyUncommitted { .. }
                | R::LeaderNotReady { .. } => ErrorKind::Unavailable,
                R::MembershipChangePending { .. } | R::InvalidMembershipChange(_) | R::NotAVoter(_) => {
                    ErrorKind::Conflict
                }
                R::InvalidSnapshot { .. } | R::InvalidConfig(_) | R::Storage(_) => ErrorKind::Internal,
            },
            Error::Codec(_)
            | Error::Stopped { .. }
            | Error::ApplyThreadStopped
            | Error::DriverPanicked
            | Error::StateMachinePanicked(_)
            | Error::Config(_)
            | Error::Unresolved { .. }
            | Error::Storage(_)
            | Error::Transport(_)
            | Error::Bootstrap(_)
            | Error::LostData { .. } => ErrorKind::Internal,
        }
    }

    /// The node stopped because it was shut down.
    pub(crate) fn shut_down() -> Error {
        Error::Stopped { cause: None }
    }
}

/// What failed in the store, or in writing or reading a snapshot. The node stops.
#[derive(Debug, Error)]
pub enum StorageFailure {
    /// The disk store (opening the data directory, snapshot files).
    #[error(transparent)]
    Disk(#[from] skiff_storage::Error),
    /// The log store, through the core's [`skiff_raft::Storage`] interface.
    #[error(transparent)]
    Log(#[from] StorageError),
    /// The state machine could not read a snapshot.
    #[error("restoring the state machine from snapshot {index}: {source}")]
    Restore { index: Index, source: std::io::Error },
    /// Reading or writing the data of a snapshot failed (`action` says which).
    #[error("{action} snapshot {index}: {source}")]
    SnapshotData { action: &'static str, index: Index, source: std::io::Error },
    /// Writing a snapshot of the state machine failed.
    #[error("taking a snapshot at {index}: {source}")]
    TakeSnapshot { index: Index, source: Box<dyn std::error::Error + Send + Sync> },
    /// The store and the runtime disagree (a snapshot without data, a snapshot whose
    /// header differs from the log): a bug, or a store changed from outside.
    #[error("{0}")]
    Inconsistent(String),
}

impl From<skiff_raft::Error> for Error {
    fn from(error: skiff_raft::Error) -> Error {
        match error {
            skiff_raft::Error::Storage(error) => Error::Storage(error.into()),
            refused => Error::Raft(refused),
        }
    }
}

impl From<StorageError> for Error {
    fn from(error: StorageError) -> Error {
        Error::Storage(error.into())
    }
}

impl From<skiff_storage::Error> for Error {
    fn from(error: skiff_storage::Error) -> Error {
        Error::Storage(error.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storage_failure_is_one_variant_from_every_layer() {
        let from_core: Error = skiff_raft::Error::Storage(StorageError::Io("disk gone".into())).into();
        let from_store: Error = StorageError::Io("disk gone".into()).into();
        let from_disk: Error = skiff_storage::Error::Poisoned { cause: "disk gone".into() }.into();
        for error in [from_core, from_store, from_disk] {
            assert!(matches!(error, Error::Storage(_)), "{error:?}");
        }
        let refused: Error = skiff_raft::Error::NotAVoter(NodeId(2)).into();
        assert!(matches!(refused, Error::Raft(_)));
    }

    #[test]
    fn each_error_says_what_a_caller_should_do() {
        let storage = Error::from(StorageError::Io("disk gone".into()));
        let cases = [
            (Error::NoLeader, ErrorKind::Unavailable),
            (Error::LeadershipLost, ErrorKind::Unavailable),
            (skiff_raft::Error::NotLeader { leader: None }.into(), ErrorKind::Unavailable),
            (Error::Timeout(std::time::Duration::from_secs(1)), ErrorKind::Indeterminate),
            (Error::OutcomeUnknown, ErrorKind::Indeterminate),
            (skiff_raft::Error::NotAVoter(NodeId(2)).into(), ErrorKind::Conflict),
            (
                Error::Remote { leader: NodeId(1), kind: ErrorKind::Internal, message: "storage".into() },
                ErrorKind::Internal,
            ),
            (
                Error::Remote { leader: NodeId(1), kind: ErrorKind::Unavailable, message: "busy".into() },
                ErrorKind::Unavailable,
            ),
            (Error::Stopped { cause: Some(Arc::new(storage)) }, ErrorKind::Internal),
            (Error::from(StorageError::Io("disk gone".into())), ErrorKind::Internal),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error}");
        }
    }

    #[test]
    fn stopped_keeps_its_cause() {
        let cause = Arc::new(Error::from(StorageError::Io("disk gone".into())));
        let stopped = Error::Stopped { cause: Some(cause) };
        assert_eq!(stopped.to_string(), "the node has stopped: storage: storage failed: disk gone");
        assert!(std::error::Error::source(&stopped).is_some());
        assert_eq!(Error::shut_down().to_string(), "the node has stopped: shut down");
    }
}
