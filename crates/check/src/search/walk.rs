//! The search itself: the walk over the event list, lifting, backtracking.

use super::prune::{Cache, Demand, Lifted};
use super::{SearchOp, SearchOutcome, State, Step};
use crate::Verdict;

const NIL: u32 = u32::MAX;
/// The head sentinel of the event list.
const HEAD: u32 = 0;

/// Where the walk is: at an entry of the event list (a call or a return), or at a position
/// in the candidates of the phase on top of `Search::phases`.
#[derive(Clone, Copy)]
enum Cursor {
    Completed(u32),
    Unknown(usize),
}

/// A lifted operation, and what to restore when it is put back.
struct Frame {
    at: Cursor,
    operation: u32,
    state_before: State,
    /// Lifted as the only choice worth exploring (see `Search::forced_read`): once it is put
    /// back, its configuration has nothing else to try.
    forced: bool,
}

/// The unknown-outcome operations to try once the walk over completed ones reaches a return.
/// Phases nest like the stack of lifted operations: a phase ends (its candidates are all
/// tried) before the search backtracks past the configuration it belongs to.
///
/// Only the unknown-outcome writes whose value an operation that may take effect next
/// wants are candidates. This loses nothing: in a linearization with as few unknown-outcome
/// operations as possible, each placed as late as possible, each one is immediately followed
/// by an operation that reads its value, compares against it (a cas, perhaps itself of
/// unknown outcome and so wanted in turn), or is a failed cas that needs the register to
/// hold anything but what it holds.
struct Phase {
    /// Numbers of unknown-outcome operations, by invocation.
    candidates: Vec<u32>,
}

/// A doubly linked list over entries `1..`, entry 0 being the head. Removed entries keep
/// their links, so they go back in place if removals are undone in reverse (dancing links).
struct Links {
    next: Vec<u32>,
    prev: Vec<u32>,
}

impl Links {
    fn new(len: usize) -> Self {
        let len = u32::try_from(len).expect("fewer than 2^32 events on one key");
        let next = (0..=len).map(|entry| if entry == len { NIL } else { entry + 1 }).collect();
        let prev = (0..=len).map(|entry| entry.wrapping_sub(1)).collect();
        Self { next, prev }
    }

    fn remove(&mut self, entry: u32) {
        let (prev, next) = (self.prev[entry as usize], self.next[entry as usize]);
        self.next[prev as usize] = next;
        if next != NIL {
            self.prev[next as usize] = prev;
        }
    }

    fn restore(&mut self, entry: u32) {
        let (prev, next) = (self.prev[entry as usize], self.next[entry as usize]);
        self.next[prev as usize] = entry;
        if next != NIL {
            self.prev[next as usize] = entry;
        }
    }
}

/// An event of a completed operation.
#[derive(Clone, Copy)]
struct Event {
    /// Index into `Search::operations`.
    operation: u32,
    is_call: bool,
    at_ns: u64,
}

pub(super) struct Search<'o> {
    operations: &'o [SearchOp],
    /// Completed operations' events by time; `events[0]` is the head and unused.
    events: Vec<Event>,
    /// The events not lifted.
    list: Links,
    /// Per operation, its return event, or `NIL` for an unknown outcome.
    return_event: Vec<u32>,
    /// Per number, the unknown-outcome operation, by invocation.
    unknown_operation: Vec<u32>,
    /// Per state, the numbers of the unknown-outcome operations that write it, by invocation.
    unknown_writers: Vec<Vec<u32>>,
    /// Per operation, its number in the lifted set (completed and unknown ones separately).
    number: Vec<usize>,
    lifted: Lifted,
    demand: Demand,
    state: State,
    completed_left: usize,
    stack: Vec<Frame>,
    phases: Vec<Phase>,
}

