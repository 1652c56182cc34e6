//! The change feed's history (`GET /v1/skiff/watch`, `docs/http-api.md`): every change the
//! state machine applies, in log order, kept in memory up to a number of bytes.
//!
//! The apply thread records each write and deletion as it makes it ([`Feed::record`]) and
//! hands the entry's changes over at the end of the entry
//! ([`Feed::commit`]); a failed transaction's changes are dropped before that
//! ([`Feed::discard_from`]), so a reader sees whole entries only. Every replica applies the same
//! entries, so every node records the same events for the same indexes.
//!
//! The history is not in snapshots: after a restart or a snapshot install it starts empty at
//! the snapshot's index ([`Feed::reset`]), and a stream that needs older events reads a
//! snapshot of its prefix instead. The oldest entries are dropped whole once the history
//! holds more than its byte budget; [`Feed::floor`] says which index it is complete after.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

/// What a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A write of the key's value.
    Put,
    /// A deletion asked for (or a lease's end that deletes its keys).
    Delete,
    /// A deletion because the key's deadline passed.
    Expire,
}

impl Kind {
    /// The event's `type` in the feed.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Put => "put",
            Kind::Delete => "delete",
            Kind::Expire => "expire",
        }
    }
}

/// One change, as applied at `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub index: u64,
    pub kind: Kind,
    pub key: Bytes,
    /// The value written (empty for a deletion).
    pub value: Bytes,
    /// Of the key written, or of the key as it was before its deletion.
    pub create_index: u64,
    pub flags: u64,
    /// The value before the change, if the key existed.
    pub prev: Option<Bytes>,
}

impl Event {
    /// What the event counts for against the history's budget: its bytes and a fixed part.
    pub fn cost(&self) -> usize {
        EVENT_OVERHEAD_BYTES + self.key.len() + self.value.len() + self.prev.as_ref().map_or(0, Bytes::len)
    }
}

/// What an event costs besides its key and values.
const EVENT_OVERHEAD_BYTES: usize = 64;

/// The history: shared between the apply thread and the streams (inside [`crate::Published`]).
#[derive(Debug)]
pub struct Feed {
    ring: Mutex<Ring>,
    /// The last applied index whose changes are in the history; streams wait on it.
    tail: tokio::sync::watch::Sender<u64>,
}

impl Default for Feed {
    fn default() -> Feed {
        Feed { ring: Mutex::new(Ring::default()), tail: tokio::sync::watch::Sender::new(0) }
    }
}

#[derive(Debug)]
struct Ring {
    /// Committed events, oldest first; each with the history's running byte count at its end.
    events: VecDeque<(Arc<Event>, u64)>,
    /// The changes of the entry being applied.
    staged: Vec<Event>,
    /// Every event after this index is in `events` (older ones were dropped or never seen).
    floor: u64,
    /// The last index committed.
    last: u64,
    /// The running byte count after the newest event, and after the oldest dropped one.
    end: u64,
    start: u64,
    /// Drop the oldest entries while the history holds more than this.
    retain_bytes: u64,
}

impl Default for Ring {
    fn default() -> Ring {
        Ring {
            events: VecDeque::new(),
            staged: Vec::new(),
            floor: 0,
            last: 0,
            end: 0,
            start: 0,
            retain_bytes: DEFAULT_RETAIN_BYTES,
        }
    }
}

/// [`crate::Limits::feed_retain_bytes`] unless set.
pub const DEFAULT_RETAIN_BYTES: u64 = 64 << 20;

/// What a stream at a cursor gets from the history.
#[derive(Debug)]
pub enum Read {
    /// The events after the cursor, whole entries, up to `upto` (the new cursor: the last
    /// index they cover, which may be past the last event's), and the bytes of the events the
    /// history holds after these (how far behind the stream still is once it sent them).
    Events { events: Vec<Arc<Event>>, upto: u64, left_bytes: u64 },
    /// The history no longer holds all the events after the cursor: it is complete only after
    /// `floor`.
    Gone { floor: u64 },
}

impl Feed {
    fn lock(&self) -> MutexGuard<'_, Ring> {
        // Every change to the ring is complete before the next can panic: a poisoned lock
        // holds a consistent ring.
        self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the history's byte budget. The newest entry is kept whatever its size.
    pub fn set_retain_bytes(&self, bytes: u64) {
        self.lock().retain_bytes = bytes;
    }

    /// Records a change of the entry being applied (on the apply thread).
    pub(crate) fn record(&self, event: Event) {
        self.lock().staged.push(event);
    }

    /// How many changes are recorded for the entry being applied: a transaction's mark.
    pub(crate) fn staged(&self) -> usize {
        self.lock().staged.len()
    }

    /// Drops the changes recorded for the entry being applied after `mark` ([`Feed::staged`]):
    /// a transaction that made them was undone.
    pub(crate) fn discard_from(&self, mark: usize) {
        self.lock().staged.truncate(mark);
    }

