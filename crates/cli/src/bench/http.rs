//! The HTTP targets: Skiff's KV API and etcd's v3 JSON gateway, over hyper's low-level
//! HTTP/1.1 client connection.
//!
//! One [`HttpConnection`] is one keep-alive TCP connection, driven by one task
//! ([`super::worker`]), one request at a time: HTTP/1.1 carries one request at a time, so
//! the clients that share a connection take turns. The task polls hyper's connection
//! itself, alongside the request, rather than spawning it as a task of its own: the answer
//! then wakes the one task that waits for it, with no hand-off between tasks. A request
//! that fails closes the connection; the next one reopens it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;

use super::connection::{Access, Operation, Outcome, Request, io_error_kind, unreachable};
use super::options::{Endpoint, Target};
use super::stream::{self, Stream, Tls};

/// The header a token's secret goes in.
const TOKEN: HeaderName = HeaderName::from_static("x-consul-token");

/// The longest a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Which API the endpoint speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    Skiff,
    Etcd,
}

/// An open connection: the handle that sends requests, and hyper's state machine that
/// reads and writes the socket (polled by whoever waits for an answer).
struct Open {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: http1::Connection<TokioIo<Stream>, Full<Bytes>>,
}

/// A keep-alive HTTP connection to one endpoint, and its buffers, reused from request to
/// request.
pub struct HttpConnection {
    api: Api,
    /// `http://host:port` (or `https://`), for messages.
    base: String,
    address: SocketAddr,
    /// For an `https://` endpoint.
    tls: Option<Tls>,
    /// `host:port`, the `Host` header.
    host: HeaderValue,
    /// The token's secret, sent as `X-Consul-Token` with every request.
    token: Option<HeaderValue>,
    stale: bool,
    /// How long a request may take, from sending it to the end of its answer.
    timeout: Duration,
    /// `None` after a failure, until the next request reopens it. Boxed: hyper's state is
    /// most of a connection's size, and is replaced only when it reconnects.
    open: Option<Box<Open>>,
    /// A request's path (and query).
    path: String,
    /// A JSON request body (etcd), and base64 scratch for it.
    body: Vec<u8>,
    base64: Vec<u8>,
}

/// How one exchange went wrong.
enum Failure {
    Timeout,
    Hyper(hyper::Error),
    Io(std::io::Error),
    /// The server closed the connection (cleanly) before it answered.
    Closed,
}

impl Failure {
    /// The kind, for counting: the same words whichever layer saw the failure.
    fn kind(&self) -> String {
        match self {
            Failure::Timeout => "timeout".to_string(),
            Failure::Io(error) => io_error_kind(error),
            Failure::Closed => "connection closed by the server".to_string(),
            Failure::Hyper(error) => hyper_error_kind(error),
        }
    }
}

