//! Time on the log, and what it gives: keys with a deadline (Redis TTLs), leases (Consul
//! sessions and Skiff's etcd-style leases are one thing), locks held by a lease, and fencing
//! tokens.
//!
//! **The cluster clock.** Replicas never read their own clocks on apply. A write is stamped by
//! the node that proposes it with its reading of the cluster clock ([`Op::At`]); the leader
//! adds a clock entry ([`Op::Tick`]) when a deadline is due and about once a second while any
//! deadline exists. Applying a stamped entry moves the replicated clock to the stamp (never
//! back) and then removes every key and ends every lease whose deadline is at or before it,
//! so every replica expires the same things at the same index, and a deadline is a number in
//! the replicated state, not a timer on one node.
//!
//! A node reads the cluster clock as the clock of the last entry it applied plus what its own
//! monotonic clock measured since ([`crate::Published::now_ms`]). A new leader therefore goes
//! on from where the entries it applied left the clock, counting the election as time that
//! passed: a leader change neither restarts a TTL (etcd without its lease checkpoints) nor
//! shortens it. The assumption is that monotonic clocks run at about the same rate; wall
//! clocks may disagree by any amount. A node's reading lags the leader's by its apply delay,
//! so a deadline is never seen as passed early.
//!
//! **Leases.** A lease has an id (a UUID chosen by the proposer), a TTL (0: none), a deadline,
//! a behaviour when it ends (release its locks, or delete their keys) and a lock delay. It
//! ends when its deadline passes on the cluster clock, or when destroyed. Keys tied to it are
//! locks (`?acquire`) or keys put with `?lease`; when it ends, locks are released (and may not
//! be acquired again for the lock delay) or deleted, and keys put with `?lease` are deleted.
//!
//! **Fencing.** Each acquisition of a lock gets a token: the index of the entry that acquired
//! it. A write that carries a token ([`Op::Fenced`]) applies only while that acquisition still
//! holds its lock, so a holder paused past its lease cannot write after the lock moved on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{KvStore, Op, Output, map_range};
use crate::keymap::Meta;

/// The most leases (sessions) the state holds: a grant past it is refused. A constant, so
/// that every replica refuses the same grant.
pub const MAX_LEASES: usize = 100_000;

/// How a refusal for an unknown or ended lease starts (the HTTP API answers it with 404 or,
/// for `?acquire`, 400).
pub const NO_SUCH_LEASE: &str = "ERR no such session";
/// How a refusal of a fenced write starts (the HTTP API answers it with 409).
pub const STALE_FENCE: &str = "ERR fenced";

/// What happens to a lease's locks when it ends (Consul's session `Behavior`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Behavior {
    /// The locks are released; their keys stay.
    #[default]
    Release,
    /// The locked keys are deleted.
    Delete,
}

/// What a new lease is to be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseSpec {
    /// The lease's id: a UUID chosen by the proposer.
    pub id: String,
    pub name: String,
    /// The node the lease belongs to (Consul's session `Node`).
    pub node: String,
    /// The time to live in milliseconds; 0 for none (ends only when destroyed).
    pub ttl_ms: u64,
    /// After the lease ends, its locks may not be acquired again for this long.
    pub lock_delay_ms: u64,
    pub behavior: Behavior,
}

/// A lease (a Consul session) in the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub spec: LeaseSpec,
    /// The deadline on the cluster clock; 0 for none.
    pub deadline: u64,
    pub create_index: u64,
    pub modify_index: u64,
    /// The keys tied to it: the locks it holds and the keys put with it.
    pub keys: BTreeSet<Bytes>,
}

/// The lock state of one key: Consul's `LockIndex` and `Session`, and the fencing token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLock {
    /// How many times the key's lock was acquired (Consul's `LockIndex`).
    pub lock_index: u64,
    /// The lease holding it, if any.
    pub holder: Option<Holder>,
    /// The lock may not be acquired before this time on the cluster clock (Consul's lock
    /// delay, set when a holder's lease ended).
    pub delay_until: u64,
}

/// Who holds a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The lease's id (Consul's `Session`).
    pub lease: String,
    /// The index of the acquisition: the fencing token. 0 for a key put with `?lease`, which
    /// is tied to the lease but is not a lock.
    pub fence: u64,
}

/// The lock states by key, shared with views (reads show `Session` and `LockIndex`): copied
/// only when a lock changes while a view holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Locks(Arc<BTreeMap<Bytes, KeyLock>>);

impl Locks {
    pub fn get(&self, key: &[u8]) -> Option<&KeyLock> {
        self.0.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &KeyLock)> {
        self.0.iter()
    }

    fn make_mut(&mut self) -> &mut BTreeMap<Bytes, KeyLock> {
        Arc::make_mut(&mut self.0)
    }
}

impl Serialize for Locks {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Locks {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Locks, D::Error> {
        Ok(Locks(Arc::new(BTreeMap::deserialize(deserializer)?)))
    }
}

/// How long a key is to live, as a write asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expiry {
    /// Keep the deadline it has (Redis `KEEPTTL`).
    Keep,
    /// No deadline (Redis `PERSIST`).
    Clear,
    /// This many milliseconds after the entry's time on the cluster clock; 0 expires it at
    /// once. An absolute Unix time (`EXAT`) is turned into this by the proposer.
    After(u64),
}

