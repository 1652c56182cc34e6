//! What a node has been doing, for people watching it (the dashboard's event stream): the
//! messages it sent, counted by kind and sampled with a short description, and what
//! happened to it, in words ("n2 started an election for term 5").
//!
//! The driver keeps it, in bounded rings, and readers ask for what came after the sequence
//! numbers they last saw: a reader that is slow or gone costs the driver nothing, and
//! learns how many samples it missed. Message samples are only taken while someone has
//! asked in the last few seconds; counts and events are always kept (they are cheap).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use skiff_raft::{AppendResult, Envelope, Index, LogId, Message, MessageKind, NodeId, Raft, RoleName, Storage, Term};

/// Message samples kept for readers: about half a second of a loaded node's traffic.
const MESSAGE_RING: usize = 512;
/// Events kept for readers.
const EVENT_RING: usize = 256;
/// At most this many messages are sampled between two ticks; the rest are only counted.
const SAMPLES_PER_TICK: u32 = 8;
/// Messages are sampled for this long after a reader last asked.
const WATCHED_FOR: Duration = Duration::from_secs(5);
/// A leader reports what it committed at most this often, in one event per span.
const COMMIT_EVENT_EVERY: Duration = Duration::from_millis(250);
/// How far back `rates` looks, and how often it takes a reading.
const RATE_WINDOW: Duration = Duration::from_secs(1);
const RATE_STEP: Duration = Duration::from_millis(100);

/// What a message says, in a few words.
fn describe(message: &Message) -> String {
    match message {
        Message::AppendEntries { prev_log_id, entries, leader_commit } => match (entries.first(), entries.last()) {
            (Some(first), Some(last)) if first.index() == last.index() => {
                format!("entry {}, commit {}", first.index(), leader_commit)
            }
            (Some(first), Some(last)) => {
                format!("entries {}-{}, commit {}", first.index(), last.index(), leader_commit)
            }
            // A probe for where the logs agree, or the news of a commit: either way, no entries.
            _ => format!("no entries, after {prev_log_id}; commit {leader_commit}"),
        },
        Message::AppendEntriesResponse(AppendResult::Success { match_index }) => format!("ok, holds {match_index}"),
        Message::AppendEntriesResponse(AppendResult::Reject { rejected_prev, hint }) => {
            format!("no match at {rejected_prev}; try after {hint}")
        }
        Message::Heartbeat { commit, .. } => format!("commit {commit}"),
        Message::HeartbeatResponse { .. } => "ok".to_string(),
        Message::RequestVote { last_log_id, leader_transfer, .. } => {
            let transfer = if *leader_transfer { " (leadership transfer)" } else { "" };
            format!("my last entry is {last_log_id}{transfer}")
        }
        Message::RequestVoteResponse { granted: true, .. } => "granted".to_string(),
        Message::RequestVoteResponse { granted: false, .. } => "refused".to_string(),
        Message::InstallSnapshot { meta } => format!("snapshot through {}", meta.last_log_id),
        Message::TimeoutNow => "start an election now".to_string(),
        Message::ReadIndex { .. } => "confirm a read index".to_string(),
        Message::ReadIndexResponse { index: Some(index), .. } => format!("read at {index}"),
        Message::ReadIndexResponse { index: None, .. } => "not leader".to_string(),
    }
}

/// One message this node sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageSample {
    /// Increases by one per sample.
    pub seq: u64,
    /// When, from the node's start.
    pub at: Duration,
    pub to: NodeId,
    /// The kind's short name ([`MessageKind::short_name`]).
    pub kind: &'static str,
    pub term: Term,
    pub text: String,
}

/// Something that happened to the node, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivityEvent {
    /// Increases by one per event.
    pub seq: u64,
    /// When, from the node's start.
    pub at: Duration,
    pub text: String,
}

/// Where a reader is: the sequence numbers of the next message sample and event it has
/// not seen. The default (a first read) asks for the recent events and the messages from
/// now on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub message: Option<u64>,
    pub event: Option<u64>,
}

/// What a reader gets: the samples and events after what it saw, and the counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActivityPage {
    /// At most [`ActivityPage::MAX_MESSAGES`], the newest.
    pub messages: Vec<MessageSample>,
    pub events: Vec<ActivityEvent>,
    /// Messages sent per second over the last second, by kind (its short name), in
    /// [`MessageKind::ALL`] order.
    pub rates: Vec<(&'static str, f64)>,
    /// Every message this node sent since it started, sampled or not.
    pub messages_sent: u64,
    /// Where the reader is now.
    pub seen: Seen,
}

