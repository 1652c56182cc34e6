//! The key-value state machine: an ordered map from keys to values with their revisions,
//! and the table of remembered request results that makes retried writes exactly-once.
//!
//! Everything here is deterministic (thesis §6.3 and the `StateMachine` contract): the only
//! inputs are the commands and their log indexes. Remembered results and deletion marks
//! expire by log index and by count, never by a clock, so every replica forgets the same
//! things at the same index.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use skiff::{ForwardedHook, Index, StateMachine};

use crate::feed;
pub use crate::keymap::Entry;
use crate::keymap::{self, KeyMap, Layout, Meta};
pub use crate::watch::{Published, Watch};

mod coord;
use coord::Coord;
mod txn;
pub use coord::{
    Behavior, ExpireIf, Expiry, Holder, KeyLock, Lease, LeaseSpec, Locks, MAX_LEASES, NO_SUCH_LEASE, STALE_FENCE,
};
pub use txn::{TxnEntry, TxnError, TxnOp, Verb};

/// A copy of one stored value and its revisions (the Raft log indexes of the writes), to
/// keep after a read of the state machine: an [`Entry`] borrows from the map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    pub value: Bytes,
    /// The index of the write that created the key.
    pub create_index: u64,
    /// The index of the last write to the key.
    pub modify_index: u64,
    /// An opaque number stored with the value (Consul's `flags`).
    pub flags: u64,
    /// The key's deadline on the cluster clock in milliseconds; 0 for none.
    pub expires: u64,
}

impl From<Entry<'_>> for Value {
    fn from(entry: Entry<'_>) -> Value {
        Value {
            value: Bytes::copy_from_slice(entry.value),
            create_index: entry.create_index,
            modify_index: entry.modify_index,
            flags: entry.flags,
            expires: entry.expires,
        }
    }
}

/// A write, as it travels through the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Set when the client asked for exactly-once: a retry with the same id returns the
    /// first result without applying again.
    pub request: Option<RequestId>,
    pub op: Op,
}

/// A client's name for one write, for exactly-once retries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestId {
    /// The client's key (an HTTP `Idempotency-Key`).
    pub key: String,
    /// A digest of the operation, computed by the proposer: the same key with another
    /// operation is refused rather than answered with an unrelated result.
    pub fingerprint: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Write `value`; with `cas`, only if the key's modify index is `cas` (0: only if absent).
    Put { key: Bytes, value: Bytes, flags: u64, cas: Option<u64> },
    /// Delete `key`; with `cas`, only if its modify index is `cas`.
    Delete { key: Bytes, cas: Option<u64> },
    /// Delete every key that starts with `prefix`.
    DeletePrefix { prefix: Bytes },
    // The variants below were added for the Redis protocol. New variants go at the end:
    // postcard numbers them in order, and entries already in logs must still decode.
    /// Redis `SET`: write `value` (flags 0) if `when` allows; with `get`, answer the old value.
    Set { key: Bytes, value: Bytes, when: When, get: bool },
    /// Redis `INCRBY`: add `delta` to the key's value read as a decimal integer (a missing
    /// key counts as 0) and answer the sum.
    IncrBy { key: Bytes, delta: i64 },
    /// Redis `APPEND`: add `value` to the end of the key's value (creating it) and answer the
    /// new length; refused if that would pass `max_len`, which the proposer sets from its
    /// limits so that every replica checks the same number.
    Append { key: Bytes, value: Bytes, max_len: u64 },
    /// Several operations applied in order as one entry: atomically, with one output each.
    /// Pipelined Redis writes travel this way, so they share one log entry and one fsync.
    Batch(Vec<Op>),
    /// `op`, under a keyspace quota of `quota_bytes` bytes of keys and values, which the
    /// proposer sets from its limits ([`Op::within_quota`]) so that every replica checks the
    /// same number. See [`KvStore::apply`]'s quota rule.
    WithinQuota { quota_bytes: u64, op: Box<Op> },
    // The variants below were added for time, leases, locks and fencing (`state/coord.rs`).
    /// `op`, stamped by its proposer with its reading of the cluster clock: the clock moves to
    /// `now_ms` (never back) and everything due by then expires, then `op` applies.
    At { now_ms: u64, op: Box<Op> },
    /// The leader's clock entry: the clock moves to `now_ms` and what is due expires.
    Tick { now_ms: u64 },
    /// Redis `SET` with an expiry (`EX`, `PX`, `EXAT`, `PXAT`, `KEEPTTL`; without one, a
    /// `SET` clears the deadline).
    SetWith { key: Bytes, value: Bytes, when: When, get: bool, expiry: Expiry },
    /// Redis `EXPIRE` and its family, `PERSIST` (`expiry` [`Expiry::Clear`]), and `GETEX`
    /// (with `get`): changes the key's deadline only.
    Expire { key: Bytes, expiry: Expiry, when: ExpireIf, get: bool },
    /// Creates a lease (a Consul session).
    LeaseGrant(LeaseSpec),
    /// Renews a lease: its deadline becomes its TTL from now.
    LeaseRenew { id: String },
    /// Ends a lease (Consul's session destroy, an etcd lease revoke).
    LeaseRevoke { id: String },
    /// Consul `PUT ?acquire=<session>`: write and take the key's lock.
    Acquire { key: Bytes, value: Bytes, flags: u64, session: String },
    /// Consul `PUT ?release=<session>`: write and let the key's lock go.
    Release { key: Bytes, value: Bytes, flags: u64, session: String },
    /// A put tied to a lease, deleted when the lease ends (`PUT ?lease=<id>`).
    PutLeased { key: Bytes, value: Bytes, flags: u64, lease: String },
    /// `op`, only while the lock acquisition whose fencing token is `token` holds its lock.
    Fenced { token: u64, op: Box<Op> },
    /// Consul's transaction: the operations in order, all or none (`state/txn.rs`).
    Txn(Vec<TxnOp>),
    /// Redis `EXEC` after `WATCH`: `op` applies only if every watched key is still as it was
    /// when watched (its modify index and deadline; 0 and 0 for a key absent or past its
    /// deadline); otherwise nothing applies and the output is [`Output::Aborted`].
    Guarded { expect: Vec<Watched>, op: Box<Op> },
    /// Redis reads inside `MULTI`: answers `keys` as they are at this place in the log (a
    /// key past its deadline as absent) and writes nothing.
    Read { keys: Vec<Bytes> },
}

/// A key as [`Op::Guarded`] expects to find it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watched {
    pub key: Bytes,
    /// The key's modify index; 0 if it was absent (or past its deadline).
    pub modify_index: u64,
    /// The key's deadline on the cluster clock; 0 for none (or absent).
    pub expires: u64,
}

impl Watched {
    /// `key` as `found` shows it (`None`: absent, or past its deadline).
    pub fn new(key: Bytes, found: Option<Entry<'_>>) -> Watched {
        let (modify_index, expires) = found.map_or((0, 0), |entry| (entry.modify_index, entry.expires));
        Watched { key, modify_index, expires }
    }
}

/// When a [`Op::Set`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum When {
    Always,
    /// Only if the key is absent (Redis `NX`).
    Absent,
    /// Only if the key exists (Redis `XX`).
    Present,
}

impl Op {
    /// This operation under a keyspace quota of `quota_bytes` (0: none, the operation as is).
    pub fn within_quota(self, quota_bytes: u64) -> Op {
        if quota_bytes == 0 { self } else { Op::WithinQuota { quota_bytes, op: Box::new(self) } }
    }

    /// This operation stamped with the proposer's reading of the cluster clock
    /// ([`Published::now_ms`]); what every write proposed by the servers is.
    pub fn at(self, now_ms: u64) -> Op {
        Op::At { now_ms, op: Box::new(self) }
    }

