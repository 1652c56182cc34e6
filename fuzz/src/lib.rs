//! The checks of Skiff's fuzz targets, one module per target (`fuzz_targets/<name>.rs`
//! calls `<module>::check`). Each module is self-contained (its helpers come in through
//! `#[path]`), so the property tests in the crates' `tests/fuzz_*.rs` include the same file
//! and `cargo test` runs the same checks on stable. See `docs/fuzzing.md`.

// So each module brings its own copy of the shared helpers (`cursor.rs` and the like).
#![allow(clippy::duplicate_mod)]

pub mod frames;
pub mod hard_state;
pub mod http;
pub mod kv_restore;
pub mod resp;
pub mod snapshot;
pub mod step;
pub mod wal;
