//! The key-value state machine's write path on a large keyspace: `KvStore::apply` of one
//! overwrite among 200,000 keys of 100-byte values, with no reader view alive (the common
//! case), and with a view taken before every write (the worst case of copy-on-write: each
//! write after a view copies the tree's slots and the block it changes). And the write
//! `bench/compare.sh` measures: a Redis `SET` of a 256-byte value over one of 10,000 keys,
//! as a server proposes it (within the keyspace quota, at the cluster clock) to a store
//! that records its change feed, as a server's does; and what the leader adds to that
//! write when a follower forwarded it (`skiff::run_forwarded_hook`, as the driver runs it:
//! decode, stamp with its clock, encode again).
//!
//! ```sh
//! cargo bench -p skiff-kv --bench state
//! ```

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use skiff::{Index, StateMachine};
use skiff_kv::state::When;
use skiff_kv::{Command, KvStore, Op};

const KEYS: u64 = 200_000;

fn key(number: u64) -> Bytes {
    Bytes::from(format!("key-{number:07}"))
}

fn put(number: u64) -> Command {
    Command {
        request: None,
        op: Op::Put { key: key(number), value: Bytes::from(vec![b'v'; 100]), flags: 0, cas: None },
    }
}

/// A store holding `KEYS` keys, at index `KEYS`.
fn filled() -> KvStore {
    let mut store = KvStore::default();
    for number in 0..KEYS {
        store.apply(Index(number + 1), put(number));
    }
    store
}

/// The keys written, spread over the keyspace (a multiplicative step, coprime with `KEYS`).
fn next_key(step: u64) -> u64 {
    step.wrapping_mul(7_919) % KEYS
}

fn writes(c: &mut Criterion) {
    let mut store = filled();
    let mut index = KEYS;
    c.bench_function("apply an overwrite among 200k keys", |b| {
        b.iter(|| {
            index += 1;
            black_box(store.apply(Index(index), put(next_key(index))));
        })
    });
    views(c, &mut store, &mut index);
}

fn views(c: &mut Criterion, store: &mut KvStore, index: &mut u64) {
    c.bench_function("take a view of 200k keys", |b| b.iter(|| black_box(store.view())));
    c.bench_function("apply an overwrite among 200k keys, a view taken before each", |b| {
        b.iter(|| {
            let view = store.view();
            *index += 1;
            black_box(store.apply(Index(*index), put(next_key(*index))));
            drop(view);
        })
    });
}

/// `SET key value` as the Redis listener proposes it.
fn set(number: u64, value: &Bytes, now_ms: u64) -> Command {
    let op = Op::Set { key: key(number), value: value.clone(), when: When::Always, get: false };
    Command { request: None, op: op.within_quota(8 << 30).at(now_ms) }
}

fn overwrites(c: &mut Criterion) {
    const SET_KEYS: u64 = 10_000;
    let value = Bytes::from(vec![b'v'; 256]);
    let mut store = KvStore::default();
    let _published = store.subscribe();
    let mut index = 0;
    for number in 0..SET_KEYS {
        index += 1;
        store.apply(Index(index), set(number, &value, index));
    }
    c.bench_function("apply a SET overwriting a 256-byte value among 10k keys", |b| {
        b.iter(|| {
            index += 1;
            black_box(store.apply(Index(index), set(index.wrapping_mul(7_919) % SET_KEYS, &value, index)));
        })
    });
}

fn forwarded(c: &mut Criterion) {
    let value = Bytes::from(vec![b'v'; 256]);
    let mut store = KvStore::default();
    let _published = store.subscribe();
    let hook = store.forwarded_hook().expect("a subscribed store stamps forwarded writes");
    let encoded = Bytes::from(postcard::to_stdvec(&set(4_242, &value, 1)).expect("encodes"));
    // It decodes, so each iteration takes the whole path: decode, stamp, encode.
    let _: Command = postcard::from_bytes(&encoded).expect("decodes");
    c.bench_function("the leader's stamp on a forwarded SET of a 256-byte value", |b| {
        b.iter(|| black_box(skiff::run_forwarded_hook(&hook, black_box(&encoded))))
    });
}

criterion_group!(benches, writes, overwrites, forwarded);
criterion_main!(benches);