    /// The most bytes of keys and values applying this could add, whatever the state: what
    /// the quota compares. An upper bound (a write is counted as a new key, an increment as
    /// 20 digits), so that a write that passes the check never takes the keyspace past the
    /// quota.
    pub fn most_added_bytes(&self) -> u64 {
        /// The longest decimal `i64`, with its sign.
        const INTEGER_DIGITS: u64 = 20;
        match self {
            Op::Put { key, value, .. } | Op::Set { key, value, .. } | Op::Append { key, value, .. } => {
                (key.len() + value.len()) as u64
            }
            Op::IncrBy { key, .. } => key.len() as u64 + INTEGER_DIGITS,
            Op::Delete { .. } | Op::DeletePrefix { .. } => 0,
            Op::Batch(ops) => ops.iter().map(Op::most_added_bytes).fold(0, u64::saturating_add),
            Op::WithinQuota { op, .. } | Op::At { op, .. } | Op::Fenced { op, .. } | Op::Guarded { op, .. } => {
                op.most_added_bytes()
            }
            Op::SetWith { key, value, .. }
            | Op::Acquire { key, value, .. }
            | Op::Release { key, value, .. }
            | Op::PutLeased { key, value, .. } => (key.len() + value.len()) as u64,
            Op::Tick { .. } | Op::Expire { .. } | Op::LeaseRenew { .. } | Op::LeaseRevoke { .. } => 0,
            Op::Txn(ops) => ops
                .iter()
                .filter(|op| matches!(op.verb, Verb::Set | Verb::Cas | Verb::Lock | Verb::Unlock))
                .map(|op| (op.key.len() + op.value.len()) as u64)
                .fold(0, u64::saturating_add),
            Op::Read { .. } => 0,
            // A session's memory is bounded by `MAX_LEASES`, not by the keyspace quota.
            Op::LeaseGrant(_) => 0,
        }
    }

    /// A short human description, for the log view.
    pub fn describe(&self) -> String {
        let cas = |cas: &Option<u64>| cas.map(|index| format!(" if modify index = {index}")).unwrap_or_default();
        match self {
            Op::Put { key, value, cas: check, .. } => {
                format!("put {} ({}){}", show(key), bytes(value.len()), cas(check))
            }
            Op::Delete { key, cas: check } => format!("delete {}{}", show(key), cas(check)),
            Op::DeletePrefix { prefix } => format!("delete prefix {}", show(prefix)),
            Op::Set { key, value, when, .. } => {
                let when = match when {
                    When::Always => "",
                    When::Absent => " if absent",
                    When::Present => " if present",
                };
                format!("set {} ({}){when}", show(key), bytes(value.len()))
            }
            Op::IncrBy { key, delta } => format!("incrby {} {delta}", show(key)),
            Op::Append { key, value, .. } => format!("append {} ({})", show(key), bytes(value.len())),
            Op::Batch(ops) => {
                const SHOWN: usize = 3;
                let mut text: Vec<String> = ops.iter().take(SHOWN).map(Op::describe).collect();
                if ops.len() > SHOWN {
                    text.push(format!("{} more", ops.len() - SHOWN));
                }
                format!("batch of {}: {}", ops.len(), text.join("; "))
            }
            Op::WithinQuota { op, .. } => op.describe(),
            Op::Read { keys } => format!("read {} key{}", keys.len(), if keys.len() == 1 { "" } else { "s" }),
            Op::Guarded { expect, op } => {
                format!(
                    "if {} watched key{} unchanged: {}",
                    expect.len(),
                    if expect.len() == 1 { "" } else { "s" },
                    op.describe()
                )
            }
            op => coord::describe(op).unwrap_or_default(),
        }
    }
}

/// "1 byte", "7 bytes".
fn bytes(count: usize) -> String {
    format!("{count} byte{}", if count == 1 { "" } else { "s" })
}

/// A key for people to read: its text if it is UTF-8, else its bytes escaped.
pub fn show(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) => format!("{text:?}"),
        Err(_) => format!("b\"{}\"", key.escape_ascii()),
    }
}

/// What applying a [`Command`] returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    /// A put or delete: `ok` is false when its `cas` check failed; `deleted` counts the keys
    /// a delete removed.
    Done { ok: bool, deleted: u64 },
    /// The request id was already used for another operation; nothing was applied.
    RequestIdReused,
    /// A [`Op::Set`]: whether it wrote, and with `get`, the value before (None if absent).
    Set { written: bool, old: Option<Bytes> },
    /// The answer of [`Op::IncrBy`] and [`Op::Append`].
    Integer(i64),
    /// The operation did not apply to the value it found (not an integer, an overflow, too
    /// long), in Redis's words; nothing was written.
    Refused(String),
    /// One output per operation of an [`Op::Batch`].
    Batch(Vec<Output>),
    /// A lease (session) as created or renewed.
    Lease(Box<Lease>),
    /// An [`Op::Acquire`]: whether the lock is held now, and its fencing token.
    Acquired { ok: bool, fence: u64 },
    /// An [`Op::Txn`]: its results, or the operation that failed (nothing was applied).
    Txn(Result<Vec<TxnEntry>, TxnError>),
    /// An [`Op::Guarded`] whose watched keys changed: nothing was applied.
    Aborted,
    /// An [`Op::Read`]: each key's value (None: absent), and the cluster clock it was read at.
    Read { now_ms: u64, found: Vec<Option<Value>> },
}

/// Redis's wording, so that clients recognise the errors.
pub const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
/// How an [`Output::Refused`] for the keyspace quota starts (Redis's `maxmemory` refusal,
/// naming the quota instead): the HTTP API answers it with 507.
pub const OVER_QUOTA: &str = "OOM command not allowed when used memory > 'keyspace-quota'";
pub const OVERFLOW: &str = "ERR increment or decrement would overflow";

/// A value as Redis reads an integer: an optional minus sign and decimal digits, without
/// leading zeros, spaces or a plus sign, within 64 bits.
pub fn parse_integer(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    let valid = match digits {
        [] => false,
        [b'0'] => !negative,
        [first, ..] => *first != b'0' && digits.len() <= 19 && digits.iter().all(u8::is_ascii_digit),
    };
    if !valid {
        return None;
    }
    // Accumulate negatively so that i64::MIN, whose magnitude has no positive i64, parses.
    let mut value: i64 = 0;
    for &digit in digits {
        value = value.checked_mul(10)?.checked_sub(i64::from(digit - b'0'))?;
    }
    if negative { Some(value) } else { value.checked_neg() }
}

/// How much the state machine remembers for exactly-once retries and blocking queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Remembered request results, at most.
    pub max_requests: usize,
    /// A remembered result is forgotten once the log is this many entries past it.
    pub max_request_age: u64,
    /// Deletion marks (for blocking queries that wait on a deleted key), at most.
    pub max_tombstones: usize,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention { max_requests: 100_000, max_request_age: 1_000_000, max_tombstones: 10_000 }
    }
}

/// The replicated state. Feed it through [`skiff::Node`]; read it with [`skiff::Node::read`],
/// or take a [`View`] there and read that anywhere.
#[derive(Debug, Default)]
pub struct KvStore {
    data: Data,
    retention: Retention,
    /// Told every changed key, the last applied index, and the keyspace's size and alarm
    /// (see [`Published`]), once someone subscribed.
    published: Option<Arc<Published>>,
    /// Set when a write was refused for the quota: the bytes used then, and the quota. This
    /// replica's alarm, for status and metrics; it decides nothing (the refusal itself
    /// depends only on the bytes used and the command's quota), so it is not in snapshots
    /// and a restarted node shows it again at the next refusal.
    alarm: Option<(u64, u64)>,
}

/// A read-only copy of the keyspace as it was at one applied index. Taking one costs a
/// reference count (the key map is copy on write); it may be read on any thread for as
/// long as needed while the state machine applies more writes, which it never sees.
#[derive(Clone, Debug)]
pub struct View {
    map: KeyMap,
    index: u64,
    /// The cluster clock as read when the view was taken: keys whose deadline is at or
    /// before it are not shown.
    now: u64,
    locks: Locks,
}

/// Whether `entry` is still alive at `now` on the cluster clock: a key past its deadline is
/// invisible to reads at once, before the entry that deletes it commits.
fn alive(entry: &Entry<'_>, now: u64) -> bool {
    entry.expires == 0 || entry.expires > now
}

/// What reads of the keyspace need: the store itself (on the apply thread) or a [`View`].
pub trait Keyspace {
    fn get(&self, key: &[u8]) -> Option<Entry<'_>>;
    /// The keys after `after` (all of them without it), in order.
    fn after<'a>(&'a self, after: Option<&[u8]>) -> Box<dyn Iterator<Item = Entry<'a>> + 'a>;
    /// The number of keys.
    fn len(&self) -> usize;
    /// The cluster clock these reads compare deadlines with, in milliseconds: a key whose
    /// deadline is at or before it is not shown. Never less than at an earlier call.
    fn now_ms(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The keys of `map` after `after` alive at `now`.
fn map_after<'a>(map: &'a KeyMap, after: Option<&[u8]>, now: u64) -> Box<dyn Iterator<Item = Entry<'a>> + 'a> {
    let start = match after {
        Some(key) => std::ops::Bound::Excluded(key),
        None => std::ops::Bound::Unbounded,
    };
    Box::new(map.range_from(start).filter(move |entry| alive(entry, now)))
}

