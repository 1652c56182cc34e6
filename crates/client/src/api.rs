//! The API's answers as Rust types (docs/http-api.md). Each serializes back to the JSON the
//! server sent, field for field; fields a newer server adds are ignored when reading.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// One key and its value, as `GET /v1/kv/<key>` answers it (Consul's form, with the value
/// decoded from base64).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "EntryJson", into = "EntryJson")]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value's bytes (empty for an empty value).
    pub value: Vec<u8>,
    /// The Raft log index of the write that created the key.
    pub create_index: u64,
    /// The Raft log index of the last write to the key: what [`cas`](crate::Client::cas)
    /// compares with.
    pub modify_index: u64,
    /// The opaque number stored with the value ([`WriteOptions::flags`](crate::WriteOptions::flags)).
    pub flags: u64,
    /// How many times the key's lock was acquired (Consul's `LockIndex`; 0 if never).
    pub lock_index: u64,
    /// The session holding the key's lock, or the lease it was put with (Consul's `Session`).
    pub session: Option<String>,
    /// The fencing token of the acquisition holding the key's lock, while one holds it.
    pub fence: Option<u64>,
}

/// [`Entry`] as the server sends it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EntryJson {
    key: String,
    /// Base64; `null` for an empty value.
    value: Option<String>,
    create_index: u64,
    modify_index: u64,
    #[serde(default)]
    lock_index: u64,
    flags: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fence: Option<u64>,
}

impl TryFrom<EntryJson> for Entry {
    type Error = String;

    fn try_from(json: EntryJson) -> Result<Entry, String> {
        let value = match &json.value {
            None => Vec::new(),
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|error| format!("the value of {:?} is not valid base64: {error}", json.key))?,
        };
        let EntryJson { key, create_index, modify_index, flags, lock_index, session, fence, .. } = json;
        // A server may send an empty `Session` or a zero `Fence` for none.
        let session = session.filter(|id| !id.is_empty());
        let fence = fence.filter(|&token| token > 0);
        Ok(Entry { key, value, create_index, modify_index, flags, lock_index, session, fence })
    }
}

impl From<Entry> for EntryJson {
    fn from(entry: Entry) -> EntryJson {
        let value = (!entry.value.is_empty()).then(|| base64::engine::general_purpose::STANDARD.encode(&entry.value));
        EntryJson {
            key: entry.key,
            value,
            create_index: entry.create_index,
            modify_index: entry.modify_index,
            lock_index: entry.lock_index,
            flags: entry.flags,
            session: entry.session,
            fence: entry.fence,
        }
    }
}

/// One node's view of itself and its peers (`GET /v1/skiff/status`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The node's id (`n1`).
    pub id: String,
    /// `leader`, `follower`, `candidate` or `pre-candidate`.
    pub role: String,
    /// The node's current term.
    pub term: u64,
    /// Whom the node voted for in `term`.
    pub voted_for: Option<String>,
    /// The leader the node knows of in `term`.
    pub leader: Option<String>,
    /// The node's commit index.
    pub commit: u64,
    /// The last index applied to the node's key-value store.
    pub applied: u64,
    /// The node's last log entry.
    pub last_log: LogId,
    /// The last index covered by the node's snapshot (0: none).
    pub snapshot_index: u64,
    /// The voting members' ids.
    pub voters: Vec<String>,
    /// The learners' ids (members that replicate but do not vote).
    pub learners: Vec<String>,
    /// The node's peer (Raft) address.
    pub raft_address: String,
    /// The node's HTTP address, when it has one.
    pub http_address: Option<String>,
    /// The other members as this node sees them.
    #[serde(default)]
    pub peers: Vec<Peer>,
    /// The keyspace's size against its quota, and the quota alarm (absent from nodes
    /// older than the quota).
    #[serde(default)]
    pub keyspace: Option<Keyspace>,
}

/// A node's keyspace: its size, its quota, and why writes are refused, if they are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyspace {
    /// The bytes of keys and values held.
    pub used_bytes: u64,
    /// The quota (`--keyspace-quota-bytes`); `None`: no quota.
    pub quota_bytes: Option<u64>,
    /// Set while writes that add bytes are refused: why (etcd's `NOSPACE`).
    pub alarm: Option<String>,
    /// Blocking queries waiting on this node.
    pub blocking_queries: u64,
    /// Keys and prefixes watched by them.
    pub watches: u64,
}

/// A log entry's position: its index and the term it was created in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogId {
    /// The entry's index.
    pub index: u64,
    /// The term of the leader that created the entry.
    pub term: u64,
}

