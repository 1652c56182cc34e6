//! The recorded history: what each client asked, when, and what it was told.
//!
//! These types are what a harness records and saves as JSON. One [`Operation`] reads, in
//! JSON:
//!
//! ```json
//! {"client": 3, "key": "k1", "call": {"op": "put", "value": "v17"}, "invoke_ns": 1200,
//!  "outcome": {"status": "ok", "at_ns": 5400, "result": "done"}}
//! ```
//!
//! Before checking, [`checked_operations`] turns each operation into the internal form the
//! search uses and refuses a history whose operations contradict themselves (a reply that
//! does not fit the call, a completion before the invocation): such a history is a bug in
//! the recorder, and checking it would give a meaningless verdict.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One operation a client issued on one key, and what became of it.
///
/// A client is sequential in a real harness, but the checker does not rely on it: two
/// operations of one client that overlap in time are simply concurrent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// The process that issued the operation (only shown in reports).
    pub client: u64,
    /// The key operated on. Keys are independent registers, checked separately.
    pub key: String,
    /// What was asked.
    pub call: Call,
    /// When the client sent the request, in nanoseconds since the start of the history. All
    /// times of one history come from one monotonic clock.
    pub invoke_ns: u64,
    /// What the client was told.
    pub outcome: Outcome,
}

/// A request on one key. In JSON: `{"op": "get"}`, `{"op": "put", "value": "v1"}`,
/// `{"op": "delete"}`, `{"op": "cas", "expected": null, "new": "v2"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Call {
    /// Read the key. Replies [`Reply::Value`].
    Get,
    /// Write `value`. Replies [`Reply::Done`].
    Put { value: String },
    /// Remove the key; removing a missing key is fine. Replies [`Reply::Done`].
    Delete,
    /// Write `new` if and only if the key holds `expected` (`None`: only if the key is
    /// absent). Replies [`Reply::Swapped`]. The harness translates the API's ModifyIndex into
    /// the value it read with that index, which is sound because every written value is
    /// unique.
    Cas { expected: Option<String>, new: String },
}

/// What became of an operation. In JSON: `{"status": "ok", "at_ns": 5400, "result": ...}`,
/// `{"status": "unknown"}` or `{"status": "failed"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The server answered `result` and the client received it at `at_ns` (nanoseconds since
    /// the start, at or after `invoke_ns`).
    Ok { at_ns: u64, result: Reply },
    /// The client never learnt what happened (a timeout, a lost connection). A write, delete
    /// or cas may have taken effect at any single moment after its invocation, or never; a
    /// get constrains nothing and is left out.
    Unknown,
    /// The server said the operation certainly did not happen (for instance 503, no leader).
    /// Left out of the check.
    Failed,
}

/// The server's answer to a completed call. In JSON: `{"value": "v1"}` or `{"value": null}`
/// for a get, `"done"` for a put or a delete, `{"swapped": true}` for a cas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// A get's answer: the value, or `None` if the key was absent.
    Value(Option<String>),
    /// A put or a delete succeeded.
    Done,
    /// A cas's answer: whether it wrote its new value.
    Swapped(bool),
}

/// A history that cannot be checked because an operation contradicts itself. This is a bug
/// in the recorder, not in the system under test.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidHistory {
    /// The operation completed before it was invoked.
    #[error(
        "operation {index} of the history completed at {at_ns} ns, before it was invoked at {invoke_ns} ns; \
         the recorder must take both times from one monotonic clock"
    )]
    CompletedBeforeInvoked { index: usize, invoke_ns: u64, at_ns: u64 },
    /// The reply does not fit the call (`call` is `get`, `put`, `delete` or `cas`).
    #[error(
        "operation {index} of the history is a {call} but its reply is {reply:?}; a {call} replies {}",
        expected_reply(call)
    )]
    WrongReply { index: usize, call: &'static str, reply: Reply },
}

/// What a call's reply looks like in JSON, for [`InvalidHistory::WrongReply`].
fn expected_reply(call: &str) -> &'static str {
    match call {
        "get" => "a value ({\"value\": ...})",
        "cas" => "whether it swapped ({\"swapped\": ...})",
        _ => "\"done\"",
    }
}

impl Call {
    /// The call's name as the API and the reports spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Put { .. } => "put",
            Self::Delete => "delete",
            Self::Cas { .. } => "cas",
        }
    }
}

impl fmt::Display for Call {
    /// `get`, `put "v1"`, `delete`, `cas "v1" -> "v2"`, `cas absent -> "v2"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Get | Self::Delete => f.write_str(self.name()),
            Self::Put { value } => write!(f, "put {value:?}"),
            Self::Cas { expected: Some(expected), new } => write!(f, "cas {expected:?} -> {new:?}"),
            Self::Cas { expected: None, new } => write!(f, "cas absent -> {new:?}"),
        }
    }
}

