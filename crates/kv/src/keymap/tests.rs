use std::collections::BTreeMap;
use std::ops::Bound;

use proptest::prelude::*;

use super::*;

fn meta(create_index: u64, modify_index: u64, flags: u64) -> Meta {
    Meta { create_index, modify_index, flags, expires: 0 }
}

fn keys(map: &KeyMap) -> Vec<Vec<u8>> {
    map.iter().map(|entry| entry.key.to_vec()).collect()
}

#[test]
fn insert_get_replace_remove() {
    let mut map = KeyMap::default();
    assert!(map.get(b"a").is_none() && map.is_empty());
    map.insert(b"a", b"1", meta(1, 1, 0));
    map.insert(b"a", b"22", meta(1, 5, 9));
    let entry = map.get(b"a").expect("a");
    assert_eq!((entry.value, entry.create_index, entry.modify_index, entry.flags), (&b"22"[..], 1, 5, 9));
    assert_eq!(map.len(), 1);
    assert!(!map.remove(b"b"));
    assert!(map.remove(b"a"));
    assert!(map.is_empty() && map.get(b"a").is_none());
    map.check();
    assert!(!map.remove(b"a"), "removing from an empty map");
}

#[test]
fn the_order_is_the_byte_order_of_the_keys() {
    let mut map = KeyMap::with_block_bytes(16);
    let mut expected: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"a".to_vec(),
        b"a\0".to_vec(),
        b"ab".to_vec(),
        b"b".to_vec(),
        vec![0x7f],
        vec![0xff],
        vec![0xff, 0],
    ];
    for (index, key) in expected.iter().rev().enumerate() {
        map.insert(key, b"v", meta(index as u64, index as u64, 0));
        map.check();
    }
    expected.sort();
    assert_eq!(keys(&map), expected);
}

#[test]
fn blocks_split_when_full_and_merge_when_emptied() {
    let mut map = KeyMap::with_block_bytes(256);
    for number in 0..200u64 {
        map.insert(format!("key-{number:03}").as_bytes(), &[1; 10], meta(number, number, 0));
        map.check();
    }
    let full = map.blocks.len();
    assert!(full >= 19, "200 records of 24 bytes in 256-byte blocks: {full} blocks");
    for number in (0..200u64).filter(|number| number % 10 != 0) {
        assert!(map.remove(format!("key-{number:03}").as_bytes()));
        map.check();
    }
    assert_eq!(map.len(), 20);
    // Blocks of one or two records (under a quarter of 256 bytes) merged with neighbours.
    assert!(map.blocks.len() <= 8, "merged back to {} blocks", map.blocks.len());
    // Emptying the first block hands the empty bound to the next one.
    assert!(map.remove(b"key-000"));
    map.check();
    assert_eq!(keys(&map).first().map(Vec::as_slice), Some(&b"key-010"[..]));
}

#[test]
fn a_record_larger_than_a_block_has_a_block_of_its_own() {
    let mut map = KeyMap::with_block_bytes(32);
    map.insert(b"a", b"small", meta(1, 1, 0));
    map.insert(b"b", &[7; 1000], meta(2, 2, 0));
    map.insert(b"c", b"small", meta(3, 3, 0));
    map.check();
    assert_eq!(map.get(b"b").expect("b").value.len(), 1000);
}

#[test]
fn ranges_start_inside_and_between_blocks() {
    let mut map = KeyMap::with_block_bytes(40);
    for number in (0..60u64).step_by(2) {
        map.insert(format!("{number:02}").as_bytes(), b"v", meta(1, 1, 0));
    }
    let from = |start: Bound<&[u8]>| -> Vec<String> {
        map.range_from(start).map(|entry| String::from_utf8_lossy(entry.key).into_owned()).take(3).collect()
    };
    assert_eq!(from(Bound::Included(b"10")), ["10", "12", "14"]);
    assert_eq!(from(Bound::Excluded(b"10")), ["12", "14", "16"]);
    assert_eq!(from(Bound::Included(b"11")), ["12", "14", "16"]);
    assert_eq!(from(Bound::Excluded(b"11")), ["12", "14", "16"]);
    assert_eq!(from(Bound::Unbounded), ["00", "02", "04"]);
    assert_eq!(from(Bound::Included(b"")), ["00", "02", "04"]);
    assert!(from(Bound::Excluded(b"58")).is_empty());
    assert!(from(Bound::Included(b"9")).is_empty());
    assert!(KeyMap::default().range_from(Bound::Included(b"x")).next().is_none());
}

fn round_trip(map: &KeyMap, block_bytes: usize) -> io::Result<KeyMap> {
    let mut bytes = Vec::new();
    write_records(map, &mut bytes)?;
    let mut reader = &bytes[..];
    let count = read_varint_from(&mut reader)?;
    let copy = read_records(&mut reader, count, block_bytes, Layout::V3)?;
    assert!(reader.is_empty(), "every byte read");
    Ok(copy)
}