/// When an [`Op::Expire`] sets a deadline (Redis's `NX`, `XX`, `GT`, `LT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpireIf {
    Always,
    /// Only if the key has no deadline.
    NoDeadline,
    /// Only if it has one.
    HasDeadline,
    /// Only if the new deadline is later (no deadline counts as infinitely late).
    Later,
    /// Only if the new deadline is earlier.
    Earlier,
    /// Only if it has one and the new deadline is earlier (Redis's `XX LT`: unlike `LT`
    /// alone, a key without a deadline is left as it is).
    EarlierDeadline,
}

/// The coordination part of the state: the cluster clock, leases and locks. Snapshots carry
/// the fields without `serde(skip)`; the others are indexes rebuilt on restore.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Coord {
    /// The cluster clock, in milliseconds: the latest stamp applied.
    pub(super) clock: u64,
    pub(super) leases: BTreeMap<String, Lease>,
    pub(super) locks: Locks,
    /// Lease deadlines, earliest first.
    #[serde(skip)]
    lease_deadlines: BTreeSet<(u64, String)>,
    /// Key deadlines, earliest first (the deadlines are in the keys' records).
    #[serde(skip)]
    key_deadlines: BTreeSet<(u64, Bytes)>,
    /// The tokens of the locks held now, and their keys.
    #[serde(skip)]
    fences: BTreeMap<u64, Bytes>,
}

impl Coord {
    /// The earliest deadline of a key or a lease.
    pub(super) fn next_deadline(&self) -> Option<u64> {
        let key = self.key_deadlines.first().map(|(at, _)| *at);
        let lease = self.lease_deadlines.first().map(|(at, _)| *at);
        key.into_iter().chain(lease).min()
    }

    /// Rebuilds the indexes after a restore, from the leases, the locks and the key map.
    pub(super) fn rebuild(&mut self, map: &crate::keymap::KeyMap) {
        self.lease_deadlines = self
            .leases
            .iter()
            .filter(|(_, lease)| lease.deadline > 0)
            .map(|(id, l)| (l.deadline, id.clone()))
            .collect();
        self.key_deadlines = map
            .iter()
            .filter(|entry| entry.expires > 0)
            .map(|entry| (entry.expires, Bytes::copy_from_slice(entry.key)))
            .collect();
        self.fences = self
            .locks
            .0
            .iter()
            .filter_map(|(key, lock)| lock.holder.as_ref().filter(|h| h.fence > 0).map(|h| (h.fence, key.clone())))
            .collect();
    }

    /// Checks that the indexes agree with what they index; panics naming the first that
    /// does not. Run after every apply in this crate's unit tests.
    #[cfg(test)]
    pub(super) fn check(&self, map: &crate::keymap::KeyMap) {
        let mut rebuilt = Coord { clock: self.clock, ..Coord::default() };
        rebuilt.leases = self.leases.clone();
        rebuilt.locks = self.locks.clone();
        rebuilt.rebuild(map);
        assert_eq!(rebuilt.lease_deadlines, self.lease_deadlines, "lease deadline index");
        assert_eq!(rebuilt.key_deadlines, self.key_deadlines, "key deadline index");
        assert_eq!(rebuilt.fences, self.fences, "fence index");
        // Locks and sessions agree: the same rule a restored snapshot is validated by.
        if let Err(error) = super::validate_coord(self, map) {
            panic!("{error}");
        }
        for (id, lease) in &self.leases {
            assert!(lease.deadline == 0 || lease.deadline > self.clock, "lease {id} outlived its deadline");
        }
        if let Some((first, key)) = self.key_deadlines.first() {
            assert!(*first > self.clock, "key {key:?} outlived its deadline");
        }
    }
}

/// A short description of a duration in milliseconds, for the log view.
fn seconds(ms: u64) -> String {
    format!("{}.{:03} s", ms / 1000, ms % 1000)
}

impl Expiry {
    pub(super) fn describe(&self) -> String {
        match self {
            Expiry::Keep => " keeping its TTL".into(),
            Expiry::Clear => String::new(),
            Expiry::After(ms) => format!(" for {}", seconds(*ms)),
        }
    }
}

/// Descriptions of the coordination operations, for the log view.
pub(super) fn describe(op: &Op) -> Option<String> {
    let show = super::show;
    Some(match op {
        Op::At { now_ms, op } => format!("at {}: {}", seconds(*now_ms), op.describe()),
        Op::Tick { now_ms } => format!("clock {}: expire what is due", seconds(*now_ms)),
        Op::SetWith { key, value, expiry, .. } => {
            format!("set {} ({}){}", show(key), super::bytes(value.len()), expiry.describe())
        }
        Op::Expire { key, expiry: Expiry::Clear, .. } => format!("persist {}", show(key)),
        Op::Expire { key, expiry, .. } => format!("expire {}{}", show(key), expiry.describe()),
        Op::LeaseGrant(spec) => format!("create session {} (TTL {})", spec.id, seconds(spec.ttl_ms)),
        Op::LeaseRenew { id } => format!("renew session {id}"),
        Op::LeaseRevoke { id } => format!("destroy session {id}"),
        Op::Acquire { key, session, .. } => format!("acquire {} for session {session}", show(key)),
        Op::Release { key, session, .. } => format!("release {} from session {session}", show(key)),
        Op::PutLeased { key, value, lease, .. } => {
            format!("put {} ({}) with lease {lease}", show(key), super::bytes(value.len()))
        }
        Op::Fenced { token, op } => format!("{} fenced by {token}", op.describe()),
        Op::Txn(ops) => format!("transaction of {} operation{}", ops.len(), if ops.len() == 1 { "" } else { "s" }),
        _ => return None,
    })
}

