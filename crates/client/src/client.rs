//! [`Client`]: the API's calls as methods, each with one deadline for all its attempts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ureq::http::Method;

use crate::api::{
    ClusterInfo, Entry, Lease, LogPage, Member, Members, NewMember, Probe, Session, SessionId, SessionRequest, Status,
    TxnCommitted, TxnOp, TxnOutcome, TxnRolledBack, Watched, duration_text, txn_body,
};
use crate::error::{Error, Result};
use crate::feed::{Watch, WatchOptions};
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
    /// Write only while this fencing token (from [`Client::acquire`]) holds its lock;
    /// otherwise the write fails with [`Error::Fenced`] and nothing is written.
    pub fence: Option<u64>,
}

/// How [`Client::delete_with`] deletes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Delete every key that starts with the given key.
    pub recurse: bool,
    /// Delete only if the key's `modify_index` is this.
    pub cas: Option<u64>,
    /// Delete only while this fencing token holds its lock (see [`WriteOptions::fence`]).
    pub fence: Option<u64>,
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
            transport: Arc::new(Transport::new(endpoints, self.timeout, self.security)?),
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
    transport: Arc<Transport>,
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

/// A 404 (the session or lease is gone) as [`Error::NoSuchSession`]; other failures as
/// usual.
fn gone_is_no_such_session(reply: Reply, session: &SessionId) -> Result<Reply> {
    if reply.status == 404 {
        let message = format!("no such session {session}: it does not exist, or it ended");
        return Err(Error::NoSuchSession { message, endpoint: reply.endpoint });
    }
    reply.success()
}

