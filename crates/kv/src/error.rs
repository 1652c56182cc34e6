//! Errors of starting and stopping a [`crate::Server`], and the one place a node's error
//! becomes what a client sees: an HTTP status ([`http_status`]) or a Redis error
//! ([`redis_error`]), both decided by the error's [`ErrorKind`].

use axum::http::StatusCode;
use skiff::ErrorKind;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// The cluster file gives this node no `http` address, which a KV server needs.
    #[error("{id} has no http address in the cluster file")]
    NoHttpAddress { id: skiff::NodeId },
    #[error("cannot listen for HTTP on {address} ({id}'s http address): {source}")]
    Listen { id: skiff::NodeId, address: String, source: std::io::Error },
    #[error(transparent)]
    Node(#[from] skiff::Error),
    /// The node would listen beyond loopback with no TLS or no tokens: see
    /// [`skiff::config::ClusterConfig::exposure`].
    #[error("refusing to start: {0}")]
    Insecure(String),
    /// The tokens file could not be loaded.
    #[error("{id}: {source}")]
    Auth { id: skiff::NodeId, source: crate::auth::AuthError },
    /// The limits do not fit together ([`crate::Limits::check`]).
    #[error("refusing to start: {0}")]
    Limits(String),
    /// The node's certificates could not be loaded.
    #[error("{id}'s TLS certificates: {source}")]
    Tls { id: skiff::NodeId, source: skiff::tls::TlsError },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The HTTP status of a node's error: 503 (with `Retry-After`) when it certainly did not
/// apply and a retry will likely work, 504 when it may have applied, 409 when the cluster's
/// state refuses it, 500 when the node failed.
pub fn http_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Indeterminate => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A node's error as a Redis error line. `TRYAGAIN` says the command certainly did not
/// apply and may be sent again (as Redis Cluster uses it); a plain `ERR` says it may have
/// applied, or failed for good.
pub fn redis_error(error: &skiff::Error) -> String {
    match error.kind() {
        ErrorKind::Unavailable => format!("TRYAGAIN {error}"),
        ErrorKind::Indeterminate | ErrorKind::Conflict | ErrorKind::Internal => format!("ERR {error}"),
    }
}

#[cfg(test)]
mod tests {
    use skiff::{NodeId, RaftError};

    use super::*;

    /// Every kind has one status and one Redis prefix; a storage failure is a 500 whether
    /// this node or the leader it forwarded to had it.
    #[test]
    fn each_kind_has_one_status_and_one_redis_prefix() {
        let remote = |kind| skiff::Error::Remote { leader: NodeId(1), kind, message: "the leader said no".into() };
        let cases: [(skiff::Error, u16, &str); 8] = [
            (skiff::Error::NoLeader, 503, "TRYAGAIN "),
            (RaftError::TooManyUncommitted { uncommitted_bytes: 2, limit_bytes: 1 }.into(), 503, "TRYAGAIN "),
            (remote(ErrorKind::Unavailable), 503, "TRYAGAIN "),
            (skiff::Error::Timeout(std::time::Duration::from_secs(1)), 504, "ERR "),
            (skiff::Error::OutcomeUnknown, 504, "ERR "),
            (RaftError::NotAVoter(NodeId(4)).into(), 409, "ERR "),
            (skiff::Error::Storage(skiff::StorageFailure::Inconsistent("a torn snapshot".into())), 500, "ERR "),
            (remote(ErrorKind::Internal), 500, "ERR "),
        ];
        for (error, status, prefix) in cases {
            assert_eq!(http_status(error.kind()).as_u16(), status, "{error}");
            assert!(redis_error(&error).starts_with(prefix), "{error}: {}", redis_error(&error));
        }
    }
}