impl KvStore {
    /// The cluster clock as this node reads it now ([`crate::Published::now_ms`]); the
    /// replicated clock when nobody subscribed (tests).
    pub(super) fn read_now(&self) -> u64 {
        self.published.as_ref().map_or(self.data.coord.clock, |published| published.now_ms().max(self.data.coord.clock))
    }

    /// The replicated clock, in milliseconds.
    pub fn clock_ms(&self) -> u64 {
        self.data.coord.clock
    }

    /// How many keys have a deadline (Redis `INFO`'s `expires`): the size of an index, not a
    /// walk of the keys.
    pub fn keys_with_deadline(&self) -> usize {
        self.data.coord.key_deadlines.len()
    }

    /// The lease (session) with this id.
    pub fn lease(&self, id: &str) -> Option<&Lease> {
        self.data.coord.leases.get(id)
    }

    /// Every lease, by id.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.data.coord.leases.values()
    }

    /// The lock state of `key`, if it was ever locked or tied to a lease.
    pub fn lock(&self, key: &[u8]) -> Option<&KeyLock> {
        self.data.coord.locks.get(key)
    }

    /// Moves the clock to `now` (never back) and expires what is due by then: keys past
    /// their deadline are deleted, leases past theirs end. Returns how many of each.
    pub(super) fn advance(&mut self, index: u64, now: u64) -> (u64, u64) {
        let coord = &mut self.data.coord;
        coord.clock = coord.clock.max(now);
        let clock = coord.clock;
        let mut keys = 0;
        while let Some((deadline, key)) = self.data.coord.key_deadlines.first().cloned() {
            if deadline > clock {
                break;
            }
            self.remove_key_as(index, &key, crate::feed::Kind::Expire);
            keys += 1;
        }
        let mut leases = 0;
        while let Some((deadline, id)) = self.data.coord.lease_deadlines.first().cloned() {
            if deadline > clock {
                break;
            }
            self.end_lease(index, &id);
            leases += 1;
        }
        (keys, leases)
    }

    /// Sets `key`'s deadline in its record and in the index; `expires` 0 clears it.
    pub(super) fn index_deadline(&mut self, key: &Bytes, old: u64, new: u64) {
        if old == new {
            return;
        }
        let deadlines = &mut self.data.coord.key_deadlines;
        if old > 0 {
            deadlines.remove(&(old, key.clone()));
        }
        if new > 0 {
            deadlines.insert((new, key.clone()));
        }
    }

    /// Removes `key` at `index` with everything tied to it: its deadline, its lock state
    /// (a held lock is released from its lease). Returns whether it was there.
    pub(super) fn remove_key(&mut self, index: u64, key: &Bytes) -> bool {
        self.remove_key_as(index, key, crate::feed::Kind::Delete)
    }

    /// [`KvStore::remove_key`], recorded in the change feed as `kind` (a delete, an expiry).
    fn remove_key_as(&mut self, index: u64, key: &Bytes, kind: crate::feed::Kind) -> bool {
        let Some(entry) = self.data.map.get(key) else { return false };
        let old = entry.expires;
        if let Some(published) = &self.published {
            let prev = Some(Bytes::copy_from_slice(entry.value));
            let (create_index, flags) = (entry.create_index, entry.flags);
            let event =
                crate::feed::Event { index, kind, key: key.clone(), value: Bytes::new(), create_index, flags, prev };
            published.feed().record(event);
        }
        self.index_deadline(key, old, 0);
        self.data.map.remove(key);
        if let Some(lock) = self.data.coord.locks.make_mut().remove(key) {
            self.untie(key, &lock);
        }
        self.mark_deleted(key.clone(), index);
        true
    }

    /// Notes again that `lock`'s holder holds `key` (the inverse of [`KvStore::untie`], for
    /// a transaction's undo).
    pub(super) fn tie(&mut self, key: &Bytes, lock: &KeyLock) {
        let Some(holder) = &lock.holder else { return };
        let coord = &mut self.data.coord;
        if let Some(lease) = coord.leases.get_mut(&holder.lease) {
            lease.keys.insert(key.clone());
        }
        if holder.fence > 0 {
            coord.fences.insert(holder.fence, key.clone());
        }
    }

    /// Forgets that `lock`'s holder holds `key` (the key's lock state is already changed).
    pub(super) fn untie(&mut self, key: &Bytes, lock: &KeyLock) {
        let Some(holder) = &lock.holder else { return };
        let coord = &mut self.data.coord;
        if let Some(lease) = coord.leases.get_mut(&holder.lease) {
            lease.keys.remove(key);
        }
        if holder.fence > 0 {
            coord.fences.remove(&holder.fence);
        }
    }

    /// The deadline an expiry asks for, applied at `now`, given the current one.
    fn deadline(now: u64, expiry: Expiry, current: u64) -> u64 {
        match expiry {
            Expiry::Keep => current,
            Expiry::Clear => 0,
            // A deadline of exactly `now` is already due; never 0, which means none.
            Expiry::After(ms) => now.saturating_add(ms).max(1),
        }
    }

    /// Redis `SET` with an expiry: as [`Op::Set`], then the deadline.
    pub(super) fn set_with(
        &mut self,
        index: u64,
        key: Bytes,
        value: &[u8],
        when: super::When,
        get: bool,
        expiry: Expiry,
    ) -> Output {
        let current = self.data.map.get(&key);
        let old = if get { current.map(|entry| Bytes::copy_from_slice(entry.value)) } else { None };
        let written = match when {
            super::When::Always => true,
            super::When::Absent => current.is_none(),
            super::When::Present => current.is_some(),
        };
        if written {
            let now = self.data.coord.clock;
            let deadline = KvStore::deadline(now, expiry, current.map_or(0, |entry| entry.expires));
            if expiry == Expiry::After(0) || (deadline > 0 && deadline <= now) {
                // Already past (an `EXAT` in the past): the write is at once an expiry.
                self.remove_key(index, &key);
            } else {
                let flags = current.map_or(0, |entry| entry.flags);
                self.store_meta(index, key, value, flags, deadline);
            }
        }
        Output::Set { written, old }
    }

    /// Redis `EXPIRE` and its family, `PERSIST`, and `GETEX` (with `get`).
    pub(super) fn expire(&mut self, index: u64, key: Bytes, expiry: Expiry, when: ExpireIf, get: bool) -> Output {
        let Some(entry) = self.data.map.get(&key) else {
            return if get { Output::Set { written: false, old: None } } else { Output::Integer(0) };
        };
        let old_value = get.then(|| Bytes::copy_from_slice(entry.value));
        let current = entry.expires;
        let now = self.data.coord.clock;
        let new = KvStore::deadline(now, expiry, current);
        // Redis: with no deadline, a key counts as infinitely late.
        let infinite = |deadline: u64| if deadline == 0 { u64::MAX } else { deadline };
        let allowed = match when {
            ExpireIf::Always => true,
            ExpireIf::NoDeadline => current == 0,
            ExpireIf::HasDeadline => current > 0,
            ExpireIf::Later => infinite(new) > infinite(current),
            ExpireIf::Earlier => infinite(new) < infinite(current),
            ExpireIf::EarlierDeadline => current > 0 && infinite(new) < current,
        };
        let changed = allowed && new != current;
        if changed {
            if expiry == Expiry::After(0) || (new > 0 && new <= now) {
                self.remove_key(index, &key);
            } else {
                // The value and revisions stay: only the deadline changes (Redis does not
                // count an EXPIRE as a write of the value; neither does Consul's index).
                let meta = Meta { expires: new, ..entry.meta() };
                let value = entry.value.to_vec();
                self.index_deadline(&key, current, new);
                self.data.map.insert(&key, &value, meta);
            }
        }
        match (get, expiry) {
            (true, _) => Output::Set { written: changed, old: old_value },
            // PERSIST answers 1 only when it removed a deadline.
            (false, Expiry::Clear) => Output::Integer(i64::from(changed)),
            (false, _) => Output::Integer(i64::from(allowed)),
        }
    }

    /// Creates a lease.
    pub(super) fn grant(&mut self, index: u64, spec: LeaseSpec) -> Output {
        let coord = &mut self.data.coord;
        if coord.leases.contains_key(&spec.id) {
            return Output::Refused(format!("ERR session {} already exists", spec.id));
        }
        if coord.leases.len() >= MAX_LEASES {
            return Output::Refused(format!(
                "ERR too many sessions: the limit is {MAX_LEASES}; destroy unused sessions first"
            ));
        }
        let deadline = if spec.ttl_ms > 0 { coord.clock.saturating_add(spec.ttl_ms) } else { 0 };
        if deadline > 0 {
            coord.lease_deadlines.insert((deadline, spec.id.clone()));
        }
        let lease = Lease { spec, deadline, create_index: index, modify_index: index, keys: BTreeSet::new() };
        coord.leases.insert(lease.spec.id.clone(), lease.clone());
        Output::Lease(Box::new(lease))
    }

    /// Renews a lease: its deadline is its TTL from now.
    pub(super) fn renew(&mut self, index: u64, id: &str) -> Output {
        let coord = &mut self.data.coord;
        let clock = coord.clock;
        let Some(lease) = coord.leases.get_mut(id) else { return no_such_lease(id) };
        if lease.deadline > 0 {
            coord.lease_deadlines.remove(&(lease.deadline, id.to_string()));
            lease.deadline = clock.saturating_add(lease.spec.ttl_ms);
            coord.lease_deadlines.insert((lease.deadline, id.to_string()));
        }
        lease.modify_index = index;
        Output::Lease(Box::new(lease.clone()))
    }

    /// Ends a lease (destroyed, or past its deadline): its locks are released with the lock
    /// delay, or deleted with [`Behavior::Delete`]; keys put with it are deleted.
    pub(super) fn end_lease(&mut self, index: u64, id: &str) -> bool {
        let Some(lease) = self.data.coord.leases.remove(id) else { return false };
        if lease.deadline > 0 {
            self.data.coord.lease_deadlines.remove(&(lease.deadline, id.to_string()));
        }
        let clock = self.data.coord.clock;
        for key in lease.keys {
            let Some(lock) = self.data.coord.locks.get(&key).cloned() else { continue };
            let fence = lock.holder.as_ref().map_or(0, |holder| holder.fence);
            if lease.spec.behavior == Behavior::Delete || fence == 0 {
                self.remove_key(index, &key);
                continue;
            }
            self.data.coord.fences.remove(&fence);
            let delay_until = clock.saturating_add(lease.spec.lock_delay_ms);
            self.data.coord.locks.make_mut().insert(key.clone(), KeyLock { holder: None, delay_until, ..lock });
            // As in Consul, the release is a write of the key (its modify index moves), so
            // blocking queries on it wake and see the `Session` gone.
            if let Some(entry) = self.data.map.get(&key) {
                let (value, flags, expires) = (entry.value.to_vec(), entry.flags, entry.expires);
                self.store_meta(index, key, &value, flags, expires);
            }
        }
        true
    }

    /// Consul `?acquire`: writes the value and takes the key's lock for `session`, if no other
    /// session holds it and its lock delay has passed. A new holder gets a fencing token (this
    /// entry's index) and the lock index goes up; the holder acquiring again keeps both.
    pub(super) fn acquire(&mut self, index: u64, key: Bytes, value: &[u8], flags: u64, session: String) -> Output {
        if !self.data.coord.leases.contains_key(&session) {
            return no_such_lease(&session);
        }
        let lock = self.data.coord.locks.get(&key).cloned().unwrap_or_default();
        let (lock, fence) = match &lock.holder {
            Some(holder) if holder.lease == session && holder.fence > 0 => {
                let fence = holder.fence;
                (lock, fence)
            }
            Some(_) => return Output::Acquired { ok: false, fence: 0 },
            None if lock.delay_until > self.data.coord.clock => return Output::Acquired { ok: false, fence: 0 },
            None => {
                let holder = Holder { lease: session.clone(), fence: index };
                (KeyLock { lock_index: lock.lock_index + 1, holder: Some(holder), delay_until: 0 }, index)
            }
        };
        self.store_meta(index, key.clone(), value, flags, 0);
        self.data.coord.fences.insert(fence, key.clone());
        if let Some(lease) = self.data.coord.leases.get_mut(&session) {
            lease.keys.insert(key.clone());
        }
        self.data.coord.locks.make_mut().insert(key, lock);
        Output::Acquired { ok: true, fence }
    }

    /// Consul `?release`: writes the value and lets the key's lock go, if `session` holds it.
    pub(super) fn release(&mut self, index: u64, key: Bytes, value: &[u8], flags: u64, session: &str) -> Output {
        if !self.data.coord.leases.contains_key(session) {
            return no_such_lease(session);
        }
        let Some(lock) = self.data.coord.locks.get(&key).cloned() else {
            return Output::Done { ok: false, deleted: 0 };
        };
        if lock.holder.as_ref().is_none_or(|holder| holder.lease != session) {
            return Output::Done { ok: false, deleted: 0 };
        }
        self.untie(&key, &lock);
        self.data.coord.locks.make_mut().insert(key.clone(), KeyLock { holder: None, ..lock });
        self.store_meta(index, key, value, flags, 0);
        Output::Done { ok: true, deleted: 0 }
    }

    /// A put tied to a lease: deleted when the lease ends. Refused while another lease holds
    /// the key.
    pub(super) fn put_leased(&mut self, index: u64, key: Bytes, value: &[u8], flags: u64, lease: String) -> Output {
        if !self.data.coord.leases.contains_key(&lease) {
            return no_such_lease(&lease);
        }
        let lock = self.data.coord.locks.get(&key).cloned().unwrap_or_default();
        match &lock.holder {
            Some(holder) if holder.lease != lease => return Output::Done { ok: false, deleted: 0 },
            Some(_) => {}
            None => {
                let holder = Some(Holder { lease: lease.clone(), fence: 0 });
                self.data.coord.locks.make_mut().insert(key.clone(), KeyLock { holder, ..lock });
                if let Some(lease) = self.data.coord.leases.get_mut(&lease) {
                    lease.keys.insert(key.clone());
                }
            }
        }
        self.store_meta(index, key, value, flags, 0);
        Output::Done { ok: true, deleted: 0 }
    }

    /// Whether `token` is the fencing token of a lock held now.
    pub(super) fn fence_holds(&self, token: u64) -> bool {
        self.data.coord.fences.contains_key(&token)
    }

    /// The refusal of a write fenced by `token` that no longer holds its lock.
    pub(super) fn stale_fence(&self, token: u64) -> Output {
        Output::Refused(format!(
            "{STALE_FENCE}: token {token} does not hold a lock now (its lock was released, or its session ended, \
             and it may have a newer holder); nothing was written"
        ))
    }

    /// The keys under `prefix` in the map, for deletions (expired keys included: apply sees
    /// the replicated state, in which nothing due is left).
    pub(super) fn keys_under(&self, prefix: &[u8]) -> Vec<Bytes> {
        map_range(&self.data.map, prefix).map(|entry| Bytes::copy_from_slice(entry.key)).collect()
    }
}