impl<'o> Search<'o> {
    pub(super) fn new(operations: &'o [SearchOp], initial: State) -> Self {
        let mut by_invocation: Vec<u32> =
            (0..u32::try_from(operations.len()).expect("fewer than 2^32 operations on one key")).collect();
        by_invocation.sort_by_key(|&i| (operations[i as usize].invoke_ns, i));
        let mut events = vec![Event { operation: NIL, is_call: true, at_ns: 0 }];
        let mut unknown_operation = Vec::new();
        let mut number = vec![0; operations.len()];
        for &i in &by_invocation {
            let operation = &operations[i as usize];
            match operation.complete_ns {
                Some(complete_ns) => {
                    number[i as usize] = events.len() / 2;
                    events.push(Event { operation: i, is_call: true, at_ns: operation.invoke_ns });
                    events.push(Event { operation: i, is_call: false, at_ns: complete_ns });
                }
                None => {
                    number[i as usize] = unknown_operation.len();
                    unknown_operation.push(i);
                }
            }
        }
        // Calls before returns at equal times; then by invocation, for determinism.
        events[1..].sort_by_key(|event| (event.at_ns, !event.is_call, number[event.operation as usize]));
        let mut return_event = vec![NIL; operations.len()];
        for (entry, event) in (0..).zip(&events).skip(1) {
            if !event.is_call {
                return_event[event.operation as usize] = entry;
            }
        }
        let demand = Demand::new(operations, initial);
        let mut unknown_writers = vec![Vec::new(); demand.states()];
        for (unknown, &operation) in (0..).zip(&unknown_operation) {
            let written = operations[operation as usize].step.written();
            unknown_writers[written.expect("an operation of unknown outcome writes") as usize].push(unknown);
        }
        let completed_count = (events.len() - 1) / 2;
        Self {
            operations,
            list: Links::new(events.len() - 1),
            events,
            return_event,
            lifted: Lifted::new(completed_count, unknown_operation.len()),
            unknown_operation,
            unknown_writers,
            number,
            demand,
            state: initial,
            completed_left: completed_count,
            stack: Vec::new(),
            phases: Vec::new(),
        }
    }

    pub(super) fn run(mut self, max_steps: u64) -> SearchOutcome {
        let mut cache = Cache::default();
        let mut key = Vec::new();
        let mut cursor = Cursor::Completed(self.list.next[HEAD as usize]);
        // Whether the configuration just reached still has to look for a forced read, and
        // whether the candidate at hand is one.
        let (mut forced_read_pending, mut forced) = (true, false);
        let mut steps = 0;
        while self.completed_left > 0 {
            steps += 1;
            if steps > max_steps {
                return SearchOutcome { verdict: Verdict::Unknown, steps: max_steps };
            }
            let candidate = match cursor {
                Cursor::Completed(_) if forced_read_pending => {
                    // A new configuration: a read that fits goes first, and alone.
                    forced_read_pending = false;
                    let Some(call) = self.forced_read() else { continue };
                    forced = true;
                    cursor = Cursor::Completed(call);
                    self.events[call as usize].operation
                }
                Cursor::Completed(entry) => {
                    assert_ne!(entry, NIL, "a completed operation is left, so its return is in the list");
                    let event = self.events[entry as usize];
                    if !event.is_call {
                        let phase = self.phase(entry);
                        self.phases.push(phase);
                        cursor = Cursor::Unknown(0);
                        continue;
                    }
                    if self.operations[event.operation as usize].step.written().is_none() {
                        // A read: none fits this configuration, or it would have been forced.
                        steps -= 1;
                        cursor = Cursor::Completed(self.list.next[entry as usize]);
                        continue;
                    }
                    event.operation
                }
                Cursor::Unknown(position) => {
                    let phase = self.phases.last().expect("a walk over unknown outcomes is in a phase");
                    match phase.candidates.get(position) {
                        Some(&unknown) => self.unknown_operation[unknown as usize],
                        None => {
                            // Nothing may take effect next: undo the last choice, try the next.
                            self.phases.pop();
                            match self.backtrack() {
                                Some(next) => cursor = next,
                                None => return SearchOutcome { verdict: Verdict::NotLinearizable, steps },
                            }
                            continue;
                        }
                    }
                }
            };
            if self.try_lift(candidate, cursor, forced, &mut cache, &mut key) {
                cursor = Cursor::Completed(self.list.next[HEAD as usize]);
                (forced, forced_read_pending) = (false, true);
                continue;
            }
            if forced {
                // The only child worth exploring was explored before.
                forced = false;
                match self.backtrack() {
                    Some(next) => cursor = next,
                    None => return SearchOutcome { verdict: Verdict::NotLinearizable, steps },
                }
                continue;
            }
            cursor = match cursor {
                Cursor::Completed(entry) => Cursor::Completed(self.list.next[entry as usize]),
                Cursor::Unknown(position) => Cursor::Unknown(position + 1),
            };
        }
        SearchOutcome { verdict: Verdict::Linearizable, steps }
    }

