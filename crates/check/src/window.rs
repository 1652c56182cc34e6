//! Narrowing a violation down to a window of the history a human can read.
//!
//! **The culprit.** Cut the key's history at the completion of an operation: keep the
//! operations invoked by then, with the results of those completed by then, and treat the
//! others as of unknown outcome. Such a cut is linearizable if the whole history is, and if
//! one cut is not, no later cut is either; so a binary search over completions finds the
//! first completion whose cut is not linearizable. That operation is the culprit: it is the
//! first one whose result no order can explain. (Prefixes by invocation would not do: a read
//! may see a write invoked after it, and cutting the write off would blame the read.)
//!
//! **The window** holds the culprit, the operations of that cut that overlap it in time, and
//! the few that completed just before it was invoked, in invocation order. Writes of unknown
//! outcome whose value no operation of the window reads or compares against are counted but
//! not shown: during a partition dozens of clients time out, and their writes would bury the
//! few operations that matter.
//!
//! **Self-contained windows.** The window (hidden writes included) is checked again on its
//! own, from any state the operations before it could have left (absent, or a value they
//! wrote). An operation of the window invoked before an earlier operation completed may have
//! taken effect before that one, so alone it proves little: its write counts as one that may
//! or may not show, and its read (or failed cas) not at all. If the window still has no
//! linearization, the explanation says the window alone proves the violation; otherwise it
//! counts the operations of the whole cut.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::check::counted;
use crate::history::{Call, Checked, Effect, Operation, Outcome, Reply};
use crate::search::{ABSENT, State, Step, Values, search};
use crate::{Options, Verdict};

/// A key whose history is not linearizable, with the evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The key whose history is not linearizable.
    pub key: String,
    /// One line, for instance `get by client 2 at 1.234s returned "v16", but no
    /// linearization of the 7 operations in this window allows it, whatever earlier
    /// operations left in the key`.
    pub explanation: String,
    /// The operations around the culprit.
    pub window: Window,
}

/// A few operations of one key around the first one that cannot be linearized. Its
/// `Display` prints one aligned line per operation, times in milliseconds from the first
/// invocation of the window, the culprit marked with `>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// In invocation order; never empty.
    pub operations: Vec<WindowOperation>,
    /// Position in `operations` of the first operation that cannot be linearized.
    pub culprit: usize,
    /// Whether these operations (with the hidden ones) alone have no linearization, from any
    /// state the operations before them could have left.
    pub self_contained: bool,
    /// Writes of unknown outcome that overlap the culprit but are not shown, because no
    /// operation shown reads or compares against their value. They were part of every check.
    pub hidden_unknown_outcomes: usize,
}

/// An operation of a window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowOperation {
    /// Its position in the checked history.
    pub history_index: usize,
    /// The operation, as recorded.
    pub operation: Operation,
}

impl Window {
    /// The operation that cannot be linearized.
    pub fn culprit(&self) -> &Operation {
        &self.operations[self.culprit].operation
    }

    /// When the culprit completed (it always did: an unknown outcome explains anything).
    pub(crate) fn culprit_complete_ns(&self) -> u64 {
        match self.culprit().outcome {
            Outcome::Ok { at_ns, .. } => at_ns,
            Outcome::Unknown | Outcome::Failed => u64::MAX,
        }
    }
}

/// Builds the violation of a key whose `operations` (sorted by invocation) are known not to
/// be linearizable. `values` numbers the key's values.
pub(crate) fn find_violation<'h>(
    history: &'h [Operation],
    key: &str,
    operations: &[Checked<'h>],
    values: &mut Values<'h>,
    options: &Options,
) -> Violation {
    let cuts = Cuts::new(operations);
    let culprit_rank = cuts.first_unlinearizable(values, options.max_steps_per_key);
    let culprit = cuts.by_completion[culprit_rank];
    let in_cut = cuts.invoked_by(culprit_rank);

    // The window: the culprit, what overlaps it, and the latest operations completed before.
    let (mut window, mut before): (Vec<usize>, Vec<usize>) =
        (0..in_cut).partition(|&position| operations[position].overlaps(&operations[culprit]));
    before.sort_by_key(|&position| (operations[position].complete_ns, position));
    let context = before.split_off(before.len().saturating_sub(options.context_operations));
    let earlier = before;
    window.extend(context);
    window.sort_unstable();

    let self_contained = window_alone_fails(&cuts, culprit_rank, &window, &earlier, values, options.max_steps_per_key);
    let shown = shown_operations(operations, &window);
    let window = Window {
        culprit: shown.iter().position(|&position| position == culprit).expect("the culprit is in its window"),
        hidden_unknown_outcomes: window.len() - shown.len(),
        operations: shown
            .iter()
            .map(|&position| {
                let index = operations[position].index;
                WindowOperation { history_index: index, operation: history[index].clone() }
            })
            .collect(),
        self_contained,
    };
    let hidden = match window.hidden_unknown_outcomes {
        0 => String::new(),
        count => format!(" (with {} of unknown outcome, not shown)", counted(count, "more write")),
    };
    let because = if self_contained {
        let shown = counted(window.operations.len(), "operation");
        format!(
            "no linearization of the {shown} in this window{hidden} allows it, \
             whatever earlier operations left in the key"
        )
    } else {
        format!("no linearization of the {} invoked before it completed allows it", counted(in_cut, "operation"))
    };
    Violation { key: key.to_owned(), explanation: format!("{}, but {because}", describe(window.culprit())), window }
}

