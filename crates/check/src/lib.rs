//! # skiff-check: is a recorded history of the key-value store linearizable?
//!
//! Skiff promises linearizability: every operation appears to take effect at one instant
//! between the moment its client sent it and the moment the client heard back, and the
//! instants line up into one order that a single copy of the store would produce. A harness
//! (the future `skiff check` command) runs concurrent clients against a real cluster while it
//! kills, pauses and partitions nodes, records what each client asked and was told (a
//! [history](Operation)), and hands it to [`check()`]. This crate only judges histories; it
//! never talks to a cluster.
//!
//! ## The model
//!
//! Each key is an independent register holding absent or a value, and starts absent. A
//! [`Call::Get`] returns what the register holds; [`Call::Put`] writes a value;
//! [`Call::Delete`] makes it absent (deleting a missing key is fine); [`Call::Cas`] writes its
//! new value if and only if the register holds `expected` (`None`: only if absent), and says
//! whether it did. The real API compares a ModifyIndex; the harness translates it into the
//! value read with that index, which is sound because every written value is unique.
//!
//! ## The algorithm
//!
//! Linearizability is compositional (Herlihy & Wing; "P-compositionality" in Horn & Kroening):
//! a history is linearizable if and only if each key's part is, so keys are checked one by
//! one, and a hot key costs only its own search. Per key, the checker runs Wing & Gong's
//! search with Lowe's memoisation, the algorithm of Knossos' "linear" checker and of
//! Porcupine (see `search/`): walk the events in time order, repeatedly pick an operation
//! that was invoked before the earliest pending completion and that the register allows,
//! backtrack when an operation's completion comes and it could not be placed, and never
//! explore twice the same (set of placed operations, register state). Three sound prunings
//! keep it fast when many clients share a key: a get that fits is placed at once and alone;
//! a write that would hide a value some get still has to return is refused at once; a
//! configuration that only differs from a visited one by more timed-out writes placed is
//! skipped. The search is exponential in the worst case (the problem is NP-complete), so each
//! key has a step budget ([`Options::max_steps_per_key`]); a key that exhausts it gets the
//! verdict [`Verdict::Unknown`], never a guess. What costs is concurrency on one key: a
//! history of 300,000 operations over 300 keys checks in well under a second; one key with
//! 32 clients always in flight needs about a million steps per 20,000 operations.
//!
//! ## Unknown and failed outcomes
//!
//! A client that timed out or lost its connection does not know whether its operation took
//! effect: a put, delete or cas of [`Outcome::Unknown`] may take effect at any single moment
//! after its invocation, or never. The search treats it as completing at infinity and
//! succeeds once every operation that did complete is placed, so it never has to place it; it
//! tries placing it only when nothing else fits and something that may go next reads or
//! compares against its value. A get of unknown outcome constrains nothing and is left out.
//! An operation the server refused outright ([`Outcome::Failed`], for instance 503 without a
//! leader) certainly did not happen and is left out too.
//!
//! ## The window
//!
//! A violation is reported with a [`Window`], a handful of operations instead of a history of
//! thousands (see `window.rs`). The checker finds the first completion at which the key's
//! history stops being linearizable: its operation (the culprit) is the first whose result no
//! order explains. The window holds the culprit, the operations overlapping it in time, and
//! the few that completed just before it ([`Options::context_operations`]); writes of unknown
//! outcome whose value nothing in the window reads are counted but not shown. If those
//! operations alone already have no linearization, whatever earlier operations left in the
//! key, the window is [self-contained](Window::self_contained) and the explanation says so.
//! `Display` prints one aligned line per operation, ready for a terminal:
//!
//! ```
//! use skiff_check::{Call, Operation, Options, Outcome, Reply, check};
//!
//! let ms = 1_000_000;
//! let operation = |client, invoke_ms: u64, complete_ms: u64, call, result| Operation {
//!     client,
//!     key: "k".to_owned(),
//!     call,
//!     invoke_ns: invoke_ms * ms,
//!     outcome: Outcome::Ok { at_ns: complete_ms * ms, result },
//! };
//! let history = [
//!     operation(1, 0, 1, Call::Put { value: "a".to_owned() }, Reply::Done),
//!     operation(2, 2, 3, Call::Put { value: "b".to_owned() }, Reply::Done),
//!     operation(1, 4, 5, Call::Get, Reply::Value(Some("a".to_owned()))), // stale
//! ];
//! let report = check(&history, &Options::default())?;
//! assert_eq!(
//!     report.to_string(),
//!     r#"not linearizable: 3 operations checked on 1 key (0 of unknown outcome, 0 left out)
//!
//! key "k": get by client 1 at 0.004s returned "a", but no linearization of the 3 operations in this window allows it, whatever earlier operations left in the key
//! times in ms from 0s:
//!    client  invoked  completed  call     result
//!         1    0.000      1.000  put "a"  ok
//!         2    2.000      3.000  put "b"  ok
//! >       1    4.000      5.000  get      "a"
//! "#
//! );
//! # Ok::<(), skiff_check::InvalidHistory>(())
//! ```
#![forbid(unsafe_code)]

mod check;
mod history;
mod search;
mod window;

pub use check::{KeyReport, Options, Report, Verdict, check};
pub use history::{Call, InvalidHistory, Operation, Outcome, Reply};
pub use window::{Violation, Window, WindowOperation};

#[cfg(test)]
mod tests;
