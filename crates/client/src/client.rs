//! [`Client`]: the API's calls as methods, each with one deadline for all its attempts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ureq::http::Method;

use crate::api::{ClusterInfo, Entry, LogPage, Member, Members, NewMember, Probe, Status};
use crate::error::{Error, Result};
use crate::transport::{Call, Reply, Retry, Transport, encode_key, normalize_endpoint_as};

/// How long a call may take, retries included, unless [`ClientBuilder::timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Client::add_member`] may wait: the leader waits up to 30 s for the new node
/// to catch up before it promotes it.
const ADD_MEMBER_TIMEOUT: Duration = Duration::from_secs(40);

/// How up to date a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable: the read reflects every write acknowledged before it began (the
    /// answering node confirms the leader's commit index first: Raft §6.4, ReadIndex).
    #[default]
    Consistent,
    /// The answering node's copy as it is, however far behind; no round trip to the leader.
    Stale,
}

impl Consistency {
    /// The query parameter that asks for this consistency (none: the server's default).
    fn parameter(self) -> Option<&'static str> {
        match self {
            Consistency::Consistent => None,
            Consistency::Stale => Some("stale"),
        }
    }
}

/// How [`Client::put_with`] writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// An opaque number stored with the value (Consul's flags).
    pub flags: Option<u64>,
    /// Write only if the key's `modify_index` is this; `Some(0)`: only if the key does not exist.
    pub cas: Option<u64>,
}

/// How [`Client::delete_with`] deletes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Delete every key that starts with the given key.
    pub recurse: bool,
    /// Delete only if the key's `modify_index` is this.
    pub cas: Option<u64>,
}

/// Options for a [`Client`]; start with [`Client::builder`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    timeout: Duration,
    security: Security,
}

/// How a client proves itself and checks the server: TLS and a token.
#[derive(Clone, Debug, Default)]
pub(crate) struct Security {
    /// The CA certificate(s) the server's certificate must chain to (PEM). With it,
    /// endpoints written without a scheme are `https://`.
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate and its key (PEM), for servers that require one.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Sent as `X-Consul-Token` with every request.
    pub token: Option<String>,
}

impl ClientBuilder {
    /// Adds endpoints, each `host:port` or `http://host:port`: any nodes of the cluster,
    /// tried in order until one answers.
    pub fn endpoints<I>(mut self, endpoints: I) -> ClientBuilder
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.endpoints.extend(endpoints.into_iter().map(|endpoint| endpoint.as_ref().to_string()));
        self
    }

    /// How long one call may take, retries included (default [`DEFAULT_TIMEOUT`]). Calls
    /// that wait on the server ([`Client::add_member`]) may take longer.
    pub fn timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.timeout = timeout;
        self
    }

    /// Trust servers whose certificate chains to this CA (PEM, such as the `ca.pem` that
    /// `skiff certs` writes), and reach endpoints written without a scheme over `https://`.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> ClientBuilder {
        self.security.ca_pem = Some(pem.into());
        self
    }

    /// Present this certificate and key (PEM) to servers that require client certificates
    /// (`verify_clients = true`).
    pub fn client_certificate_pem(mut self, certificate: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> ClientBuilder {
        self.security.identity_pem = Some((certificate.into(), key.into()));
        self
    }

    /// Send this token (its secret) with every request, as `X-Consul-Token`.
    pub fn token(mut self, secret: impl Into<String>) -> ClientBuilder {
        self.security.token = Some(secret.into());
        self
    }

    /// The client, once every endpoint is valid.
    pub fn build(self) -> Result<Client> {
        let scheme = if self.security.ca_pem.is_some() { "https" } else { "http" };
        let endpoints: Vec<String> =
            self.endpoints.iter().map(|e| normalize_endpoint_as(e, scheme)).collect::<Result<_>>()?;
        if endpoints.is_empty() {
            return Err(Error::Options("no endpoints given"));
        }
        if self.timeout.is_zero() {
            return Err(Error::Options("the timeout must be more than zero"));
        }
        Ok(Client {
            transport: Transport::new(endpoints, self.timeout, self.security)?,
            timeout: self.timeout,
            session: session_id(),
            writes: AtomicU64::new(0),
        })
    }
}

