//! The HTTP targets: Skiff's KV API and etcd's v3 JSON gateway, over ureq.
//!
//! One [`ureq::Agent`] per connection, keeping at most one idle connection: used by one
//! thread, one request at a time, it holds exactly one keep-alive connection (reopened by
//! the next request if it fails). HTTP/1.1 carries one request at a time, so the clients
//! that share a connection take turns ([`super::worker`]).

use std::fmt::Write as _;
use std::io::Read;
use std::time::Duration;

use anyhow::{Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::connection::{Operation, Outcome, Request, io_error_kind, unreachable};
use super::options::{Endpoint, Target};

/// The longest a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Which API the endpoint speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    Skiff,
    Etcd,
}

/// A keep-alive HTTP connection to one endpoint, and its buffers, reused from request to
/// request.
pub struct HttpConnection {
    api: Api,
    /// `http://host:port`.
    base: String,
    stale: bool,
    agent: ureq::Agent,
    url: String,
    /// A JSON request body (etcd), and base64 scratch for it.
    body: Vec<u8>,
    base64: Vec<u8>,
    /// A response body, read and dropped.
    response: Vec<u8>,
}

impl HttpConnection {
    /// Opens a connection to `endpoint` and checks that it is the API of `target`.
    pub fn open(target: Target, endpoint: &Endpoint, stale: bool, timeout: Duration) -> Result<HttpConnection> {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections(1)
            .max_idle_connections_per_host(1)
            .max_redirects(0)
            // Timeouts for each step, not a global one: with a global timeout, ureq
            // resolves the host on a new thread for every request (measured: a thread
            // per request, most of the generator's CPU).
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_send_request(Some(timeout))
            .timeout_send_body(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_recv_body(Some(timeout))
            .build()
            .new_agent();
        let connection = HttpConnection {
            api: if target == Target::Etcd { Api::Etcd } else { Api::Skiff },
            base: endpoint.name.clone(),
            stale,
            agent,
            url: String::new(),
            body: Vec::new(),
            base64: Vec::new(),
            response: Vec::new(),
        };
        connection.probe(target)?;
        Ok(connection)
    }

    /// One request that any node of the target answers with 200, which also opens the
    /// connection.
    fn probe(&self, target: Target) -> Result<()> {
        let agent = &self.agent;
        let (route, answer) = match self.api {
            Api::Skiff => ("GET /v1/status/leader", agent.get(format!("{}/v1/status/leader", self.base)).call()),
            Api::Etcd => {
                let url = format!("{}/v3/maintenance/status", self.base);
                ("POST /v3/maintenance/status", agent.post(url).content_type("application/json").send("{}"))
            }
        };
        let mut response = match answer {
            Ok(response) => response,
            Err(error) => return Err(unreachable(target, &self.base, &ureq_error_kind(&error))),
        };
        let _ = response.body_mut().as_reader().read_to_end(&mut Vec::new());
        let status = response.status().as_u16();
        if status != 200 {
            bail!(
                "{} answered HTTP {status} to {route}: is it {}? (--target {})",
                self.base,
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
    pub fn request(&mut self, request: &Request<'_>) -> Outcome {
        let answer = match self.api {
            Api::Skiff => self.skiff(request),
            Api::Etcd => self.etcd(request),
        };
        let mut response = match answer {
            Ok(response) => response,
            Err(error) => return Outcome::Error(ureq_error_kind(&error)),
        };
        self.response.clear();
        if let Err(error) = response.body_mut().as_reader().read_to_end(&mut self.response) {
            return Outcome::Error(io_error_kind(&error));
        }
        match (self.api, request.operation, response.status().as_u16()) {
            (Api::Skiff, Operation::Get, 404) => Outcome::Miss,
            // A range that found nothing has no "kvs" field.
            (Api::Etcd, Operation::Get, 200) if !contains(&self.response, b"\"kvs\"") => Outcome::Miss,
            (_, _, 200) => Outcome::Ok,
            (_, _, status) => Outcome::Error(format!("HTTP {status}")),
        }
    }

    /// `PUT /v1/kv/<key>` with the value as the body, or `GET /v1/kv/<key>?raw[&stale]`.
    fn skiff(&mut self, request: &Request<'_>) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        self.url.clear();
        self.url.push_str(&self.base);
        self.url.push_str("/v1/kv/");
        // Keys are `key-<n>`: nothing to escape.
        self.url.push_str(std::str::from_utf8(request.key).unwrap_or_default());
        match request.operation {
            Operation::Put => self.agent.put(&self.url).send(request.value),
            Operation::Get => {
                self.url.push_str(if self.stale { "?raw&stale" } else { "?raw" });
                self.agent.get(&self.url).call()
            }
        }
    }

    /// `POST /v3/kv/put {"key", "value"}` or `POST /v3/kv/range {"key"[, "serializable"]}`,
    /// keys and values in base64.
    fn etcd(&mut self, request: &Request<'_>) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        self.url.clear();
        self.url.push_str(&self.base);
        self.url.push_str(match request.operation {
            Operation::Put => "/v3/kv/put",
            Operation::Get => "/v3/kv/range",
        });
        etcd_body(request, self.stale, &mut self.base64, &mut self.body);
        self.agent.post(&self.url).content_type("application/json").send(&self.body[..])
    }
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

/// The kind of a ureq error, for counting.
fn ureq_error_kind(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Timeout(_) => "timeout".to_string(),
        ureq::Error::Io(io) => io_error_kind(io),
        ureq::Error::ConnectionFailed => "connection refused".to_string(),
        ureq::Error::HostNotFound => "host not found".to_string(),
        ureq::Error::Protocol(_) => "HTTP protocol error".to_string(),
        other => {
            let mut kind = String::from("client error: ");
            let _ = write!(kind, "{other}");
            kind.truncate(kind.find(|c: char| c.is_ascii_digit()).unwrap_or(kind.len()).min(60));
            kind.trim_end().to_string()
        }
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
}