/// The keys of `map` that start with `prefix`.
fn map_range<'a>(map: &'a KeyMap, prefix: &'a [u8]) -> impl Iterator<Item = Entry<'a>> + 'a {
    map.range_from(std::ops::Bound::Included(prefix)).take_while(move |entry| entry.key.starts_with(prefix))
}

impl View {
    /// The applied index the view shows the state at.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The keys that start with `prefix`, in order.
    pub fn range<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = Entry<'a>> + 'a {
        let now = self.now;
        map_range(&self.map, prefix).filter(move |entry| alive(entry, now))
    }

    /// The cluster clock as read when the view was taken, in milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.now
    }

    /// The lock state of `key` (Consul's `Session` and `LockIndex`), if it has one.
    pub fn lock(&self, key: &[u8]) -> Option<&KeyLock> {
        self.locks.get(key)
    }

    /// The highest modify index of `key`, or of the keys under it with `prefix` (0: none).
    pub fn live_index(&self, key: &[u8], prefix: bool) -> u64 {
        let live = if prefix {
            self.range(key).map(|entry| entry.modify_index).max()
        } else {
            self.map.get(key).map(|entry| entry.modify_index)
        };
        live.unwrap_or(0)
    }
}

impl Keyspace for View {
    fn get(&self, key: &[u8]) -> Option<Entry<'_>> {
        self.map.get(key).filter(|entry| alive(entry, self.now))
    }

    fn after<'a>(&'a self, after: Option<&[u8]>) -> Box<dyn Iterator<Item = Entry<'a>> + 'a> {
        map_after(&self.map, after, self.now)
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn now_ms(&self) -> u64 {
        self.now
    }
}

impl Keyspace for KvStore {
    fn get(&self, key: &[u8]) -> Option<Entry<'_>> {
        KvStore::get(self, key)
    }

    fn after<'a>(&'a self, after: Option<&[u8]>) -> Box<dyn Iterator<Item = Entry<'a>> + 'a> {
        map_after(&self.data.map, after, self.read_now())
    }

    fn len(&self) -> usize {
        self.data.map.len()
    }

    fn now_ms(&self) -> u64 {
        self.read_now()
    }
}

/// A writer of a snapshot taken at one moment, to run on any thread: see
/// [`StateMachine::snapshot_view`].
pub type SnapshotWriter = Box<dyn FnOnce(&mut dyn Write) -> std::io::Result<()> + Send>;

