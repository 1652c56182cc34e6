//! The requests the driver has taken on and not yet answered.
//!
//! Three kinds of work wait, each with its own lifecycle:
//!
//! | kind | added when | answered when | leadership changes | node stops |
//! |------|------------|---------------|--------------------|------------|
//! | [`Pending::writes`] | this node, as leader, appends a proposal, a membership change | its entry is committed: handed to the apply thread, which answers with the output (or `LeadershipLost` if another leader's entry took the index); a snapshot from the leader that covers it answers `OutcomeUnknown` | kept: the entry may still commit under the next leader | `OutcomeUnknown` |
//! | [`Pending::forwarded`] | a local write goes to the leader | the leader's `ForwardResult` arrives | `OutcomeUnknown` (the old leader may have applied it), unless it went to the new leader in its term | `Stopped` |
//! | [`Pending::reads`] | the core accepts a ReadIndex request (thesis §6.4) | the core's `Ready` confirms the read index: handed to the apply thread, which runs it once applied that far | `LeadershipLost` | `Stopped` |
//!
//! Forwarded requests and reads also carry a deadline: after the request timeout nobody
//! waits for them any more (an answer may have been lost on the network), and they are
//! answered `Timeout`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use skiff_raft::{Index, LogId, NodeId, ReadId, Term};
use tokio::sync::oneshot;

use crate::apply::{ReadQuery, Responder};
use crate::error::{Error, Result};
use crate::transport::Transport;

/// Where the caller of a forwarded request waits.
pub(crate) type Reply = oneshot::Sender<Result<Bytes>>;

/// Writes proposed on this node as leader, by index, with the term they were proposed in.
pub(crate) type Writes = BTreeMap<Index, (Term, Responder)>;

pub(crate) struct Pending<S> {
    /// Writes this node appended as leader, waiting for their entry to commit.
    writes: Writes,
    /// Requests forwarded to the leader, by request id (so in deadline order), with the
    /// time after which nobody waits any more and the leader (and its term) they went to.
    forwarded: BTreeMap<u64, (Instant, (Term, NodeId), Reply)>,
    /// The last request id given to a forwarded request.
    last_request: u64,
    /// Reads waiting for the core to confirm their read index, with their deadline.
    reads: BTreeMap<ReadId, (Instant, ReadQuery<S>)>,
    /// The last read id given to the core.
    last_read: u64,
}

impl<S> Default for Pending<S> {
    fn default() -> Self {
        Pending {
            writes: BTreeMap::new(),
            forwarded: BTreeMap::new(),
            last_request: 0,
            reads: BTreeMap::new(),
            last_read: 0,
        }
    }
}

impl<S> Pending<S> {
    /// A write was appended at `log_id`: `responder` waits for it to commit.
    pub fn add_write(&mut self, log_id: LogId, responder: Responder) {
        self.writes.insert(log_id.index, (log_id.term, responder));
    }

    /// Removes and returns the writes waiting at `index` or below, in index order: their
    /// entries are committed (or covered by a snapshot).
    pub fn take_writes_through(&mut self, index: Index) -> Writes {
        let later = self.writes.split_off(&index.next());
        std::mem::replace(&mut self.writes, later)
    }

    /// A local write is forwarded to `leader` of `term`: returns the request id to send
    /// with it.
    pub fn add_forwarded(&mut self, deadline: Instant, term: Term, leader: NodeId, reply: Reply) -> u64 {
        self.last_request += 1;
        self.forwarded.insert(self.last_request, (deadline, (term, leader), reply));
        self.last_request
    }

    /// The leader answered forwarded request `request` (ignored if nobody waits any more).
    pub fn answer_forwarded(&mut self, request: u64, result: Result<Bytes>) {
        if let Some((_, _, reply)) = self.forwarded.remove(&request) {
            let _ = reply.send(result);
        }
    }

    /// The id of the next read to ask the core about.
    pub fn next_read_id(&mut self) -> ReadId {
        self.last_read += 1;
        ReadId(self.last_read)
    }

    /// The core accepted read `id`: `query` waits for its read index.
    pub fn add_read(&mut self, id: ReadId, deadline: Instant, query: ReadQuery<S>) {
        self.reads.insert(id, (deadline, query));
    }

