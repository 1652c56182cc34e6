//! The virtual clock's agenda. Events are ordered by `(time, sequence number)`: two events
//! due at the same virtual millisecond run in the order they were scheduled, so nothing
//! depends on a hash or an allocation address and a seed replays exactly.

use std::collections::BTreeMap;

/// A queue of events keyed by virtual time, first in first out among equal times.
pub struct EventQueue<E> {
    events: BTreeMap<(u64, u64), E>,
    next_sequence: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue { events: BTreeMap::new(), next_sequence: 0 }
    }
}

impl<E> EventQueue<E> {
    /// Schedules `event` at virtual time `time_ms`.
    pub fn push(&mut self, time_ms: u64, event: E) {
        self.events.insert((time_ms, self.next_sequence), event);
        self.next_sequence += 1;
    }

    /// Takes the earliest event and its time.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        self.events.pop_first().map(|((time_ms, _), event)| (time_ms, event))
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_times_keep_scheduling_order() {
        let mut queue = EventQueue::default();
        queue.push(5, "late");
        queue.push(1, "first");
        queue.push(1, "second");
        assert_eq!(queue.pop(), Some((1, "first")));
        assert_eq!(queue.pop(), Some((1, "second")));
        assert_eq!(queue.pop(), Some((5, "late")));
        assert!(queue.is_empty());
    }
}