/// The positions of `window` worth showing: all but the writes of unknown outcome whose
/// value no operation of the window reads or compares against.
fn shown_operations(operations: &[Checked<'_>], window: &[usize]) -> Vec<usize> {
    let mentioned: BTreeSet<Option<&str>> = window
        .iter()
        .filter_map(|&position| match operations[position].effect {
            Effect::Read(observed) => Some(observed),
            Effect::Cas { expected, .. } => Some(expected),
            Effect::Write(_) => None,
        })
        .collect();
    window
        .iter()
        .copied()
        .filter(|&position| {
            let operation = &operations[position];
            operation.complete_ns.is_some() || operation.written().is_some_and(|value| mentioned.contains(&value))
        })
        .collect()
}

/// The cuts of one key's history at each completion (see the module's documentation).
struct Cuts<'c, 'h> {
    /// Sorted by invocation.
    operations: &'c [Checked<'h>],
    /// Positions of the completed operations, by completion.
    by_completion: Vec<usize>,
    /// Per position, the rank in `by_completion`, or `usize::MAX` for an unknown outcome.
    rank: Vec<usize>,
}

impl<'c, 'h> Cuts<'c, 'h> {
    fn new(operations: &'c [Checked<'h>]) -> Self {
        let mut by_completion: Vec<usize> =
            (0..operations.len()).filter(|&position| operations[position].complete_ns.is_some()).collect();
        by_completion.sort_by_key(|&position| (operations[position].complete_ns, position));
        let mut rank = vec![usize::MAX; operations.len()];
        for (completion_rank, &position) in by_completion.iter().enumerate() {
            rank[position] = completion_rank;
        }
        Self { operations, by_completion, rank }
    }

    /// How many operations (a prefix by invocation) the cut at the completion of rank `cut`
    /// holds: those invoked by then (ties count as concurrent).
    fn invoked_by(&self, cut: usize) -> usize {
        let cut_ns = self.operations[self.by_completion[cut]].complete_ns;
        self.operations.partition_point(|operation| Some(operation.invoke_ns) <= cut_ns)
    }

    /// The operation at `position` as the cut at rank `cut` sees it: with its result if it
    /// completed by then, of unknown outcome otherwise (`None` for a read, which then
    /// constrains nothing).
    fn seen_by(&self, cut: usize, position: usize) -> Option<Checked<'h>> {
        let operation = self.operations[position];
        if self.rank[position] <= cut { Some(operation) } else { operation.with_unknown_outcome() }
    }

    /// The rank of the first completion whose cut is not linearizable. The whole history is
    /// known not to be; a cut on which the search gives up counts as linearizable, so the
    /// answer is always a cut proven not linearizable.
    fn first_unlinearizable(&self, values: &mut Values<'h>, max_steps: u64) -> usize {
        let last = self.by_completion.len().checked_sub(1).expect("a history that is not linearizable has completions");
        let (mut low, mut high) = (0, last);
        while low < high {
            let middle = low + (high - low) / 2;
            let cut: Vec<_> = (0..self.invoked_by(middle))
                .filter_map(|position| self.seen_by(middle, position))
                .map(|operation| values.search_op(&operation))
                .collect();
            if search(&cut, ABSENT, max_steps).verdict == Verdict::NotLinearizable {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        low
    }
}

/// Whether the `window` (positions, sorted) of the cut at rank `cut` has no linearization on
/// its own, `earlier` being the operations of the cut left out of it (all completed before
/// the culprit was invoked).
fn window_alone_fails<'h>(
    cuts: &Cuts<'_, 'h>,
    cut: usize,
    window: &[usize],
    earlier: &[usize],
    values: &mut Values<'h>,
    max_steps: u64,
) -> bool {
    let operations = cuts.operations;
    let last_earlier_ns = earlier.iter().filter_map(|&position| operations[position].complete_ns).max();
    let mut possible_states = BTreeSet::from([ABSENT]);
    let mut search_ops = Vec::new();
    for &position in earlier {
        if let Some(value) = operations[position].written() {
            possible_states.insert(values.number(value));
        }
    }
    for &position in window {
        let Some(operation) = cuts.seen_by(cut, position) else { continue };
        let straddles = last_earlier_ns.is_some_and(|last| operation.invoke_ns <= last);
        if !straddles {
            search_ops.push(values.search_op(&operation));
        } else if let Some(value) = operation.written() {
            // It may have taken effect before an earlier operation, and been overwritten.
            possible_states.insert(values.number(value));
            let write = Checked { complete_ns: None, effect: Effect::Write(value), ..operation };
            search_ops.push(values.search_op(&write));
        }
    }
    // Starting states nothing in the window reads or compares against behave alike: one of
    // them stands for all.
    let mut observed = BTreeSet::new();
    for search_op in &search_ops {
        match search_op.step {
            Step::Read(state) | Step::Cas { expected: state, .. } => observed.insert(state),
            Step::Write(_) => false,
        };
    }
    let mut initial_states: Vec<State> = possible_states.intersection(&observed).copied().collect();
    initial_states.extend(possible_states.difference(&observed).next());
    // One budget for all the starting states.
    let mut steps_left = max_steps;
    initial_states.iter().all(|&initial| {
        let outcome = search(&search_ops, initial, steps_left);
        steps_left -= outcome.steps;
        outcome.verdict == Verdict::NotLinearizable
    })
}

