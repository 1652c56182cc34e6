//! One HTTP exchange, and the loop around it: endpoints tried in turn, one deadline per
//! call, and retries only where they are safe (reads, and writes that carry an
//! `Idempotency-Key`, which the server applies once however often it arrives: thesis §6.3).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use ureq::http::{Method, Request};

use crate::client::Security;
use crate::error::{Error, Result};

/// The longest a client waits to connect to one endpoint before trying the next.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The first pause between two attempts after a 503, a 504 or a lost connection.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The largest response body read (a `list` of many big values).
const MAX_BODY: u64 = 1 << 30;
/// How the state machine's refusal of a write for an ended session starts.
const NO_SUCH_SESSION: &str = "ERR no such session";
/// How the state machine's refusal of a write with a stale fencing token starts.
const STALE_FENCE: &str = "ERR fenced";
/// How much of an unexpected body an error message quotes, in characters.
const SNIPPET_CHARS: usize = 200;

/// One HTTP answer, read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    retry_after: Option<Duration>,
    /// `Location`, followed only where the caller chooses to (`POST /v1/skiff/members`).
    pub location: Option<String>,
    /// The node that answered, `host:port`.
    pub endpoint: String,
    /// `X-Consul-Index`: the index a read reflects (what a blocking query waits past).
    pub index: Option<u64>,
    /// `Skiff-Fence`: the fencing token of a successful `?acquire`.
    pub fence: Option<u64>,
}

impl Reply {
    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|error| self.decode_error(format!("{error}: {}", self.snippet())))
    }

    /// An error for an answer that is not what the API documents.
    pub fn decode_error(&self, detail: String) -> Error {
        Error::Decode { endpoint: self.endpoint.clone(), status: self.status, detail }
    }

    /// The body as text, lossily, cut short for messages.
    fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        match text.char_indices().nth(SNIPPET_CHARS) {
            Some((cut, _)) => format!("{}...", &text[..cut]),
            None => text.to_string(),
        }
    }

    /// `Ok(self)` for a 2xx answer, otherwise the error the status stands for.
    pub fn success(self) -> Result<Reply> {
        if self.is_success() {
            return Ok(self);
        }
        let parsed: Option<serde_json::Value> = serde_json::from_slice(&self.body).ok();
        let field = |name: &str| parsed.as_ref()?.get(name)?.as_str().map(str::to_string);
        let message = match field("error") {
            Some(error) => error,
            None if self.body.is_empty() => status_text(self.status).to_string(),
            None => self.snippet(),
        };
        let leader = field("leader");
        if self.status == 409 && message.contains(STALE_FENCE) {
            return Err(Error::Fenced { message, endpoint: self.endpoint });
        }
        if matches!(self.status, 400 | 404) && message.contains(NO_SUCH_SESSION) {
            return Err(Error::NoSuchSession { message, endpoint: self.endpoint });
        }
        if self.status == 503 {
            let message = match &leader {
                Some(leader) => format!("{message} (leader: {leader})"),
                None => message,
            };
            return Err(Error::Unavailable { message, endpoint: self.endpoint, retry_after: self.retry_after });
        }
        Err(Error::Http { status: self.status, message, leader, endpoint: self.endpoint, location: self.location })
    }
}

/// What a status means, for an error answer without a body.
fn status_text(status: u16) -> &'static str {
    match status {
        400 => "bad request",
        403 => "forbidden",
        404 => "not found",
        405 => "method not allowed",
        409 => "conflict",
        413 => "too large",
        422 => "idempotency key reused with a different request",
        500 => "the node failed",
        503 => "no leader or no quorum",
        504 => "timed out (the write may still commit)",
        _ => "unexpected status",
    }
}

/// Turns `host:port`, `http://host:port[/]` or `https://host:port[/]` into a base URL without
/// a trailing slash (`http://host:port`), the form every endpoint of a
/// [`Client`](crate::Client) takes. `host:port` alone is `http://`.
///
/// ```
/// assert_eq!(skiff_client::normalize_endpoint("127.0.0.1:8001").unwrap(), "http://127.0.0.1:8001");
/// assert_eq!(skiff_client::normalize_endpoint("https://node:8001/").unwrap(), "https://node:8001");
/// assert!(skiff_client::normalize_endpoint("ftp://node:8001").is_err());
/// ```
pub fn normalize_endpoint(endpoint: &str) -> Result<String> {
    normalize_endpoint_as(endpoint, "http")
}

