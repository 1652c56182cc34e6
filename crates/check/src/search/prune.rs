//! What lets the search skip configurations: the memoisation cache with its compact keys,
//! and the demand for values that exposes doomed configurations early.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::{SearchOp, State, Step};

/// Per state, the operations not yet lifted that need the register to hold it, and those
/// that may still write it. It lets the search drop a configuration as soon as it overwrites
/// a value that a get still has to return (or a cas still has to find) while nothing left
/// can write that value again in time: with unique values, that is any write placed before
/// a read of the value it replaces. Without this, such a mistake is found only at the read's
/// return, after trying every order of the operations in between.
pub(super) struct Demand {
    /// Per state, the gets that returned it and the cas that succeeded on it, by completion.
    readers: Vec<Vec<u32>>,
    /// Per state, the puts, deletes and cas (successful or of unknown outcome) that write it,
    /// by invocation.
    writers: Vec<Vec<u32>>,
    /// Per state, the position in `readers` of the first not lifted (all before are).
    first_reader: Vec<usize>,
    /// Per state, the position in `writers` of the first not lifted (all before are).
    first_writer: Vec<usize>,
    /// Per operation, its position in its state's `readers` and `writers`.
    position: Vec<(usize, usize)>,
    lifted: Vec<bool>,
    /// Per operation, when it may take effect (invocation) and by when it must (completion).
    window_ns: Vec<(u64, Option<u64>)>,
}

impl Demand {
    pub(super) fn new(operations: &[SearchOp], initial: State) -> Self {
        let states = operations.iter().map(|operation| match operation.step {
            Step::Read(state) | Step::Write(state) => state,
            Step::Cas { expected, new, .. } => expected.max(new),
        });
        let len = states.fold(initial, State::max) as usize + 1;
        let window_ns: Vec<_> =
            operations.iter().map(|operation| (operation.invoke_ns, operation.complete_ns)).collect();
        let (mut readers, mut writers) = (vec![Vec::new(); len], vec![Vec::new(); len]);
        for (operation, search_op) in (0..).zip(operations) {
            if let Some(state) = Self::read(search_op.step) {
                readers[state as usize].push(operation);
            }
            if let Some(state) = search_op.step.written() {
                writers[state as usize].push(operation);
            }
        }
        let mut position = vec![(0, 0); operations.len()];
        for list in &mut readers {
            list.sort_by_key(|&operation| (window_ns[operation as usize].1, operation));
            for (at, &operation) in list.iter().enumerate() {
                position[operation as usize].0 = at;
            }
        }
        for list in &mut writers {
            list.sort_by_key(|&operation| (window_ns[operation as usize].0, operation));
            for (at, &operation) in list.iter().enumerate() {
                position[operation as usize].1 = at;
            }
        }
        let lifted = vec![false; operations.len()];
        Self { readers, writers, first_reader: vec![0; len], first_writer: vec![0; len], position, lifted, window_ns }
    }

    /// How many states there are (one more than the largest).
    pub(super) fn states(&self) -> usize {
        self.readers.len()
    }

    /// The state `step` needs the register to hold, if it has to take effect.
    fn read(step: Step) -> Option<State> {
        match step {
            Step::Read(state) | Step::Cas { expected: state, swapped: Some(true), .. } => Some(state),
            Step::Write(_) | Step::Cas { .. } => None,
        }
    }

    /// Lifts `operation`, unless it replaces `state` (`replaces`) while an operation that
    /// needs `state` is left with no write of it that may take effect before it must; returns
    /// whether it lifted.
    pub(super) fn lift(&mut self, operation: u32, step: Step, replaces: bool, state: State) -> bool {
        self.lifted[operation as usize] = true;
        let advance = |first: &mut usize, list: &[u32], lifted: &[bool]| {
            while *first < list.len() && lifted[list[*first] as usize] {
                *first += 1;
            }
        };
        if let Some(read) = Self::read(step) {
            advance(&mut self.first_reader[read as usize], &self.readers[read as usize], &self.lifted);
        }
        if let Some(written) = step.written() {
            advance(&mut self.first_writer[written as usize], &self.writers[written as usize], &self.lifted);
        }
        if replaces && self.stranded(state) {
            self.put_back(operation, step);
            return false;
        }
        true
    }