#[test]
fn records_round_trip_through_bytes_into_any_block_size() {
    let mut map = KeyMap::with_block_bytes(50);
    for number in 0..100u64 {
        map.insert(format!("k{number}").as_bytes(), &vec![number as u8; number as usize], meta(number, number * 2, 7));
    }
    for block_bytes in [1, 30, 4096] {
        let copy = round_trip(&map, block_bytes).expect("round trip");
        copy.check();
        assert_eq!(copy, map);
    }
    let empty = round_trip(&KeyMap::default(), BLOCK_BYTES).expect("empty round trip");
    assert!(empty.is_empty());
}

#[test]
fn equal_maps_write_equal_bytes_however_they_are_blocked() {
    let mut small = KeyMap::with_block_bytes(20);
    let mut large = KeyMap::default();
    for number in 0..50u64 {
        let key = format!("{}", (number * 7919) % 50);
        small.insert(key.as_bytes(), b"value", meta(number, number, 0));
        large.insert(key.as_bytes(), b"value", meta(number, number, 0));
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    write_records(&small, &mut a).expect("write");
    write_records(&large, &mut b).expect("write");
    assert_eq!(a, b);
}

#[test]
fn cut_or_unordered_records_are_refused() {
    let mut map = KeyMap::default();
    map.insert(b"a", b"1", meta(1, 1, 0));
    map.insert(b"b", b"2", meta(2, 2, 0));
    let mut bytes = Vec::new();
    write_records(&map, &mut bytes).expect("write");
    for cut in 1..bytes.len() {
        let mut reader = &bytes[1..cut];
        assert!(read_records(&mut reader, 2, BLOCK_BYTES, Layout::V3).is_err(), "cut at {cut}");
    }
    // The same key twice, and keys going down.
    let mut twice = Vec::new();
    record::encode(&mut twice, b"a", b"1", meta(1, 1, 0));
    record::encode(&mut twice, b"a", b"1", meta(1, 1, 0));
    let error = read_records(&mut &twice[..], 2, BLOCK_BYTES, Layout::V3).expect_err("a repeated key");
    assert!(error.to_string().contains("increasing"), "{error}");
    let mut down = Vec::new();
    record::encode(&mut down, b"b", b"1", meta(1, 1, 0));
    record::encode(&mut down, b"a", b"1", meta(1, 1, 0));
    assert!(read_records(&mut &down[..], 2, BLOCK_BYTES, Layout::V3).is_err());
    // A claimed length far past the input fails at its end, without allocating it.
    let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0];
    assert!(read_records(&mut &huge[..], 1, BLOCK_BYTES, Layout::V3).is_err());
}

/// A record header with these lengths, revisions 0 and flags 0, then `tail`.
fn crafted(key_len: u64, value_len: u64, tail: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    put_varint(&mut bytes, key_len);
    put_varint(&mut bytes, value_len);
    // Create index, modify distance, flags, expires.
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    bytes.extend_from_slice(tail);
    bytes
}

/// Two lengths whose sum wraps past 2^64 to a small number panicked (an overflow, or a
/// `split_at` past the end of what was read): they are refused, saying what is wrong.
#[test]
fn lengths_that_add_up_past_2_64_are_refused_not_a_panic() {
    let cases = [
        (u64::MAX, 1, &[][..]),         // sums to 0: nothing to read, then a key of 2^64 - 1
        (1 << 63, 1 << 63, &[][..]),    // sums to 0
        (u64::MAX, 3, &b"ab"[..]),      // sums to 2, and two bytes follow
        (u64::MAX - 1, 5, &b"xyz"[..]), // sums to 3
    ];
    for (key_len, value_len, tail) in cases {
        let bytes = crafted(key_len, value_len, tail);
        let error = read_records(&mut &bytes[..], 1, BLOCK_BYTES, Layout::V3).expect_err("crafted lengths");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{key_len} + {value_len}: {error}");
        assert!(error.to_string().contains("past 2^64"), "{key_len} + {value_len}: {error}");
    }
    // A sum that fits but claims more than is there says how much is left.
    let bytes = crafted(3, 4, b"abc");
    let error = read_records(&mut &bytes[..], 1, BLOCK_BYTES, Layout::V3).expect_err("cut short");
    assert!(error.to_string().contains("claims 7 bytes of key and value, 3 are left"), "{error}");
}

