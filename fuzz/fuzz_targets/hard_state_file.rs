//! See `src/hard_state.rs` for what this target feeds and checks, and `docs/fuzzing.md`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skiff_fuzz::hard_state::check(data));