fn no_such_lease(id: &str) -> Output {
    Output::Refused(format!("{NO_SUCH_LEASE} {id:?}: it does not exist, or it ended"))
}

#[cfg(test)]
mod tests {
    use skiff::{Index, StateMachine};

    use super::*;
    use crate::state::{Command, When};

    fn apply(store: &mut KvStore, index: u64, op: Op) -> Output {
        store.apply(Index(index), Command { request: None, op })
    }

    fn key(name: &str) -> Bytes {
        Bytes::copy_from_slice(name.as_bytes())
    }

    fn set_ex(name: &str, ms: u64) -> Op {
        Op::SetWith { key: key(name), value: key("v"), when: When::Always, get: false, expiry: Expiry::After(ms) }
    }

    fn expire(name: &str, expiry: Expiry, when: ExpireIf) -> Op {
        Op::Expire { key: key(name), expiry, when, get: false }
    }

    fn session(id: &str, ttl_ms: u64, behavior: Behavior) -> Op {
        Op::LeaseGrant(LeaseSpec {
            id: id.into(),
            name: "test".into(),
            node: "n1".into(),
            ttl_ms,
            lock_delay_ms: 500,
            behavior,
        })
    }

    fn acquire(name: &str, session: &str) -> Op {
        Op::Acquire { key: key(name), value: key("held"), flags: 0, session: session.into() }
    }

