//! What can go wrong talking to a cluster, told apart by what the caller can do about it.

use std::time::Duration;

/// The result of a client call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a call failed.
///
/// Whether a failed write may still have been applied depends on the variant: never after
/// [`InvalidEndpoint`](Error::InvalidEndpoint), [`Options`](Error::Options),
/// [`Connect`](Error::Connect) and [`Unavailable`](Error::Unavailable); possibly after
/// [`Timeout`](Error::Timeout), [`Lost`](Error::Lost) and an [`Http`](Error::Http) 504.
/// A write of the key-value API that is retried (by this client or by the caller with the
/// same client call) is applied at most once: every attempt carries the same
/// `Idempotency-Key`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key does not exist (a key-value read answered 404).
    #[error("not found: {key}")]
    NotFound {
        /// The key that was read.
        key: String,
    },
    /// The session (or lease) named does not exist: it was destroyed, or its TTL passed
    /// without a renewal (`?acquire` answered 400, a renewal or keepalive 404). A lock it
    /// held is held no longer.
    #[error("{message} (from {endpoint})")]
    NoSuchSession {
        /// The server's explanation (it starts with `ERR no such session` when the state
        /// machine refused the write).
        message: String,
        /// The node that answered (`host:port`).
        endpoint: String,
    },
    /// A write carrying a fencing token was refused (409): the token's lock was released,
    /// or its session ended, so it may have a newer holder. Nothing was written.
    #[error("{message} (HTTP 409 from {endpoint})")]
    Fenced {
        /// The server's explanation (it starts with `ERR fenced`).
        message: String,
        /// The node that answered (`host:port`).
        endpoint: String,
    },
    /// The cluster had no leader or no quorum (503) on every attempt until the deadline.
    #[error("{message} (HTTP 503 from {endpoint})")]
    Unavailable {
        /// The server's explanation, with the leader when it knows one.
        message: String,
        /// The node that answered last (`host:port`).
        endpoint: String,
        /// How long the server asked to wait before the next attempt.
        retry_after: Option<Duration>,
    },
    /// The call's deadline passed without an answer that settles it; a write may or may
    /// not have been applied.
    #[error("timed out after {after:?}; last error: {}", last_error.as_deref().unwrap_or("none"))]
    Timeout {
        /// The deadline the call had (the client's timeout, or longer for calls that wait).
        after: Duration,
        /// What went wrong with the last attempt, if one failed.
        last_error: Option<String>,
    },
    /// The server answered with an error status other than 404 on a key read and 503.
    #[error("{message}{} (HTTP {status} from {endpoint}{})",
        leader.as_ref().map(|leader| format!(" (leader: {leader})")).unwrap_or_default(),
        location.as_ref().map(|location| format!(", Location: {location}")).unwrap_or_default())]
    Http {
        /// The HTTP status (400, 409, 413, 422, 500, 504, ...; see docs/http-api.md).
        status: u16,
        /// The `error` field of the server's JSON error, or the body as text.
        message: String,
        /// The leader's id, when the server knows it.
        leader: Option<String>,
        /// The node that answered (`host:port`).
        endpoint: String,
        /// A redirect's target, when the answer was a redirect that was not followed.
        location: Option<String>,
    },
    /// No endpoint accepted a connection: the cluster is down, or elsewhere. Nothing was sent.
    #[error("no endpoint answered: {}", attempts.join("; "))]
    Connect {
        /// One `host:port: reason` per endpoint tried.
        attempts: Vec<String>,
    },
    /// A call that is not retried (a membership change, a leader transfer) lost its
    /// connection after the request may have been sent: it may or may not have happened.
    #[error("{detail} (the operation may or may not have happened)")]
    Lost {
        /// The endpoints tried and what went wrong with each.
        detail: String,
    },
    /// The server answered, but not with what the API documents (not JSON, a missing
    /// field, invalid base64).
    #[error("{endpoint} answered HTTP {status} with unexpected content: {detail}")]
    Decode {
        /// The node that answered (`host:port`).
        endpoint: String,
        /// The answer's HTTP status.
        status: u16,
        /// What was wrong, and the start of the body.
        detail: String,
    },
    /// An endpoint is not `host:port` or `http://host:port`.
    #[error("endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it is not accepted.
        reason: &'static str,
    },
    /// The client's options cannot work: no endpoint, or a zero timeout.
    #[error("invalid client options: {0}")]
    Options(&'static str),
}