/// One peer in a node's [`Status`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    /// The peer's id.
    pub id: String,
    /// Whether the peer votes.
    pub voter: bool,
    /// The highest index known to be replicated on the peer (on the leader only).
    #[serde(rename = "match")]
    pub match_index: Option<u64>,
    /// The next index to send to the peer (on the leader only).
    #[serde(rename = "next")]
    pub next_index: Option<u64>,
    /// Whether the node has a working connection to the peer.
    pub connected: bool,
    /// Milliseconds since the node last heard from the peer, once it has.
    pub last_contact_ms: Option<u64>,
    /// The measured round trip to the peer in milliseconds, once measured.
    pub rtt_ms: Option<f64>,
    /// Messages to the peer dropped because its queue was full or it was unreachable.
    pub dropped_messages: u64,
}

/// One node's answer to a probe: `GET /v1/health` (is it alive?) or `GET /v1/ready` (can
/// it serve?). The HTTP status is 200 when the probe passes, 503 when it fails; both come
/// with this body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// `alive` or `stopped` (health); `ready` or `not ready` (readiness).
    pub status: String,
    /// The node's id.
    pub id: String,
    /// The lag bound the readiness probe checked: committed entries not yet applied
    /// (absent from the health probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag: Option<u64>,
    /// Every failing check, in words; empty when the probe passes.
    pub reasons: Vec<String>,
}

impl Probe {
    /// Whether the probe passed (the node answered 200).
    pub fn passed(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// The cluster's members (`GET /v1/skiff/members`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    /// The leader's id, when the answering node knows one.
    pub leader: Option<String>,
    /// Every member, voters and learners, in id order.
    pub members: Vec<Member>,
}

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's id.
    pub id: String,
    /// Whether it votes (a learner does not).
    pub voter: bool,
    /// Its peer (Raft) address.
    pub raft: String,
    /// Its HTTP address, when it has one: an endpoint for a [`Client`](crate::Client).
    pub http: Option<String>,
    /// Its Redis-protocol address, when it has one.
    #[serde(default)]
    pub redis: Option<String>,
}

/// What a node joining by address learns of the cluster (`GET /v1/skiff/cluster`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The cluster's name.
    pub name: String,
    /// Whether its nodes may serve beyond loopback without TLS and tokens.
    pub insecure: bool,
    /// Whether its cluster file has `[tls]` (a joining node then needs its own file).
    pub tls: bool,
    /// Whether its cluster file has `[auth]`.
    pub auth: bool,
    /// Its `[raft]` settings, as the cluster file writes them.
    pub raft: serde_json::Map<String, serde_json::Value>,
    /// The leader's id, when the answering node knows one.
    pub leader: Option<String>,
    /// The members with their addresses.
    pub members: Vec<Member>,
}

/// A node to add to the cluster ([`Client::add_member`](crate::Client::add_member)).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMember {
    /// Its id (`n4`).
    pub id: String,
    /// Where its peers reach it (`host:port`). Without it, the cluster file of the node
    /// asked must list the node (`join = true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft: Option<String>,
    /// Its HTTP address, if it serves one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Its Redis-protocol address, if it serves one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// Leave it a learner instead of promoting it once it caught up.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub learner: bool,
}

/// A page of one node's log (`GET /v1/skiff/log`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPage {
    /// The first index the node still holds; earlier entries are in its snapshot.
    pub first_index: u64,
    /// The node's last index.
    pub last_index: u64,
    /// The node's commit index.
    pub commit: u64,
    /// The node's applied index.
    pub applied: u64,
    /// The entries asked for, in index order.
    pub entries: Vec<LogEntry>,
}

/// One entry of a [`LogPage`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The entry's index.
    pub index: u64,
    /// The term it was created in.
    pub term: u64,
    /// Whether it is committed, as the node knows.
    pub committed: bool,
    /// `empty`, `command` or `membership`.
    pub kind: String,
    /// What the entry does, for people (`put "greeting" (5 bytes)`).
    pub description: String,
}

/// A session's id (a UUID the cluster chose). Skiff's leases are sessions too
/// ([`Client::lease_grant`](crate::Client::lease_grant)), so their ids are `SessionId`s.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub String);

impl SessionId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// What happens to the locks of a session when it ends (Consul's `Behavior`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Behavior {
    /// The locks are released; their keys stay.
    #[default]
    Release,
    /// The locked keys are deleted.
    Delete,
}

