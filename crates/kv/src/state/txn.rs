//! Consul's transactions (`PUT /v1/txn`): key operations with checks, applied in order as one
//! log entry, all or nothing.
//!
//! The operations apply one after the other to the state as the earlier ones left it (as
//! Consul's do); the first that fails undoes the ones before it and the transaction answers
//! that operation's position and reason. The undo is cheap: the key map and the lock states
//! are copy on write, so the state before the transaction is kept by two reference counts,
//! and what depends on them (the deadline index, the sessions' keys, the fencing tokens, the
//! deletion marks) is put back for the keys the transaction touched.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Locks;
use super::{KvStore, Output, map_range};
use crate::keymap::KeyMap;

/// What one transaction operation does (Consul's `Verb`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verb {
    /// Write the value.
    Set,
    /// Write the value if the key's modify index is `index` (0: only if absent).
    Cas,
    /// Write the value and take the key's lock for `session` (`?acquire`).
    Lock,
    /// Write the value and let the key's lock go (`?release`).
    Unlock,
    /// Read the key; fails if it is absent.
    Get,
    /// Read every key under the prefix.
    GetTree,
    /// Fails unless the key's modify index is `index`.
    CheckIndex,
    /// Fails unless `session` holds the key.
    CheckSession,
    /// Fails if the key exists.
    CheckNotExists,
    Delete,
    /// Delete every key under the prefix.
    DeleteTree,
    /// Delete the key if its modify index is `index`.
    DeleteCas,
}

/// One operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOp {
    pub verb: Verb,
    pub key: Bytes,
    pub value: Bytes,
    pub flags: u64,
    pub index: u64,
    pub session: String,
}

/// A key as a transaction answers it (Consul's `KV` result): with its value for reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnEntry {
    pub key: Bytes,
    pub value: Option<Bytes>,
    pub create_index: u64,
    pub modify_index: u64,
    pub flags: u64,
    pub lock_index: u64,
    pub session: Option<String>,
}

/// Why a transaction did nothing: the position of the operation that failed, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnError {
    pub op_index: usize,
    pub what: String,
}

/// The state a transaction may change, as it was before it: what an undo puts back.
struct Before {
    map: KeyMap,
    locks: Locks,
    /// The keys touched, with their deletion marks before the transaction.
    touched: BTreeMap<Bytes, Option<u64>>,
    /// The change feed's changes recorded for this entry before the transaction.
    feed_mark: usize,
}

impl KvStore {
    /// Applies a transaction at `index`: every operation, or none.
    pub(super) fn txn(&mut self, index: u64, ops: Vec<TxnOp>) -> Output {
        let feed_mark = self.published.as_ref().map_or(0, |published| published.feed().staged());
        let mut before = Before {
            map: self.data.map.clone(),
            locks: self.data.coord.locks.clone(),
            touched: BTreeMap::new(),
            feed_mark,
        };
        let mut results = Vec::new();
        for (op_index, op) in ops.into_iter().enumerate() {
            if let Err(what) = self.txn_op(index, op, &mut before, &mut results) {
                self.undo(before);
                return Output::Txn(Err(TxnError { op_index, what }));
            }
        }
        Output::Txn(Ok(results))
    }

    /// Notes `key`'s deletion mark before the transaction first changes it.
    fn touch(&self, before: &mut Before, key: &Bytes) {
        if !before.touched.contains_key(key) {
            before.touched.insert(key.clone(), self.data.tombstones.get(key).copied());
        }
    }

    /// The key as a result, with its value when `with_value`.
    fn txn_entry(&self, key: &[u8], with_value: bool) -> Option<TxnEntry> {
        let entry = self.data.map.get(key)?;
        let lock = self.data.coord.locks.get(key);
        Some(TxnEntry {
            key: Bytes::copy_from_slice(key),
            value: with_value.then(|| Bytes::copy_from_slice(entry.value)),
            create_index: entry.create_index,
            modify_index: entry.modify_index,
            flags: entry.flags,
            lock_index: lock.map_or(0, |lock| lock.lock_index),
            session: lock.and_then(|lock| lock.holder.as_ref()).map(|holder| holder.lease.clone()),
        })
    }

    fn modify_index_of(&self, key: &[u8]) -> u64 {
        self.data.map.get(key).map_or(0, |entry| entry.modify_index)
    }