impl fmt::Display for Reply {
    /// `"v1"`, `absent`, `ok`, `true`, `false`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(Some(value)) => write!(f, "{value:?}"),
            Self::Value(None) => f.write_str("absent"),
            Self::Done => f.write_str("ok"),
            Self::Swapped(swapped) => write!(f, "{swapped}"),
        }
    }
}

/// An operation in the form the search uses: validated, with the call and its reply merged.
/// Failed operations and gets with an unknown outcome have no `Checked` form.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Checked<'h> {
    /// Index of the operation in the history.
    pub index: usize,
    pub invoke_ns: u64,
    /// `None`: unknown outcome; the operation may take effect at any moment after
    /// `invoke_ns`, or never.
    pub complete_ns: Option<u64>,
    pub effect: Effect<'h>,
}

/// What an operation did to its register, as far as the client knows. `None` stands for
/// absent.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Effect<'h> {
    /// A completed get that observed this.
    Read(Option<&'h str>),
    /// A put (`Some`) or a delete (`None`).
    Write(Option<&'h str>),
    /// A cas; `swapped` is `None` if the outcome is unknown.
    Cas { expected: Option<&'h str>, new: &'h str, swapped: Option<bool> },
}

impl<'h> Checked<'h> {
    /// This operation as if its client had not heard back: a write may then happen or not,
    /// and a read constrains nothing (`None`).
    pub fn with_unknown_outcome(self) -> Option<Self> {
        let effect = match self.effect {
            Effect::Read(_) => return None,
            Effect::Write(value) => Effect::Write(value),
            Effect::Cas { expected, new, .. } => Effect::Cas { expected, new, swapped: None },
        };
        Some(Self { complete_ns: None, effect, ..self })
    }

    /// The values this operation may leave in the register (absent as `None`).
    pub fn written(&self) -> Option<Option<&'h str>> {
        match self.effect {
            Effect::Read(_) | Effect::Cas { swapped: Some(false), .. } => None,
            Effect::Write(value) => Some(value),
            Effect::Cas { new, .. } => Some(Some(new)),
        }
    }

    /// Whether `self` and `other` may overlap in time (ties count as overlapping).
    pub fn overlaps(&self, other: &Checked<'_>) -> bool {
        let starts_before_other_ends = other.complete_ns.is_none_or(|end| self.invoke_ns <= end);
        let ends_after_other_starts = self.complete_ns.is_none_or(|end| other.invoke_ns <= end);
        starts_before_other_ends && ends_after_other_starts
    }
}

/// Validates the history and returns its checkable operations in history order; failed
/// operations and gets of unknown outcome are left out.
pub(crate) fn checked_operations(history: &[Operation]) -> Result<Vec<Checked<'_>>, InvalidHistory> {
    let mut checked = Vec::with_capacity(history.len());
    for (index, operation) in history.iter().enumerate() {
        if let Some(operation) = checked_operation(index, operation)? {
            checked.push(operation);
        }
    }
    Ok(checked)
}

fn checked_operation(index: usize, operation: &Operation) -> Result<Option<Checked<'_>>, InvalidHistory> {
    let (complete_ns, reply) = match &operation.outcome {
        Outcome::Failed => return Ok(None),
        Outcome::Unknown => (None, None),
        Outcome::Ok { at_ns, result } => {
            if *at_ns < operation.invoke_ns {
                return Err(InvalidHistory::CompletedBeforeInvoked {
                    index,
                    invoke_ns: operation.invoke_ns,
                    at_ns: *at_ns,
                });
            }
            (Some(*at_ns), Some(result))
        }
    };
    let wrong_reply =
        |reply: &Reply| InvalidHistory::WrongReply { index, call: operation.call.name(), reply: reply.clone() };
    let effect = match (&operation.call, reply) {
        (Call::Get, None) => return Ok(None),
        (Call::Get, Some(Reply::Value(observed))) => Effect::Read(observed.as_deref()),
        (Call::Put { value }, None | Some(Reply::Done)) => Effect::Write(Some(value)),
        (Call::Delete, None | Some(Reply::Done)) => Effect::Write(None),
        (Call::Cas { expected, new }, None) => Effect::Cas { expected: expected.as_deref(), new, swapped: None },
        (Call::Cas { expected, new }, Some(Reply::Swapped(swapped))) => {
            Effect::Cas { expected: expected.as_deref(), new, swapped: Some(*swapped) }
        }
        (_, Some(reply)) => return Err(wrong_reply(reply)),
    };
    Ok(Some(Checked { index, invoke_ns: operation.invoke_ns, complete_ns, effect }))
}