/// As [`normalize_endpoint`], with `scheme` (`"http"` or `"https"`) for an endpoint written
/// without one.
pub fn normalize_endpoint_as(endpoint: &str, scheme: &str) -> Result<String> {
    let trimmed = endpoint.trim().trim_end_matches('/');
    let invalid = |reason| Error::InvalidEndpoint { endpoint: endpoint.to_string(), reason };
    let (scheme, address) = match trimmed.split_once("://") {
        Some(("http", address)) => ("http", address),
        Some(("https", address)) => ("https", address),
        Some(_) => return Err(invalid("only http:// and https:// endpoints are supported")),
        None => (scheme, trimmed),
    };
    let url = format!("{scheme}://{address}");
    if address.is_empty() || address.contains('/') || !address.contains(':') || url.parse::<ureq::http::Uri>().is_err()
    {
        return Err(invalid("not host:port or http://host:port"));
    }
    Ok(url)
}

/// Percent-encodes a key for the path of a `/v1/kv/<key>` URL, keeping `/` and the
/// characters URLs leave unreserved.
///
/// ```
/// assert_eq!(skiff_client::encode_key("app/config v1?"), "app/config%20v1%3F");
/// ```
pub fn encode_key(key: &str) -> String {
    let mut encoded = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            encoded.push(byte as char);
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// Which failures an attempt may be retried after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads and idempotent writes: 503, 504 and connection loss.
    Safe,
    /// Other changes: only 503 (nothing was done) and a failure to connect.
    Unavailable,
}

/// What one call sends, apart from where.
pub(crate) struct Call<'a> {
    pub method: Method,
    /// The path and query, `/v1/kv/a?cas=3`.
    pub path: &'a str,
    pub body: Option<&'a [u8]>,
    pub idempotency_key: Option<&'a str>,
    pub retry: Retry,
    pub timeout: Duration,
}

/// The HTTP side of a client: the agent (its connection pool) and the endpoints.
pub(crate) struct Transport {
    agent: ureq::Agent,
    endpoints: Vec<String>,
    /// The endpoint that answered last, tried first next time.
    current: AtomicUsize,
    token: Option<String>,
}