    /// The entry at `index` is applied: its changes join the history, the oldest entries
    /// leave it past the budget (never the newest entry), and the streams are woken.
    pub(crate) fn commit(&self, index: u64) {
        let mut ring = self.lock();
        ring.last = index;
        let staged = std::mem::take(&mut ring.staged);
        let added = !staged.is_empty();
        for event in staged {
            debug_assert_eq!(event.index, index, "a change recorded for another entry");
            ring.end += event.cost() as u64;
            let end = ring.end;
            ring.events.push_back((Arc::new(event), end));
        }
        while ring.end - ring.start > ring.retain_bytes {
            let Some(oldest) = ring.events.front().map(|(event, _)| event.index) else { break };
            if oldest == index {
                break;
            }
            while let Some((event, end)) = ring.events.front() {
                if event.index != oldest {
                    break;
                }
                ring.start = *end;
                ring.events.pop_front();
            }
            ring.floor = oldest;
        }
        drop(ring);
        if !added {
            return;
        }
        // Waking the streams costs a lock per shard of tokio's notifier for every entry, even
        // when no stream waits: with none subscribed, the tail moves without a wake-up. A
        // stream subscribes before it reads the history, so one that subscribes after this
        // check finds these events in the ring.
        if self.tail.receiver_count() > 0 {
            self.tail.send_replace(index);
        } else {
            self.tail.send_if_modified(|tail| {
                *tail = index;
                false
            });
        }
    }

    /// The state was replaced by a snapshot at `index`: the history starts again there.
    pub(crate) fn reset(&self, index: u64) {
        let mut ring = self.lock();
        ring.events.clear();
        ring.staged.clear();
        ring.start = ring.end;
        ring.floor = index;
        ring.last = index;
        drop(ring);
        // Streams behind the new floor learn of it at their next read.
        self.tail.send_replace(index);
    }

    /// The index the history is complete after.
    pub fn floor(&self) -> u64 {
        self.lock().floor
    }

    /// The last applied index the history has taken in.
    pub fn last(&self) -> u64 {
        self.lock().last
    }

    /// A receiver that changes whenever events are added (or the history restarts).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tail.subscribe()
    }

    /// The events after `cursor`, whole entries, at most about `max_bytes` of them (at least
    /// one entry).
    pub fn read(&self, cursor: u64, max_bytes: u64) -> Read {
        let ring = self.lock();
        if cursor < ring.floor {
            return Read::Gone { floor: ring.floor };
        }
        let first = ring.events.partition_point(|(event, _)| event.index <= cursor);
        let Some((_, first_end)) = ring.events.get(first) else {
            return Read::Events { events: Vec::new(), upto: ring.last.max(cursor), left_bytes: 0 };
        };
        let before = first_end - ring.events[first].0.cost() as u64;
        let mut events = Vec::new();
        let mut upto = ring.last.max(cursor);
        let mut taken_end = before;
        for (event, end) in ring.events.range(first..) {
            let over = end - before > max_bytes;
            if over && events.last().is_some_and(|last: &Arc<Event>| last.index != event.index) {
                upto = event.index - 1;
                break;
            }
            events.push(Arc::clone(event));
            taken_end = *end;
        }
        Read::Events { events, upto, left_bytes: ring.end - taken_end }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(index: u64, key: &str, value_bytes: usize) -> Event {
        Event {
            index,
            kind: Kind::Put,
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from(vec![b'v'; value_bytes]),
            create_index: index,
            flags: 0,
            prev: None,
        }
    }

    fn indexes(read: &Read) -> Vec<u64> {
        match read {
            Read::Events { events, .. } => events.iter().map(|event| event.index).collect(),
            Read::Gone { floor } => panic!("gone, floor {floor}"),
        }
    }

    #[test]
    fn a_reader_gets_whole_entries_after_its_cursor_and_a_discarded_entry_never() {
        let feed = Feed::default();
        feed.record(put(1, "a", 1));
        feed.record(put(1, "b", 1));
        feed.commit(1);
        feed.record(put(2, "c", 1));
        feed.discard_from(0);
        feed.commit(2);
        feed.commit(3);
        feed.record(put(4, "d", 1));
        feed.commit(4);
        assert_eq!(indexes(&feed.read(0, u64::MAX)), vec![1, 1, 4]);
        assert_eq!(indexes(&feed.read(1, u64::MAX)), vec![4]);
        // A small batch still ends at an entry's end.
        let Read::Events { events, upto, .. } = feed.read(0, 1) else { panic!("gone") };
        assert_eq!((events.len(), upto), (2, 3));
        let Read::Events { events, upto, .. } = feed.read(4, u64::MAX) else { panic!("gone") };
        assert!(events.is_empty());
        assert_eq!(upto, 4);
    }

    #[test]
    fn past_its_budget_the_history_drops_its_oldest_entries_and_says_from_where_it_is_complete() {
        let feed = Feed::default();
        let cost = put(1, "k", 100).cost() as u64;
        feed.set_retain_bytes(cost * 2);
        for index in 1..=5 {
            feed.record(put(index, "k", 100));
            feed.commit(index);
        }
        assert_eq!(feed.floor(), 3);
        assert!(matches!(feed.read(2, u64::MAX), Read::Gone { floor: 3 }));
        assert_eq!(indexes(&feed.read(3, u64::MAX)), vec![4, 5]);
        // The newest entry stays even when it alone is over the budget.
        feed.record(put(6, "k", 10_000));
        feed.commit(6);
        assert_eq!(indexes(&feed.read(5, u64::MAX)), vec![6]);
        feed.reset(9);
        assert!(matches!(feed.read(6, u64::MAX), Read::Gone { floor: 9 }));
        assert_eq!(indexes(&feed.read(9, u64::MAX)), Vec::<u64>::new());
    }
}