/// The part of the state that snapshots carry. The map is written apart from the rest, as
/// its records (see [`KvStore::snapshot`]).
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Data {
    #[serde(skip)]
    map: KeyMap,
    /// The index of the last applied command.
    index: u64,
    /// Deleted keys and the index of their deletion, so a blocking query on a key or prefix
    /// sees the deletion as a change. Bounded: the oldest marks are folded into `floor`.
    tombstones: BTreeMap<Bytes, u64>,
    /// The same marks, oldest first.
    tombstone_order: BTreeSet<(u64, Bytes)>,
    /// Every deletion not in `tombstones` happened at or before this index.
    tombstone_floor: u64,
    /// Results of writes that carried a request id, by id; and the ids by index, oldest
    /// first, for expiry.
    requests: BTreeMap<String, Remembered>,
    requests_by_index: BTreeMap<u64, String>,
    /// The clock, leases and locks: written after this in snapshots of version 3.
    #[serde(skip)]
    coord: Coord,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Remembered {
    fingerprint: u64,
    index: u64,
    output: Output,
}

/// Bumped when the snapshot layout changes; `restore` refuses other versions.
///
/// Version 3: the version byte; the length (a varint) and postcard encoding of everything
/// but the map and the coordination state; the same for the coordination state (the clock,
/// leases and locks); the number of keys (a varint); each key's record in key order
/// (`keymap`'s `record.rs`, [`Layout::V3`]). Version 2 had no coordination state and records
/// without a deadline ([`Layout::V2`]); it is still read. Version 1 was the postcard encoding
/// of all of it with the map as a `BTreeMap<Bytes, Value>`.
const SNAPSHOT_VERSION: u8 = 3;

impl KvStore {
    pub fn new(retention: Retention) -> KvStore {
        KvStore { data: Data::default(), retention, published: None, alarm: None }
    }

    /// The store's [`Published`] news, updated after every command and restore: changed keys
    /// for blocking queries, the last applied index, the keyspace's size and its quota alarm.
    pub fn subscribe(&mut self) -> Arc<Published> {
        let published = self.published.get_or_insert_with(Arc::default);
        published.set_applied(self.data.index);
        published.set_keyspace(self.data.map.data_bytes(), self.alarm.map(|(_, quota)| quota));
        published.set_clock(self.data.coord.clock, self.data.coord.next_deadline());
        Arc::clone(published)
    }

    /// A read-only copy of the keyspace as it is now, cheap to take (see [`View`]).
    pub fn view(&self) -> View {
        View {
            map: self.data.map.clone(),
            index: self.data.index,
            now: self.read_now(),
            locks: self.data.coord.locks.clone(),
        }
    }

    /// The bytes of every key and value: what the keyspace quota counts.
    pub fn used_bytes(&self) -> u64 {
        self.data.map.data_bytes()
    }

    /// The quota a write was last refused at, while no space has been freed since.
    pub fn quota_alarm(&self) -> Option<u64> {
        self.alarm.map(|(_, quota)| quota)
    }

    /// The index of the last applied command.
    pub fn index(&self) -> u64 {
        self.data.index
    }

    /// The key, unless it is absent or past its deadline on this node's reading of the
    /// cluster clock.
    pub fn get(&self, key: &[u8]) -> Option<Entry<'_>> {
        self.data.map.get(key).filter(|entry| alive(entry, self.read_now()))
    }

    /// The keys that start with `prefix`, in order (those past their deadline left out).
    pub fn range<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = Entry<'a>> + 'a {
        let now = self.read_now();
        map_range(&self.data.map, prefix).filter(move |entry| alive(entry, now))
    }

    /// The keys after `after` (all of them without it), in order.
    pub fn after<'a>(&'a self, after: Option<&[u8]>) -> impl Iterator<Item = Entry<'a>> + 'a {
        map_after(&self.data.map, after, self.read_now())
    }

    pub fn len(&self) -> usize {
        self.data.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.map.is_empty()
    }

    /// The index a blocking query on `key` (or on the prefix, with `prefix`) compares with:
    /// the highest modify index among the matching keys, or of a matching deletion. At least 1.
    pub fn watch_index(&self, key: &[u8], prefix: bool) -> u64 {
        let live = if prefix {
            self.range(key).map(|entry| entry.modify_index).max()
        } else {
            self.data.map.get(key).map(|value| value.modify_index)
        };
        live.unwrap_or(0).max(self.deletion_index(key, prefix))
    }

    /// The part of [`KvStore::watch_index`] that is not in a [`View`]: the index of the last
    /// deletion of `key` (or under the prefix) this store remembers, at least 1. Costs a look
    /// at the deletion marks under the prefix (at most [`Retention::max_tombstones`]), not at
    /// the keys: the keys' part is [`View::live_index`], taken off the apply thread.
    pub fn deletion_index(&self, key: &[u8], prefix: bool) -> u64 {
        let data = &self.data;
        let deleted = if prefix {
            data.tombstones
                .range::<[u8], _>((std::ops::Bound::Included(key), std::ops::Bound::Unbounded))
                .take_while(|(name, _)| name.starts_with(key))
                .map(|(_, &index)| index)
                .max()
        } else {
            data.tombstones.get(key).copied()
        };
        deleted.unwrap_or(0).max(data.tombstone_floor).max(1)
    }

    fn apply_op(&mut self, index: u64, op: Op) -> Output {
        let data = &mut self.data;
        match op {
            Op::Put { key, value, flags, cas } => {
                if let Some(expected) = cas
                    && data.map.get(&key).map_or(0, |entry| entry.modify_index) != expected
                {
                    return Output::Done { ok: false, deleted: 0 };
                }
                self.store_meta(index, key, &value, flags, 0);
                Output::Done { ok: true, deleted: 0 }
            }
            Op::Delete { key, cas } => self.delete(index, key, cas),
            Op::DeletePrefix { prefix } => {
                let keys = self.keys_under(&prefix);
                for key in &keys {
                    self.remove_key(index, key);
                }
                Output::Done { ok: true, deleted: keys.len() as u64 }
            }
            Op::Set { key, value, when, get } => {
                // A plain SET needs no look at the key before it is written.
                let (written, old) = match (when, get) {
                    (When::Always, false) => (true, None),
                    _ => {
                        let current = data.map.get(&key);
                        let old = if get { current.map(|entry| Bytes::copy_from_slice(entry.value)) } else { None };
                        let written = match when {
                            When::Always => true,
                            When::Absent => current.is_none(),
                            When::Present => current.is_some(),
                        };
                        (written, old)
                    }
                };
                if written {
                    self.store_meta(index, key, &value, 0, 0);
                }
                Output::Set { written, old }
            }
            Op::IncrBy { key, delta } => self.incr_by(index, key, delta),
            Op::Append { key, value, max_len } => self.append(index, key, &value, max_len),
            Op::Batch(ops) => Output::Batch(ops.into_iter().map(|op| self.apply_op(index, op)).collect()),
            Op::WithinQuota { quota_bytes, op } => self.apply_within_quota(index, quota_bytes, *op),
            Op::At { now_ms, op } => {
                self.advance(index, now_ms);
                self.apply_op(index, *op)
            }
            Op::Tick { now_ms } => {
                let (keys, leases) = self.advance(index, now_ms);
                Output::Integer(keys.saturating_add(leases) as i64)
            }
            Op::SetWith { key, value, when, get, expiry } => self.set_with(index, key, &value, when, get, expiry),
            Op::Expire { key, expiry, when, get } => self.expire(index, key, expiry, when, get),
            Op::LeaseGrant(spec) => self.grant(index, spec),
            Op::LeaseRenew { id } => self.renew(index, &id),
            Op::LeaseRevoke { id } => match self.end_lease(index, &id) {
                true => Output::Done { ok: true, deleted: 0 },
                false => Output::Done { ok: false, deleted: 0 },
            },
            Op::Acquire { key, value, flags, session } => self.acquire(index, key, &value, flags, session),
            Op::Release { key, value, flags, session } => self.release(index, key, &value, flags, &session),
            Op::PutLeased { key, value, flags, lease } => self.put_leased(index, key, &value, flags, lease),
            Op::Fenced { token, op } if self.fence_holds(token) => self.apply_op(index, *op),
            Op::Fenced { token, .. } => self.stale_fence(token),
            Op::Txn(ops) => self.txn(index, ops),
            Op::Guarded { expect, op } if self.unchanged(&expect) => self.apply_op(index, *op),
            Op::Guarded { .. } => Output::Aborted,
            Op::Read { keys } => {
                let clock = self.data.coord.clock;
                let found = keys.iter().map(|key| self.data.map.get(key).filter(|entry| alive(entry, clock)));
                Output::Read { now_ms: clock, found: found.map(|entry| entry.map(Value::from)).collect() }
            }
        }
    }

    /// Whether every key of `expect` is as it was watched. A key past its deadline on the
    /// replicated clock counts as absent, as reads show it, whether or not its expiry has
    /// been applied yet: so the answer depends only on the replicated state.
    fn unchanged(&self, expect: &[Watched]) -> bool {
        let clock = self.data.coord.clock;
        expect.iter().all(|watched| {
            let found = self.data.map.get(&watched.key).filter(|entry| alive(entry, clock));
            Watched::new(watched.key.clone(), found) == *watched
        })
    }

    /// The keyspace quota, decided here on apply rather than by the proposer: every replica
    /// applies the same commands to the same state, so every one counts the same bytes used
    /// and refuses the same writes, and the count is exact (a proposer only knows its own
    /// possibly stale state, and concurrent proposals would each pass a check made before
    /// the others applied). The rule: if the bytes used plus the most the operation could
    /// add ([`Op::most_added_bytes`], for a batch the sum) would pass the quota, every
    /// operation in it that could add bytes is refused with [`OVER_QUOTA`] and the
    /// others (deletes) apply; all or none of a batch's writes apply, so a Redis `MSET` stays
    /// atomic. So the keyspace never passes the quota through writes that carry it.
    fn apply_within_quota(&mut self, index: u64, quota_bytes: u64, op: Op) -> Output {
        let used = self.data.map.data_bytes();
        let adds = op.most_added_bytes();
        if adds == 0 || used.saturating_add(adds) <= quota_bytes {
            return self.apply_op(index, op);
        }
        self.alarm = Some((used, quota_bytes));
        let message = format!(
            "{OVER_QUOTA} ({used} bytes of keys and values used of {quota_bytes}; this write could add {adds}): \
             delete keys to free space"
        );
        self.apply_deletes_only(index, op, &message)
    }

    /// Applies the operations of `op` that add no bytes; refuses the others with `message`.
    fn apply_deletes_only(&mut self, index: u64, op: Op, message: &str) -> Output {
        match op {
            Op::Batch(ops) => {
                Output::Batch(ops.into_iter().map(|op| self.apply_deletes_only(index, op, message)).collect())
            }
            Op::WithinQuota { op, .. } => self.apply_deletes_only(index, *op, message),
            Op::At { now_ms, op } => {
                self.advance(index, now_ms);
                self.apply_deletes_only(index, *op, message)
            }
            Op::Fenced { token, .. } if !self.fence_holds(token) => self.stale_fence(token),
            Op::Fenced { op, .. } => self.apply_deletes_only(index, *op, message),
            op if op.most_added_bytes() == 0 => self.apply_op(index, op),
            _ => Output::Refused(message.to_string()),
        }
    }

    /// After a command: clears the quota alarm once space was freed, and publishes.
    fn publish(&mut self) {
        let used = self.data.map.data_bytes();
        if self.alarm.is_some_and(|(used_then, _)| used < used_then) {
            self.alarm = None;
        }
        if let Some(published) = &self.published {
            published.set_keyspace(used, self.alarm.map(|(_, quota)| quota));
            published.set_clock(self.data.coord.clock, self.data.coord.next_deadline());
            published.set_applied(self.data.index);
        }
        // Costs a walk of the keys: in this crate's unit tests only.
        #[cfg(test)]
        self.data.coord.check(&self.data.map);
    }

    /// `Op::Delete`: removes `key` unless `cas` names another modify index.
    fn delete(&mut self, index: u64, key: Bytes, cas: Option<u64>) -> Output {
        let data = &mut self.data;
        let current = data.map.get(&key).map(|entry| entry.modify_index);
        // As Consul: a missing key is already deleted, whatever `cas` says.
        if let (Some(expected), Some(current)) = (cas, current)
            && current != expected
        {
            return Output::Done { ok: false, deleted: 0 };
        }
        let deleted = match current {
            Some(_) => {
                self.remove_key(index, &key);
                1
            }
            None => 0,
        };
        Output::Done { ok: true, deleted }
    }

    /// `Op::IncrBy`: adds `delta` to the integer at `key` (0 if absent).
    fn incr_by(&mut self, index: u64, key: Bytes, delta: i64) -> Output {
        let data = &mut self.data;
        let current = match data.map.get(&key) {
            Some(found) => match parse_integer(found.value) {
                Some(number) => number,
                None => return Output::Refused(NOT_AN_INTEGER.into()),
            },
            None => 0,
        };
        let Some(sum) = current.checked_add(delta) else { return Output::Refused(OVERFLOW.into()) };
        let (flags, expires) = data.map.get(&key).map_or((0, 0), |entry| (entry.flags, entry.expires));
        self.store_meta(index, key, sum.to_string().as_bytes(), flags, expires);
        Output::Integer(sum)
    }

    /// `Op::Append`: appends `value` to `key`'s value, refusing to grow past `max_len`.
    fn append(&mut self, index: u64, key: Bytes, value: &[u8], max_len: u64) -> Output {
        let data = &mut self.data;
        let (mut joined, flags, expires) = match data.map.get(&key) {
            Some(found) => (found.value.to_vec(), found.flags, found.expires),
            None => (Vec::new(), 0, 0),
        };
        let length = joined.len() + value.len();
        if length as u64 > max_len {
            return Output::Refused(format!("ERR string exceeds maximum allowed size ({max_len} bytes)"));
        }
        joined.extend_from_slice(value);
        self.store_meta(index, key, &joined, flags, expires);
        Output::Integer(length as i64)
    }

    /// Writes `key` at `index` with the deadline `expires` (0: none), keeping its create
    /// index if it exists and clearing a deletion mark.
    fn store_meta(&mut self, index: u64, key: Bytes, value: &[u8], flags: u64, expires: u64) {
        // One lookup: the key's create index and deadline (and, for the change feed, the
        // value it replaces) are read where the new record goes.
        let feed = self.published.is_some();
        let (create_index, old_expires, prev) = self.data.map.upsert(&key, value, |current| {
            let create_index = current.map_or(index, |entry| entry.create_index);
            let old_expires = current.map_or(0, |entry| entry.expires);
            let prev = current.filter(|_| feed).map(|entry| Bytes::copy_from_slice(entry.value));
            (Meta { create_index, modify_index: index, flags, expires }, (create_index, old_expires, prev))
        });
        if let Some(published) = &self.published {
            let value = Bytes::copy_from_slice(value);
            let event =
                feed::Event { index, kind: feed::Kind::Put, key: key.clone(), value, create_index, flags, prev };
            published.feed().record(event);
        }
        self.index_deadline(&key, old_expires, expires);
        let data = &mut self.data;
        if let Some(deleted) = data.tombstones.remove(&key) {
            data.tombstone_order.remove(&(deleted, key.clone()));
        }
        if let Some(published) = &self.published {
            published.changed(&key);
        }
    }

    fn mark_deleted(&mut self, key: Bytes, index: u64) {
        if let Some(published) = &self.published {
            published.changed(&key);
        }
        let data = &mut self.data;
        if let Some(earlier) = data.tombstones.insert(key.clone(), index) {
            data.tombstone_order.remove(&(earlier, key.clone()));
        }
        data.tombstone_order.insert((index, key));
        while data.tombstones.len() > self.retention.max_tombstones {
            // Fold the oldest mark into the floor: blocking queries may wake spuriously for
            // it, never miss it.
            let Some((index, key)) = data.tombstone_order.pop_first() else { break };
            data.tombstones.remove(&key);
            data.tombstone_floor = data.tombstone_floor.max(index);
        }
    }

    /// Forgets remembered results that are too old or too many (by log index only).
    fn expire_requests(&mut self, now: u64) {
        let data = &mut self.data;
        while let Some(entry) = data.requests_by_index.first_entry() {
            let too_old = now.saturating_sub(*entry.key()) > self.retention.max_request_age;
            if !too_old && data.requests.len() <= self.retention.max_requests {
                break;
            }
            let key = entry.remove();
            data.requests.remove(&key);
        }
    }
}