/// A blocking client of one cluster's HTTP API (docs/http-api.md).
///
/// Every call has one deadline (the client's timeout) for all its attempts. A call goes to
/// the endpoint that answered last; when an endpoint refuses the connection, the next one
/// is tried at once. After a 503 (no leader yet) the call is retried on the next endpoint
/// after a pause that doubles from 50 ms up to 1 s (shorter when the server's
/// `Retry-After` says so). Reads, and writes of the
/// key-value API, are also retried after a 504 or a connection lost mid-request: every
/// attempt of one write carries the same `Idempotency-Key`, so the cluster applies it once
/// (thesis §6.3). Membership changes and leader transfers are retried only when they
/// surely did not happen. Any node accepts any key-value call (a follower forwards it to
/// the leader); a membership change asked of a follower is redirected to the leader (307),
/// and the client follows the redirect.
///
/// A `Client` is `Send + Sync`: share one between threads (it keeps a pool of connections).
pub struct Client {
    transport: Transport,
    timeout: Duration,
    /// A random id for this client; idempotency keys are `<session>-<write number>`.
    session: String,
    writes: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Client")
            .field("endpoints", &self.transport.endpoints())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// 64 random bits in hex, from the standard library's randomly seeded hasher (no extra
/// dependency for one number per client).
fn session_id() -> String {
    use std::hash::BuildHasher;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let random = std::collections::hash_map::RandomState::new().hash_one((now, std::process::id()));
    format!("{random:016x}")
}

/// `path?a&b`, or `path` when there are no parameters.
fn with_query(path: String, parameters: &[String]) -> String {
    if parameters.is_empty() { path } else { format!("{path}?{}", parameters.join("&")) }
}

/// A write's answer: `true`, or `false` when its `cas` check failed.
fn written(reply: Reply) -> Result<bool> {
    let reply = reply.success()?;
    match String::from_utf8_lossy(&reply.body).trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(reply.decode_error(format!("{other:?}, neither true nor false"))),
    }
}

impl Client {
    /// Options for a client, starting from no endpoint and [`DEFAULT_TIMEOUT`].
    pub fn builder() -> ClientBuilder {
        ClientBuilder { endpoints: Vec::new(), timeout: DEFAULT_TIMEOUT, security: Security::default() }
    }