    /// Lifts `candidate`, found at `cursor`, if the register allows its result, it strands no
    /// value still needed, and the configuration it leads to is new; returns whether it did.
    fn try_lift(
        &mut self,
        candidate: u32,
        cursor: Cursor,
        forced: bool,
        cache: &mut Cache,
        key: &mut Vec<u64>,
    ) -> bool {
        let step = self.operations[candidate as usize].step;
        let Some(state_after) = step.apply(self.state) else { return false };
        if !self.demand.lift(candidate, step, state_after != self.state, self.state) {
            return false;
        }
        let completed = self.return_event[candidate as usize] != NIL;
        let number = self.number[candidate as usize];
        self.lifted.insert(completed, number);
        self.lifted.completed_key(state_after, key);
        if !cache.insert(key, self.lifted.unknown()) {
            self.lifted.remove(completed, number);
            self.demand.put_back(candidate, step);
            return false;
        }
        self.stack.push(Frame { at: cursor, operation: candidate, state_before: self.state, forced });
        self.state = state_after;
        if let Cursor::Completed(call) = cursor {
            self.list.remove(call);
            self.list.remove(self.return_event[candidate as usize]);
            self.completed_left -= 1;
        }
        true
    }

    /// A call that may take effect next, leaves the register as it is, and fits its state (a
    /// get that returned it, a cas that failed on another value). Taking it right away loses
    /// nothing: wherever a linearization places it later, it fits here too and changes
    /// nothing. So it is the only choice explored, which spares the search the subsets of
    /// concurrent reads.
    fn forced_read(&self) -> Option<u32> {
        let mut entry = self.list.next[HEAD as usize];
        while entry != NIL && self.events[entry as usize].is_call {
            let step = self.operations[self.events[entry as usize].operation as usize].step;
            if step.written().is_none() && step.apply(self.state).is_some() {
                return Some(entry);
            }
            entry = self.list.next[entry as usize];
        }
        None
    }

    /// Puts back lifted operations up to and including the last one that was a free choice;
    /// returns where the walk goes on, or `None` if there is nothing left to try.
    fn backtrack(&mut self) -> Option<Cursor> {
        loop {
            let frame = self.stack.pop()?;
            let operation = frame.operation as usize;
            self.state = frame.state_before;
            self.demand.put_back(frame.operation, self.operations[operation].step);
            let cursor = match frame.at {
                Cursor::Completed(call) => {
                    self.list.restore(self.return_event[operation]);
                    self.list.restore(call);
                    self.completed_left += 1;
                    self.lifted.remove(true, self.number[operation]);
                    Cursor::Completed(self.list.next[call as usize])
                }
                Cursor::Unknown(position) => {
                    self.lifted.remove(false, self.number[operation]);
                    Cursor::Unknown(position + 1)
                }
            };
            if !frame.forced {
                return Some(cursor);
            }
        }
    }

    /// The phase that starts when the walk reaches the return event `first_return`.
    fn phase(&self, first_return: u32) -> Phase {
        // Unknown-outcome operations invoked after the return cannot take effect yet.
        let bound_ns = self.events[first_return as usize].at_ns;
        let mut wanted = Vec::new();
        let mut anything_but_current = false;
        let mut entry = self.list.next[HEAD as usize];
        while entry != first_return {
            match self.operations[self.events[entry as usize].operation as usize].step {
                Step::Read(value) | Step::Cas { expected: value, swapped: Some(true) | None, .. } => wanted.push(value),
                Step::Cas { expected, swapped: Some(false), .. } => anything_but_current |= expected == self.state,
                Step::Write(_) => {}
            }
            entry = self.list.next[entry as usize];
        }
        let invoked =
            |unknown: &u32| self.operations[self.unknown_operation[*unknown as usize] as usize].invoke_ns <= bound_ns;
        let lifted = |unknown: &u32| self.lifted.contains_unknown(*unknown as usize);
        let mut candidates: Vec<u32> = if anything_but_current {
            let all = 0..u32::try_from(self.unknown_operation.len()).expect("numbers fit in u32");
            all.take_while(invoked).filter(|unknown| !lifted(unknown)).collect()
        } else {
            // The writers of wanted values, and the writers of the values that those of them
            // that are cas expect.
            let mut candidates = Vec::new();
            wanted.sort_unstable();
            wanted.dedup();
            let mut seen = wanted.clone();
            while let Some(value) = wanted.pop() {
                for &unknown in self.unknown_writers[value as usize].iter().take_while(|unknown| invoked(unknown)) {
                    if lifted(&unknown) {
                        continue;
                    }
                    candidates.push(unknown);
                    let operation = self.unknown_operation[unknown as usize] as usize;
                    if let Step::Cas { expected, .. } = self.operations[operation].step
                        && !seen.contains(&expected)
                    {
                        seen.push(expected);
                        wanted.push(expected);
                    }
                }
            }
            candidates
        };
        candidates.sort_unstable();
        Phase { candidates }
    }
}