/// `get by client 2 at 1.234s returned "v16"`, `cas "a" -> "b" by client 1 at 0.5s
/// succeeded`, ...
fn describe(operation: &Operation) -> String {
    let what = match (&operation.call, &operation.outcome) {
        (Call::Get, Outcome::Ok { result, .. }) => format!("returned {result}"),
        (Call::Cas { .. }, Outcome::Ok { result: Reply::Swapped(true), .. }) => "succeeded".to_owned(),
        (Call::Cas { .. }, Outcome::Ok { result: Reply::Swapped(false), .. }) => "failed".to_owned(),
        _ => "completed".to_owned(),
    };
    format!("{} by client {} at {}s {what}", operation.call, operation.client, seconds(operation.invoke_ns))
}

/// Seconds with millisecond precision, trailing zeros dropped: `1.234`, `0.5`, `3`.
fn seconds(ns: u64) -> String {
    let text = format!("{}.{:03}", ns / 1_000_000_000, ns / 1_000_000 % 1000);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Milliseconds with microsecond precision: `12.345`.
fn milliseconds(ns: u64) -> String {
    format!("{}.{:03}", ns / 1_000_000, ns / 1000 % 1000)
}

impl fmt::Display for Window {
    /// ```text
    /// times in ms from 1.2s:
    ///   client  invoked  completed  call     result
    ///        1    0.000      2.000  put "a"  ok
    ///        2    3.000      4.500  put "b"  ok
    /// >      1    5.000      6.000  get      "a"
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin_ns = self.operations.first().map_or(0, |first| first.operation.invoke_ns);
        let since = |ns: u64| milliseconds(ns.saturating_sub(origin_ns));
        let mut rows = vec![["", "client", "invoked", "completed", "call", "result"].map(str::to_owned)];
        for (position, WindowOperation { operation, .. }) in self.operations.iter().enumerate() {
            let (completed, result) = match &operation.outcome {
                Outcome::Ok { at_ns, result } => (since(*at_ns), result.to_string()),
                Outcome::Unknown => ("?".to_owned(), "unknown".to_owned()),
                Outcome::Failed => ("-".to_owned(), "failed".to_owned()),
            };
            let marker = if position == self.culprit { ">" } else { "" };
            let (client, invoked, call) =
                (operation.client.to_string(), since(operation.invoke_ns), operation.call.to_string());
            rows.push([marker.to_owned(), client, invoked, completed, call, result]);
        }
        let width = |column: usize| rows.iter().map(|row| row[column].chars().count()).max().unwrap_or(0);
        let widths = [0, 1, 2, 3, 4].map(width);
        writeln!(f, "times in ms from {}s:", seconds(origin_ns))?;
        for [marker, client, invoked, completed, call, result] in &rows {
            let line = format!(
                "{marker:<w0$}  {client:>w1$}  {invoked:>w2$}  {completed:>w3$}  {call:<w4$}  {result}",
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
                w4 = widths[4],
            );
            writeln!(f, "{}", line.trim_end())?;
        }
        match self.hidden_unknown_outcomes {
            0 => Ok(()),
            1 => writeln!(f, "(and 1 write of unknown outcome, not shown: nothing above reads its value)"),
            count => {
                writeln!(f, "(and {count} writes of unknown outcome, not shown: nothing above reads their values)")
            }
        }
    }
}

impl fmt::Display for Violation {
    /// `key "k": <explanation>` and the window.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "key {:?}: {}", self.key, self.explanation)?;
        write!(f, "{}", self.window)
    }
}
