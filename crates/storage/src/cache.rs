//! The recent tail of the log, kept in memory up to a byte budget, so that replication and
//! apply (which read what was just appended) rarely touch the disk.

use std::collections::VecDeque;

use skiff_raft::{Entry, Index};

/// The newest entries of the log, contiguous, ending at the last index.
#[derive(Debug)]
pub(crate) struct TailCache {
    entries: VecDeque<Entry>,
    bytes: u64,
    budget_bytes: u64,
}

impl TailCache {
    pub fn new(budget_bytes: u64) -> TailCache {
        TailCache { entries: VecDeque::new(), bytes: 0, budget_bytes }
    }

    /// The first cached index, if any.
    pub fn first_index(&self) -> Option<Index> {
        self.entries.front().map(Entry::index)
    }

    /// Adds the entry after the last cached one, evicting the oldest past the budget.
    pub fn push(&mut self, entry: &Entry) {
        if let Some(last) = self.entries.back() {
            assert_eq!(entry.index(), last.index().next(), "the tail cache must stay contiguous");
        }
        self.bytes += entry.size_bytes();
        self.entries.push_back(entry.clone());
        while self.bytes > self.budget_bytes {
            let Some(evicted) = self.entries.pop_front() else { break };
            self.bytes -= evicted.size_bytes();
        }
    }

    /// Forgets the entries from `index` on (the log's tail was replaced).
    pub fn truncate_from(&mut self, index: Index) {
        while self.entries.back().is_some_and(|entry| entry.index() >= index) {
            let removed = self.entries.pop_back().expect("checked");
            self.bytes -= removed.size_bytes();
        }
    }

    /// Forgets the entries up to and including `index` (compaction).
    pub fn drop_through(&mut self, index: Index) {
        while self.entries.front().is_some_and(|entry| entry.index() <= index) {
            let removed = self.entries.pop_front().expect("checked");
            self.bytes -= removed.size_bytes();
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The cached entries from `from` (at least the first cached index) up to `to`.
    pub fn range(&self, from: Index, to: Index) -> impl Iterator<Item = &Entry> {
        let first = self.first_index().map_or(0, |first| first.0);
        let start = from.0.saturating_sub(first) as usize;
        let end = (to.0.saturating_sub(first) as usize).min(self.entries.len());
        self.entries.range(start.min(end)..end)
    }
}
