//! The key-value state machine's write path on a large keyspace: `KvStore::apply` of one
//! overwrite among 200,000 keys of 100-byte values, with no reader view alive (the common
//! case), and with a view taken before every write (the worst case of copy-on-write: each
//! write after a view copies the tree's slots and the block it changes).
//!
//! ```sh
//! cargo bench -p skiff-kv --bench state
//! ```

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use skiff::{Index, StateMachine};
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

criterion_group!(benches, writes);
criterion_main!(benches);