/// A session to create ([`Client::session_create`](crate::Client::session_create)): Consul's
/// fields, each optional (the server's defaults: no TTL, a lock delay of 15 s, behavior
/// release, the answering node's id as the node).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionRequest {
    /// A name for people.
    pub name: Option<String>,
    /// The node the session belongs to.
    pub node: Option<String>,
    /// The session ends unless renewed within this long (Consul accepts 10 s to 24 h).
    pub ttl: Option<std::time::Duration>,
    /// After the session ends, its locks may not be acquired again for this long.
    pub lock_delay: Option<std::time::Duration>,
    /// What happens to the keys it holds when it ends.
    pub behavior: Behavior,
}

/// [`SessionRequest`] as the server reads it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SessionRequestJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    #[serde(rename = "TTL", skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lock_delay: Option<String>,
    behavior: Behavior,
}

impl SessionRequest {
    /// The JSON body of `PUT /v1/session/create`.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        let json = SessionRequestJson {
            name: self.name.as_deref(),
            node: self.node.as_deref(),
            ttl: self.ttl.map(duration_text),
            lock_delay: self.lock_delay.map(duration_text),
            behavior: self.behavior,
        };
        // Strings and an enum: serializing cannot fail.
        serde_json::to_vec(&json).expect("a session request serializes")
    }
}

/// A duration as Consul writes one: whole milliseconds (`1500ms`), or seconds when whole
/// (`10s`).
pub(crate) fn duration_text(duration: std::time::Duration) -> String {
    let ms = duration.as_millis();
    if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}

/// A session, as `GET /v1/session/info/<id>` answers it (Consul's form).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Session {
    /// Its id.
    #[serde(rename = "ID")]
    pub id: SessionId,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// The node it belongs to.
    #[serde(default)]
    pub node: String,
    /// The lock delay, in nanoseconds (Consul's unit).
    #[serde(default)]
    pub lock_delay: u64,
    /// What happens to its keys when it ends.
    #[serde(default)]
    pub behavior: Behavior,
    /// Its TTL as text (`15s`), empty for none.
    #[serde(rename = "TTL", default)]
    pub ttl: String,
    /// The index of the entry that created it.
    #[serde(default)]
    pub create_index: u64,
    /// The index of the entry that last changed it.
    #[serde(default)]
    pub modify_index: u64,
}

/// A Skiff lease (`POST /v1/skiff/lease`): a session with behavior delete and no lock
/// delay, whose keys are deleted when it ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Lease {
    /// Its id.
    #[serde(rename = "ID")]
    pub id: SessionId,
    /// Its TTL as text (`10s`).
    #[serde(rename = "TTL", default)]
    pub ttl: String,
    /// How long it has left, in milliseconds, as the answering node read the cluster clock.
    #[serde(default)]
    pub remaining_ms: u64,
}

/// A key as a blocking read saw it ([`Client::watch`](crate::Client::watch)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    /// The key, or `None` if it does not exist.
    pub entry: Option<Entry>,
    /// `X-Consul-Index`: pass it to the next [`watch`](crate::Client::watch) to wait for a
    /// change after this read.
    pub index: u64,
}

/// One operation of a transaction ([`Client::txn`](crate::Client::txn)): Consul's KV verbs
/// (docs/http-api.md, `PUT /v1/txn`). The operations apply in order, each to the state the
/// ones before it left, as one log entry: all of them, or none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    /// Writes the value with the flags.
    Set {
        /// The key.
        key: String,
        /// Its new value.
        value: Vec<u8>,
        /// The opaque number stored with it.
        flags: u64,
    },
    /// Writes the value if the key's `modify_index` is `index` (0: only if it is absent);
    /// otherwise the transaction fails.
    Cas {
        /// The key.
        key: String,
        /// Its new value.
        value: Vec<u8>,
        /// The `modify_index` it must have.
        index: u64,
    },
    /// Takes the key's lock for `session` and writes the value (as [`Client::acquire`](crate::Client::acquire));
    /// fails if another session holds it.
    Lock {
        /// The key.
        key: String,
        /// Its new value.
        value: Vec<u8>,
        /// The session taking the lock.
        session: SessionId,
    },
    /// Writes the value and lets the key's lock go; fails unless `session` holds it.
    Unlock {
        /// The key.
        key: String,
        /// Its new value.
        value: Vec<u8>,
        /// The session holding the lock.
        session: SessionId,
    },
    /// Reads the key (with its value); fails if it does not exist.
    Get {
        /// The key.
        key: String,
    },
    /// Reads every key under the prefix (one result each; none fails it).
    GetTree {
        /// The prefix (`""`: every key).
        prefix: String,
    },
    /// Fails unless the key exists with this `modify_index`.
    CheckIndex {
        /// The key.
        key: String,
        /// The `modify_index` it must have.
        index: u64,
    },
    /// Fails unless `session` holds the key's lock.
    CheckSession {
        /// The key.
        key: String,
        /// The session that must hold it.
        session: SessionId,
    },
    /// Fails if the key exists.
    CheckNotExists {
        /// The key.
        key: String,
    },
    /// Deletes the key (also when it does not exist).
    Delete {
        /// The key.
        key: String,
    },
    /// Deletes every key under the prefix.
    DeleteTree {
        /// The prefix.
        prefix: String,
    },
    /// Deletes the key if its `modify_index` is `index`; otherwise the transaction fails.
    DeleteCas {
        /// The key.
        key: String,
        /// The `modify_index` it must have.
        index: u64,
    },
}