impl Transport {
    /// `endpoints` are normalized and not empty; `timeout` is not zero. Fails if the TLS
    /// files do not hold certificates and a key.
    pub fn new(endpoints: Vec<String>, timeout: Duration, security: Security) -> Result<Transport> {
        use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};
        // The certificates of a PEM file; `missing` if it holds none.
        let certificates = |pem: &[u8], missing: &'static str| {
            let certificates: Vec<Certificate<'static>> = ureq::tls::parse_pem(pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(certificate)) => Some(certificate),
                    _ => None,
                })
                .collect();
            if certificates.is_empty() { Err(Error::Options(missing)) } else { Ok(certificates) }
        };
        let mut tls = TlsConfig::builder();
        if let Some(ca) = &security.ca_pem {
            let roots = certificates(ca, "the CA file holds no PEM certificate")?;
            tls = tls.root_certs(RootCerts::new_with_certs(&roots));
        }
        if let Some((certificate, key)) = &security.identity_pem {
            let chain = certificates(certificate, "the client certificate file holds no PEM certificate")?;
            let key = PrivateKey::from_pem(key)
                .map_err(|_| Error::Options("the client key file holds no PEM private key"))?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        let config = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT.min(timeout)))
            .user_agent(concat!("skiff-client/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Transport { agent: config.into(), endpoints, current: AtomicUsize::new(0), token: security.token })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The index of the endpoint that answered last.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// Sends `call` to the endpoints in turn, from the one that answered last, until an
    /// answer settles it or its deadline passes. A 503 that lasts until the deadline is
    /// returned as the server's answer (the caller reports the server's own message).
    pub fn call(&self, call: &Call) -> Result<Reply> {
        let deadline = Instant::now() + call.timeout;
        let count = self.endpoints.len();
        let mut next = self.current.load(Ordering::Relaxed);
        let mut failures: Vec<String> = Vec::new();
        let mut unreachable_in_a_row = 0;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let endpoint = &self.endpoints[next % count];
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::Timeout { after: call.timeout, last_error: failures.pop() });
            }
            match self.send(endpoint, call, remaining) {
                Ok(reply) if reply.status == 503 || (reply.status == 504 && call.retry == Retry::Safe) => {
                    failures.clear();
                    unreachable_in_a_row = 0;
                    let wait = reply.retry_after.unwrap_or(backoff).min(backoff).min(remaining);
                    if Instant::now() + wait >= deadline {
                        return Ok(reply);
                    }
                    tracing::debug!(endpoint, status = reply.status, "retrying after HTTP {}", reply.status);
                    std::thread::sleep(wait);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    next += 1;
                }
                Ok(reply) => {
                    self.current.store(next % count, Ordering::Relaxed);
                    return Ok(reply);
                }
                Err(error) => {
                    let unreachable = is_connect_failure(&error);
                    failures.push(format!("{}: {}", host_port(endpoint), describe(&error)));
                    if !unreachable && call.retry != Retry::Safe {
                        return Err(Error::Lost { detail: failures.join("; ") });
                    }
                    // Every endpoint refused in a row: the cluster is down (or elsewhere).
                    // A connection lost under a request is retried until the deadline.
                    unreachable_in_a_row = if unreachable { unreachable_in_a_row + 1 } else { 0 };
                    if unreachable_in_a_row >= count {
                        return Err(Error::Connect { attempts: failures.split_off(failures.len() - count) });
                    }
                    if !unreachable {
                        std::thread::sleep(backoff.min(remaining));
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    next += 1;
                }
            }
        }
    }

    /// `call` once, at `base` (one node's `http://host:port`, or with an empty `call.path`
    /// a whole URL such as a redirect's `Location`), within the call's timeout.
    pub fn call_once(&self, base: &str, call: &Call) -> Result<Reply> {
        self.send(base, call, call.timeout).map_err(|error| {
            let detail = format!("{}: {}", host_port(base), describe(&error));
            if is_connect_failure(&error) { Error::Connect { attempts: vec![detail] } } else { Error::Lost { detail } }
        })
    }

    /// One attempt: `call` at `base` (`http://host:port`, or a whole URL with an empty
    /// `call.path`), within `timeout`.
    fn send(&self, base: &str, call: &Call, timeout: Duration) -> Result<Reply, ureq::Error> {
        let mut builder = Request::builder().method(call.method.clone()).uri(format!("{base}{}", call.path));
        if let Some(key) = call.idempotency_key {
            builder = builder.header("Idempotency-Key", key);
        }
        if let Some(token) = &self.token {
            builder = builder.header("X-Consul-Token", token);
        }
        let response = match call.body {
            Some(body) => {
                let request = builder.body(body)?;
                self.agent.run(self.agent.configure_request(request).timeout_global(Some(timeout)).build())
            }
            None => {
                let request = builder.body(())?;
                self.agent.run(self.agent.configure_request(request).timeout_global(Some(timeout)).build())
            }
        };
        let mut response = response?;
        let header =
            |name: &str| response.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_string);
        let retry_after = header("Retry-After").and_then(|value| value.parse().ok()).map(Duration::from_secs);
        let location = header("Location");
        let index = header("X-Consul-Index").and_then(|value| value.trim().parse().ok());
        let fence = header("Skiff-Fence").and_then(|value| value.trim().parse().ok());
        let status = response.status().as_u16();
        let body = response.body_mut().with_config().limit(MAX_BODY).read_to_vec()?;
        Ok(Reply { status, body, retry_after, location, endpoint: host_port(base).to_string(), index, fence })
    }
}

/// A response whose body is read as it comes (the change feed), with the node that sent it.
pub(crate) struct Streaming {
    /// The node that answered, `host:port`.
    pub endpoint: String,
    /// The body, read with a deadline per read and none overall.
    pub body: ureq::BodyReader<'static>,
}

/// Why a streaming request did not start.
#[derive(Debug)]
pub(crate) enum StreamRefused {
    /// Another attempt (here or at another endpoint) may succeed: the node is unreachable,
    /// has no leader (503), is too busy (429), failed (5xx) or timed out.
    Transient(Error),
    /// The request itself is refused (400, 403, 404, ...): trying again would not help.
    Final(Error),
}

/// How much of a refused streaming request's body is read, for its error message.
const MAX_REFUSAL_BODY: u64 = 64 << 10;