    fn txn_op(
        &mut self,
        index: u64,
        op: TxnOp,
        before: &mut Before,
        results: &mut Vec<TxnEntry>,
    ) -> Result<(), String> {
        let TxnOp { verb, key, value, flags, index: expected, session } = op;
        let shown = super::show(&key);
        let stale = |current: u64| format!("the modify index of {shown} is {current}, not {expected}");
        match verb {
            Verb::Set | Verb::Cas => {
                if verb == Verb::Cas && self.modify_index_of(&key) != expected {
                    return Err(stale(self.modify_index_of(&key)));
                }
                self.touch(before, &key);
                self.store_meta(index, key.clone(), &value, flags, 0);
                results.extend(self.txn_entry(&key, false));
            }
            Verb::Lock => {
                self.touch(before, &key);
                match self.acquire(index, key.clone(), &value, flags, session) {
                    Output::Acquired { ok: true, .. } => results.extend(self.txn_entry(&key, false)),
                    Output::Refused(message) => return Err(message),
                    _ => return Err(format!("{shown} is locked by another session, or in its lock delay")),
                }
            }
            Verb::Unlock => {
                self.touch(before, &key);
                match self.release(index, key.clone(), &value, flags, &session) {
                    Output::Done { ok: true, .. } => results.extend(self.txn_entry(&key, false)),
                    Output::Refused(message) => return Err(message),
                    _ => return Err(format!("{shown} is not locked by session {session}")),
                }
            }
            Verb::Get => results.push(self.txn_entry(&key, true).ok_or_else(|| format!("{shown} does not exist"))?),
            Verb::GetTree => {
                let keys: Vec<Bytes> =
                    map_range(&self.data.map, &key).map(|entry| Bytes::copy_from_slice(entry.key)).collect();
                results.extend(keys.iter().filter_map(|key| self.txn_entry(key, true)));
            }
            Verb::CheckIndex => {
                let found = self.txn_entry(&key, false).ok_or_else(|| format!("{shown} does not exist"))?;
                if found.modify_index != expected {
                    return Err(stale(found.modify_index));
                }
                results.push(found);
            }
            Verb::CheckSession => {
                let found = self.txn_entry(&key, false).ok_or_else(|| format!("{shown} does not exist"))?;
                if found.session.as_deref() != Some(session.as_str()) {
                    return Err(format!("{shown} is not locked by session {session}"));
                }
                results.push(found);
            }
            Verb::CheckNotExists => {
                if self.data.map.get(&key).is_some() {
                    return Err(format!("{shown} exists"));
                }
            }
            Verb::Delete | Verb::DeleteCas => {
                if verb == Verb::DeleteCas && self.modify_index_of(&key) != expected {
                    return Err(stale(self.modify_index_of(&key)));
                }
                self.touch(before, &key);
                self.remove_key(index, &key);
            }
            Verb::DeleteTree => {
                for key in self.keys_under(&key) {
                    self.touch(before, &key);
                    self.remove_key(index, &key);
                }
            }
        }
        Ok(())
    }

    /// Puts back the state before a failed transaction: the map and the lock states whole
    /// (two reference counts), and for each touched key what depends on them.
    fn undo(&mut self, before: Before) {
        let Before { map, locks, touched, feed_mark } = before;
        if let Some(published) = &self.published {
            published.feed().discard_from(feed_mark);
        }
        for (key, mark) in touched {
            let (now, then) = (self.data.map.get(&key).map(|e| e.expires), map.get(&key).map(|e| e.expires));
            self.index_deadline(&key, now.unwrap_or(0), then.unwrap_or(0));
            let (now, then) = (self.data.coord.locks.get(&key).cloned(), locks.get(&key).cloned());
            if now != then {
                if let Some(lock) = &now {
                    self.untie(&key, lock);
                }
                if let Some(lock) = &then {
                    self.tie(&key, lock);
                }
            }
            let data = &mut self.data;
            if let Some(current) = data.tombstones.remove(&key) {
                data.tombstone_order.remove(&(current, key.clone()));
            }
            if let Some(mark) = mark {
                data.tombstones.insert(key.clone(), mark);
                data.tombstone_order.insert((mark, key.clone()));
            }
            if let Some(published) = &self.published {
                published.changed(&key);
            }
        }
        self.data.map = map;
        self.data.coord.locks = locks;
    }
}

#[cfg(test)]
mod tests {
    use skiff::{Index, StateMachine};

    use super::*;
    use crate::state::{Behavior, Command, Expiry, LeaseSpec, Op, When};

    fn apply(store: &mut KvStore, index: u64, op: Op) -> Output {
        store.apply(Index(index), Command { request: None, op })
    }

    fn op(verb: Verb, key: &str) -> TxnOp {
        TxnOp {
            verb,
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            flags: 0,
            index: 0,
            session: String::new(),
        }
    }