impl StateMachine for KvStore {
    type Command = Command;
    type Output = Output;

    fn apply(&mut self, index: Index, command: Command) -> Output {
        let index = index.0;
        assert!(index > self.data.index, "applied index {index} after {}", self.data.index);
        self.data.index = index;
        let output = match command.request {
            Some(request) => match self.data.requests.get(&request.key) {
                Some(seen) if seen.fingerprint == request.fingerprint => seen.output.clone(),
                Some(_) => Output::RequestIdReused,
                None => {
                    let output = self.apply_op(index, command.op);
                    let remembered = Remembered { fingerprint: request.fingerprint, index, output: output.clone() };
                    self.data.requests_by_index.insert(index, request.key.clone());
                    self.data.requests.insert(request.key, remembered);
                    output
                }
            },
            None => self.apply_op(index, command.op),
        };
        self.expire_requests(index);
        self.publish();
        if let Some(published) = &self.published {
            published.feed().commit(index);
        }
        output
    }

    /// The leader stamps a write a follower forwarded with its own reading of the cluster
    /// clock, in place of the follower's: the leader's reading is the one its clock entries
    /// and its own writes use. A follower's reading runs from the last stamp it applied, so
    /// one that restarted reads the clock from the entries it replayed: on an idle cluster
    /// (no deadline, so no clock entries) that is as far behind as it was down, and a TTL
    /// counted from its stamp would end that much early (a lease granted through it, at
    /// once). A follower that restarted before the others after a full outage reads ahead
    /// instead, and its stamp would move everyone's clock forward. Only the stamp changes:
    /// TTLs in commands are durations from it.
    fn forwarded_hook(&self) -> Option<ForwardedHook<Command>> {
        let published = Arc::clone(self.published.as_ref()?);
        Some(Arc::new(move |command: &mut Command| {
            if let Op::At { now_ms, .. } = &mut command.op {
                *now_ms = published.now_ms();
            }
        }))
    }

    /// Streams the state out (see [`SNAPSHOT_VERSION`] for the layout): the map's blocks
    /// are written as they are, never copied into one buffer.
    fn snapshot(&self, out: &mut dyn Write) -> std::io::Result<()> {
        write_snapshot(&self.snapshot_head()?, &self.data.map, out)
    }

    /// The snapshot as of now, written later on any thread: everything but the key map is
    /// encoded now, on the apply thread (bounded: [`Retention`]'s remembered results and
    /// deletion marks, at most [`MAX_LEASES`] sessions, and the lock states and leased keys,
    /// one entry per key tied to a session), and the map is a copy-on-write view of it,
    /// written out as `snapshot` would.
    fn snapshot_view(&self) -> Option<SnapshotWriter> {
        let head = self.snapshot_head();
        let map = self.data.map.clone();
        Some(Box::new(move |out: &mut dyn Write| write_snapshot(&head?, &map, out)))
    }

    /// Reads a snapshot as it streams in, building the map block by block; replaces the
    /// state only if all of it decodes.
    fn restore(&mut self, snapshot: &mut dyn Read) -> std::io::Result<()> {
        let mut reader = BufReader::with_capacity(SNAPSHOT_BUFFER_BYTES, snapshot);
        let data = read_snapshot(&mut reader)?;
        self.data = data;
        self.alarm = None;
        self.publish();
        if let Some(published) = &self.published {
            published.feed().reset(self.data.index);
            published.changed_all();
        }
        Ok(())
    }
}

impl KvStore {
    /// What a snapshot starts with: the version byte, then the length and postcard encoding
    /// of everything but the map.
    fn snapshot_head(&self) -> std::io::Result<Vec<u8>> {
        let rest = postcard::to_stdvec(&self.data).map_err(std::io::Error::other)?;
        let coord = postcard::to_stdvec(&self.data.coord).map_err(std::io::Error::other)?;
        let mut head = vec![SNAPSHOT_VERSION];
        for part in [rest, coord] {
            keymap::put_varint(&mut head, part.len() as u64);
            head.extend_from_slice(&part);
        }
        Ok(head)
    }
}

/// Writes a snapshot: its head ([`KvStore::snapshot_head`]), then the map's records.
fn write_snapshot(head: &[u8], map: &KeyMap, out: &mut dyn Write) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(SNAPSHOT_BUFFER_BYTES, out);
    out.write_all(head)?;
    keymap::write_records(map, &mut out)?;
    out.flush()
}

/// The buffer between the state and the snapshot's writer or reader.
const SNAPSHOT_BUFFER_BYTES: usize = 64 << 10;

/// Decodes a snapshot (see [`SNAPSHOT_VERSION`]).
fn read_snapshot(reader: &mut impl BufRead) -> std::io::Result<Data> {
    let mut version = [0u8];
    if reader.read(&mut version)? == 0 {
        return Err(keymap::invalid("the key-value snapshot is empty"));
    }
    if version[0] != SNAPSHOT_VERSION && version[0] != 2 {
        // A refusal, not a guess: another layout read as this one would be a wrong state.
        return Err(keymap::invalid(format!(
            "unknown key-value snapshot version {} (this build reads versions 2 and {SNAPSHOT_VERSION}); \
             restore this node from a peer that runs the same build",
            version[0]
        )));
    }
    read_snapshot_body(reader, version[0]).map_err(|error| match error.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
            keymap::invalid(format!("the key-value snapshot does not decode: {error}"))
        }
        _ => error,
    })
}

/// Decodes what follows a snapshot's version byte.
fn read_snapshot_body(reader: &mut impl BufRead, version: u8) -> std::io::Result<Data> {
    let mut data: Data = read_part(reader)?;
    let layout = if version == 2 { Layout::V2 } else { Layout::V3 };
    if layout == Layout::V3 {
        data.coord = read_part(reader)?;
    }
    let count = keymap::read_varint_from(reader)?;
    data.map = keymap::read_records(reader, count, keymap::BLOCK_BYTES, layout)?;
    if !reader.fill_buf()?.is_empty() {
        return Err(keymap::invalid("bytes follow the last key"));
    }
    data.coord.rebuild(&data.map);
    validate_coord(&data.coord, &data.map)?;
    Ok(data)
}

/// The number of keys a key-value snapshot holds, read from its head without decoding the
/// keys or holding the rest (for `skiff snapshot inspect`): it skips the version's parts
/// (the layout is documented at `SNAPSHOT_VERSION`) and reads the count that follows them.
pub fn snapshot_key_count(reader: &mut impl Read) -> std::io::Result<u64> {
    let mut version = [0u8];
    reader.read_exact(&mut version)?;
    let parts = match version[0] {
        2 => 1,
        SNAPSHOT_VERSION => 2,
        other => return Err(keymap::invalid(format!("unknown key-value snapshot version {other}"))),
    };
    for _ in 0..parts {
        let length = keymap::read_varint_from(reader)?;
        let skipped = std::io::copy(&mut reader.take(length), &mut std::io::sink())?;
        if skipped != length {
            return Err(keymap::invalid("the key-value snapshot's head is cut short"));
        }
    }
    keymap::read_varint_from(reader)
}