impl HttpConnection {
    /// Opens a connection to `endpoint` and checks that it is the API of `target`.
    pub async fn open(
        target: Target,
        endpoint: &Endpoint,
        stale: bool,
        timeout: Duration,
        access: Access<'_>,
    ) -> Result<HttpConnection> {
        let token = match access.token {
            Some(token) => {
                let mut value = HeaderValue::from_str(token)
                    .map_err(|_| anyhow::anyhow!("--token holds characters an HTTP header cannot carry"))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let mut connection = HttpConnection {
            api: if target == Target::Etcd { Api::Etcd } else { Api::Skiff },
            base: endpoint.name.clone(),
            address: endpoint.address,
            tls: access.tls,
            host: HeaderValue::from_str(endpoint.host_port())?,
            token,
            stale,
            timeout,
            open: None,
            path: String::new(),
            body: Vec::new(),
            base64: Vec::new(),
        };
        connection.probe(target).await?;
        Ok(connection)
    }

    /// One request that any node of the target answers with 200, which also opens the
    /// connection.
    async fn probe(&mut self, target: Target) -> Result<()> {
        let (route, method, path, body): (_, _, _, &[u8]) = match self.api {
            Api::Skiff => ("GET /v1/status/leader", Method::GET, "/v1/status/leader", b""),
            Api::Etcd => ("POST /v3/maintenance/status", Method::POST, "/v3/maintenance/status", b"{}"),
        };
        self.path.clear();
        self.path.push_str(path);
        let (status, answer) = match self.exchange(method, Bytes::from_static(body)).await {
            Ok(answered) => answered,
            Err(failure) => return Err(unreachable(target, &self.base, &failure.kind())),
        };
        if status == StatusCode::FORBIDDEN {
            bail!(
                "{} answered HTTP 403 to {route}: the cluster has tokens ([auth]); give one that may write the keys \
                 with --token (or SKIFF_TOKEN)",
                self.base
            );
        }
        if status != StatusCode::OK {
            // The node's own words first, if any (a TLS port says it serves HTTPS; a node
            // with tokens says Permission denied).
            let said = String::from_utf8_lossy(&answer[..answer.len().min(200)]);
            let said = said.trim();
            let said = if said.is_empty() { String::new() } else { format!(" ({said})") };
            bail!(
                "{} answered HTTP {}{said} to {route}: is it {}? (--target {})",
                self.base,
                status.as_u16(),
                match self.api {
                    Api::Skiff => "a Skiff node's HTTP API",
                    Api::Etcd => "etcd's client URL",
                },
                target.name()
            );
        }
        Ok(())
    }

    /// Sends one request and reads the whole answer (so that the connection is reused).
    pub async fn request(&mut self, request: &Request<'_>) -> Outcome {
        let (method, body) = match self.api {
            Api::Skiff => self.skiff(request),
            Api::Etcd => self.etcd(request),
        };
        let (status, answer) = match self.exchange(method, body).await {
            Ok(answered) => answered,
            Err(failure) => return Outcome::Error(failure.kind()),
        };
        match (self.api, request.operation, status.as_u16()) {
            (Api::Skiff, Operation::Get, 404) => Outcome::Miss,
            // A range that found nothing has no "kvs" field.
            (Api::Etcd, Operation::Get, 200) if !contains(&answer, b"\"kvs\"") => Outcome::Miss,
            (_, _, 200) => Outcome::Ok,
            (_, _, status) => Outcome::Error(format!("HTTP {status}")),
        }
    }

    /// `PUT /v1/kv/<key>` with the value as the body, or `GET /v1/kv/<key>?raw[&stale]`.
    fn skiff(&mut self, request: &Request<'_>) -> (Method, Bytes) {
        self.path.clear();
        self.path.push_str("/v1/kv/");
        // Keys are `key-<n>`: nothing to escape.
        self.path.push_str(std::str::from_utf8(request.key).unwrap_or_default());
        match request.operation {
            Operation::Put => (Method::PUT, Bytes::copy_from_slice(request.value)),
            Operation::Get => {
                self.path.push_str(if self.stale { "?raw&stale" } else { "?raw" });
                (Method::GET, Bytes::new())
            }
        }
    }

    /// `POST /v3/kv/put {"key", "value"}` or `POST /v3/kv/range {"key"[, "serializable"]}`,
    /// keys and values in base64.
    fn etcd(&mut self, request: &Request<'_>) -> (Method, Bytes) {
        self.path.clear();
        self.path.push_str(match request.operation {
            Operation::Put => "/v3/kv/put",
            Operation::Get => "/v3/kv/range",
        });
        etcd_body(request, self.stale, &mut self.base64, &mut self.body);
        (Method::POST, Bytes::copy_from_slice(&self.body))
    }

    /// Sends `method` to `self.path` with `body`, within the request timeout, opening the
    /// connection first if it is closed; returns the status and the body of the answer. On
    /// a failure the connection is closed.
    async fn exchange(&mut self, method: Method, body: Bytes) -> Result<(StatusCode, Bytes), Failure> {
        let request = hyper::Request::builder().method(method).uri(self.path.as_str()).header(HOST, self.host.clone());
        let request = if self.api == Api::Etcd {
            request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        } else {
            request
        };
        let request = match &self.token {
            Some(token) => request.header(TOKEN, token.clone()),
            None => request,
        };
        // The path is ours (`/v1/kv/key-<n>...`), always valid; a failure here is a bug.
        let request = request.body(Full::new(body)).expect("a valid request");
        let result = match tokio::time::timeout(self.timeout, self.send(request)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(Failure::Timeout),
        };
        if result.is_err() {
            self.open = None;
        }
        result
    }

    /// Sends `request` and reads its answer, polling the connection meanwhile.
    async fn send(&mut self, request: hyper::Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), Failure> {
        if self.open.as_ref().is_none_or(|open| open.sender.is_closed()) {
            self.open = Some(Box::new(connect(self.address, self.tls.as_ref()).await?));
        }
        let Some(Open { sender, driver }) = self.open.as_deref_mut() else {
            unreachable!("opened above");
        };
        let answer = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        tokio::pin!(answer);
        tokio::select! {
            // The answer first: a server that answers and then closes the connection has
            // answered.
            biased;
            answer = &mut answer => answer.map_err(Failure::Hyper),
            ended = driver => match ended {
                // The connection ended cleanly: an answer read to the end of the stream
                // (no length, `Connection: close`) is complete now; otherwise there was none.
                Ok(()) => answer.await.map_err(|_| Failure::Closed),
                Err(error) => Err(Failure::Hyper(error)),
            },
        }
    }
}

/// Opens a connection to `address` (TLS with `tls`) and starts HTTP/1.1 on it.
async fn connect(address: SocketAddr, tls: Option<&Tls>) -> Result<Open, Failure> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, stream::connect(address, tls)).await {
        Ok(connected) => connected.map_err(Failure::Io)?,
        Err(_elapsed) => return Err(Failure::Timeout),
    };
    let (sender, driver) = http1::handshake(TokioIo::new(stream)).await.map_err(Failure::Hyper)?;
    Ok(Open { sender, driver })
}