    fn with(mut op: TxnOp, index: u64, session: &str) -> TxnOp {
        op.index = index;
        op.session = session.into();
        op
    }

    #[test]
    fn a_transaction_applies_in_order_and_answers_writes_and_reads() {
        let mut store = KvStore::default();
        apply(
            &mut store,
            1,
            Op::Put { key: Bytes::from_static(b"t/a"), value: Bytes::from_static(b"1"), flags: 3, cas: None },
        );
        let ops = vec![
            with(op(Verb::Cas, "t/a"), 1, ""),
            op(Verb::Set, "t/b"),
            op(Verb::CheckNotExists, "t/c"),
            with(op(Verb::CheckIndex, "t/b"), 2, ""),
            op(Verb::GetTree, "t/"),
            op(Verb::Delete, "t/a"),
        ];
        let Output::Txn(Ok(results)) = apply(&mut store, 2, Op::Txn(ops)) else { panic!("the transaction failed") };
        /// A result as the test compares it: key, value (reads only), modify index.
        type Seen<'a> = (&'a [u8], Option<&'a [u8]>, u64);
        let keys: Vec<Seen> =
            results.iter().map(|entry| (&entry.key[..], entry.value.as_deref(), entry.modify_index)).collect();
        assert_eq!(
            keys,
            [
                (&b"t/a"[..], None, 2),
                (b"t/b", None, 2),
                (b"t/b", None, 2),
                (b"t/a", Some(&b"v"[..]), 2),
                (b"t/b", Some(b"v"), 2),
            ]
        );
        assert!(store.get(b"t/a").is_none() && store.get(b"t/b").is_some());
    }

    #[test]
    fn a_failed_operation_undoes_every_one_before_it_deadlines_locks_and_marks_included() {
        let mut store = KvStore::default();
        let key = |name: &str| Bytes::copy_from_slice(name.as_bytes());
        apply(
            &mut store,
            1,
            Op::SetWith {
                key: key("ttl"),
                value: key("x"),
                when: When::Always,
                get: false,
                expiry: Expiry::After(5000),
            },
        );
        let spec = LeaseSpec {
            id: "s".into(),
            name: String::new(),
            node: "n1".into(),
            ttl_ms: 0,
            lock_delay_ms: 0,
            behavior: Behavior::Release,
        };
        apply(&mut store, 2, Op::LeaseGrant(spec));
        apply(&mut store, 3, Op::Acquire { key: key("lock"), value: key("held"), flags: 0, session: "s".into() });
        apply(&mut store, 4, Op::Put { key: key("gone"), value: key("x"), flags: 0, cas: None });
        apply(&mut store, 5, Op::Delete { key: key("gone"), cas: None });
        let mut bytes = Vec::new();
        store.snapshot(&mut bytes).expect("snapshot");
        let ops = vec![
            op(Verb::Delete, "ttl"),
            with(op(Verb::Unlock, "lock"), 0, "s"),
            op(Verb::Set, "gone"),
            op(Verb::DeleteTree, ""),
            op(Verb::Set, "new"),
            with(op(Verb::Cas, "new"), 999, ""),
        ];
        let Output::Txn(Err(error)) = apply(&mut store, 6, Op::Txn(ops)) else { panic!("the cas must fail") };
        assert_eq!(error.op_index, 5);
        assert!(error.what.contains("modify index of \"new\" is 6, not 999"), "{}", error.what);
        // Exactly the state before, but for the applied index.
        let mut before = KvStore::default();
        before.restore(&mut &bytes[..]).expect("restore");
        before.data.index = store.data.index;
        assert_eq!(before.data, store.data);
        assert_eq!(store.deletion_index(b"gone", false), 5, "the deletion mark is the one from before");
        // A failing lock and a failing check undo as well.
        let ops = vec![op(Verb::Set, "x"), with(op(Verb::Lock, "lock"), 0, "nobody")];
        let Output::Txn(Err(error)) = apply(&mut store, 7, Op::Txn(ops)) else { panic!("an unknown session") };
        assert_eq!(error.op_index, 1);
        assert!(store.get(b"x").is_none());
        let ops = vec![op(Verb::Delete, "lock"), with(op(Verb::CheckSession, "lock"), 0, "s")];
        let Output::Txn(Err(error)) = apply(&mut store, 8, Op::Txn(ops)) else { panic!("the key is gone") };
        assert!(error.what.contains("does not exist"), "{}", error.what);
        assert!(store.lock(b"lock").and_then(|lock| lock.holder.as_ref()).is_some(), "still held");
    }
}