impl ActivityPage {
    /// The most message samples one page carries.
    pub const MAX_MESSAGES: usize = 64;
    /// The most events one page carries (a first page: the recent ones).
    pub const MAX_EVENTS: usize = 20;
}

/// What the last observation saw, to tell what changed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Observed {
    role: RoleName,
    term: Term,
    vote: Option<NodeId>,
    leader: Option<NodeId>,
    membership: Option<LogId>,
}

pub(crate) struct Activity {
    node: NodeId,
    started: Instant,
    counts: [u64; MessageKind::ALL.len()],
    sent: u64,
    /// Readings of `counts`, one per [`RATE_STEP`], over [`RATE_WINDOW`].
    readings: VecDeque<(Instant, [u64; MessageKind::ALL.len()])>,
    messages: VecDeque<MessageSample>,
    next_message: u64,
    sampled_this_tick: u32,
    watched_until: Option<Instant>,
    /// Whether messages are sampled now: `watched_until` as of the last tick or look, so
    /// that sending a message reads no clock.
    sampling: bool,
    events: VecDeque<ActivityEvent>,
    next_event: u64,
    observed: Option<Observed>,
    /// The commit index last reported, and when.
    committed: (Index, Instant),
}

impl Activity {
    pub fn new(node: NodeId) -> Activity {
        let now = Instant::now();
        Activity {
            node,
            started: now,
            counts: [0; MessageKind::ALL.len()],
            sent: 0,
            readings: VecDeque::new(),
            messages: VecDeque::new(),
            next_message: 0,
            sampled_this_tick: 0,
            watched_until: None,
            sampling: false,
            events: VecDeque::new(),
            next_event: 0,
            observed: None,
            committed: (Index(0), now),
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// A message is about to be sent.
    pub fn sent(&mut self, envelope: &Envelope) {
        let kind = envelope.message.kind();
        self.counts[kind as usize] += 1;
        self.sent += 1;
        if !self.sampling || self.sampled_this_tick >= SAMPLES_PER_TICK {
            return;
        }
        self.sampled_this_tick += 1;
        let sample = MessageSample {
            seq: self.next_message,
            at: self.started.elapsed(),
            to: envelope.to,
            kind: kind.short_name(),
            term: envelope.term,
            text: describe(&envelope.message),
        };
        self.next_message += 1;
        push_bounded(&mut self.messages, sample, MESSAGE_RING);
    }

    /// A tick passed: the sampling budget starts again, and the rate takes a reading.
    pub fn tick(&mut self) {
        self.sampled_this_tick = 0;
        let now = Instant::now();
        self.sampling = self.watched_until.is_some_and(|until| now < until);
        if self.readings.back().is_none_or(|(at, _)| now.duration_since(*at) >= RATE_STEP) {
            self.readings.push_back((now, self.counts));
            while self.readings.len() > 2 && self.readings.get(1).is_some_and(|(at, _)| now - *at >= RATE_WINDOW) {
                self.readings.pop_front();
            }
        }
    }

    /// Records an event.
    pub fn note(&mut self, text: String) {
        let event = ActivityEvent { seq: self.next_event, at: self.started.elapsed(), text };
        self.next_event += 1;
        push_bounded(&mut self.events, event, EVENT_RING);
    }

    /// Looks at the core after it handled input, and puts what changed into words.
    pub fn observe<S: Storage>(&mut self, raft: &Raft<S>) {
        let now = Observed {
            role: raft.role(),
            term: raft.term(),
            vote: raft.vote(),
            leader: raft.leader(),
            membership: raft.membership_log_id().ok(),
        };
        if let Some(before) = self.observed.replace(now.clone())
            && before != now
        {
            self.describe_change(&before, &now, raft);
        }
        let commit = raft.commit_index();
        let (reported, at) = self.committed;
        if commit > reported && now.role == RoleName::Leader && at.elapsed() >= COMMIT_EVENT_EVERY {
            let first = reported.next();
            let text = if first == commit {
                format!("{} committed entry {commit}", self.node)
            } else {
                format!("{} committed entries {first}-{commit}", self.node)
            };
            self.note(text);
            self.committed = (commit, Instant::now());
        } else if now.role != RoleName::Leader {
            // A follower learns commits from its leader: only the leader's decision is news.
            self.committed = (commit, at);
        }
    }

    fn describe_change<S: Storage>(&mut self, before: &Observed, now: &Observed, raft: &Raft<S>) {
        let id = self.node;
        let term = now.term;
        if now.role != before.role || (now.term != before.term && now.role != RoleName::Follower) {
            let text = match now.role {
                RoleName::PreCandidate => {
                    format!("{id} heard from no leader in time: it asks for pre-votes for term {}", term.0 + 1)
                }
                RoleName::Candidate => format!("{id} started an election for term {term}"),
                RoleName::Leader => format!("{id} became leader of term {term}"),
                RoleName::Follower if before.role == RoleName::Leader => {
                    format!("{id} stepped down: it is a follower in term {term}")
                }
                RoleName::Follower => format!("{id} is a follower in term {term}"),
            };
            self.note(text);
        } else if now.term != before.term {
            self.note(format!("{id} moved to term {term}"));
        }
        if now.vote != before.vote
            && let Some(vote) = now.vote
            && vote != id
        {
            self.note(format!("{id} voted for {vote} in term {term}"));
        }
        if now.leader != before.leader
            && now.role == RoleName::Follower
            && let Some(leader) = now.leader
        {
            self.note(format!("{id} follows {leader}, leader of term {term}"));
        }
        if now.membership != before.membership && before.membership.is_some() {
            let membership = raft.membership();
            let names = |set: &std::collections::BTreeSet<NodeId>| {
                set.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            };
            let mut text = format!("{id} has a new membership: voters {}", names(&membership.voters));
            if !membership.learners.is_empty() {
                text.push_str(&format!("; learners {}", names(&membership.learners)));
            }
            self.note(text);
        }
    }

    /// Marks the node watched (so messages are sampled for a while) and returns what came
    /// after `seen`.
    pub fn page(&mut self, seen: Seen) -> ActivityPage {
        self.watched_until = Some(Instant::now() + WATCHED_FOR);
        self.sampling = true;
        // A first page has no messages (they are news only as they happen) and the recent events.
        let messages = match seen.message {
            Some(next) => newest_from(&self.messages, |sample| sample.seq, next, ActivityPage::MAX_MESSAGES),
            None => Vec::new(),
        };
        let events = match seen.event {
            Some(next) => newest_from(&self.events, |event| event.seq, next, EVENT_RING),
            None => newest_from(&self.events, |event| event.seq, 0, ActivityPage::MAX_EVENTS),
        };
        ActivityPage {
            messages,
            events,
            rates: self.rates(),
            messages_sent: self.sent,
            seen: Seen { message: Some(self.next_message), event: Some(self.next_event) },
        }
    }

    fn rates(&self) -> Vec<(&'static str, f64)> {
        let now = Instant::now();
        let (at, then) = self.readings.front().copied().unwrap_or((self.started, [0; MessageKind::ALL.len()]));
        let seconds = now.duration_since(at).as_secs_f64().max(0.1);
        MessageKind::ALL
            .iter()
            .map(|&kind| {
                let place = kind as usize;
                (kind.short_name(), (self.counts[place] - then[place]) as f64 / seconds)
            })
            .collect()
    }
}

fn push_bounded<T>(ring: &mut VecDeque<T>, item: T, bound: usize) {
    if ring.len() == bound {
        ring.pop_front();
    }
    ring.push_back(item);
}

/// The newest `limit` items whose sequence number is at least `from`.
fn newest_from<T: Clone>(ring: &VecDeque<T>, seq: impl Fn(&T) -> u64, from: u64, limit: usize) -> Vec<T> {
    let start = ring.partition_point(|item| seq(item) < from);
    let skip = (ring.len() - start).saturating_sub(limit);
    ring.iter().skip(start + skip).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(to: u64) -> Envelope {
        Envelope {
            from: NodeId(1),
            to: NodeId(to),
            term: Term(3),
            message: Message::Heartbeat { commit: Index(7), heartbeat_round: 1 },
        }
    }

    fn seqs<T>(items: &[T], seq: impl Fn(&T) -> u64) -> Vec<u64> {
        items.iter().map(seq).collect()
    }

    #[test]
    fn newest_from_gives_the_newest_at_or_after_a_sequence_number() {
        let ring: VecDeque<u64> = (10..=20).collect();
        let newest = |from, limit| newest_from(&ring, |seq| *seq, from, limit);
        assert_eq!(newest(15, 10), (15..=20).collect::<Vec<_>>(), "all of them, within the limit");
        assert_eq!(newest(15, 3), [18, 19, 20], "the newest, past the limit");
        assert_eq!(newest(0, 4), [17, 18, 19, 20], "from before the ring: its newest");
        assert_eq!(newest(21, 4), Vec::<u64>::new(), "nothing new");
        assert_eq!(newest(u64::MAX, 4), Vec::<u64>::new());
        assert_eq!(newest(12, 0), Vec::<u64>::new());
        assert_eq!(newest_from(&VecDeque::<u64>::new(), |seq| *seq, 0, 4), Vec::<u64>::new());
    }

    #[test]
    fn the_events_ring_is_bounded_and_a_first_page_has_the_recent_ones() {
        let mut activity = Activity::new(NodeId(1));
        for i in 0..300 {
            activity.note(format!("event {i}"));
        }
        assert_eq!(activity.events.len(), EVENT_RING);
        let first = activity.page(Seen::default());
        assert_eq!(seqs(&first.events, |event| event.seq), (280..300).collect::<Vec<_>>());
        assert_eq!(first.events.last().map(|event| event.text.as_str()), Some("event 299"));
        assert_eq!(first.seen.event, Some(300));
        // A reader that fell behind the ring gets what the ring still holds.
        let behind = activity.page(Seen { message: None, event: Some(3) });
        assert_eq!(seqs(&behind.events, |event| event.seq), (300 - EVENT_RING as u64..300).collect::<Vec<_>>());
        // One that is up to date gets only what is new.
        activity.note("new".into());
        let next = activity.page(first.seen);
        assert_eq!(next.events.iter().map(|event| event.text.as_str()).collect::<Vec<_>>(), ["new"]);
        assert_eq!(activity.page(next.seen).events, []);
    }

    #[test]
    fn messages_are_sampled_only_while_watched_and_at_most_a_few_per_tick() {
        let mut activity = Activity::new(NodeId(1));
        for _ in 0..5 {
            activity.sent(&heartbeat(2));
        }
        assert_eq!(activity.messages.len(), 0, "nobody asked: counted, not sampled");
        let first = activity.page(Seen::default());
        assert_eq!((first.messages.len(), first.messages_sent), (0, 5), "a first page has no messages");
        assert_eq!(first.seen.message, Some(0));
        for _ in 0..SAMPLES_PER_TICK + 3 {
            activity.sent(&heartbeat(2));
        }
        activity.tick();
        activity.sent(&heartbeat(3));
        let page = activity.page(first.seen);
        assert_eq!(page.messages.len(), SAMPLES_PER_TICK as usize + 1, "the tick's budget, then a new tick's");
        assert_eq!(page.messages_sent, 5 + u64::from(SAMPLES_PER_TICK) + 3 + 1, "every message is counted");
        let last = page.messages.last().expect("a sample");
        assert_eq!((last.to, last.kind, last.term, last.text.as_str()), (NodeId(3), "heartbeat", Term(3), "commit 7"));
        // Nobody asked for a while: sampling stops.
        activity.watched_until = Some(Instant::now() - Duration::from_millis(1));
        activity.tick();
        activity.sent(&heartbeat(2));
        assert_eq!(activity.messages.len(), SAMPLES_PER_TICK as usize + 1);
    }

    #[test]
    fn a_reader_behind_the_ring_gets_a_page_of_the_newest_samples() {
        let mut activity = Activity::new(NodeId(1));
        let first = activity.page(Seen::default());
        let mut sent = 0;
        while activity.next_message < MESSAGE_RING as u64 + 100 {
            activity.tick();
            for _ in 0..SAMPLES_PER_TICK * 2 {
                activity.sent(&heartbeat(2));
                sent += 1;
            }
        }
        assert_eq!(activity.messages.len(), MESSAGE_RING, "the ring is bounded");
        let page = activity.page(first.seen);
        let newest = activity.next_message;
        let expected: Vec<u64> = (newest - ActivityPage::MAX_MESSAGES as u64..newest).collect();
        assert_eq!(seqs(&page.messages, |sample| sample.seq), expected);
        assert_eq!(page.messages_sent, sent, "what the page left out is there to count");
        assert_eq!(page.seen.message, Some(newest));
    }
}