    pub(super) fn put_back(&mut self, operation: u32, step: Step) {
        self.lifted[operation as usize] = false;
        let (reader_at, writer_at) = self.position[operation as usize];
        if let Some(read) = Self::read(step) {
            let first = &mut self.first_reader[read as usize];
            *first = (*first).min(reader_at);
        }
        if let Some(written) = step.written() {
            let first = &mut self.first_writer[written as usize];
            *first = (*first).min(writer_at);
        }
    }

    /// Whether an operation not lifted needs `state`, and no write of it not lifted may take
    /// effect before that operation's completion.
    fn stranded(&self, state: State) -> bool {
        let state = state as usize;
        let Some(&reader) = self.readers[state].get(self.first_reader[state]) else { return false };
        let deadline_ns = self.window_ns[reader as usize].1.expect("a reader completed");
        match self.writers[state].get(self.first_writer[state]) {
            Some(&writer) => self.window_ns[writer as usize].0 > deadline_ns,
            None => true,
        }
    }
}

/// The set of lifted operations: completed ones and unknown-outcome ones, each numbered in
/// invocation order.
pub(super) struct Lifted {
    completed: Vec<u64>,
    /// Words `..full` of `completed` are all ones.
    full: usize,
    /// Words `end..` of `completed` are all zeros.
    end: usize,
    unknown: Vec<u64>,
}

impl Lifted {
    pub(super) fn contains_unknown(&self, number: usize) -> bool {
        self.unknown[number / 64] & 1 << (number % 64) != 0
    }

    pub(super) fn unknown(&self) -> &[u64] {
        &self.unknown
    }

    pub(super) fn new(completed_count: usize, unknown_count: usize) -> Self {
        Self {
            completed: vec![0; completed_count.div_ceil(64)],
            full: 0,
            end: 0,
            unknown: vec![0; unknown_count.div_ceil(64)],
        }
    }

    pub(super) fn insert(&mut self, completed: bool, number: usize) {
        let (word, bit) = (number / 64, 1 << (number % 64));
        if !completed {
            self.unknown[word] |= bit;
            return;
        }
        self.completed[word] |= bit;
        self.end = self.end.max(word + 1);
        while self.full < self.completed.len() && self.completed[self.full] == u64::MAX {
            self.full += 1;
        }
    }

    pub(super) fn remove(&mut self, completed: bool, number: usize) {
        let (word, bit) = (number / 64, 1 << (number % 64));
        if !completed {
            self.unknown[word] &= !bit;
            return;
        }
        self.completed[word] &= !bit;
        self.full = self.full.min(word);
        while self.end > 0 && self.completed[self.end - 1] == 0 {
            self.end -= 1;
        }
    }

    /// Writes into `key` a compact, unique encoding of (the completed operations of this set,
    /// `state`).
    pub(super) fn completed_key(&self, state: State, key: &mut Vec<u64>) {
        debug_assert!(self.full <= self.end || self.full == 0);
        key.clear();
        key.push(u64::from(state) | (self.full as u64) << 32);
        key.extend_from_slice(&self.completed[self.full..self.end.max(self.full)]);
    }
}