/// The one session of a `[session]` answer.
fn first_session(reply: Reply) -> Result<Session> {
    let sessions: Vec<Session> = reply.json()?;
    sessions.into_iter().next().ok_or_else(|| reply.decode_error("an empty list of sessions".to_string()))
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
        written(self.write_reply(method, path, body, Retry::Safe)?)
    }

    /// [`Client::write`]'s call, answered with the whole reply; `retry` says after what
    /// failures the same request (with the same `Idempotency-Key`) is sent again.
    fn write_reply(&self, method: Method, path: &str, body: Option<&[u8]>, retry: Retry) -> Result<Reply> {
        let number = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        let key = format!("{}-{number}", self.session);
        let call = Call { method, path, body, idempotency_key: Some(&key), retry, timeout: self.timeout };
        self.transport.call(&call)
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
        let parameters: Vec<String> = [("flags", options.flags), ("cas", options.cas), ("fence", options.fence)]
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
        if let Some(token) = options.fence {
            parameters.push(format!("fence={token}"));
        }
        self.write(Method::DELETE, &with_query(format!("/v1/kv/{}", encode_key(key)), &parameters), None)
    }

    /// Writes the key only while the fencing token `fence` (from [`Client::acquire`]) holds
    /// its lock: [`Error::Fenced`] when the lock was released or its session ended since,
    /// and nothing was written. Retried as [`Client::put`] (one `Idempotency-Key`).
    pub fn put_fenced(&self, key: &str, value: impl AsRef<[u8]>, fence: u64) -> Result<bool> {
        self.put_with(key, value, WriteOptions { fence: Some(fence), ..WriteOptions::default() })
    }

    /// Writes the key tied to the session or lease `lease`: it is deleted when the lease
    /// ends. `false` when another session holds the key's lock; [`Error::NoSuchSession`]
    /// when the lease does not exist.
    pub fn put_leased(&self, key: &str, value: impl AsRef<[u8]>, lease: &SessionId) -> Result<bool> {
        let path = format!("/v1/kv/{}?lease={}", encode_key(key), encode_key(lease.as_str()));
        self.write(Method::PUT, &path, Some(value.as_ref()))
    }

    /// Applies `ops` as one transaction (`PUT /v1/txn`): in order, as one log entry, all or
    /// nothing. [`TxnOutcome::Committed`] with the results, or [`TxnOutcome::RolledBack`]
    /// with the failing operation's position and reason (a 409: nothing was applied).
    ///
    /// Retried as [`Client::put`]: every attempt carries the same `Idempotency-Key`, which
    /// the server honours, so a transaction retried after a lost answer is applied at most
    /// once. After [`Error::Timeout`] it may or may not have been applied, but never in
    /// part. A malformed transaction (an empty one, a missing key) is an [`Error::Http`]
    /// 400; one over the size limits a 413.
    pub fn txn(&self, ops: &[TxnOp]) -> Result<TxnOutcome> {
        let body = txn_body(ops);
        let reply = self.write_reply(Method::PUT, "/v1/txn", Some(&body), Retry::Safe)?;
        if reply.status == 409
            && let Ok(rolled_back) = reply.json::<TxnRolledBack>()
        {
            let failure = rolled_back
                .errors
                .into_iter()
                .next()
                .ok_or_else(|| reply.decode_error("a 409 with no errors".to_string()))?;
            return Ok(TxnOutcome::RolledBack { op_index: failure.op_index, what: failure.what });
        }
        let reply = reply.success()?;
        let committed: TxnCommitted = reply.json()?;
        let results = committed.results.unwrap_or_default();
        Ok(TxnOutcome::Committed(results.into_iter().map(|result| result.kv).collect()))
    }

    /// Follows the changes under `prefix` (`""`: every key) through the change feed
    /// (`GET /v1/skiff/watch`, as NDJSON): a [`Watch`], an iterator of
    /// [`FeedEvent`](crate::FeedEvent)s that resumes by itself (on the same node or
    /// another) when its stream ends, without losing or repeating an event.
    ///
    /// Without [`WatchOptions::from`], the changes after the answering node's applied
    /// index (`GET /v1/skiff/status`), read first, after a linearizable read of the prefix
    /// (so no write acknowledged before the call is shown). The first stream is opened here, within
    /// the client's timeout, so a refused request is an error here: [`Error::Http`] 400 for
    /// a prefix longer than the server's longest key, 403 for a token that may not read it.
    /// The `Watch` has the client's endpoints, TLS settings and token; it does not borrow
    /// the client.
    pub fn feed(&self, prefix: &str, options: WatchOptions) -> Result<Watch> {
        let from = match options.from {
            Some(from) => from,
            None => {
                // A linearizable read first, so that the answering node (the next call's,
                // unless it fails) has applied every write acknowledged before `feed` was
                // called. Any key does: one under the prefix, which the token may read.
                let barrier = if prefix.is_empty() { "." } else { prefix };
                match self.get(barrier, Consistency::Consistent) {
                    Ok(_) | Err(Error::NotFound { .. }) => {}
                    Err(error) => return Err(error),
                }
                self.status()?.applied
            }
        };
        Watch::open(Arc::clone(&self.transport), prefix, options, from, self.timeout)
    }

    /// A blocking read: waits until the key changes after `index` (an
    /// [`X-Consul-Index`](Watched::index) of an earlier read; 0 answers at once), or for
    /// `wait` (the server caps it at 10 minutes), then reads it. The call's deadline is
    /// `wait` plus the client's timeout.
    pub fn watch(&self, key: &str, index: u64, wait: Duration) -> Result<Watched> {
        let path = format!("/v1/kv/{}?index={index}&wait={}", encode_key(key), duration_text(wait));
        let call = Call {
            method: Method::GET,
            path: &path,
            body: None,
            idempotency_key: None,
            retry: Retry::Safe,
            timeout: wait + self.timeout,
        };
        let reply = self.transport.call(&call)?;
        if reply.status == 404 {
            return Ok(Watched { entry: None, index: reply.index.unwrap_or(0) });
        }
        let reply = reply.success()?;
        let index = reply.index.ok_or_else(|| reply.decode_error("no X-Consul-Index header".to_string()))?;
        let entries: Vec<Entry> = reply.json()?;
        Ok(Watched { entry: entries.into_iter().next(), index })
    }

    /// Creates a session (`PUT /v1/session/create`) and returns its id.
    ///
    /// Each session created is a new one, so a retry could create a second: the request
    /// carries an `Idempotency-Key`, and it is retried after a lost answer only when it has a
    /// TTL, so that a session created twice (were the key not honoured) ends by itself and
    /// holds nothing. Without a TTL it is retried only when it surely did not happen.
    pub fn session_create(&self, request: &SessionRequest) -> Result<SessionId> {
        #[derive(serde::Deserialize)]
        struct Created {
            #[serde(rename = "ID")]
            id: SessionId,
        }
        let retry = if request.ttl.is_some() { Retry::Safe } else { Retry::Unavailable };
        let reply = self.write_reply(Method::PUT, "/v1/session/create", Some(&request.to_json()), retry)?;
        Ok(reply.success()?.json::<Created>()?.id)
    }

    /// Renews a session's TTL (`PUT /v1/session/renew/<id>`); [`Error::NoSuchSession`] when it
    /// has ended. Renewing twice is harmless, so it is retried as a read.
    pub fn session_renew(&self, session: &SessionId) -> Result<Session> {
        let path = format!("/v1/session/renew/{}", encode_key(session.as_str()));
        let reply = self.idempotent(Method::PUT, &path)?;
        first_session(gone_is_no_such_session(reply, session)?)
    }

    /// Ends a session (`PUT /v1/session/destroy/<id>`): its locks are released (or its keys
    /// deleted, with behavior delete). Ending it twice is harmless: retried as a read.
    pub fn session_destroy(&self, session: &SessionId) -> Result<bool> {
        let path = format!("/v1/session/destroy/{}", encode_key(session.as_str()));
        written(self.idempotent(Method::PUT, &path)?)
    }

    /// The session, or `None` if it does not exist (`GET /v1/session/info/<id>`).
    pub fn session_info(&self, session: &SessionId) -> Result<Option<Session>> {
        let reply = self.read(&format!("/v1/session/info/{}", encode_key(session.as_str())))?;
        if reply.status == 404 {
            return Ok(None);
        }
        // Consul answers `null` or `[]` for a session that does not exist.
        let sessions: Option<Vec<Session>> = reply.success()?.json()?;
        Ok(sessions.and_then(|sessions| sessions.into_iter().next()))
    }

    /// Every session (`GET /v1/session/list`).
    pub fn session_list(&self) -> Result<Vec<Session>> {
        let sessions: Option<Vec<Session>> = self.read("/v1/session/list")?.success()?.json()?;
        Ok(sessions.unwrap_or_default())
    }

    /// Takes the key's lock for `session` and writes `value` (`PUT /v1/kv/<key>?acquire=`):
    /// `Some(fencing token)` when the session holds the lock now, `None` when another
    /// session holds it (or its lock delay has not passed). [`Error::NoSuchSession`] when the
    /// session has ended.
    ///
    /// **Retries cannot acquire twice.** The request is retried after a lost answer with
    /// the same `Idempotency-Key`, so the cluster applies it at most once and a retry gets
    /// the first attempt's answer. Were that answer forgotten, a second application is still
    /// harmless: the session already holding the lock acquires it again with the same token
    /// and `LockIndex`. The lock cannot have passed through other hands in between, since
    /// only this call's caller releases it, and a session that ended makes the retry fail.
    /// When the call fails with [`Error::Timeout`] the session may hold the lock: read the
    /// key (its [`Entry::session`]) or destroy the session to be sure it does not.
    pub fn acquire(&self, key: &str, value: impl AsRef<[u8]>, session: &SessionId) -> Result<Option<u64>> {
        let path = format!("/v1/kv/{}?acquire={}", encode_key(key), encode_key(session.as_str()));
        let reply = self.write_reply(Method::PUT, &path, Some(value.as_ref()), Retry::Safe)?.success()?;
        let (fence, endpoint) = (reply.fence, reply.endpoint.clone());
        if !written(reply)? {
            return Ok(None);
        }
        match fence {
            Some(token) => Ok(Some(token)),
            None => {
                // The lock is held without a token the caller can use; let it go.
                let _ = self.release(key, value, session);
                Err(Error::Decode {
                    endpoint,
                    status: 200,
                    detail: "the lock was acquired but the answer had no Skiff-Fence header (released again)".into(),
                })
            }
        }
    }

    /// Lets the key's lock go and writes `value` (`PUT /v1/kv/<key>?release=`): `true` if
    /// `session` held it, `false` if it did not. Retried with one `Idempotency-Key`, as a put.
    pub fn release(&self, key: &str, value: impl AsRef<[u8]>, session: &SessionId) -> Result<bool> {
        let path = format!("/v1/kv/{}?release={}", encode_key(key), encode_key(session.as_str()));
        self.write(Method::PUT, &path, Some(value.as_ref()))
    }

    /// Grants a lease of `ttl` (`POST /v1/skiff/lease`): put keys with it
    /// ([`Client::put_leased`]) and they are deleted when it ends. Retried after a lost
    /// answer with one `Idempotency-Key`: a lease granted twice (were the key not honoured)
    /// holds nothing and ends by itself.
    pub fn lease_grant(&self, ttl: Duration) -> Result<Lease> {
        let body = serde_json::json!({ "TTL": duration_text(ttl) }).to_string();
        self.write_reply(Method::POST, "/v1/skiff/lease", Some(body.as_bytes()), Retry::Safe)?.success()?.json()
    }

    /// Restarts a lease's TTL (`PUT /v1/skiff/lease/<id>/keepalive`); [`Error::NoSuchSession`]
    /// when it has ended.
    pub fn lease_keepalive(&self, lease: &SessionId) -> Result<Lease> {
        let path = format!("/v1/skiff/lease/{}/keepalive", encode_key(lease.as_str()));
        gone_is_no_such_session(self.idempotent(Method::PUT, &path)?, lease)?.json()
    }

    /// The lease with its remaining time, or `None` when it has ended.
    pub fn lease(&self, lease: &SessionId) -> Result<Option<Lease>> {
        let reply = self.read(&format!("/v1/skiff/lease/{}", encode_key(lease.as_str())))?;
        if reply.status == 404 {
            return Ok(None);
        }
        reply.success()?.json().map(Some)
    }

    /// Ends a lease and deletes its keys (`DELETE /v1/skiff/lease/<id>`).
    pub fn lease_revoke(&self, lease: &SessionId) -> Result<bool> {
        written(self.idempotent(Method::DELETE, &format!("/v1/skiff/lease/{}", encode_key(lease.as_str())))?)
    }

    /// A change whose repetition does nothing more (renew, destroy): retried as a read.
    fn idempotent(&self, method: Method, path: &str) -> Result<Reply> {
        let call = Call { method, path, body: None, idempotency_key: None, retry: Retry::Safe, timeout: self.timeout };
        self.transport.call(&call)
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

    /// An HTTP/1.1 answer with `status`, extra `headers` (each ending in CRLF) and `body`.
    fn answer(status: &str, headers: &str, body: &str) -> &'static str {
        format!("HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
            .leak()
    }

    #[test]
    fn an_acquire_is_retried_with_one_idempotency_key_and_answers_the_fence() {
        let unavailable = answer("503 Service Unavailable", "Retry-After: 0\r\n", "");
        let acquired = answer("200 OK", "Skiff-Fence: 42\r\n", "true");
        // 503, then the connection lost after the request was sent, then the answer.
        let (address, server) = fake_server(vec![Some(unavailable), None, Some(acquired)]);
        let client = Client::new([address]).unwrap();
        let session = SessionId("s1".into());
        assert_eq!(client.acquire("lock", "me", &session).unwrap(), Some(42));
        let keys = server.join().unwrap();
        assert_eq!(keys.len(), 3);
        assert!(keys.iter().all(|key| *key == keys[0]), "every attempt is the same request: {keys:?}");

        let (address, server) = fake_server(vec![Some(answer("200 OK", "", "false"))]);
        let client = Client::new([address]).unwrap();
        assert_eq!(client.acquire("lock", "me", &session).unwrap(), None, "held by another session");
        server.join().unwrap();
    }

    #[test]
    fn ended_sessions_and_stale_fences_are_typed_errors() {
        let json = "Content-Type: application/json\r\n";
        let no_session = answer(
            "400 Bad Request",
            json,
            r#"{"error":"ERR no such session \"s1\": it does not exist, or it ended"}"#,
        );
        let gone = answer("404 Not Found", "", "");
        let fenced = answer("409 Conflict", json, r#"{"error":"ERR fenced: token 7 does not hold a lock now"}"#);
        let other_conflict = answer("409 Conflict", json, r#"{"error":"something else"}"#);
        let (address, server) = fake_server(vec![Some(no_session), Some(gone), Some(fenced), Some(other_conflict)]);
        let client = Client::new([address]).unwrap();
        let session = SessionId("s1".into());
        let acquire = client.acquire("lock", "", &session);
        assert!(matches!(acquire, Err(Error::NoSuchSession { .. })), "{acquire:?}");
        let renew = client.session_renew(&session);
        assert!(matches!(&renew, Err(Error::NoSuchSession { message, .. }) if message.contains("s1")), "{renew:?}");
        let put = client.put_fenced("data", "v", 7);
        assert!(matches!(&put, Err(Error::Fenced { message, .. }) if message.contains("token 7")), "{put:?}");
        let put = client.put_fenced("data", "v", 7);
        assert!(matches!(put, Err(Error::Http { status: 409, .. })), "{put:?}");
        server.join().unwrap();
    }

    #[test]
    fn a_transaction_is_retried_with_one_idempotency_key_and_answers_results_or_the_failing_op() {
        let json = "Content-Type: application/json\r\n";
        let unavailable = answer("503 Service Unavailable", "Retry-After: 0\r\n", "");
        let committed = answer(
            "200 OK",
            json,
            r#"{"Results":[{"KV":{"Key":"a","Value":"MTA=","Flags":0,"CreateIndex":3,"ModifyIndex":9,"LockIndex":0}},{"KV":{"Key":"b","Value":null,"Flags":0,"CreateIndex":4,"ModifyIndex":12,"LockIndex":0}}],"Errors":null}"#,
        );
        // 503, then the connection lost after the request was sent, then the answer.
        let (address, server) = fake_server(vec![Some(unavailable), None, Some(committed)]);
        let client = Client::new([address]).unwrap();
        let ops = [TxnOp::Get { key: "a".into() }, TxnOp::Cas { key: "b".into(), value: b"5".to_vec(), index: 7 }];
        let TxnOutcome::Committed(results) = client.txn(&ops).unwrap() else { panic!("not committed") };
        assert_eq!(results.len(), 2);
        assert_eq!(
            (results[0].key.as_str(), results[0].value.as_slice(), results[0].modify_index),
            ("a", &b"10"[..], 9)
        );
        assert_eq!((results[1].key.as_str(), results[1].value.is_empty(), results[1].modify_index), ("b", true, 12));
        let keys = server.join().unwrap();
        assert_eq!(keys.len(), 3);
        assert!(keys.iter().all(|key| *key == keys[0]), "every attempt is the same transaction: {keys:?}");

        let conflict = answer(
            "409 Conflict",
            json,
            r#"{"Results":null,"Errors":[{"OpIndex":1,"What":"the modify index of \"b\" is 12, not 7"}]}"#,
        );
        let bad = answer("400 Bad Request", json, r#"{"error":"the transaction has no operations"}"#);
        let (address, server) = fake_server(vec![Some(conflict), Some(bad)]);
        let client = Client::new([address]).unwrap();
        let outcome = client.txn(&ops).unwrap();
        assert_eq!(
            outcome,
            TxnOutcome::RolledBack { op_index: 1, what: "the modify index of \"b\" is 12, not 7".into() }
        );
        let refused = client.txn(&[]);
        assert!(matches!(refused, Err(Error::Http { status: 400, .. })), "{refused:?}");
        let keys = server.join().unwrap();
        assert_ne!(keys[0], keys[1], "each transaction has its own key");
    }

    #[test]
    fn transaction_operations_use_consuls_verbs_and_fields() {
        let session = SessionId("s1".into());
        let ops = [
            TxnOp::Set { key: "a".into(), value: b"hi".to_vec(), flags: 3 },
            TxnOp::Cas { key: "b".into(), value: Vec::new(), index: 0 },
            TxnOp::Lock { key: "l".into(), value: b"x".to_vec(), session: session.clone() },
            TxnOp::Unlock { key: "l".into(), value: Vec::new(), session: session.clone() },
            TxnOp::Get { key: "a".into() },
            TxnOp::GetTree { prefix: "p/".into() },
            TxnOp::CheckIndex { key: "a".into(), index: 4 },
            TxnOp::CheckSession { key: "l".into(), session },
            TxnOp::CheckNotExists { key: "c".into() },
            TxnOp::Delete { key: "a".into() },
            TxnOp::DeleteTree { prefix: "p/".into() },
            TxnOp::DeleteCas { key: "b".into(), index: 9 },
        ];
        let json: serde_json::Value = serde_json::from_slice(&crate::api::txn_body(&ops)).unwrap();
        let verbs: Vec<&str> = json.as_array().unwrap().iter().map(|op| op["KV"]["Verb"].as_str().unwrap()).collect();
        assert_eq!(
            verbs,
            [
                "set",
                "cas",
                "lock",
                "unlock",
                "get",
                "get-tree",
                "check-index",
                "check-session",
                "check-not-exists",
                "delete",
                "delete-tree",
                "delete-cas"
            ]
        );
        assert_eq!(json[0], serde_json::json!({"KV": {"Verb": "set", "Key": "a", "Value": "aGk=", "Flags": 3}}));
        assert_eq!(json[2]["KV"]["Session"], "s1");
        assert_eq!(json[5]["KV"]["Key"], "p/");
        assert_eq!(json[11]["KV"]["Index"], 9);
    }

    #[test]
    fn session_requests_use_consuls_names_and_durations() {
        let request = SessionRequest {
            name: Some("job".into()),
            ttl: Some(Duration::from_secs(15)),
            lock_delay: Some(Duration::from_millis(1500)),
            ..SessionRequest::default()
        };
        let json: serde_json::Value = serde_json::from_slice(&request.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"Name": "job", "TTL": "15s", "LockDelay": "1500ms", "Behavior": "release"})
        );
        let entry: Entry = serde_json::from_str(
            r#"{"Key":"lock","Value":null,"CreateIndex":3,"ModifyIndex":9,"LockIndex":2,"Flags":0,"Session":"s1","Fence":9}"#,
        )
        .unwrap();
        assert_eq!((entry.lock_index, entry.session.as_deref(), entry.fence), (2, Some("s1"), Some(9)));
        let free: Entry = serde_json::from_str(
            r#"{"Key":"lock","Value":null,"CreateIndex":3,"ModifyIndex":9,"LockIndex":2,"Flags":0}"#,
        )
        .unwrap();
        assert_eq!((free.session, free.fence), (None, None));
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