/// A length-prefixed postcard part of a snapshot.
fn read_part<T: serde::de::DeserializeOwned>(reader: &mut impl BufRead) -> std::io::Result<T> {
    let length = keymap::read_varint_from(reader)?;
    let mut bytes = Vec::new();
    // Through `take`, not a buffer of the claimed length: a corrupt length fails at the end
    // of the input rather than asking for a huge allocation.
    reader.take(length).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != length {
        return Err(keymap::invalid("it is cut short"));
    }
    postcard::from_bytes(&bytes).map_err(|error| keymap::invalid(error.to_string()))
}

/// The coordination state of a decoded snapshot must agree with its keys: every lock on a
/// key that exists, every holder's lease existing and listing the key (the bytes come from a
/// disk or a peer: checked, not trusted).
fn validate_coord(coord: &Coord, map: &KeyMap) -> std::io::Result<()> {
    for (key, lock) in coord.locks.iter() {
        if map.get(key).is_none() {
            return Err(keymap::invalid(format!("a lock on the missing key {}", show(key))));
        }
        if let Some(holder) = &lock.holder
            && !coord.leases.get(&holder.lease).is_some_and(|lease| lease.keys.contains(key))
        {
            return Err(keymap::invalid(format!("the holder of {} is not a session that holds it", show(key))));
        }
    }
    for (id, lease) in &coord.leases {
        if lease.spec.id != *id {
            return Err(keymap::invalid(format!("session {id:?} is filed under another id")));
        }
        for key in &lease.keys {
            let holder = coord.locks.get(key).and_then(|lock| lock.holder.as_ref());
            if holder.is_none_or(|holder| holder.lease != *id) {
                return Err(keymap::invalid(format!("session {id:?} lists {} without holding it", show(key))));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Op {
        Op::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            flags: 0,
            cas: None,
        }
    }

    fn run(store: &mut KvStore, index: u64, op: Op) -> Output {
        store.apply(Index(index), Command { request: None, op })
    }

    const DONE: Output = Output::Done { ok: true, deleted: 0 };
    const FAILED: Output = Output::Done { ok: false, deleted: 0 };

    #[test]
    fn revisions_are_log_indexes() {
        let mut store = KvStore::default();
        assert_eq!(run(&mut store, 3, put("a", "1")), DONE);
        assert_eq!(run(&mut store, 5, put("a", "2")), DONE);
        let value = store.get(b"a").expect("a was written");
        assert_eq!((value.create_index, value.modify_index, value.value), (3, 5, &b"2"[..]));
    }

    #[test]
    fn cas_compares_the_modify_index_and_zero_means_absent() {
        let mut store = KvStore::default();
        let cas = |value: &str, cas| Op::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::copy_from_slice(value.as_bytes()),
            flags: 7,
            cas: Some(cas),
        };
        assert_eq!(run(&mut store, 1, cas("first", 0)), DONE);
        assert_eq!(run(&mut store, 2, cas("again", 0)), FAILED);
        assert_eq!(run(&mut store, 3, cas("stale", 2)), FAILED);
        assert_eq!(run(&mut store, 4, cas("second", 1)), DONE);
        let value = store.get(b"k").expect("written");
        assert_eq!((value.value, value.flags, value.modify_index), (&b"second"[..], 7, 4));
        let delete = |cas| Op::Delete { key: Bytes::from_static(b"k"), cas: Some(cas) };
        assert_eq!(run(&mut store, 5, delete(1)), FAILED);
        assert_eq!(run(&mut store, 6, delete(4)), Output::Done { ok: true, deleted: 1 });
        assert!(store.get(b"k").is_none());
        assert_eq!(run(&mut store, 7, delete(4)), DONE, "a missing key is already deleted, as in Consul");
    }

    #[test]
    fn prefix_delete_removes_only_the_prefix() {
        let mut store = KvStore::default();
        for (index, key) in ["a/1", "a/2", "ab", "b"].into_iter().enumerate() {
            run(&mut store, index as u64 + 1, put(key, "x"));
        }
        assert_eq!(
            run(&mut store, 9, Op::DeletePrefix { prefix: Bytes::from_static(b"a/") }),
            Output::Done { ok: true, deleted: 2 }
        );
        let keys: Vec<&[u8]> = store.range(b"").map(|entry| entry.key).collect();
        assert_eq!(keys, [&b"ab"[..], b"b"]);
        assert_eq!(store.watch_index(b"a/", true), 9, "the deletion is a change to the prefix");
        assert_eq!(store.watch_index(b"b", false), 4);
    }

    #[test]
    fn a_retried_request_returns_the_first_result_without_applying_again() {
        let mut store = KvStore::default();
        let request = |fingerprint| Some(RequestId { key: "r1".into(), fingerprint });
        let first = Command {
            request: request(11),
            op: Op::Put { key: Bytes::from_static(b"k"), value: Bytes::from_static(b"v"), flags: 0, cas: Some(0) },
        };
        assert_eq!(store.apply(Index(1), first.clone()), DONE);
        run(&mut store, 2, put("k", "other"));
        // Applied again, cas=0 would now fail; the retry must answer the first result.
        assert_eq!(store.apply(Index(3), first), DONE);
        assert_eq!(store.get(b"k").expect("k").value, b"other");
        let reused = Command { request: request(12), op: put("k", "third") };
        assert_eq!(store.apply(Index(4), reused), Output::RequestIdReused);
        assert_eq!(store.get(b"k").expect("k").value, b"other");
    }

    #[test]
    fn remembered_results_expire_by_count_and_by_age() {
        let retention = Retention { max_requests: 2, max_request_age: 10, max_tombstones: 2 };
        let mut store = KvStore::new(retention);
        let with_id =
            |id: &str| Command { request: Some(RequestId { key: id.into(), fingerprint: 1 }), op: put("k", id) };
        for (index, id) in ["a", "b", "c"].into_iter().enumerate() {
            store.apply(Index(index as u64 + 1), with_id(id));
        }
        assert!(!store.data.requests.contains_key("a"), "the oldest of three is forgotten");
        assert!(store.data.requests.contains_key("b") && store.data.requests.contains_key("c"));
        run(&mut store, 13, put("x", "y"));
        assert!(!store.data.requests.contains_key("b"), "b (index 2) is 11 entries old");
        assert!(store.data.requests.contains_key("c"));
        assert_eq!(store.data.requests_by_index.len(), store.data.requests.len());
    }

    #[test]
    fn tombstones_are_bounded_and_fold_into_the_floor() {
        let retention = Retention { max_tombstones: 2, ..Retention::default() };
        let mut store = KvStore::new(retention);
        for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
            run(&mut store, 2 * i as u64 + 1, put(key, "x"));
            run(&mut store, 2 * i as u64 + 2, Op::Delete { key: Bytes::copy_from_slice(key.as_bytes()), cas: None });
        }
        assert_eq!(store.data.tombstones.len(), 2);
        assert_eq!(store.data.tombstone_floor, 2, "a's deletion at 2 folded into the floor");
        assert_eq!(store.watch_index(b"a", false), 2);
        assert_eq!(store.watch_index(b"c", false), 6);
        assert_eq!(store.watch_index(b"never", false), 2);
    }

    #[test]
    fn snapshot_and_restore_round_trip_everything() {
        let mut store = KvStore::default();
        store.apply(
            Index(1),
            Command { request: Some(RequestId { key: "id".into(), fingerprint: 5 }), op: put("a", "1") },
        );
        run(&mut store, 2, put("b", "2"));
        run(&mut store, 3, Op::Delete { key: Bytes::from_static(b"b"), cas: None });
        let mut bytes = Vec::new();
        store.snapshot(&mut bytes).expect("snapshot to memory");
        let mut copy = KvStore::default();
        let published = copy.subscribe();
        copy.restore(&mut &bytes[..]).expect("restore");
        assert_eq!(copy.data, store.data);
        assert_eq!(published.applied(), 3);
        // The remembered result survives the snapshot.
        let retry = Command { request: Some(RequestId { key: "id".into(), fingerprint: 5 }), op: put("a", "1") };
        assert_eq!(copy.apply(Index(4), retry), DONE);
        assert_eq!(copy.get(b"a").expect("a").modify_index, 1);
    }

    #[test]
    fn the_key_count_is_read_from_the_head_of_every_version() {
        let mut store = sample_store();
        store.apply(Index(51), Command { request: None, op: put("later", "x").at(5) });
        let mut bytes = Vec::new();
        store.snapshot(&mut bytes).expect("snapshot");
        assert_eq!(snapshot_key_count(&mut &bytes[..]).expect("a count"), store.len() as u64);
        // Version 2: one part, then the count.
        assert_eq!(snapshot_key_count(&mut &[2, 3, 9, 9, 9, 42][..]).expect("a count"), 42);
        // A head that claims more bytes than follow, and an unknown version.
        assert!(snapshot_key_count(&mut &[3, 0xff, 0xff, 0x03, 1, 2][..]).is_err());
        assert!(snapshot_key_count(&mut &[9, 0][..]).is_err());
    }

    #[test]
    fn a_corrupt_snapshot_is_refused_with_a_reason() {
        let mut store = KvStore::default();
        let error = store.restore(&mut &[9u8, 1, 2][..]).expect_err("version 9 is unknown");
        assert!(error.to_string().contains("version 9"), "{error}");
        let error = store.restore(&mut &[1u8, 0][..]).expect_err("version 1 is the old layout");
        assert!(error.to_string().contains("version 1 (this build reads versions 2 and 3"), "{error}");
        let error = store.restore(&mut &[SNAPSHOT_VERSION, 0xff, 0xff][..]).expect_err("garbage");
        assert!(error.to_string().contains("does not decode"), "{error}");
        assert!(store.restore(&mut &[][..]).is_err());
    }

    fn sample_store() -> KvStore {
        let mut store = KvStore::default();
        store.apply(
            Index(1),
            Command { request: Some(RequestId { key: "id".into(), fingerprint: 5 }), op: put("a", "1") },
        );
        for index in 2..50u64 {
            run(&mut store, index, put(&format!("key-{}", index % 20), &"v".repeat(index as usize)));
        }
        run(&mut store, 50, Op::Delete { key: Bytes::from_static(b"key-3"), cas: None });
        store
    }

    #[test]
    fn a_snapshot_cut_anywhere_or_with_bytes_after_it_is_refused() {
        let mut bytes = Vec::new();
        sample_store().snapshot(&mut bytes).expect("snapshot");
        let mut store = KvStore::default();
        for cut in 1..bytes.len() {
            let error = store.restore(&mut &bytes[..cut]).expect_err("a cut snapshot");
            assert!(error.to_string().contains("does not decode"), "cut at {cut}: {error}");
            assert_eq!(store.data, Data::default(), "a refused snapshot changes nothing");
        }
        bytes.push(0);
        let error = store.restore(&mut &bytes[..]).expect_err("a trailing byte");
        assert!(error.to_string().contains("bytes follow"), "{error}");
    }

    #[test]
    fn snapshots_are_deterministic() {
        let (mut first, mut second) = (Vec::new(), Vec::new());
        sample_store().snapshot(&mut first).expect("snapshot");
        sample_store().snapshot(&mut second).expect("snapshot");
        assert_eq!(first, second);
        // And a restored copy (whose blocks are packed differently) writes the same bytes.
        let mut copy = KvStore::default();
        copy.restore(&mut &first[..]).expect("restore");
        let mut third = Vec::new();
        copy.snapshot(&mut third).expect("snapshot");
        assert_eq!(first, third);
    }

    #[test]
    fn a_view_taken_before_writes_still_reads_the_old_state() {
        let mut store = sample_store();
        let view = store.view();
        let keys_then: Vec<(Vec<u8>, Vec<u8>)> =
            view.range(b"").map(|entry| (entry.key.to_vec(), entry.value.to_vec())).collect();
        let (index_then, len_then) = (store.index(), store.len());
        run(&mut store, 51, put("key-1", "changed"));
        run(&mut store, 52, put("a-new-key", "x"));
        run(&mut store, 53, Op::DeletePrefix { prefix: Bytes::from_static(b"key-") });
        assert_eq!(store.len(), 2, "the store moved on");
        assert_eq!(view.index(), index_then);
        assert_eq!(Keyspace::len(&view), len_then);
        let keys_now: Vec<(Vec<u8>, Vec<u8>)> =
            view.range(b"").map(|entry| (entry.key.to_vec(), entry.value.to_vec())).collect();
        assert_eq!(keys_now, keys_then, "the view reads the state it was taken at");
        assert_eq!(view.live_index(b"key-1", false), 41);
    }

    #[test]
    fn a_deferred_snapshot_writes_what_snapshot_wrote_at_the_same_moment() {
        let mut store = sample_store();
        let mut now = Vec::new();
        store.snapshot(&mut now).expect("snapshot");
        let writer = store.snapshot_view().expect("the key-value store has views");
        // Writes after the view, remembered results and deletion marks included.
        store.apply(
            Index(51),
            Command { request: Some(RequestId { key: "later".into(), fingerprint: 1 }), op: put("key-2", "new") },
        );
        run(&mut store, 52, Op::Delete { key: Bytes::from_static(b"key-4"), cas: None });
        run(&mut store, 53, put("zzz", "z"));
        let mut later = Vec::new();
        std::thread::spawn(move || writer(&mut later).map(|()| later))
            .join()
            .expect("the writer runs on another thread")
            .map(|bytes| assert_eq!(bytes, now, "the deferred snapshot is the state at the view"))
            .expect("the deferred snapshot writes");
        let mut after = Vec::new();
        store.snapshot(&mut after).expect("snapshot");
        assert_ne!(after, now, "the writes after the view changed the state");
    }

    /// A crafted snapshot whose one record has a key length of 2^64 - 1 and a value length
    /// of 1 (they add up to 0): restoring it panicked, at startup on every restart.
    #[test]
    fn a_snapshot_with_crafted_record_lengths_is_refused_not_a_panic() {
        let mut bytes = Vec::new();
        KvStore::default().snapshot(&mut bytes).expect("snapshot");
        // An empty store's snapshot ends with its key count, 0: claim one key instead.
        assert_eq!(bytes.pop(), Some(0));
        bytes.push(1);
        keymap::put_varint(&mut bytes, u64::MAX);
        keymap::put_varint(&mut bytes, 1);
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        let mut store = sample_store();
        let before = store.data.index;
        let error = store.restore(&mut &bytes[..]).expect_err("crafted lengths");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("does not decode") && error.to_string().contains("2^64"), "{error}");
        assert_eq!(store.data.index, before, "a refused snapshot changes nothing");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]

        /// Whatever the bytes, `restore` answers, never panics.
        #[test]
        fn restore_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = KvStore::default().restore(&mut &bytes[..]);
        }

        /// Nor on a real snapshot with a few bytes changed.
        #[test]
        fn restore_never_panics_on_a_damaged_snapshot(
            changes in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()), 1..6)
        ) {
            let mut bytes = Vec::new();
            sample_store().snapshot(&mut bytes).expect("snapshot");
            for (at, byte) in changes {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            let _ = KvStore::default().restore(&mut &bytes[..]);
        }
    }

    fn within(quota_bytes: u64, op: Op) -> Op {
        op.within_quota(quota_bytes)
    }

    #[test]
    fn the_quota_refuses_growth_lets_deletes_through_and_its_alarm_clears_when_space_is_freed() {
        const QUOTA: u64 = 100;
        let mut store = KvStore::default();
        let published = store.subscribe();
        // "k0".."k3" with 20-byte values: 4 * 22 = 88 bytes.
        for number in 0..4u64 {
            let op = within(QUOTA, put(&format!("k{number}"), &"v".repeat(20)));
            assert_eq!(run(&mut store, number + 1, op), DONE);
        }
        assert_eq!((store.used_bytes(), published.used_bytes()), (88, 88));
        assert_eq!(store.quota_alarm(), None);
        // 88 + 22 > 100: refused, with Redis's OOM wording and the numbers; nothing written.
        let Output::Refused(message) = run(&mut store, 5, within(QUOTA, put("k4", &"v".repeat(20)))) else {
            panic!("a write past the quota is refused")
        };
        assert!(message.starts_with(OVER_QUOTA), "{message}");
        assert!(message.contains("88 bytes of keys and values used of 100"), "{message}");
        assert!(store.get(b"k4").is_none());
        assert_eq!((store.quota_alarm(), published.quota_alarm()), (Some(QUOTA), Some(QUOTA)));
        // A batch is refused whole for its writes; its deletes apply.
        let batch = Op::Batch(vec![
            put("k5", "x"),
            Op::Delete { key: Bytes::from_static(b"k0"), cas: None },
            put("k6", &"v".repeat(30)),
        ]);
        let Output::Batch(outputs) = run(&mut store, 6, within(QUOTA, batch)) else { panic!("a batch output") };
        assert!(matches!(
            &outputs[..],
            [Output::Refused(_), Output::Done { ok: true, deleted: 1 }, Output::Refused(_)]
        ));
        assert!(store.get(b"k5").is_none() && store.get(b"k0").is_none());
        assert_eq!(store.used_bytes(), 66);
        assert_eq!(store.quota_alarm(), None, "space was freed: the alarm clears");
        assert_eq!(published.quota_alarm(), None);
        // Now it fits (66 + 22 <= 100); a write without a quota is not checked.
        assert_eq!(run(&mut store, 7, within(QUOTA, put("k4", &"v".repeat(20)))), DONE);
        assert_eq!(run(&mut store, 8, put("free", &"v".repeat(200))), DONE);
        assert_eq!(store.used_bytes(), 88 + 204);
        // Every replica decides alike: the same commands on a copy give the same outputs.
        let mut bytes = Vec::new();
        store.snapshot(&mut bytes).expect("snapshot");
        let mut copy = KvStore::default();
        copy.restore(&mut &bytes[..]).expect("restore");
        assert_eq!(copy.used_bytes(), store.used_bytes());
        let op = within(QUOTA, put("k9", "x"));
        assert_eq!(run(&mut copy, 9, op.clone()), run(&mut store, 9, op));
    }

    /// What `key` is now, as `WATCH` records it (absent or past its deadline: 0, 0).
    fn watch(store: &KvStore, key: &str) -> Watched {
        Watched::new(Bytes::copy_from_slice(key.as_bytes()), store.get(key.as_bytes()))
    }

    fn guarded(expect: Vec<Watched>, ops: Vec<Op>) -> Op {
        Op::Guarded { expect, op: Box::new(Op::Batch(ops)) }
    }

    fn value(store: &KvStore, key: &str) -> Option<Vec<u8>> {
        store.get(key.as_bytes()).map(|entry| entry.value.to_vec())
    }

    #[test]
    fn a_guarded_batch_applies_whole_while_its_watched_keys_are_unchanged() {
        let mut store = KvStore::default();
        run(&mut store, 1, put("a", "1"));
        let expect = vec![watch(&store, "a"), watch(&store, "absent")];
        assert_eq!(expect[0].modify_index, 1);
        assert_eq!(expect[1].modify_index, 0);
        // Another key changing does not matter.
        run(&mut store, 2, put("other", "x"));
        let output = run(&mut store, 3, guarded(expect, vec![put("a", "2"), put("b", "3")]));
        assert_eq!(output, Output::Batch(vec![DONE, DONE]));
        assert_eq!((value(&store, "a"), value(&store, "b")), (Some(b"2".to_vec()), Some(b"3".to_vec())));
    }

    #[test]
    fn a_guarded_batch_aborts_applying_nothing_when_a_watched_key_was_written_deleted_or_created() {
        type Change = fn(&mut KvStore);
        let changes: [(&str, Change); 4] = [
            ("written", |store| assert_eq!(run(store, 3, put("a", "other")), DONE)),
            ("rewritten with the same value", |store| assert_eq!(run(store, 3, put("a", "1")), DONE)),
            ("deleted", |store| {
                let deleted = run(store, 3, Op::Delete { key: Bytes::from_static(b"a"), cas: None });
                assert_eq!(deleted, Output::Done { ok: true, deleted: 1 });
            }),
            ("created", |store| assert_eq!(run(store, 3, put("absent", "new")), DONE)),
        ];
        for (what, change) in changes {
            let mut store = KvStore::default();
            run(&mut store, 1, put("a", "1"));
            let expect = vec![watch(&store, "a"), watch(&store, "absent")];
            change(&mut store);
            let before = (value(&store, "a"), value(&store, "absent"), store.len());
            let output = run(&mut store, 4, guarded(expect, vec![put("b", "2"), put("a", "mine")]));
            assert_eq!(output, Output::Aborted, "a watched key {what}");
            assert_eq!((value(&store, "a"), value(&store, "absent"), store.len()), before, "{what}: nothing applied");
            assert!(store.get(b"b").is_none(), "{what}: nothing applied");
        }
    }

    #[test]
    fn a_guarded_batch_aborts_when_a_watched_key_expired_or_its_deadline_changed() {
        let set_px = |key: &str, ms: u64| Op::SetWith {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            when: When::Always,
            get: false,
            expiry: Expiry::After(ms),
        };
        let mut store = KvStore::default();
        run(&mut store, 1, set_px("a", 1_000).at(10_000));
        run(&mut store, 2, set_px("b", 1_000).at(10_000));
        let expect_a = vec![watch(&store, "a")];
        let expect_b = vec![watch(&store, "b")];
        assert!(expect_a[0].expires > 0);
        // "a" expires when the clock passes its deadline: the stamp of the guarded entry itself.
        let output = run(&mut store, 3, guarded(expect_a, vec![put("c", "1")]).at(11_500));
        assert_eq!(output, Output::Aborted, "a watched key expired");
        assert!(store.get(b"c").is_none());
        // "b" had its deadline changed (EXPIRE is not a write of the value, but Redis counts it).
        run(
            &mut store,
            4,
            Op::Expire { key: Bytes::from_static(b"b"), expiry: Expiry::Clear, when: ExpireIf::Always, get: false },
        );
        assert_eq!(run(&mut store, 5, guarded(expect_b, vec![put("c", "1")])), Output::Aborted);
        // A key that was already gone when watched, and still is, is unchanged.
        let expect = vec![watch(&store, "a")];
        assert_eq!(expect[0], Watched { key: Bytes::from_static(b"a"), modify_index: 0, expires: 0 });
        assert_eq!(run(&mut store, 6, guarded(expect, vec![put("c", "1")])), Output::Batch(vec![DONE]));
    }

    #[test]
    fn a_guarded_batch_over_the_quota_is_refused_whole_and_its_watched_keys_do_not_matter_then() {
        let mut store = KvStore::default();
        run(&mut store, 1, put("a", "1"));
        let expect = vec![watch(&store, "a")];
        let op =
            guarded(expect, vec![Op::Delete { key: Bytes::from_static(b"a"), cas: None }, put("b", &"v".repeat(50))]);
        assert_eq!(op.most_added_bytes(), 51);
        let Output::Refused(message) = run(&mut store, 2, within(20, op)) else { panic!("refused for the quota") };
        assert!(message.starts_with(OVER_QUOTA), "{message}");
        assert_eq!(value(&store, "a"), Some(b"1".to_vec()), "the delete in it did not apply either");
        assert!(store.get(b"b").is_none());
    }

    #[test]
    fn a_read_in_a_batch_answers_the_state_at_its_place_and_a_key_past_its_deadline_as_absent() {
        let mut store = KvStore::default();
        let read =
            |keys: &[&str]| Op::Read { keys: keys.iter().map(|key| Bytes::copy_from_slice(key.as_bytes())).collect() };
        let set_px = Op::SetWith {
            key: Bytes::from_static(b"short"),
            value: Bytes::from_static(b"v"),
            when: When::Always,
            get: false,
            expiry: Expiry::After(100),
        };
        run(&mut store, 1, set_px.at(1_000));
        let batch = Op::Batch(vec![read(&["a", "short"]), put("a", "1"), read(&["a"]), put("a", "2")]).at(1_050);
        let Output::Batch(outputs) = run(&mut store, 2, batch) else { panic!("a batch output") };
        let found = |output: &Output| match output {
            Output::Read { found, .. } => found
                .iter()
                .map(|value| value.as_ref().map(|value| (value.value.to_vec(), value.modify_index)))
                .collect(),
            other => panic!("a read output, not {other:?}"),
        };
        let first: Vec<Option<(Vec<u8>, u64)>> = found(&outputs[0]);
        assert_eq!(first, vec![None, Some((b"v".to_vec(), 1))]);
        assert_eq!(found(&outputs[2]), vec![Some((b"1".to_vec(), 2))], "after the write before it, not the one after");
        assert_eq!(value(&store, "a"), Some(b"2".to_vec()));
        // Past its deadline on the replicated clock: absent, whether or not its expiry applied.
        let Output::Read { now_ms, found: later } = run(&mut store, 3, read(&["short"]).at(1_100)) else {
            panic!("a read output")
        };
        assert_eq!((now_ms, later), (1_100, vec![None]));
    }
}