    fn put(name: &str) -> Op {
        Op::Put { key: key(name), value: key("x"), flags: 0, cas: None }
    }

    #[test]
    fn a_key_lives_until_its_deadline_on_the_cluster_clock_and_is_deleted_by_the_entry_that_passes_it() {
        let mut store = KvStore::default();
        assert_eq!(apply(&mut store, 1, set_ex("k", 1000).at(100)), Output::Set { written: true, old: None });
        assert_eq!(store.get(b"k").map(|entry| entry.expires), Some(1100));
        assert_eq!(store.keys_with_deadline(), 1);
        assert_eq!(apply(&mut store, 2, Op::Tick { now_ms: 1099 }), Output::Integer(0));
        assert!(store.get(b"k").is_some(), "1 ms before its deadline");
        assert_eq!(apply(&mut store, 3, Op::Tick { now_ms: 1100 }), Output::Integer(1), "one key expired");
        assert_eq!(store.keys_with_deadline(), 0);
        assert!(store.get(b"k").is_none());
        assert_eq!(store.watch_index(b"k", false), 3, "the expiry is a deletion at its entry's index");
        // The clock never goes back: a late stamp neither rewinds it nor revives anything.
        apply(&mut store, 4, set_ex("late", 50).at(10));
        assert_eq!(store.clock_ms(), 1100);
        assert_eq!(store.get(b"late").map(|entry| entry.expires), Some(1150));
        // A deadline already passed (an EXAT in the past) writes nothing that lives.
        apply(&mut store, 5, set_ex("gone", 0).at(1200));
        assert!(store.get(b"gone").is_none() && store.get(b"late").is_none());
        store.data.coord.check(&store.data.map);
    }