impl TxnOp {
    /// The operation as the server reads it: `{"KV": {"Verb", "Key", ...}}`.
    fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let encode = |value: &[u8]| base64::engine::general_purpose::STANDARD.encode(value);
        let kv = match self {
            TxnOp::Set { key, value, flags } => {
                json!({"Verb": "set", "Key": key, "Value": encode(value), "Flags": flags})
            }
            TxnOp::Cas { key, value, index } => {
                json!({"Verb": "cas", "Key": key, "Value": encode(value), "Index": index})
            }
            TxnOp::Lock { key, value, session } => {
                json!({"Verb": "lock", "Key": key, "Value": encode(value), "Session": session})
            }
            TxnOp::Unlock { key, value, session } => {
                json!({"Verb": "unlock", "Key": key, "Value": encode(value), "Session": session})
            }
            TxnOp::Get { key } => json!({"Verb": "get", "Key": key}),
            TxnOp::GetTree { prefix } => json!({"Verb": "get-tree", "Key": prefix}),
            TxnOp::CheckIndex { key, index } => json!({"Verb": "check-index", "Key": key, "Index": index}),
            TxnOp::CheckSession { key, session } => {
                json!({"Verb": "check-session", "Key": key, "Session": session})
            }
            TxnOp::CheckNotExists { key } => json!({"Verb": "check-not-exists", "Key": key}),
            TxnOp::Delete { key } => json!({"Verb": "delete", "Key": key}),
            TxnOp::DeleteTree { prefix } => json!({"Verb": "delete-tree", "Key": prefix}),
            TxnOp::DeleteCas { key, index } => json!({"Verb": "delete-cas", "Key": key, "Index": index}),
        };
        json!({ "KV": kv })
    }
}

/// The body of `PUT /v1/txn`: the operations as a JSON array.
pub(crate) fn txn_body(ops: &[TxnOp]) -> Vec<u8> {
    let ops: Vec<serde_json::Value> = ops.iter().map(TxnOp::to_json).collect();
    // Strings and numbers: serializing cannot fail.
    serde_json::to_vec(&ops).expect("a transaction serializes")
}

/// What a transaction did ([`Client::txn`](crate::Client::txn)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Every operation was applied. The results, in order: one per `set`, `cas`, `lock`,
    /// `unlock`, `get`, `check-index` and `check-session` (the key after the operation; its
    /// value only for `get`, empty otherwise), one per key for `get-tree`, none for the
    /// deletes and `check-not-exists`.
    Committed(Vec<Entry>),
    /// An operation failed (the server answered 409), so **nothing** was applied.
    RolledBack {
        /// The position of the operation that failed (0 is the first).
        op_index: usize,
        /// Why, in the server's words.
        what: String,
    },
}

/// The 200 answer of `PUT /v1/txn`.
#[derive(Deserialize)]
pub(crate) struct TxnCommitted {
    #[serde(rename = "Results", default)]
    pub results: Option<Vec<TxnResult>>,
}

/// One result of a transaction: `{"KV": {...}}`.
#[derive(Deserialize)]
pub(crate) struct TxnResult {
    #[serde(rename = "KV")]
    pub kv: Entry,
}

/// The 409 answer of `PUT /v1/txn`.
#[derive(Deserialize)]
pub(crate) struct TxnRolledBack {
    #[serde(rename = "Errors")]
    pub errors: Vec<TxnFailure>,
}

/// One error of a 409 answer.
#[derive(Deserialize)]
pub(crate) struct TxnFailure {
    #[serde(rename = "OpIndex")]
    pub op_index: usize,
    #[serde(rename = "What")]
    pub what: String,
}
