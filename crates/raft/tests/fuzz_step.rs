//! The `raft_step` fuzz target's checks (`fuzz/src/step.rs`, see `docs/fuzzing.md`) as a
//! property test, so `cargo test` runs them on stable. `wire_fuzz.rs` already feeds the core
//! structured messages; this adds the way they really arrive: as postcard bytes, random or
//! the encoding of a valid envelope with a byte changed, so that the decoding and the core
//! are exercised together, with the same script of ticks, campaigns and votes around them.

use proptest::prelude::*;

#[path = "../../../fuzz/src/step.rs"]
mod harness;

use harness::cursor::Cursor;
use harness::raft_input::{self, Receiver};

/// `harness::check`'s mode byte: bit 0 clear is raw postcard, set is built; bits 1-2 pick
/// the start term.
fn mode(built: bool, start: u8) -> u8 {
    u8::from(built) | (start % 4) << 1
}

/// One action of a raw-mode script: its control byte, the choices it is built from, and
/// perhaps a byte of its encoding to change (where, and the bits to flip).
type Action = (u8, Vec<u8>, Option<(prop::sample::Index, u8)>);

/// A raw-mode script: each action a control byte (8 and up: a message) and, for a message,
/// the postcard encoding of an envelope built from `choices`, perhaps with one byte changed.
fn raw_script(actions: &[Action]) -> Vec<u8> {
    let mut script = Vec::new();
    for (control, choices, change) in actions {
        script.push(*control);
        if control % 16 < 8 {
            // Not a message: the harness reads the action's own choices from here.
            script.extend_from_slice(&choices[..choices.len().min(2)]);
            continue;
        }
        let envelope = raft_input::envelope(&mut Cursor::new(choices), &Receiver::default());
        let mut bytes = postcard::to_allocvec(&envelope).expect("an envelope encodes");
        if let Some((at, flip)) = change {
            let at = at.index(bytes.len());
            bytes[at] ^= flip.max(&1);
        }
        script.extend_from_slice(&bytes);
    }
    script
}

fn action() -> impl Strategy<Value = Action> {
    (
        prop_oneof![1 => 0u8..8, 3 => 8u8..16],
        prop::collection::vec(any::<u8>(), 0..48),
        prop::option::weighted(0.3, (any::<prop::sample::Index>(), any::<u8>())),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(start in 0u8..4, built in any::<bool>(), rest in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut input = vec![mode(built, start)];
        input.extend(rest);
        harness::check(&input);
    }

    #[test]
    fn encoded_envelopes_whole_and_changed(start in 0u8..4, actions in prop::collection::vec(action(), 1..40)) {
        let mut input = vec![mode(false, start)];
        input.extend(raw_script(&actions));
        harness::check(&input);
    }
}

/// Found by the `http_request` fuzz target (`GET /v1/skiff/log?from=<past the end>` on a
/// node with a `MemLogStore`): an empty range that starts past the end of the log is empty,
/// as `DiskStorage` has it, not a slice out of bounds on the driver thread.
#[test]
fn mem_storage_gives_an_empty_range_past_the_end_of_the_log() {
    use skiff_raft::{Entry, Index, LogId, MemStorage, Membership, NodeId, Payload, Storage, Term};
    let mut storage = MemStorage::new(Membership::with_voters([NodeId(1)]));
    let entries: Vec<Entry> =
        (1..=3).map(|i| Entry { log_id: LogId::new(Term(1), Index(i)), payload: Payload::Empty }).collect();
    storage.append(&entries).unwrap();
    for low in [Index(5), Index(1000), Index(u64::MAX - 1000), Index(u64::MAX)] {
        assert_eq!(storage.entries(low, Index(4), u64::MAX), Ok(Vec::new()), "from {low}");
    }
    assert_eq!(storage.entries(Index(3), Index(2), u64::MAX), Ok(Vec::new()));
    assert_eq!(storage.entries(Index(2), Index(4), u64::MAX).map(|found| found.len()), Ok(2));
}
