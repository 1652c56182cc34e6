//! One HTTP exchange at a time, told apart the way a linearizability check needs: did the
//! request certainly not reach the server, did it get an answer, or was it lost on the way?
//!
//! Unlike `skiff_client::Client`, nothing here retries, follows a leader hint or
//! reuses a connection: a retry would turn one recorded operation into two attempts, and a
//! pooled connection that died with its node would make a request that never left look
//! like one that was lost after it was sent.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use ureq::http::{Method, Request};
use ureq::tls::TlsConfig;

use crate::client::Security;

/// The longest a connection attempt may take. A stopped process still completes TCP
/// handshakes (the kernel does), so this only fires for a host that does not answer at all.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// The largest body read: a whole keyspace listing of a check's few keys is small.
const MAX_BODY: u64 = 64 << 20;

/// What became of one request.
#[derive(Debug)]
pub enum Answer {
    /// The server answered.
    Reply { status: u16, body: Vec<u8> },
    /// The request certainly never reached the server (connection refused, connect timed
    /// out): the operation did not happen.
    NotSent(String),
    /// The request was sent, or may have been, and no answer came back (a timeout, a
    /// connection reset): the operation may or may not have happened.
    Lost(String),
}

impl Answer {
    /// The answer for an error message: `HTTP 404: {"error": ...}`, or the transport error.
    pub fn describe(&self) -> String {
        match self {
            Answer::Reply { status, body } => format!("HTTP {status}: {}", snippet(body)),
            Answer::NotSent(reason) | Answer::Lost(reason) => reason.clone(),
        }
    }

    /// A short name for the error tally (`HTTP 503`, `timeout`, ...); `None` for a 2xx or
    /// a 404.
    pub fn error_class(&self) -> Option<String> {
        match self {
            Answer::Reply { status: 200..=299 | 404, .. } => None,
            Answer::Reply { status, .. } => Some(format!("HTTP {status}")),
            Answer::NotSent(reason) | Answer::Lost(reason) => Some(reason.clone()),
        }
    }
}

/// How the nodes are reached: their CA (for `https://` URLs), a client certificate, and a
/// token sent as `X-Consul-Token`. Cheap to clone.
#[derive(Clone, Default)]
pub struct Access {
    tls: TlsConfig,
    token: Option<String>,
}

impl Access {
    /// The access `security` (the global `--cacert`, `--cert`/`--key`, `--token`) gives.
    pub fn new(security: &Security) -> Result<Access> {
        Ok(Access { tls: security.tls_config()?, token: security.token.clone() })
    }
}

/// A plain HTTP client: no retries, no redirects, no connection reuse, one deadline per
/// request.
pub struct Http {
    agent: ureq::Agent,
    token: Option<String>,
}

impl Http {
    pub fn new(timeout: Duration, access: &Access) -> Http {
        let config = ureq::Agent::config_builder()
            .tls_config(access.tls.clone())
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .timeout_connect(Some(CONNECT_TIMEOUT.min(timeout)))
            .timeout_global(Some(timeout))
            .user_agent(concat!("skiff-check/", env!("CARGO_PKG_VERSION")))
            .build();
        Http { agent: config.into(), token: access.token.clone() }
    }

    /// Sends `method url` with `body`, once.
    pub fn send(&self, method: Method, url: &str, body: Option<&[u8]>) -> Answer {
        match self.exchange(method, url, body) {
            Ok((status, body)) => Answer::Reply { status, body },
            Err(error) if is_connect_failure(&error) => Answer::NotSent(describe(&error)),
            Err(error) => Answer::Lost(describe(&error)),
        }
    }

    fn exchange(&self, method: Method, url: &str, body: Option<&[u8]>) -> Result<(u16, Vec<u8>), ureq::Error> {
        let mut builder = Request::builder().method(method).uri(url);
        if let Some(token) = &self.token {
            builder = builder.header("X-Consul-Token", token);
        }
        let mut response = match body {
            Some(body) => self.agent.run(builder.body(body)?)?,
            None => self.agent.run(builder.body(())?)?,
        };
        let status = response.status().as_u16();
        let body = response.body_mut().with_config().limit(MAX_BODY).read_to_vec()?;
        Ok((status, body))
    }

    /// `GET url` as JSON of type `T`, for the harness's own calls (status, listings).
    pub fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T> {
        match self.send(Method::GET, url, None) {
            Answer::Reply { status: 200, body } => serde_json::from_slice(&body)
                .with_context(|| format!("{url} answered something unexpected: {}", snippet(&body))),
            Answer::Reply { status, body } => bail!("{url} answered HTTP {status}: {}", snippet(&body)),
            Answer::NotSent(reason) | Answer::Lost(reason) => Err(anyhow!("{url}: {reason}")),
        }
    }

    /// A node's `/v1/skiff/status`.
    pub fn status(&self, base: &str) -> Result<Status> {
        self.get_json(&format!("{base}/v1/skiff/status"))
    }

    /// Sends `method url` and expects a 2xx (fault API calls).
    pub fn expect_success(&self, method: Method, url: &str, body: Option<&[u8]>) -> Result<()> {
        match self.send(method.clone(), url, body) {
            Answer::Reply { status: 200..=299, .. } => Ok(()),
            Answer::Reply { status, body } => bail!("{method} {url} answered HTTP {status}: {}", snippet(&body)),
            Answer::NotSent(reason) | Answer::Lost(reason) => Err(anyhow!("{method} {url}: {reason}")),
        }
    }
}

/// The part of `GET /v1/skiff/status` the harness reads.
#[derive(Clone, Debug, Deserialize)]
pub struct Status {
    pub id: String,
    pub role: String,
    pub term: u64,
    pub leader: Option<String>,
    pub applied: u64,
    #[serde(default)]
    pub voters: Vec<String>,
}

/// One entry of a `GET /v1/kv/...` answer, as the convergence check compares them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KvEntry {
    pub key: String,
    /// Base64, `None` for an empty value.
    pub value: Option<String>,
    pub create_index: u64,
    pub modify_index: u64,
    #[serde(default)]
    pub flags: u64,
}

/// Whether the request surely never reached the server.
fn is_connect_failure(error: &ureq::Error) -> bool {
    match error {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused,
        ureq::Error::Timeout(timeout) => matches!(timeout, ureq::Timeout::Connect | ureq::Timeout::Resolve),
        _ => false,
    }
}

/// A short, stable description of a transport error, used as a tally key.
fn describe(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        ureq::Error::ConnectionFailed => "connection refused".into(),
        ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => "connect timeout".into(),
        ureq::Error::Timeout(_) => "timeout".into(),
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => "connection reset".into(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::BrokenPipe => "connection closed".into(),
            _ => format!("i/o error: {io}"),
        },
        other => other.to_string(),
    }
}

/// The body as text, cut short for a message.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}
