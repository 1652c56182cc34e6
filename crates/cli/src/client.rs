//! The HTTP client: a list of endpoints tried in turn, one deadline per command, and
//! retries that are safe (reads, and writes that carry an `Idempotency-Key`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::de::DeserializeOwned;
use ureq::http::{Method, Request};

/// The longest a client waits to connect to one endpoint before trying the next.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a client sleeps between two attempts after a 503 or 504.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The largest response body read (a `list` of many big values).
const MAX_BODY: u64 = 1 << 30;

/// A client of one cluster's HTTP API.
pub struct Client {
    agent: ureq::Agent,
    endpoints: Vec<String>,
    timeout: Duration,
    /// The endpoint that answered last, tried first next time.
    current: AtomicUsize,
    /// A random id for this invocation; idempotency keys are `<session>-<counter>`.
    session: String,
    writes: AtomicU64,
}

/// One HTTP answer, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    retry_after: Option<Duration>,
    /// `Location`, which the client does not follow but reports.
    pub location: Option<String>,
    /// The base URL that answered (`http://127.0.0.1:8001`).
    pub endpoint: String,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!("{} answered HTTP {} with unexpected content: {}", self.endpoint, self.status, self.text_snippet())
        })
    }

    /// The body as text, lossily, cut short for messages.
    fn text_snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        match text.char_indices().nth(200) {
            Some((cut, _)) => format!("{}...", &text[..cut]),
            None => text.to_string(),
        }
    }

    /// What the server said went wrong: the `error` field of a JSON error body (with the
    /// leader when known), or the body as text.
    pub fn error_message(&self) -> String {
        let parsed: Option<serde_json::Value> = serde_json::from_slice(&self.body).ok();
        let error = parsed.as_ref().and_then(|value| value.get("error")).and_then(|error| error.as_str());
        let leader = parsed.as_ref().and_then(|value| value.get("leader")).and_then(|leader| leader.as_str());
        let mut message = match error {
            Some(error) => error.to_string(),
            None if self.body.is_empty() => status_text(self.status).to_string(),
            None => self.text_snippet(),
        };
        if let Some(leader) = leader {
            let _ = write!(message, " (leader: {leader})");
        }
        message
    }

    /// `Ok(self)` for a 2xx answer, otherwise an error that names the endpoint, the status
    /// and the server's message.
    pub fn success(self) -> Result<Reply> {
        if self.is_success() {
            Ok(self)
        } else {
            let location = self.location.as_ref().map(|location| format!(", Location: {location}")).unwrap_or_default();
            Err(anyhow!("{} (HTTP {} from {}{location})", self.error_message(), self.status, self.endpoint))
        }
    }
}

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

/// Turns `host:port` or `http://host:port[/]` into a base URL without a trailing slash.
pub fn normalize_endpoint(endpoint: &str) -> Result<String> {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.starts_with("https://") {
        bail!("endpoint {endpoint}: https is not supported; Skiff serves plain http");
    }
    let address = endpoint.strip_prefix("http://").unwrap_or(endpoint);
    if address.is_empty() || address.contains('/') || !address.contains(':') {
        bail!("endpoint {endpoint:?} is not host:port or http://host:port");
    }
    Ok(format!("http://{address}"))
}

/// Parses a comma-separated endpoint list.
pub fn parse_endpoints(list: &str) -> Result<Vec<String>> {
    let endpoints: Vec<String> =
        list.split(',').filter(|item| !item.trim().is_empty()).map(normalize_endpoint).collect::<Result<_>>()?;
    if endpoints.is_empty() {
        bail!("no endpoints given; pass --endpoints host:port[,host:port...]");
    }
    Ok(endpoints)
}

/// Percent-encodes a key for a URL path, keeping `/` and unreserved characters.
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
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads and idempotent writes: 503, 504 and connection loss.
    Safe,
    /// Other changes: only 503 (nothing was done) and a failure to connect.
    Unavailable,
}

