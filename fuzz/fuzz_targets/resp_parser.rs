//! See `src/resp.rs` for what this target feeds and checks, and `docs/fuzzing.md`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skiff_fuzz::resp::check(data));
