//! The key-value snapshot decoder (`skiff_kv`'s `KvStore::restore`, with the key map's
//! record decoder in `keymap.rs` and `keymap/record.rs`): the bytes a node restores at
//! start or receives from its leader. No panic, whatever the bytes; a snapshot of a store
//! restores to the same store (its snapshot is byte for byte the same); and a store
//! restored from any bytes snapshots to bytes that restore to it again.
//!
//! Input: byte 0 picks the mode. Raw: the rest is the snapshot, or (one time in two) the
//! rest after the version byte. Built: writes (puts, deletes, Redis operations, with and
//! without request ids) from the input's choices are applied to a store, whose snapshot is
//! then perhaps changed (`cursor::mutate`).

use bytes::Bytes;
use skiff::{Index, StateMachine};
use skiff_kv::state::{Command, KvStore, Op, RequestId, Retention, When};

#[path = "cursor.rs"]
pub(crate) mod cursor;

use cursor::Cursor;

/// The snapshot layout version this build writes (`state.rs`).
const SNAPSHOT_VERSION: u8 = 2;

/// Runs one input (see the module documentation).
pub fn check(data: &[u8]) {
    let mut cursor = Cursor::new(data);
    let mode = cursor.byte();
    if mode & 1 == 0 {
        let mut snapshot = Vec::new();
        if mode & 2 == 0 {
            snapshot.push(SNAPSHOT_VERSION);
        }
        snapshot.extend_from_slice(cursor.rest());
        if let Some(store) = restore(&snapshot) {
            check_snapshot_again(&store);
        }
        return;
    }
    let store = built(&mut cursor);
    let mut snapshot = snapshot(&store);
    let changed = cursor::mutate(&mut cursor, &mut snapshot);
    match restore(&snapshot) {
        Some(restored) if !changed => {
            assert_eq!(self::snapshot(&restored), snapshot, "a store restored from its snapshot differs");
        }
        Some(restored) => check_snapshot_again(&restored),
        None => assert!(changed, "a store's snapshot does not restore"),
    }
}

/// A store with writes from `cursor` applied, at indexes 1, 2, ...
fn built(cursor: &mut Cursor) -> KvStore {
    let mut store = KvStore::new(Retention { max_requests: 4, max_request_age: 20, max_tombstones: 4 });
    for index in 1..=cursor.below(24) as u64 {
        let request = cursor
            .bool()
            .then(|| RequestId { key: format!("r{}", cursor.below(6)), fingerprint: cursor.below(3) as u64 });
        let op = op(cursor, 0);
        store.apply(Index(index), Command { request, op });
    }
    store
}

fn key(cursor: &mut Cursor) -> Bytes {
    // Few distinct keys, so writes meet; sometimes arbitrary bytes.
    if cursor.below(4) == 0 {
        Bytes::copy_from_slice(cursor.bytes())
    } else {
        Bytes::from(format!("k{}", cursor.below(8)))
    }
}

fn op(cursor: &mut Cursor, depth: u8) -> Op {
    let cas = |cursor: &mut Cursor| cursor.bool().then(|| cursor.below(24) as u64);
    match cursor.below(if depth == 0 { 9 } else { 8 }) {
        0 | 1 => Op::Put {
            key: key(cursor),
            value: Bytes::copy_from_slice(cursor.bytes()),
            flags: cursor.number(),
            cas: cas(cursor),
        },
        2 => Op::Delete { key: key(cursor), cas: cas(cursor) },
        3 => {
            let key = key(cursor);
            let cut = cursor.below(3).min(key.len());
            Op::DeletePrefix { prefix: key.slice(..cut) }
        }
        4 => {
            let when = [When::Always, When::Absent, When::Present][cursor.below(3)];
            Op::Set { key: key(cursor), value: Bytes::copy_from_slice(cursor.bytes()), when, get: cursor.bool() }
        }
        5 => Op::IncrBy { key: key(cursor), delta: cursor.number() as i64 },
        6 | 7 => Op::Append {
            key: key(cursor),
            value: Bytes::copy_from_slice(cursor.bytes()),
            max_len: cursor.below(600) as u64,
        },
        _ => Op::Batch((0..cursor.below(4)).map(|_| op(cursor, depth + 1)).collect()),
    }
}

fn snapshot(store: &KvStore) -> Vec<u8> {
    let mut bytes = Vec::new();
    store.snapshot(&mut bytes).expect("a store snapshots into memory");
    bytes
}

/// The store `bytes` restore to, if they do; its keys are all readable.
fn restore(bytes: &[u8]) -> Option<KvStore> {
    let mut store = KvStore::default();
    store.restore(&mut &bytes[..]).ok()?;
    let keys: Vec<Bytes> = store.after(None).map(|entry| Bytes::copy_from_slice(entry.key)).collect();
    assert_eq!(keys.len(), store.len(), "a restored store lists other than its length of keys");
    assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "a restored store lists its keys out of order");
    for key in &keys {
        assert!(store.get(key).is_some(), "a key listed by a restored store is not found");
    }
    Some(store)
}

/// `store`'s snapshot restores to a store with the same snapshot.
fn check_snapshot_again(store: &KvStore) {
    let bytes = snapshot(store);
    let again = restore(&bytes).expect("a restored store's snapshot restores");
    assert_eq!(snapshot(&again), bytes, "a restored store's snapshot changed when restored again");
}
