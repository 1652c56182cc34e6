//! The file fuzz targets' checks (`fuzz/src/wal.rs`, `snapshot.rs`, `hard_state.rs`, see
//! `docs/fuzzing.md`) as property tests, so `cargo test` runs them on stable: a WAL segment,
//! a snapshot file and the `hardstate` file, each as random bytes and as the store writes
//! it from random choices, whole or changed a little. None panics the reader; what was
//! written is read back exactly; a changed file is refused or read back as written (a
//! segment: a prefix of its entries), never taken for other data; and what is read, written
//! again, reads the same.

// Each target's module brings its own copy of the shared helpers (`cursor.rs`), so that
// it stands alone in the fuzz crate and here.
#![allow(clippy::duplicate_mod)]

use proptest::prelude::*;

#[path = "../../../fuzz/src/hard_state.rs"]
mod hard_state;
#[path = "../../../fuzz/src/snapshot.rs"]
mod snapshot;
#[path = "../../../fuzz/src/wal.rs"]
mod wal;

fn input(mode: u8, rest: Vec<u8>) -> Vec<u8> {
    let mut input = vec![mode];
    input.extend(rest);
    input
}

fn rest(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Mode: bit 0 set builds records (else raw bytes after a valid header, or raw bytes),
    /// bit 1 says whether the segment is the last one, bits 2-3 pick its first index.
    #[test]
    fn wal_segments(mode in any::<u8>(), rest in rest(768)) {
        wal::check(&input(mode, rest));
    }

    #[test]
    fn snapshot_files(mode in any::<u8>(), rest in rest(512)) {
        snapshot::check(&input(mode, rest));
    }

    #[test]
    fn hard_state_files(mode in any::<u8>(), rest in rest(96)) {
        hard_state::check(&input(mode, rest));
    }
}

/// The inputs libFuzzer found (`fuzz/regressions/wal_segment/`): a segment named for an
/// index near `u64::MAX` that holds entries overflowed `Segment::next_index`; it is refused.
#[test]
fn wal_segment_regressions() {
    for input in regressions("wal_segment") {
        wal::check(&input);
    }
}

/// Every file of `fuzz/regressions/<target>/`.
fn regressions(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions").join(target);
    let files = std::fs::read_dir(&dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
    let inputs: Vec<Vec<u8>> =
        files.map(|file| std::fs::read(file.expect("a directory entry").path()).expect("an input")).collect();
    assert!(!inputs.is_empty(), "no inputs in {}", dir.display());
    inputs
}