impl Client {
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT.min(timeout)))
            .user_agent(concat!("skiff-cli/", env!("CARGO_PKG_VERSION")))
            .build();
        let session: u64 = rand::random();
        Client {
            agent: config.into(),
            endpoints,
            timeout,
            current: AtomicUsize::new(0),
            session: format!("{session:016x}"),
            writes: AtomicU64::new(0),
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// `GET path` on the first endpoint that answers.
    pub fn get(&self, path: &str) -> Result<Reply> {
        self.call(Method::GET, path, None, None, Retry::Safe, self.timeout)
    }

    /// A `PUT` or `DELETE` of the KV API, with a fresh `Idempotency-Key` that every retry
    /// repeats, so the write is applied once however many attempts it takes.
    pub fn write(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Reply> {
        let count = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        let key = format!("{}-{count}", self.session);
        self.call(method, path, body, Some(&key), Retry::Safe, self.timeout)
    }

    /// A cluster operation (membership, leader transfer): retried only when it surely
    /// did not happen. `timeout` may exceed the client's for operations that wait.
    pub fn operation(&self, method: Method, path: &str, body: Option<Vec<u8>>, timeout: Duration) -> Result<Reply> {
        self.call(method, path, body, None, Retry::Unavailable, timeout.max(self.timeout))
    }

    /// `method url` once, for following a `307` to the leader (`url` is its `Location`).
    pub fn operation_at(&self, method: Method, url: &str, body: Option<Vec<u8>>, timeout: Duration) -> Result<Reply> {
        self.send(url, &method, "", body.as_deref(), None, timeout.max(self.timeout))
            .map_err(|error| anyhow!("{url}: {}", describe(&error)))
    }

    /// `GET path` on one node (`http://host:port`), once, within `timeout`.
    pub fn get_from(&self, base: &str, path: &str, timeout: Duration) -> Result<Reply> {
        self.send(base, &Method::GET, path, None, None, timeout.min(self.timeout))
            .map_err(|error| anyhow!("{}: {}", base.trim_start_matches("http://"), describe(&error)))
    }

    fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        idempotency_key: Option<&str>,
        retry: Retry,
        timeout: Duration,
    ) -> Result<Reply> {
        let deadline = Instant::now() + timeout;
        let count = self.endpoints.len();
        let mut next = self.current.load(Ordering::Relaxed);
        let mut failures: Vec<String> = Vec::new();
        let mut unreachable_in_a_row = 0;
        let mut backoff = Duration::from_millis(50);
        loop {
            let endpoint = &self.endpoints[next % count];
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                bail!("timed out after {timeout:?}; last error: {}", failures.last().map_or("none", String::as_str));
            }
            match self.send(endpoint, &method, path, body.as_deref(), idempotency_key, remaining) {
                Ok(reply) if reply.status == 503 || (reply.status == 504 && retry == Retry::Safe) => {
                    failures.clear();
                    unreachable_in_a_row = 0;
                    let wait = reply.retry_after.unwrap_or(backoff).min(backoff).min(remaining);
                    if Instant::now() + wait >= deadline {
                        return Ok(reply); // the caller reports the server's own message
                    }
                    tracing::debug!(endpoint, status = reply.status, "retrying: {}", reply.error_message());
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
                    failures.push(format!("{}: {}", endpoint.trim_start_matches("http://"), describe(&error)));
                    if !unreachable && retry != Retry::Safe {
                        bail!("{} (the operation may or may not have happened)", failures.join("; "));
                    }
                    // Every endpoint refused in a row: the cluster is down (or elsewhere).
                    // A connection lost under a request is retried until the deadline.
                    unreachable_in_a_row = if unreachable { unreachable_in_a_row + 1 } else { 0 };
                    if unreachable_in_a_row >= count {
                        bail!("no endpoint answered: {}", failures[failures.len() - count..].join("; "));
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

    fn send(
        &self,
        base: &str,
        method: &Method,
        path: &str,
        body: Option<&[u8]>,
        idempotency_key: Option<&str>,
        timeout: Duration,
    ) -> Result<Reply, ureq::Error> {
        let mut builder = Request::builder().method(method.clone()).uri(format!("{base}{path}"));
        if let Some(key) = idempotency_key {
            builder = builder.header("Idempotency-Key", key);
        }
        let response = match body {
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
        let status = response.status().as_u16();
        let body = response.body_mut().with_config().limit(MAX_BODY).read_to_vec()?;
        Ok(Reply { status, body, retry_after, location, endpoint: base.trim_start_matches("http://").to_string() })
    }
}

/// Whether the request surely never reached the server.
pub(crate) fn is_connect_failure(error: &ureq::Error) -> bool {
    match error {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused,
        ureq::Error::Timeout(timeout) => matches!(timeout, ureq::Timeout::Connect | ureq::Timeout::Resolve),
        _ => false,
    }
}

/// A short description of a transport error.
fn describe(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
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
        assert!(normalize_endpoint("https://a:1").is_err());
        assert!(normalize_endpoint("nohost").is_err());
        assert_eq!(parse_endpoints("a:1, b:2,").unwrap(), ["http://a:1", "http://b:2"]);
        assert!(parse_endpoints(" , ").is_err());
    }

    /// A one-thread HTTP server that answers each connection's request with the next of
    /// `answers` (`None`: close without answering) and records every `Idempotency-Key`.
    fn fake_server(answers: Vec<Option<&'static str>>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let mut keys = Vec::new();
            for answer in answers {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let lower = line.to_ascii_lowercase();
                    if let Some(key) = lower.strip_prefix("idempotency-key:") {
                        keys.push(key.trim().to_string());
                    }
                    if let Some(value) = lower.strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                std::io::Read::read_exact(&mut reader, &mut vec![0; length]).unwrap();
                if let Some(answer) = answer {
                    reader.get_mut().write_all(answer.as_bytes()).unwrap();
                }
            }
            keys
        });
        (address, server)
    }

    #[test]
    fn writes_retry_with_the_same_idempotency_key() {
        let unavailable =
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let done = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\ntrue";
        // 503, then the connection lost after the request was sent, then success.
        let (address, server) = fake_server(vec![Some(unavailable), None, Some(done)]);
        let client = Client::new(vec![address], Duration::from_secs(10));
        let reply = client.write(Method::PUT, "/v1/kv/k", Some(b"v".to_vec())).unwrap();
        assert_eq!((reply.status, reply.body.as_slice()), (200, &b"true"[..]));
        let keys = server.join().unwrap();
        assert_eq!(keys.len(), 3);
        assert!(keys.iter().all(|key| *key == keys[0]), "{keys:?}");

        // The next write has a new key.
        let (address, server) = fake_server(vec![Some(done), Some(done)]);
        let client = Client::new(vec![address], Duration::from_secs(10));
        client.write(Method::PUT, "/v1/kv/a", Some(b"1".to_vec())).unwrap();
        client.write(Method::DELETE, "/v1/kv/a", None).unwrap();
        let keys = server.join().unwrap();
        assert_eq!(keys.len(), 2);
        assert_ne!(keys[0], keys[1]);
    }

    #[test]
    fn keys_are_percent_encoded() {
        assert_eq!(encode_key("app/config v1?#%"), "app/config%20v1%3F%23%25");
        assert_eq!(encode_key("é"), "%C3%A9");
    }
}