    /// A client of the nodes at `endpoints` (`host:port` or `http://host:port`) with the
    /// default timeout.
    pub fn new<I>(endpoints: I) -> Result<Client>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Client::builder().endpoints(endpoints).build()
    }

    /// The endpoints, normalized to `http://host:port` (or `https://`).
    pub fn endpoints(&self) -> &[String] {
        self.transport.endpoints()
    }

    /// How long one call may take, retries included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A call that is retried wherever it safely can be.
    fn read(&self, path: &str) -> Result<Reply> {
        let call = Call {
            method: Method::GET,
            path,
            body: None,
            idempotency_key: None,
            retry: Retry::Safe,
            timeout: self.timeout,
        };
        self.transport.call(&call)
    }

    /// A `PUT` or `DELETE` of the key-value API, with a fresh `Idempotency-Key` that every
    /// retry repeats.
    fn write(&self, method: Method, path: &str, body: Option<&[u8]>) -> Result<bool> {
        let number = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        let key = format!("{}-{number}", self.session);
        let call = Call { method, path, body, idempotency_key: Some(&key), retry: Retry::Safe, timeout: self.timeout };
        written(self.transport.call(&call)?)
    }

    /// A cluster operation: retried only when it surely did not happen; `timeout` may
    /// exceed the client's for operations that wait.
    fn operation(&self, method: Method, path: &str, body: Option<&[u8]>, timeout: Duration) -> Result<Reply> {
        let timeout = timeout.max(self.timeout);
        let call = Call { method, path, body, idempotency_key: None, retry: Retry::Unavailable, timeout };
        self.transport.call(&call)
    }

    /// The key's value and indexes; [`Error::NotFound`] if it does not exist.
    pub fn get(&self, key: &str, consistency: Consistency) -> Result<Entry> {
        let parameters: Vec<String> = consistency.parameter().map(str::to_string).into_iter().collect();
        let reply = self.read(&with_query(format!("/v1/kv/{}", encode_key(key)), &parameters))?;
        if reply.status == 404 {
            return Err(Error::NotFound { key: key.to_string() });
        }
        let reply = reply.success()?;
        let entries: Vec<Entry> = reply.json()?;
        entries.into_iter().next().ok_or_else(|| reply.decode_error(format!("an empty list for {key:?}")))
    }

    /// The key's value alone, as bytes (no base64 on the way); [`Error::NotFound`] if it
    /// does not exist.
    pub fn get_raw(&self, key: &str, consistency: Consistency) -> Result<Vec<u8>> {
        let parameters: Vec<String> = ["raw"].into_iter().chain(consistency.parameter()).map(str::to_string).collect();
        let reply = self.read(&with_query(format!("/v1/kv/{}", encode_key(key)), &parameters))?;
        if reply.status == 404 {
            return Err(Error::NotFound { key: key.to_string() });
        }
        Ok(reply.success()?.body)
    }

    /// Every key that starts with `prefix` (`""`: all), in key order, with its value.
    pub fn list(&self, prefix: &str, consistency: Consistency) -> Result<Vec<Entry>> {
        self.list_json(prefix, "recurse", consistency)
    }

    /// The names of the keys that start with `prefix`, in order.
    pub fn list_keys(&self, prefix: &str, consistency: Consistency) -> Result<Vec<String>> {
        self.list_json(prefix, "keys", consistency)
    }

    fn list_json<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
        mode: &str,
        consistency: Consistency,
    ) -> Result<Vec<T>> {
        let parameters: Vec<String> = [mode].into_iter().chain(consistency.parameter()).map(str::to_string).collect();
        let reply = self.read(&with_query(format!("/v1/kv/{}", encode_key(prefix)), &parameters))?;
        // Consul answers 404 when no key matches.
        if reply.status == 404 {
            return Ok(Vec::new());
        }
        reply.success()?.json()
    }

    /// Sets the key's value. Returns `true` (a plain put always succeeds).
    pub fn put(&self, key: &str, value: impl AsRef<[u8]>) -> Result<bool> {
        self.put_with(key, value, WriteOptions::default())
    }

    /// Sets the key's value with flags, or only if a check holds: `false` when the `cas`
    /// check failed and nothing was written.
    pub fn put_with(&self, key: &str, value: impl AsRef<[u8]>, options: WriteOptions) -> Result<bool> {
        let parameters: Vec<String> = [("flags", options.flags), ("cas", options.cas)]
            .into_iter()
            .filter_map(|(name, number)| number.map(|number| format!("{name}={number}")))
            .collect();
        let path = with_query(format!("/v1/kv/{}", encode_key(key)), &parameters);
        self.write(Method::PUT, &path, Some(value.as_ref()))
    }

    /// Compare-and-set: writes only if the key's `modify_index` is `index` (0: only if the
    /// key does not exist). `false` when the check failed and nothing was written.
    pub fn cas(&self, key: &str, value: impl AsRef<[u8]>, index: u64) -> Result<bool> {
        self.put_with(key, value, WriteOptions { cas: Some(index), ..WriteOptions::default() })
    }

    /// Deletes the key. Returns `true`, also when it did not exist.
    pub fn delete(&self, key: &str) -> Result<bool> {
        self.delete_with(key, DeleteOptions::default())
    }

    /// Deletes the key, or every key under it, or only if a check holds: `false` when the
    /// `cas` check failed and nothing was deleted.
    pub fn delete_with(&self, key: &str, options: DeleteOptions) -> Result<bool> {
        let mut parameters = Vec::new();
        if options.recurse {
            parameters.push("recurse".to_string());
        }
        if let Some(index) = options.cas {
            parameters.push(format!("cas={index}"));
        }
        self.write(Method::DELETE, &with_query(format!("/v1/kv/{}", encode_key(key)), &parameters), None)
    }

    /// The status of whichever node answers.
    pub fn status(&self) -> Result<Status> {
        self.read("/v1/skiff/status")?.success()?.json()
    }

    /// The status of the node at `endpoint` (`host:port`, need not be one of the client's;
    /// `https://` if the client's endpoints are),
    /// asked once, waiting at most `timeout` (and no longer than the client's timeout).
    pub fn node_status(&self, endpoint: &str, timeout: Duration) -> Result<Status> {
        self.get_once(endpoint, "/v1/skiff/status", timeout)?.success()?.json()
    }

    /// Whether the node at `endpoint` is alive (`GET /v1/health`): its process answers and
    /// its node has not stopped. Asked once, as [`Client::node_status`]. A node that
    /// answers "stopped" is an `Ok` [`Probe`] that did not pass.
    pub fn health(&self, endpoint: &str, timeout: Duration) -> Result<Probe> {
        self.probe(endpoint, "/v1/health", timeout)
    }

    /// Whether the node at `endpoint` is ready to serve (`GET /v1/ready`): it knows a
    /// leader, has applied its committed entries to within the server's default bound
    /// (1000), and no alarm is raised. Asked once, as [`Client::node_status`]. A node that
    /// is not ready is an `Ok` [`Probe`] that did not pass, with the reasons.
    pub fn ready(&self, endpoint: &str, timeout: Duration) -> Result<Probe> {
        self.probe(endpoint, "/v1/ready", timeout)
    }

    /// A probe's answer: 200 or a 503 with a probe's body; anything else is an error.
    fn probe(&self, endpoint: &str, path: &str, timeout: Duration) -> Result<Probe> {
        let reply = self.get_once(endpoint, path, timeout)?;
        if reply.status == 503
            && let Ok(probe) = reply.json::<Probe>()
        {
            return Ok(probe);
        }
        reply.success()?.json()
    }

    /// `GET path` of the node at `endpoint` (`host:port`, need not be one of the client's;
    /// `https://` if the client's endpoints are), once, waiting at most `timeout` (and no
    /// longer than the client's timeout).
    fn get_once(&self, endpoint: &str, path: &str, timeout: Duration) -> Result<crate::transport::Reply> {
        let scheme =
            if self.endpoints().iter().all(|endpoint| endpoint.starts_with("https://")) { "https" } else { "http" };
        let base = normalize_endpoint_as(endpoint, scheme)?;
        let timeout = timeout.min(self.timeout);
        let call = Call { method: Method::GET, path, body: None, idempotency_key: None, retry: Retry::Safe, timeout };
        self.transport.call_once(&base, &call)
    }

    /// A page of the answering node's log: from index `from` (default: the last `limit`
    /// entries), at most `limit` entries (default 100, at most 1000).
    pub fn log(&self, from: Option<u64>, limit: Option<u64>) -> Result<LogPage> {
        let parameters: Vec<String> = [("from", from), ("limit", limit)]
            .into_iter()
            .filter_map(|(name, value)| value.map(|value| format!("{name}={value}")))
            .collect();
        self.read(&with_query("/v1/skiff/log".to_string(), &parameters))?.success()?.json()
    }

    /// The cluster's members and the leader, as the answering node knows them.
    pub fn members(&self) -> Result<Members> {
        self.read("/v1/skiff/members")?.success()?.json()
    }

    /// What a node needs to join the cluster by address: its name, settings and members.
    pub fn cluster(&self) -> Result<ClusterInfo> {
        self.read("/v1/skiff/cluster")?.success()?.json()
    }

    /// Adds a running node at the addresses `member` gives (every member learns them from
    /// the replicated membership): first as a learner, then, once it has caught up and
    /// unless `member.learner`, as a voter (thesis §4.2.1). Waits up to 40 s for the
    /// catch-up. Adding a learner again with the same addresses goes on with its catch-up
    /// and promotion, so a join can be retried.
    pub fn add_member(&self, member: &NewMember) -> Result<Member> {
        // Strings and a bool: serializing cannot fail.
        let body = serde_json::to_vec(member).expect("a NewMember serializes");
        let mut reply = self.operation(Method::POST, "/v1/skiff/members", Some(&body), ADD_MEMBER_TIMEOUT)?;
        // A follower points at the leader, which alone can tell when the new node caught up.
        if reply.status == 307
            && let Some(leader) = reply.location.clone()
        {
            let timeout = ADD_MEMBER_TIMEOUT.max(self.timeout);
            let call = Call {
                method: Method::POST,
                path: "",
                body: Some(&body),
                idempotency_key: None,
                retry: Retry::Unavailable,
                timeout,
            };
            reply = self.transport.call_once(&leader, &call)?;
        }
        reply.success()?.json()
    }

    /// Removes the member `id` from the cluster.
    pub fn remove_member(&self, id: &str) -> Result<()> {
        let path = format!("/v1/skiff/members/{}", encode_key(id));
        self.operation(Method::DELETE, &path, None, Duration::ZERO)?.success()?;
        Ok(())
    }

    /// Makes the learner `id` a voter.
    pub fn promote_member(&self, id: &str) -> Result<Member> {
        let path = format!("/v1/skiff/members/{}/promote", encode_key(id));
        self.operation(Method::POST, &path, None, Duration::ZERO)?.success()?.json()
    }

    /// Hands leadership to the voter `to`, or without one to the most up-to-date voter;
    /// returns once a new leader is known (thesis §3.10).
    pub fn transfer_leader(&self, to: Option<&str>) -> Result<()> {
        let query = to.map(|id| format!("?id={}", encode_key(id))).unwrap_or_default();
        let path = format!("/v1/operator/raft/transfer-leader{query}");
        let reply = self.operation(Method::POST, &path, None, Duration::ZERO)?.success()?;
        let answer: serde_json::Value = reply.json()?;
        if answer.get("Success").and_then(serde_json::Value::as_bool) != Some(true) {
            return Err(reply.decode_error(format!("{answer}, not {{\"Success\":true}}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let client = Client::new([address]).unwrap();
        assert!(client.put("k", "v").unwrap());
        let keys = server.join().unwrap();
        assert_eq!(keys.len(), 3);
        assert!(keys.iter().all(|key| *key == keys[0]), "{keys:?}");

        // The next write has a new key.
        let (address, server) = fake_server(vec![Some(done), Some(done)]);
        let client = Client::new([address]).unwrap();
        client.put("a", "1").unwrap();
        client.delete("a").unwrap();
        let keys = server.join().unwrap();
        assert_eq!(keys.len(), 2);
        assert_ne!(keys[0], keys[1]);
    }

    #[test]
    fn a_failing_probe_is_an_answer_and_a_missing_route_an_error() {
        let body = r#"{"status":"not ready","id":"n2","max_lag":1000,"reasons":["no leader is known"]}"#;
        let not_ready = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let not_found = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let (address, server) = fake_server(vec![Some(not_ready.leak()), Some(not_found)]);
        let client = Client::new([address.clone()]).unwrap();
        let endpoint = address.trim_start_matches("http://");
        let probe = client.ready(endpoint, Duration::from_secs(5)).unwrap();
        assert!(!probe.passed());
        assert_eq!(probe.status, "not ready");
        assert_eq!(probe.max_lag, Some(1000));
        assert_eq!(probe.reasons, ["no leader is known"]);
        let missing = client.health(endpoint, Duration::from_secs(5));
        assert!(matches!(missing, Err(Error::Http { status: 404, .. })), "{missing:?}");
        server.join().unwrap();
    }

    /// A CA certificate, as `skiff certs` writes it.
    const CA: &str = "-----BEGIN CERTIFICATE-----
MIIBfTCCASOgAwIBAgIUaNlbmDGYI6N9Uv/FxJxrMYsspPowCgYIKoZIzj0EAwIw
GzEZMBcGA1UEAwwQU2tpZmYgY2x1c3RlciBDQTAeFw0yNTAxMDEwMDAwMDBaFw0z
NjAxMDEwMDAwMDBaMBsxGTAXBgNVBAMMEFNraWZmIGNsdXN0ZXIgQ0EwWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAARPSEUEv3rUZBmd7j8j5LPeyrSq+hhU1cH/C6Px
c94/h+mp9VRYCETamtsqoAsDZ3xExKPhx0gofJjF3QaBztNto0UwQzAOBgNVHQ8B
Af8EBAMCAQYwHQYDVR0OBBYEFH2CJRwVRjn9CMSDW6v92tDtGvKFMBIGA1UdEwEB
/wQIMAYBAf8CAQAwCgYIKoZIzj0EAwIDSAAwRQIgJLM8XTNIXOtr8iVPFW8UxcgG
3XOdA6bLRM8jf217MtICIQC6W/7dHqDZSQH2Zrkqxa7bRJTZmCeVZWn2uzQNsyLL
Zw==
-----END CERTIFICATE-----
";

    #[test]
    fn options_that_cannot_work_are_refused() {
        let no_endpoints: [&str; 0] = [];
        assert!(matches!(Client::new(no_endpoints), Err(Error::Options(_))));
        let zero = Client::builder().endpoints(["127.0.0.1:1"]).timeout(Duration::ZERO).build();
        assert!(matches!(zero, Err(Error::Options(_))));
        assert!(matches!(Client::new(["ftp://a:1"]), Err(Error::InvalidEndpoint { .. })));
        let not_a_ca = Client::builder().endpoints(["a:1"]).ca_pem("not a certificate").build();
        assert!(matches!(not_a_ca, Err(Error::Options(_))), "{not_a_ca:?}");
        let https = Client::builder().endpoints(["a:1"]).ca_pem(CA).build().unwrap();
        assert_eq!(https.endpoints(), ["https://a:1"], "with a CA, host:port is https");
    }
}
