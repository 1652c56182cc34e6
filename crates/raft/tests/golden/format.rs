//! How the golden runner prints nodes, messages and entries: one line each, compact, in the
//! words the scripts use (`index@term`, `n1->n2 Kind term=T ...`).

use std::fmt::Write as _;

use skiff_raft::progress::ProgressState;
use skiff_raft::{AppendResult, Entry, Envelope, Index, Message, NodeId, Payload, Ready, RoleName, Status};

use super::Commands;

pub fn role_name(role: RoleName, leader: Option<NodeId>) -> String {
    match (role, leader) {
        (RoleName::Follower, Some(leader)) => format!("follower({leader})"),
        (role, _) => role.to_string(),
    }
}

pub fn format_status(status: &Status) -> String {
    let mut line = format!("{}: {} term={}", status.id, role_name(status.role, status.leader), status.term);
    if let Some(vote) = status.vote {
        write!(line, " vote={vote}").unwrap();
    }
    write!(line, " last={} commit={} applied={}", status.last_log_id, status.commit, status.applied).unwrap();
    if status.first_index > Index(1) {
        write!(line, " first={}", status.first_index).unwrap();
    }
    write!(line, " {}", status.membership).unwrap();
    let dropped: u64 = status.dropped_messages.values().sum();
    if dropped > 0 {
        write!(line, " dropped={dropped}").unwrap();
    }
    for peer in &status.progress {
        let state = match peer.state {
            ProgressState::Probe { paused: false } => "probe".to_string(),
            ProgressState::Probe { paused: true } => "probe paused".to_string(),
            ProgressState::Replicate => "replicate".to_string(),
            ProgressState::Snapshot { index, .. } => format!("snapshot {index}"),
        };
        write!(line, "\n{}:   {} match={} next={} {state}", status.id, peer.id, peer.match_index, peer.next_index)
            .unwrap();
    }
    line
}

pub fn format_message(envelope: &Envelope) -> String {
    let Envelope { from, to, term, message } = envelope;
    let body = match message {
        Message::AppendEntries { prev_log_id, entries, leader_commit } => {
            format!("prev={prev_log_id} entries=[{}] commit={leader_commit}", log_ids(entries))
        }
        Message::AppendEntriesResponse(AppendResult::Success { match_index }) => format!("match={match_index}"),
        Message::AppendEntriesResponse(AppendResult::Reject { rejected_prev, hint }) => {
            format!("reject prev={rejected_prev} hint={hint}")
        }
        Message::Heartbeat { commit, heartbeat_round } => format!("commit={commit} seq={heartbeat_round}"),
        Message::HeartbeatResponse { heartbeat_round } => format!("seq={heartbeat_round}"),
        Message::RequestVote { last_log_id, leader_transfer, .. } => {
            format!("last={last_log_id}{}", if *leader_transfer { " transfer" } else { "" })
        }
        Message::RequestVoteResponse { granted, .. } => format!("granted={granted}"),
        Message::InstallSnapshot { meta } => format!("snapshot={} {}", meta.last_log_id, meta.membership),
        Message::TimeoutNow => String::new(),
        Message::ReadIndex { id } => format!("id={}", id.0),
        Message::ReadIndexResponse { id, index } => {
            format!("id={} index={}", id.0, index.map_or("none".to_string(), |index| index.to_string()))
        }
    };
    format!("{from}->{to} {} term={term} {body}", message.kind()).trim_end().to_string()
}

pub fn format_entry(entry: &Entry) -> String {
    match &entry.payload {
        Payload::Empty => format!("{} <empty>", entry.log_id),
        Payload::Command(data) => format!("{} {}", entry.log_id, String::from_utf8_lossy(data)),
        Payload::Membership(membership) => format!("{} <{membership}>", entry.log_id),
    }
}

pub fn format_entries(entries: &[Entry]) -> String {
    entries.iter().map(format_entry).collect::<Vec<_>>().join(", ")
}

pub fn log_ids(entries: &[Entry]) -> String {
    entries.iter().map(|entry| entry.log_id.to_string()).collect::<Vec<_>>().join(" ")
}

pub fn names(commands: &Commands) -> String {
    commands.iter().map(|(_, command)| command.as_str()).collect::<Vec<_>>().join(" ")
}

pub fn describe_unsynced(ready: &Ready) -> Vec<String> {
    let mut lost = Vec::new();
    if let Some(meta) = &ready.snapshot {
        lost.push(format!("snapshot {}", meta.last_log_id));
    }
    if !ready.entries.is_empty() {
        lost.push(format!("entries {}", log_ids(&ready.entries)));
    }
    if let Some(hard_state) = ready.hard_state {
        let vote = hard_state.vote.map_or("none".to_string(), |id| id.to_string());
        lost.push(format!("term={} vote={vote} commit={}", hard_state.term, hard_state.commit));
    }
    if !ready.messages.is_empty() || !ready.leader_messages.is_empty() {
        let count = ready.messages.len() + ready.leader_messages.len();
        lost.push(format!("{count} unsent message{}", if count == 1 { "" } else { "s" }));
    }
    lost
}
