//! The connections a run opens, and what one request returns.
//!
//! Connection `j` goes to endpoint `j mod endpoints` (round-robin), and client `i` uses
//! connection `i mod connections` for the whole run, as etcd's benchmark assigns them.
//! Each connection is driven by one task ([`super::worker`]) on behalf of its clients.

use anyhow::Result;

use super::http::HttpConnection;
use super::options::{Consistency, Settings, Target};
use super::resp::RespConnection;
use super::stream::Tls;

/// What a request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Get,
    Put,
}

/// How one request ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done: a write was acknowledged, a read found its key.
    Ok,
    /// A read found no such key (an answer, not an error).
    Miss,
    /// Failed: the kind, for counting (`HTTP 503`, `timeout`, `connection refused`,
    /// `TRYAGAIN no leader is known`, ...). A small set of kinds: no numbers or keys in it.
    Error(String),
}

impl Outcome {
    /// Whether the connection itself failed, so that the next request would probably fail
    /// the same way at once (the client then pauses, rather than spin on a dead node).
    pub fn is_connection_failure(&self) -> bool {
        match self {
            Outcome::Error(kind) => kind.starts_with("connection") || kind == "host not found",
            Outcome::Ok | Outcome::Miss => false,
        }
    }
}

/// One request: its operation, key and (for a put) value.
pub struct Request<'a> {
    pub operation: Operation,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// A persistent connection to one endpoint.
pub enum Connection {
    Http(HttpConnection),
    Resp(RespConnection),
}

/// Opens connection `index` (to endpoint `index mod endpoints`) and checks that it
/// answers: an error names the endpoint that does not and says what to do.
pub async fn open(settings: &Settings, index: usize) -> Result<Connection> {
    // Stale reads only matter when there are reads (and READONLY is Skiff's, not Redis's).
    let stale = settings.consistency == Consistency::Stale && settings.read_ratio > 0.0;
    let endpoint = &settings.endpoints[index % settings.endpoints.len()];
    let tls = match (&settings.tls, &endpoint.tls_name) {
        (Some(config), Some(name)) => Some(Tls::new(config, name)),
        _ => None,
    };
    let security = Access { tls, token: settings.token.as_deref() };
    Ok(match settings.target {
        Target::SkiffHttp | Target::Etcd => Connection::Http(
            HttpConnection::open(settings.target, endpoint, stale, settings.request_timeout, security).await?,
        ),
        Target::SkiffRedis => {
            Connection::Resp(RespConnection::open(endpoint, stale, settings.request_timeout, security).await?)
        }
    })
}

/// How a connection reaches a secure cluster: TLS, and a token.
#[derive(Default)]
pub struct Access<'a> {
    pub tls: Option<Tls>,
    pub token: Option<&'a str>,
}

/// The kind of a TLS failure (a certificate of another CA, a name it does not carry, no
/// client certificate), if `error` is one.
fn tls_error_kind(error: &std::io::Error) -> Option<String> {
    let tls = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(format!("TLS: {tls}"))
}

/// The kind of an I/O error, for counting.
pub fn io_error_kind(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    if let Some(kind) = tls_error_kind(error) {
        return kind;
    }
    match error.kind() {
        ErrorKind::ConnectionRefused => "connection refused".to_string(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            "connection reset".to_string()
        }
        ErrorKind::UnexpectedEof => "connection closed by the server".to_string(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timeout".to_string(),
        kind => format!("connection error: {kind}"),
    }
}

/// The message of an error that says nothing answers at `endpoint`.
pub fn unreachable(target: Target, endpoint: &str, cause: &str) -> anyhow::Error {
    if cause.starts_with("TLS") {
        return anyhow::anyhow!(
            "no TLS connection to {endpoint} ({cause}): is --cacert the cluster's CA, and does it need a client \
             certificate (--cert, --key)?"
        );
    }
    anyhow::anyhow!("nothing answers at {endpoint} ({cause}): {}", target.start_hint())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_told_apart() {
        assert!(Outcome::Error("connection refused".into()).is_connection_failure());
        assert!(!Outcome::Error("HTTP 503".into()).is_connection_failure());
        assert!(!Outcome::Miss.is_connection_failure());
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(io_error_kind(&refused), "connection refused");
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(io_error_kind(&eof), "connection closed by the server");
    }
}