/// A view (a clone) keeps the entries it was taken with, however the map changes after,
/// and writes to the map copy only what the view shares.
#[test]
fn a_view_keeps_its_entries_while_the_map_changes() {
    let mut map = KeyMap::with_block_bytes(64);
    for number in 0..200u32 {
        map.insert(format!("key-{number:03}").as_bytes(), &[1; 10], meta(1, 1, 0));
    }
    let before: Vec<(Vec<u8>, Vec<u8>)> = map.iter().map(|entry| (entry.key.to_vec(), entry.value.to_vec())).collect();
    let view = map.clone();
    // One write and one removal copy the blocks they change (and the tree), no other.
    map.insert(b"key-100", &[3; 10], meta(1, 3, 0));
    assert!(map.remove(b"key-150"));
    let shared = map.blocks.values().filter(|block| view.blocks.values().any(|old| Arc::ptr_eq(old, block))).count();
    assert!(view.blocks.len() > 50 && shared >= view.blocks.len() - 3, "{shared} of {} shared", view.blocks.len());
    for number in (0..200u32).step_by(3) {
        map.insert(format!("key-{number:03}").as_bytes(), &[2; 30], meta(1, 2, 0));
    }
    for number in (1..200u32).step_by(3) {
        assert!(map.remove(format!("key-{number:03}").as_bytes()));
    }
    map.insert(b"new", b"v", meta(3, 3, 0));
    map.check();
    view.check();
    let seen: Vec<(Vec<u8>, Vec<u8>)> = view.iter().map(|entry| (entry.key.to_vec(), entry.value.to_vec())).collect();
    assert_eq!(seen, before, "the view still shows the map as it was");
    assert_eq!(view.data_bytes(), 200 * (7 + 10));
    assert!(view.get(b"new").is_none() && map.get(b"new").is_some());
    assert_eq!(map.get(b"key-000").expect("written").value, &[2; 30]);
}

/// One step of the model test.
#[derive(Clone, Debug)]
enum Step {
    Insert { key: Vec<u8>, value_len: usize, meta: Meta },
    Remove(Vec<u8>),
    Range(Bound<Vec<u8>>),
}

/// Short keys over a small alphabet, so that steps often hit the same keys.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(vec![0u8, b'a', b'b', 0xff]), 0..4)
}

fn step() -> impl Strategy<Value = Step> {
    let meta = (any::<u64>(), any::<u32>(), any::<u64>()).prop_map(|(create_index, distance, flags)| Meta {
        create_index,
        modify_index: create_index.saturating_add(u64::from(distance)),
        flags,
        expires: 0,
    });
    prop_oneof![
        4 => (key(), 0..40usize, meta).prop_map(|(key, value_len, meta)| Step::Insert { key, value_len, meta }),
        2 => key().prop_map(Step::Remove),
        1 => prop_oneof![
            Just(Bound::Unbounded),
            key().prop_map(Bound::Included),
            key().prop_map(Bound::Excluded),
        ]
        .prop_map(Step::Range),
    ]
}

type Model = BTreeMap<Vec<u8>, (Vec<u8>, Meta)>;

fn model_from(model: &Model, start: &Bound<Vec<u8>>) -> Vec<(Vec<u8>, Vec<u8>, Meta)> {
    let start = match start {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(key) => Bound::Included(key.as_slice()),
        Bound::Excluded(key) => Bound::Excluded(key.as_slice()),
    };
    model
        .range::<[u8], _>((start, Bound::Unbounded))
        .map(|(key, (value, meta))| (key.clone(), value.clone(), *meta))
        .collect()
}

fn map_from(map: &KeyMap, start: &Bound<Vec<u8>>) -> Vec<(Vec<u8>, Vec<u8>, Meta)> {
    let start = match start {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(key) => Bound::Included(key.as_slice()),
        Bound::Excluded(key) => Bound::Excluded(key.as_slice()),
    };
    map.range_from(start).map(|entry| (entry.key.to_vec(), entry.value.to_vec(), entry.meta())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The key map answers as a `BTreeMap` would, whatever its block size, and keeps its
    /// invariants after every step; a restore of it equals it.
    #[test]
    fn behaves_as_a_btree_map(block_bytes in 1..120usize, steps in prop::collection::vec(step(), 1..200)) {
        let mut map = KeyMap::with_block_bytes(block_bytes);
        let mut model = Model::new();
        // Views taken along the way, with the model as it was then.
        let mut views = Vec::new();
        for (number, step) in steps.into_iter().enumerate() {
            if number % 7 == 3 {
                views.push((map.clone(), model.clone()));
            }
            match step {
                Step::Insert { key, value_len, meta } => {
                    // Through `upsert`, which shows what the key held (`insert` is `upsert`
                    // ignoring it).
                    let value = vec![number as u8; value_len];
                    let seen = map.upsert(&key, &value, |current| (meta, current.map(|entry| (entry.value.to_vec(), entry.meta()))));
                    prop_assert_eq!(seen, model.insert(key, (value, meta)));
                }
                Step::Remove(key) => {
                    prop_assert_eq!(map.remove(&key), model.remove(&key).is_some());
                }
                Step::Range(start) => {
                    prop_assert_eq!(map_from(&map, &start), model_from(&model, &start));
                }
            }
            map.check();
            prop_assert_eq!(map.len(), model.len());
            for key in model.keys() {
                let entry = map.get(key);
                prop_assert!(entry.is_some());
            }
        }
        prop_assert_eq!(map_from(&map, &Bound::Unbounded), model_from(&model, &Bound::Unbounded));
        let copy = round_trip(&map, block_bytes).expect("round trip");
        copy.check();
        prop_assert_eq!(copy, map);
        for (view, model) in views {
            view.check();
            prop_assert_eq!(map_from(&view, &Bound::Unbounded), model_from(&model, &Bound::Unbounded));
        }
    }
}