/// The JSON body of an etcd request, written into `body` (`text` is base64 scratch).
fn etcd_body(request: &Request<'_>, stale: bool, text: &mut Vec<u8>, body: &mut Vec<u8>) {
    body.clear();
    body.extend_from_slice(b"{\"key\":\"");
    append_base64(request.key, text, body);
    match request.operation {
        Operation::Put => {
            body.extend_from_slice(b"\",\"value\":\"");
            append_base64(request.value, text, body);
            body.extend_from_slice(b"\"}");
        }
        Operation::Get if stale => body.extend_from_slice(b"\",\"serializable\":true}"),
        Operation::Get => body.extend_from_slice(b"\"}"),
    }
}

fn append_base64(bytes: &[u8], scratch: &mut Vec<u8>, out: &mut Vec<u8>) {
    scratch.resize(base64::encoded_len(bytes.len(), true).unwrap_or(0), 0);
    let written = BASE64.encode_slice(bytes, scratch).unwrap_or(0);
    out.extend_from_slice(&scratch[..written]);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// The kind of a hyper error, for counting: an I/O error's kind if one caused it.
fn hyper_error_kind(error: &hyper::Error) -> String {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return io_error_kind(io);
        }
        source = cause.source();
    }
    if error.is_timeout() {
        "timeout".to_string()
    } else if error.is_incomplete_message() || error.is_closed() || error.is_canceled() {
        // The server closed the connection before (or while) it answered.
        "connection closed by the server".to_string()
    } else if error.is_parse() || error.is_parse_status() {
        "HTTP protocol error".to_string()
    } else {
        "HTTP client error".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_bodies_are_base64_json() {
        let (mut text, mut body) = (Vec::new(), Vec::new());
        let put = Request { operation: Operation::Put, key: b"key-1", value: b"hello" };
        etcd_body(&put, false, &mut text, &mut body);
        assert_eq!(body, br#"{"key":"a2V5LTE=","value":"aGVsbG8="}"#);
        let get = Request { operation: Operation::Get, key: b"key-1", value: b"" };
        etcd_body(&get, true, &mut text, &mut body);
        assert_eq!(body, br#"{"key":"a2V5LTE=","serializable":true}"#);
        etcd_body(&get, false, &mut text, &mut body);
        assert_eq!(body, br#"{"key":"a2V5LTE="}"#);
    }

    /// Reads a request's head (the tests send no bodies).
    async fn read_head(socket: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt as _;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0];
            if socket.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }

    #[tokio::test]
    async fn answers_failures_and_reconnection() {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (heads, mut received) = tokio::sync::mpsc::unbounded_channel();
        let server = tokio::spawn(async move {
            // The first connection: the probe, a read of a missing key, then a request
            // that it closes the connection on.
            let (mut socket, _) = listener.accept().await.unwrap();
            let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nn1";
            let missing = "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
            for answer in [ok, missing] {
                heads.send(read_head(&mut socket).await).unwrap();
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
            read_head(&mut socket).await;
            drop(socket);
            // The second: a 503, then silence.
            let (mut socket, _) = listener.accept().await.unwrap();
            read_head(&mut socket).await;
            socket.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await.unwrap();
            read_head(&mut socket).await;
            std::future::pending::<()>().await;
        });
        let endpoint = Endpoint { name: format!("http://{address}"), address, tls_name: None };
        let timeout = Duration::from_millis(300);
        let access = Access { tls: None, token: Some("s3cret-s3cret-s3cret") };
        let mut connection = HttpConnection::open(Target::SkiffHttp, &endpoint, false, timeout, access).await.unwrap();
        let get = Request { operation: Operation::Get, key: b"key-1", value: b"" };
        assert_eq!(connection.request(&get).await, Outcome::Miss);
        let closed = connection.request(&get).await;
        assert_eq!(closed, Outcome::Error("connection closed by the server".into()));
        assert!(closed.is_connection_failure());
        assert_eq!(connection.request(&get).await, Outcome::Error("HTTP 503".into()));
        assert_eq!(connection.request(&get).await, Outcome::Error("timeout".into()));
        server.abort();
        let probe = received.recv().await.unwrap().to_ascii_lowercase();
        assert!(probe.starts_with("get /v1/status/leader http/1.1\r\n"), "{probe}");
        assert!(probe.contains(&format!("\r\nhost: {address}\r\n")), "{probe}");
        assert!(probe.contains("\r\nx-consul-token: s3cret-s3cret-s3cret\r\n"), "{probe}");
        let read = received.recv().await.unwrap();
        assert!(read.starts_with("GET /v1/kv/key-1?raw HTTP/1.1\r\n"), "{read}");
    }

    #[tokio::test]
    async fn nothing_answering_is_named() {
        // Bound, then closed: nothing listens there.
        let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let endpoint = Endpoint { name: format!("http://{address}"), address, tls_name: None };
        let timeout = Duration::from_secs(1);
        let error =
            HttpConnection::open(Target::Etcd, &endpoint, false, timeout, Access::default()).await.err().unwrap();
        let message = error.to_string();
        assert!(message.starts_with(&format!("nothing answers at http://{address} (connection refused)")), "{message}");
    }
}
