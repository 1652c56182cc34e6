//! Wing & Gong's search for a linearization of one register's history, with Lowe's
//! memoisation (the algorithm of Knossos' "linear" checker and of Porcupine), and prunings
//! that keep it fast on real histories.
//!
//! **The walk** (`walk.rs`). The completed operations become a doubly linked list of events
//! sorted by time, a call and a return each; at equal times calls come first, so operations
//! that touch at one instant count as concurrent (the checker never blames a history for its
//! clock's resolution). The calls before the first remaining return are exactly the
//! operations that may take effect next. The search tries each: if the register allows its
//! result, the operation is *lifted* (its events leave the list, it goes on a stack with the
//! state before it) and the walk starts over. Reaching a return means that operation can no
//! longer be placed, so the search puts back the last choice and tries the next one.
//!
//! **Unknown outcomes** have no return: they never have to be lifted, and the search succeeds
//! once every completed operation is. They are tried only when the walk reaches a return,
//! and only those whose value an operation that may go next wants (a `Phase`).
//!
//! **Prunings** (`prune.rs`), each sound, and checked against brute force in the tests:
//! - *Memoisation*: a configuration (lifted set, state) is explored once; one that differs
//!   from a visited one only by more unknown-outcome operations lifted is *subsumed* and
//!   skipped, since those never have to happen.
//! - *Forced reads*: a get (or failed cas) that may go next and fits the state is taken at
//!   once, as the only choice: it changes nothing, so taking it later cannot be better.
//! - *Demand*: a write that replaces a value some get still has to return, when no write of
//!   that value can take effect before that get completes, is refused at once instead of
//!   at the get's return, after every order of the operations in between.
//!
//! A *step* is a candidate tried or a backtrack; the budget counts steps.

mod prune;
mod walk;

use std::collections::HashMap;

use crate::Verdict;
use crate::history::{Checked, Effect};

/// The register's state: `ABSENT`, or the number of a value given by [`Values`].
pub(crate) type State = u32;

/// The state of a key that holds nothing.
pub(crate) const ABSENT: State = 0;

/// Numbers the values of one key, so states compare as integers. `ABSENT` is 0.
#[derive(Default)]
pub(crate) struct Values<'h> {
    numbers: HashMap<&'h str, State>,
}

impl<'h> Values<'h> {
    pub fn number(&mut self, value: Option<&'h str>) -> State {
        let Some(value) = value else { return ABSENT };
        let next = State::try_from(self.numbers.len() + 1).expect("fewer than 2^32 distinct values on one key");
        *self.numbers.entry(value).or_insert(next)
    }

    pub fn search_op(&mut self, operation: &Checked<'h>) -> SearchOp {
        let step = match operation.effect {
            Effect::Read(observed) => Step::Read(self.number(observed)),
            Effect::Write(value) => Step::Write(self.number(value)),
            Effect::Cas { expected, new, swapped } => {
                Step::Cas { expected: self.number(expected), new: self.number(Some(new)), swapped }
            }
        };
        SearchOp { invoke_ns: operation.invoke_ns, complete_ns: operation.complete_ns, step }
    }
}

/// One operation of the register, as the search sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SearchOp {
    pub invoke_ns: u64,
    /// `None`: unknown outcome, never has to take effect.
    pub complete_ns: Option<u64>,
    pub step: Step,
}

/// What an operation does to the register, with the result its client saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A get that returned this state.
    Read(State),
    /// A put, or a delete (`Write(ABSENT)`).
    Write(State),
    /// A cas; `swapped` is `None` if the outcome is unknown.
    Cas { expected: State, new: State, swapped: Option<bool> },
}

impl Step {
    /// The value this step writes if it takes effect and changes the register.
    fn written(self) -> Option<State> {
        match self {
            Self::Read(_) | Self::Cas { swapped: Some(false), .. } => None,
            Self::Write(value) | Self::Cas { new: value, .. } => Some(value),
        }
    }

    /// The state after this step takes effect in `state`, or `None` if it cannot take effect
    /// there with the result its client saw. A cas of unknown outcome that would fail changes
    /// nothing, so it is not worth trying: `None` too.
    fn apply(self, state: State) -> Option<State> {
        match self {
            Self::Read(observed) => (observed == state).then_some(state),
            Self::Write(value) => Some(value),
            Self::Cas { expected, new, swapped: Some(true) | None } => (expected == state).then_some(new),
            Self::Cas { expected, swapped: Some(false), .. } => (expected != state).then_some(state),
        }
    }
}

/// The result of one search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SearchOutcome {
    /// `Unknown` if the search ran out of steps.
    pub verdict: Verdict,
    /// Candidates tried plus backtracks.
    pub steps: u64,
}

/// Searches for a linearization of `operations` (in any order) from `initial`, giving up
/// after `max_steps` steps.
pub(crate) fn search(operations: &[SearchOp], initial: State, max_steps: u64) -> SearchOutcome {
    walk::Search::new(operations, initial).run(max_steps)
}
