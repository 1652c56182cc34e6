//! The event trace: one readable line per event (time, node, what happened, the node's
//! state after). Sweeps run with the trace off, because formatting every event would cost
//! more than simulating it; a failing seed is simply run again with the trace on, which
//! gives the same run because runs are deterministic.

use std::collections::VecDeque;

use skiff_raft::{AppendResult, Entry, Envelope, Message};

/// How much of the trace to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceMode {
    Off,
    /// The last this many lines.
    Tail(usize),
    /// Every line (for the determinism test and `--trace`).
    Full,
}

pub struct Trace {
    mode: TraceMode,
    lines: VecDeque<String>,
    current: Option<String>,
}

impl Trace {
    pub fn new(mode: TraceMode) -> Trace {
        Trace { mode, lines: VecDeque::new(), current: None }
    }

    pub fn is_on(&self) -> bool {
        self.mode != TraceMode::Off
    }

    /// Starts the line of a new event. The closure runs only when the trace is on.
    pub fn begin(&mut self, line: impl FnOnce() -> String) {
        if self.is_on() {
            self.finish();
            self.current = Some(line());
        }
    }

    /// Adds to the current event's line.
    pub fn note(&mut self, text: impl FnOnce() -> String) {
        if let Some(current) = &mut self.current {
            current.push_str("; ");
            current.push_str(&text());
        }
    }

    /// Ends the current event's line.
    pub fn finish(&mut self) {
        let Some(line) = self.current.take() else { return };
        self.lines.push_back(line);
        if let TraceMode::Tail(keep) = self.mode {
            while self.lines.len() > keep {
                self.lines.pop_front();
            }
        }
    }

    pub fn into_lines(mut self) -> Vec<String> {
        self.finish();
        self.lines.into()
    }
}

/// `n1->n2 t3 AppendEntries prev=5@2 entries=6@3..7@3 commit=5`.
pub fn describe_envelope(envelope: &Envelope) -> String {
    format!("{}->{} t{} {}", envelope.from, envelope.to, envelope.term, describe_message(&envelope.message))
}

pub fn describe_message(message: &Message) -> String {
    match message {
        Message::AppendEntries { prev_log_id, entries, leader_commit } => {
            format!("AppendEntries prev={prev_log_id} entries={} commit={leader_commit}", describe_entries(entries))
        }
        Message::AppendEntriesResponse(AppendResult::Success { match_index }) => {
            format!("AppendOk match={match_index}")
        }
        Message::AppendEntriesResponse(AppendResult::Reject { rejected_prev, hint }) => {
            format!("AppendReject prev={rejected_prev} hint={hint}")
        }
        Message::Heartbeat { commit, heartbeat_round } => format!("Heartbeat commit={commit} round={heartbeat_round}"),
        Message::HeartbeatResponse { heartbeat_round } => format!("HeartbeatOk round={heartbeat_round}"),
        Message::RequestVote { last_log_id, pre_vote, leader_transfer } => {
            let kind = if *pre_vote { "PreVote" } else { "RequestVote" };
            let transfer = if *leader_transfer { " (transfer)" } else { "" };
            format!("{kind} last={last_log_id}{transfer}")
        }
        Message::RequestVoteResponse { granted, pre_vote } => {
            let kind = if *pre_vote { "PreVote" } else { "Vote" };
            format!("{kind}{}", if *granted { "Granted" } else { "Rejected" })
        }
        Message::InstallSnapshot { meta } => format!("InstallSnapshot {} {}", meta.last_log_id, meta.membership),
        Message::TimeoutNow => "TimeoutNow".to_string(),
        Message::ReadIndex { id } => format!("ReadIndex r{}", id.0),
        Message::ReadIndexResponse { id, index } => match index {
            Some(index) => format!("ReadIndexOk r{} at {index}", id.0),
            None => format!("ReadIndexFailed r{}", id.0),
        },
    }
}

/// `6@3..7@3` or `none`.
pub fn describe_entries(entries: &[Entry]) -> String {
    match (entries.first(), entries.last()) {
        (Some(first), Some(_)) if entries.len() == 1 => format!("{}", first.log_id),
        (Some(first), Some(last)) => format!("{}..{}", first.log_id, last.log_id),
        _ => "none".to_string(),
    }
}