    #[test]
    fn writes_keep_or_clear_the_deadline_as_redis_does() {
        let mut store = KvStore::default();
        apply(&mut store, 1, set_ex("n", 1000));
        apply(&mut store, 2, Op::IncrBy { key: key("n"), delta: 0 }.at(0));
        assert_eq!(store.get(b"n").map(|entry| entry.expires), Some(1000), "INCR keeps the TTL");
        apply(&mut store, 3, Op::Append { key: key("n"), value: key("1"), max_len: 100 });
        assert_eq!(store.get(b"n").map(|entry| entry.expires), Some(1000), "APPEND keeps the TTL");
        let keep = Op::SetWith { key: key("n"), value: key("7"), when: When::Always, get: false, expiry: Expiry::Keep };
        apply(&mut store, 4, keep);
        assert_eq!(store.get(b"n").map(|entry| entry.expires), Some(1000), "SET KEEPTTL");
        apply(&mut store, 5, Op::Set { key: key("n"), value: key("8"), when: When::Always, get: false });
        assert_eq!(store.get(b"n").map(|entry| entry.expires), Some(0), "a plain SET clears it");
        apply(&mut store, 6, set_ex("p", 1000));
        apply(&mut store, 7, put("p"));
        assert_eq!(store.get(b"p").map(|entry| entry.expires), Some(0), "a Consul PUT clears it");
        store.data.coord.check(&store.data.map);
    }

