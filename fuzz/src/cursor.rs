//! Reading a fuzzer's bytes as a sequence of choices: each call takes what it needs from
//! the front, and an exhausted input reads as zeros, so every input means something.

#![allow(dead_code)]

use std::sync::OnceLock;

/// Whether to step around the known findings (`fuzz/artifacts-known/`, listed in
/// `docs/fuzzing.md`) that another part of the code base has yet to fix: always in the
/// property tests, so `cargo test` passes meanwhile; in a fuzzer only with
/// `SKIFF_FUZZ_SKIP_KNOWN` set, to search past them (without it, the fuzzer finds them).
/// (`cfg(fuzzing)` is set by cargo-fuzz, unknown to the crates that include this file.)
#[allow(unexpected_cfgs)]
pub fn skip_known() -> bool {
    static SKIP: OnceLock<bool> = OnceLock::new();
    *SKIP.get_or_init(|| !cfg!(fuzzing) || std::env::var_os("SKIFF_FUZZ_SKIP_KNOWN").is_some())
}

/// The bytes not yet taken.
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Cursor<'a> {
        Cursor { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&byte, rest)) => {
                self.data = rest;
                byte
            }
            None => 0,
        }
    }

    pub fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// A number below `bound` (which must not be 0).
    pub fn below(&mut self, bound: usize) -> usize {
        usize::from(self.byte()) % bound
    }

    /// Eight bytes, little-endian (fewer at the end of the input).
    pub fn u64(&mut self) -> u64 {
        let mut word = [0u8; 8];
        for byte in &mut word {
            *byte = self.byte();
        }
        u64::from_le_bytes(word)
    }

    /// A number that is often small, sometimes near the edges of `u64`: the values where
    /// arithmetic goes wrong.
    pub fn number(&mut self) -> u64 {
        match self.byte() % 8 {
            0..=3 => u64::from(self.byte() % 16),
            4 => u64::MAX - u64::from(self.byte() % 4),
            5 => (1 << 63) + u64::from(self.byte() % 4) - 2,
            _ => self.u64(),
        }
    }

    /// A length byte, then up to that many bytes.
    pub fn bytes(&mut self) -> &'a [u8] {
        let length = usize::from(self.byte()).min(self.data.len());
        let (taken, rest) = self.data.split_at(length);
        self.data = rest;
        taken
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    /// Runs a decoder on what is left; it returns the value and what it did not use.
    pub fn decode<T>(&mut self, decoder: impl FnOnce(&'a [u8]) -> Option<(T, &'a [u8])>) -> Option<T> {
        let (value, rest) = decoder(self.data)?;
        self.data = rest;
        Some(value)
    }
}

/// Applies up to a few byte changes, chosen by `cursor`, to `bytes`: flips (XOR with a
/// non-zero byte), a truncation, an insertion. Returns whether `bytes` changed.
pub fn mutate(cursor: &mut Cursor, bytes: &mut Vec<u8>) -> bool {
    let mut changed = false;
    for _ in 0..cursor.below(4) {
        if bytes.is_empty() {
            break;
        }
        let at = (cursor.u64() % bytes.len() as u64) as usize;
        match cursor.below(4) {
            0 | 1 => {
                let flip = cursor.byte().max(1);
                bytes[at] ^= flip;
                changed = true;
            }
            2 => {
                changed |= at < bytes.len();
                bytes.truncate(at);
            }
            _ => {
                bytes.insert(at, cursor.byte());
                changed = true;
            }
        }
    }
    changed
}