    /// The core answered read `id`: its query, if anyone still waits.
    pub fn take_read(&mut self, id: ReadId) -> Option<ReadQuery<S>> {
        self.reads.remove(&id).map(|(_, query)| query)
    }

    /// Answers `Timeout` to forwarded requests and reads whose deadline is past `now`.
    pub fn expire(&mut self, now: Instant, timeout: Duration) {
        while let Some(entry) = self.forwarded.first_entry() {
            if entry.get().0 > now {
                break;
            }
            let _ = entry.remove().2.send(Err(Error::Timeout(timeout)));
        }
        while let Some(entry) = self.reads.first_entry() {
            if entry.get().0 > now {
                break;
            }
            (entry.remove().1)(Err(Error::Timeout(timeout)));
        }
    }

    /// The known leader (or the term) is now `leader` of `term`. Writes stay: their entries
    /// may still commit.
    pub fn leader_changed(&mut self, term: Term, leader: Option<NodeId>) {
        // Requests forwarded to another leader, or in another term, may or may not have been
        // applied. One sent to this very leader in this term stands: a follower can forward
        // to a leader its core learned of in the same turn as the change is published.
        let current = leader.map(|leader| (term, leader));
        let (kept, stale) =
            std::mem::take(&mut self.forwarded).into_iter().partition(|(_, (_, sent_to, _))| Some(*sent_to) == current);
        self.forwarded = kept;
        for (_, (_, _, reply)) in stale {
            let _ = reply.send(Err(Error::OutcomeUnknown));
        }
        for (_, (_, query)) in std::mem::take(&mut self.reads) {
            query(Err(Error::LeadershipLost));
        }
    }

    /// The node stops (shut down if `cause` is `None`): everything waiting is answered.
    pub fn stop(&mut self, transport: &dyn Transport, cause: Option<Arc<Error>>) {
        // Appended writes may still commit under the next leader: their outcome is unknown.
        for (_, (_, responder)) in std::mem::take(&mut self.writes) {
            responder.respond(transport, Err(Error::OutcomeUnknown));
        }
        let stopped = || Error::Stopped { cause: cause.clone() };
        for (_, (_, _, reply)) in std::mem::take(&mut self.forwarded) {
            let _ = reply.send(Err(stopped()));
        }
        for (_, (_, query)) in std::mem::take(&mut self.reads) {
            query(Err(stopped()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Waiting = oneshot::Receiver<Result<Bytes>>;

    fn forward(pending: &mut Pending<()>, term: u64, leader: u64) -> Waiting {
        let (reply, waiting) = oneshot::channel();
        let deadline = Instant::now() + Duration::from_secs(60);
        pending.add_forwarded(deadline, Term(term), NodeId(leader), reply);
        waiting
    }

    /// A request forwarded to the leader the change names still waits for its answer; the
    /// others may or may not have been applied.
    #[test]
    fn a_leader_change_fails_only_requests_sent_elsewhere() {
        let mut pending = Pending::<()>::default();
        let mut to_old_leader = forward(&mut pending, 1, 1);
        let mut to_old_term = forward(&mut pending, 1, 2);
        let mut to_new_leader = forward(&mut pending, 2, 2);
        pending.leader_changed(Term(2), Some(NodeId(2)));
        assert!(matches!(to_old_leader.try_recv(), Ok(Err(Error::OutcomeUnknown))));
        assert!(matches!(to_old_term.try_recv(), Ok(Err(Error::OutcomeUnknown))));
        assert!(to_new_leader.try_recv().is_err(), "still waiting");
        pending.answer_forwarded(3, Ok(Bytes::from_static(b"done")));
        assert_eq!(to_new_leader.try_recv().ok().and_then(Result::ok), Some(Bytes::from_static(b"done")));
        // No leader known: nothing forwarded stands.
        let mut waiting = forward(&mut pending, 2, 2);
        pending.leader_changed(Term(3), None);
        assert!(matches!(waiting.try_recv(), Ok(Err(Error::OutcomeUnknown))));
    }
}