    #[test]
    fn expire_follows_nx_xx_gt_lt_and_persist_answers_whether_it_removed_a_deadline() {
        let mut store = KvStore::default();
        apply(&mut store, 1, put("k"));
        let one = Output::Integer(1);
        let zero = Output::Integer(0);
        assert_eq!(apply(&mut store, 2, expire("missing", Expiry::After(10), ExpireIf::Always)), zero);
        assert_eq!(apply(&mut store, 3, expire("k", Expiry::After(100), ExpireIf::HasDeadline)), zero, "XX");
        assert_eq!(apply(&mut store, 4, expire("k", Expiry::After(100), ExpireIf::Later)), zero, "GT on no TTL");
        assert_eq!(apply(&mut store, 5, expire("k", Expiry::After(100), ExpireIf::NoDeadline)), one, "NX");
        assert_eq!(apply(&mut store, 6, expire("k", Expiry::After(50), ExpireIf::Later)), zero, "GT, earlier");
        assert_eq!(apply(&mut store, 7, expire("k", Expiry::After(200), ExpireIf::Later)), one, "GT, later");
        assert_eq!(apply(&mut store, 8, expire("k", Expiry::After(150), ExpireIf::Earlier)), one, "LT");
        assert_eq!(store.get(b"k").map(|entry| entry.expires), Some(150));
        assert_eq!(store.get(b"k").map(|entry| entry.modify_index), Some(1), "a deadline is not a write");
        assert_eq!(apply(&mut store, 9, expire("k", Expiry::Clear, ExpireIf::Always)), one, "PERSIST");
        assert_eq!(apply(&mut store, 10, expire("k", Expiry::Clear, ExpireIf::Always)), zero, "nothing to persist");
        let getex = Op::Expire { key: key("k"), expiry: Expiry::After(5), when: ExpireIf::Always, get: true };
        assert_eq!(apply(&mut store, 11, getex), Output::Set { written: true, old: Some(key("x")) });
        assert_eq!(apply(&mut store, 12, expire("k", Expiry::After(0), ExpireIf::Always)), one, "EXPIRE 0 deletes");
        assert!(store.get(b"k").is_none());
        // XX and LT together: only a deadline there is may come earlier.
        apply(&mut store, 13, put("k"));
        assert_eq!(apply(&mut store, 14, expire("k", Expiry::After(10), ExpireIf::EarlierDeadline)), zero, "XX LT");
        assert_eq!(store.get(b"k").map(|entry| entry.expires), Some(0), "no deadline: left alone");
        apply(&mut store, 15, expire("k", Expiry::After(150), ExpireIf::Always));
        assert_eq!(apply(&mut store, 16, expire("k", Expiry::After(160), ExpireIf::EarlierDeadline)), zero, "later");
        assert_eq!(apply(&mut store, 17, expire("k", Expiry::After(140), ExpireIf::EarlierDeadline)), one, "earlier");
        assert_eq!(store.get(b"k").map(|entry| entry.expires), Some(140));
        store.data.coord.check(&store.data.map);
    }

    #[test]
    fn a_lock_is_exclusive_fenced_released_when_its_session_ends_and_delayed_before_the_next_holder() {
        let mut store = KvStore::default();
        assert!(matches!(apply(&mut store, 1, session("s1", 1000, Behavior::Release).at(0)), Output::Lease(_)));
        assert!(matches!(apply(&mut store, 2, session("s2", 0, Behavior::Release)), Output::Lease(_)));
        assert_eq!(apply(&mut store, 3, acquire("lock", "s1")), Output::Acquired { ok: true, fence: 3 });
        assert_eq!(apply(&mut store, 4, acquire("lock", "s2")), Output::Acquired { ok: false, fence: 0 });
        assert_eq!(apply(&mut store, 5, acquire("lock", "s1")), Output::Acquired { ok: true, fence: 3 }, "again");
        let lock = store.lock(b"lock").cloned().expect("locked");
        assert_eq!((lock.lock_index, lock.holder.map(|h| h.lease)), (1, Some("s1".to_string())));
        // The holder writes with its token.
        let fenced = |token| Op::Fenced { token, op: Box::new(put("data")) };
        assert_eq!(apply(&mut store, 6, fenced(3)), Output::Done { ok: true, deleted: 0 });
        // A renewal at 900 moves the deadline to 1900: still held at 1500.
        assert!(matches!(apply(&mut store, 7, Op::LeaseRenew { id: "s1".into() }.at(900)), Output::Lease(_)));
        apply(&mut store, 8, Op::Tick { now_ms: 1500 });
        assert!(store.lock(b"lock").and_then(|lock| lock.holder.as_ref()).is_some());
        // At 1900 the session ends: the lock is released (the key stays, its index moves).
        assert_eq!(apply(&mut store, 9, Op::Tick { now_ms: 1900 }), Output::Integer(1));
        assert!(store.lease("s1").is_none());
        assert!(store.lock(b"lock").is_some_and(|lock| lock.holder.is_none()));
        assert_eq!(store.get(b"lock").map(|entry| (entry.value, entry.modify_index)), Some((&b"held"[..], 9)));
        // The stale holder's token is refused; nothing is written.
        let Output::Refused(message) = apply(&mut store, 10, fenced(3)) else { panic!("a stale token applied") };
        assert!(message.starts_with(STALE_FENCE), "{message}");
        assert_eq!(store.get(b"data").map(|entry| entry.modify_index), Some(6));
        // The lock delay (500 ms) holds the lock back until 2400.
        assert_eq!(apply(&mut store, 11, acquire("lock", "s2").at(2399)), Output::Acquired { ok: false, fence: 0 });
        assert_eq!(apply(&mut store, 12, acquire("lock", "s2").at(2400)), Output::Acquired { ok: true, fence: 12 });
        assert_eq!(store.lock(b"lock").map(|lock| lock.lock_index), Some(2));
        assert_eq!(apply(&mut store, 13, fenced(12)), Output::Done { ok: true, deleted: 0 });
        // An unknown session is refused by name.
        let Output::Refused(message) = apply(&mut store, 14, acquire("other", "nope")) else { panic!("acquired") };
        assert!(message.starts_with(NO_SUCH_LEASE), "{message}");
        store.data.coord.check(&store.data.map);
    }