/// The configurations visited: per (completed operations lifted, state), the sets of
/// unknown-outcome operations lifted with them.
///
/// A configuration is *subsumed* by a visited one with the same completed operations and
/// state and fewer unknown-outcome operations lifted: those never have to take effect, so
/// whatever the subsumed configuration can still do, the visited one could too (it was, or
/// is being, explored). Pruning subsumed configurations, not only equal ones, is what keeps
/// a history with many timeouts tractable: an unobserved write of unknown outcome tried at
/// a dead end leads back to configurations already explored without it.
#[derive(Default)]
pub(super) struct Cache {
    /// Per completed key, the unknown-outcome sets visited with it, each as its length in
    /// words and its words, trailing zero words cut (operations invoked late are rarely
    /// lifted). An empty list stands for the empty set alone: it subsumes any other, so
    /// nothing is ever added to it.
    visited: HashMap<Box<[u64]>, Vec<u64>, BuildHasherDefault<FxHasher>>,
}

impl Cache {
    /// Records the configuration (`completed_key`, `unknown`); returns false if it is
    /// subsumed by one visited before.
    pub(super) fn insert(&mut self, completed_key: &[u64], unknown: &[u64]) -> bool {
        let unknown = &unknown[..unknown.iter().rposition(|&word| word != 0).map_or(0, |last| last + 1)];
        let Some(visited) = self.visited.get_mut(completed_key) else {
            let mut visited = Vec::new();
            if !unknown.is_empty() {
                visited.push(unknown.len() as u64);
                visited.extend_from_slice(unknown);
            }
            self.visited.insert(completed_key.into(), visited);
            return true;
        };
        if visited.is_empty() {
            return false;
        }
        let mut rest = visited.as_slice();
        while let Some((&len, words)) = rest.split_first() {
            let (set, after) = words.split_at(len as usize);
            let subset =
                set.len() <= unknown.len() && set.iter().zip(unknown).all(|(set, current)| set & !current == 0);
            if subset {
                return false;
            }
            rest = after;
        }
        if unknown.is_empty() {
            visited.clear();
        } else {
            visited.push(unknown.len() as u64);
            visited.extend_from_slice(unknown);
        }
        true
    }
}

/// A fast hasher for the cache keys (words of a bitset): multiply-rotate per word as in
/// rustc's FxHasher, with a final avalanche so the table's high bits are well mixed.
#[derive(Default)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("chunks of 8 bytes")));
        }
        for &byte in chunks.remainder() {
            self.add(u64::from(byte));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.add(word);
    }

    fn write_usize(&mut self, word: usize) {
        self.add(word as u64);
    }

    fn finish(&self) -> u64 {
        // MurmurHash3's fmix64.
        let mut hash = self.hash;
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        hash ^ (hash >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_skips_configurations_with_more_unknown_outcomes_lifted() {
        let mut cache = Cache::default();
        let key = [7, 1];
        assert!(cache.insert(&key, &[0b010, 0]));
        assert!(!cache.insert(&key, &[0b010, 0]), "the same configuration");
        assert!(!cache.insert(&key, &[0b110, 0]), "one more lifted: nothing new to explore");
        assert!(!cache.insert(&key, &[0b010, 1]));
        assert!(cache.insert(&key, &[0b100, 0]), "another set: its own future");
        assert!(cache.insert(&[7, 2], &[0b110, 0]), "other completed operations");
        assert!(cache.insert(&key, &[0, 0]), "fewer lifted: more options");
        assert!(!cache.insert(&key, &[0b1, 0]));
    }

    #[test]
    fn lifted_set_key_is_compact_and_unique() {
        let mut lifted = Lifted::new(200, 0);
        let mut key = Vec::new();
        for number in 0..130 {
            lifted.insert(true, number);
        }
        lifted.insert(true, 140);
        lifted.completed_key(5, &mut key);
        // Two full words skipped; the third holds 128..=129 and 140.
        assert_eq!(key, [5 | 2 << 32, 0b11 | 1 << 12]);
        lifted.remove(true, 3);
        lifted.completed_key(5, &mut key);
        assert_eq!(key.len(), 4);
        assert_eq!(key[0], 5);
        lifted.insert(true, 3);
        lifted.remove(true, 140);
        lifted.completed_key(5, &mut key);
        assert_eq!(key, [5 | 2 << 32, 0b11]);
    }
}