impl Transport {
    /// `GET path` at the endpoint `at` (an index into the endpoints, modulo their number),
    /// asking for `accept`; the answer's headers within `timeout`, then each read of the
    /// body within `idle` (and no deadline overall).
    pub fn open_stream(
        &self,
        at: usize,
        path: &str,
        accept: &str,
        timeout: Duration,
        idle: Duration,
    ) -> Result<Streaming, StreamRefused> {
        let base = &self.endpoints[at % self.endpoints.len()];
        let endpoint = host_port(base).to_string();
        let lost = |error: ureq::Error| {
            let detail = format!("{endpoint}: {}", describe(&error));
            if is_connect_failure(&error) {
                StreamRefused::Transient(Error::Connect { attempts: vec![detail] })
            } else {
                StreamRefused::Transient(Error::Lost { detail })
            }
        };
        let mut builder = Request::builder().method(Method::GET).uri(format!("{base}{path}")).header("Accept", accept);
        if let Some(token) = &self.token {
            builder = builder.header("X-Consul-Token", token);
        }
        let request = builder.body(()).map_err(|error| StreamRefused::Final(Error::Options(http_error(&error))))?;
        let request = self
            .agent
            .configure_request(request)
            .timeout_connect(Some(CONNECT_TIMEOUT.min(timeout)))
            .timeout_recv_response(Some(timeout))
            .timeout_per_read(Some(idle))
            .build();
        let mut response = self.agent.run(request).map_err(lost)?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(Streaming { endpoint, body: response.into_body().into_reader() });
        }
        let header =
            |name: &str| response.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_string);
        let retry_after = header("Retry-After").and_then(|value| value.parse().ok()).map(Duration::from_secs);
        let location = header("Location");
        let body = response.body_mut().with_config().limit(MAX_REFUSAL_BODY).read_to_vec().unwrap_or_default();
        let reply = Reply { status, body, retry_after, location, endpoint, index: None, fence: None };
        let transient = matches!(status, 429 | 500..=599);
        match reply.success() {
            Ok(reply) => Err(StreamRefused::Final(reply.decode_error("a redirect, not the stream".to_string()))),
            Err(error) if transient => Err(StreamRefused::Transient(error)),
            Err(error) => Err(StreamRefused::Final(error)),
        }
    }
}

/// A request that cannot be built: the path was not a valid URI.
fn http_error(_: &ureq::http::Error) -> &'static str {
    "the request's URI is not valid"
}

/// `host:port` of a base URL, for messages.
fn host_port(base: &str) -> &str {
    base.trim_start_matches("http://").trim_start_matches("https://")
}

/// Whether the request surely never reached the server. A failed TLS handshake counts: the
/// request was never sent, and another attempt would fail the same way.
fn is_connect_failure(error: &ureq::Error) -> bool {
    match error {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound | ureq::Error::Tls(_) | ureq::Error::Rustls(_) => {
            true
        }
        ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused || tls_failure(io).is_some(),
        ureq::Error::Timeout(timeout) => matches!(timeout, ureq::Timeout::Connect | ureq::Timeout::Resolve),
        _ => false,
    }
}

/// The TLS error under an I/O error, if that is what it is.
fn tls_failure(io: &std::io::Error) -> Option<&rustls::Error> {
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

/// A short description of a transport error.
fn describe(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        ureq::Error::Io(io) if let Some(tls) = tls_failure(io) => match tls {
            rustls::Error::InvalidCertificate(_) => {
                format!("TLS: {tls} (is its certificate signed by the CA you gave, for the name you dialed?)")
            }
            _ => format!("TLS: {tls}"),
        },
        ureq::Error::Timeout(timeout) => format!("timed out ({timeout})"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalized() {
        assert_eq!(normalize_endpoint("127.0.0.1:8001").unwrap(), "http://127.0.0.1:8001");
        assert_eq!(normalize_endpoint("http://localhost:8002/").unwrap(), "http://localhost:8002");
        assert_eq!(normalize_endpoint("https://a:1").unwrap(), "https://a:1");
        assert_eq!(normalize_endpoint_as("a:1", "https").unwrap(), "https://a:1");
        assert_eq!(normalize_endpoint_as("http://a:1", "https").unwrap(), "http://a:1");
        let other = normalize_endpoint("ftp://a:1").unwrap_err();
        assert!(other.to_string().contains("only http:// and https://"), "{other}");
        assert!(normalize_endpoint("nohost").is_err());
        assert!(normalize_endpoint("a b:1").is_err());
    }

    #[test]
    fn keys_are_percent_encoded() {
        assert_eq!(encode_key("app/config v1?#%"), "app/config%20v1%3F%23%25");
        assert_eq!(encode_key("é"), "%C3%A9");
    }
}