    #[test]
    fn release_and_delete_behaviours_and_keys_put_with_a_lease() {
        let mut store = KvStore::default();
        apply(&mut store, 1, session("rel", 0, Behavior::Release));
        apply(&mut store, 2, session("del", 0, Behavior::Delete));
        apply(&mut store, 3, acquire("a", "rel"));
        apply(&mut store, 4, acquire("b", "del"));
        let leased = Op::PutLeased { key: key("c"), value: key("v"), flags: 0, lease: "rel".into() };
        assert_eq!(apply(&mut store, 5, leased), Output::Done { ok: true, deleted: 0 });
        let release =
            |session: &str| Op::Release { key: key("a"), value: key("free"), flags: 0, session: session.into() };
        assert_eq!(apply(&mut store, 6, release("del")), Output::Done { ok: false, deleted: 0 }, "not the holder");
        assert_eq!(apply(&mut store, 7, release("rel")), Output::Done { ok: true, deleted: 0 });
        assert!(store.lock(b"a").is_some_and(|lock| lock.holder.is_none() && lock.lock_index == 1));
        assert_eq!(store.get(b"a").map(|entry| entry.value), Some(&b"free"[..]));
        // An explicit release sets no lock delay: another session may take it at once.
        assert_eq!(apply(&mut store, 8, acquire("a", "del")), Output::Acquired { ok: true, fence: 8 });
        assert_eq!(apply(&mut store, 9, Op::LeaseRevoke { id: "del".into() }), Output::Done { ok: true, deleted: 0 });
        assert!(store.get(b"a").is_none() && store.get(b"b").is_none(), "Behavior delete deletes what it held");
        apply(&mut store, 10, Op::LeaseRevoke { id: "rel".into() });
        assert!(store.get(b"c").is_none(), "a key put with a lease goes with it");
        assert!(store.leases().next().is_none());
        // Deleting a held key releases it from its session.
        apply(&mut store, 11, session("s", 0, Behavior::Release));
        apply(&mut store, 12, acquire("d", "s"));
        apply(&mut store, 13, Op::Delete { key: key("d"), cas: None });
        assert!(store.lease("s").is_some_and(|lease| lease.keys.is_empty()) && store.lock(b"d").is_none());
        store.data.coord.check(&store.data.map);
    }

    fn busy_store() -> KvStore {
        let mut store = KvStore::default();
        apply(&mut store, 1, session("s1", 5000, Behavior::Release).at(10));
        apply(&mut store, 2, acquire("lock", "s1"));
        apply(&mut store, 3, set_ex("ttl", 3000));
        apply(&mut store, 4, put("plain"));
        let leased = Op::PutLeased { key: key("leased"), value: key("v"), flags: 0, lease: "s1".into() };
        apply(&mut store, 5, leased);
        store
    }

    #[test]
    fn snapshots_carry_the_clock_leases_locks_and_deadlines_and_a_restored_store_expires_alike() {
        let mut store = busy_store();
        let mut bytes = Vec::new();
        store.snapshot(&mut bytes).expect("snapshot");
        let mut copy = KvStore::default();
        copy.restore(&mut &bytes[..]).expect("restore");
        assert_eq!(copy.data, store.data);
        copy.data.coord.check(&copy.data.map);
        for (index, op) in [(6, Op::Tick { now_ms: 3010 }), (7, Op::Tick { now_ms: 5010 })] {
            assert_eq!(apply(&mut copy, index, op.clone()), apply(&mut store, index, op));
        }
        assert!(copy.get(b"ttl").is_none() && copy.get(b"leased").is_none() && copy.lease("s1").is_none());
        assert_eq!(copy.data, store.data);
    }

    #[test]
    fn a_version_2_snapshot_still_restores() {
        // Written the way version 2 wrote it: no coordination part, five-varint records.
        let mut old = KvStore::default();
        apply(&mut old, 1, put("a"));
        apply(&mut old, 2, put("b"));
        let head = postcard::to_stdvec(&old.data).expect("encode");
        let mut bytes = vec![2];
        crate::keymap::put_varint(&mut bytes, head.len() as u64);
        bytes.extend_from_slice(&head);
        crate::keymap::put_varint(&mut bytes, 2);
        for (name, index) in [("a", 1), ("b", 2)] {
            for number in [1, 1, index, 0, 0] {
                crate::keymap::put_varint(&mut bytes, number);
            }
            bytes.extend_from_slice(name.as_bytes());
            bytes.push(b'x');
        }
        let mut store = KvStore::default();
        store.restore(&mut &bytes[..]).expect("a version 2 snapshot");
        assert_eq!(store.data, old.data);
    }

    #[test]
    fn a_snapshot_whose_locks_disagree_with_its_sessions_is_refused() {
        let mut store = busy_store();
        // The holder's session forgets its key: the snapshot must not load.
        if let Some(lease) = store.data.coord.leases.get_mut("s1") {
            lease.keys.remove(&key("lock"));
        }
        let mut bytes = Vec::new();
        store.snapshot(&mut bytes).expect("snapshot");
        let error = KvStore::default().restore(&mut &bytes[..]).expect_err("inconsistent");
        assert!(error.to_string().contains("is not a session that holds it"), "{error}");
    }

    #[test]
    fn reads_hide_a_key_past_its_deadline_on_this_nodes_clock_before_its_expiry_entry() {
        let mut store = KvStore::default();
        let published = store.subscribe();
        apply(&mut store, 1, set_ex("k", 30).at(published.now_ms()));
        assert!(store.get(b"k").is_some());
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert!(store.data.map.get(b"k").is_some(), "no expiry entry was applied");
        assert!(store.get(b"k").is_none(), "but reads no longer see it");
        assert!(store.view().range(b"").next().is_none());
        assert!(published.next_deadline().is_some_and(|deadline| deadline <= published.now_ms()), "it is due");
    }
}
