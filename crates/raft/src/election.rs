//! Elections: campaigning, voting and counting votes (Raft §5.2, §5.4.1; pre-vote, thesis §9.6).

use std::collections::BTreeSet;

use crate::leader::Leader;
use crate::message::Message;
use crate::quorum::{VoteResult, vote_result};
use crate::raft::{Candidate, Raft, Role};
use crate::ready::Error;
use crate::storage::Storage;
use crate::types::{LogId, NodeId, Term};

/// The kinds of campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Campaign {
    /// Ask whether the voters would vote for us, without raising any term (thesis §9.6).
    PreVote,
    /// A real election in the next term (Raft §5.2).
    Election,
    /// A real election a leader asked for with `TimeoutNow`; voters don't ignore it for
    /// having a leader (thesis §3.10).
    Transfer,
}

impl<S: Storage> Raft<S> {
    /// The campaign to start when the election timeout passes.
    pub(crate) fn timeout_campaign(&self) -> Campaign {
        if self.shared.config.pre_vote { Campaign::PreVote } else { Campaign::Election }
    }

    /// Starts a campaign of the given kind.
    pub(crate) fn campaign(&mut self, kind: Campaign) -> Result<(), Error> {
        assert!(self.shared.is_voter(), "only voters campaign");
        let pre_vote = kind == Campaign::PreVote;
        let leader_transfer = kind == Campaign::Transfer;
        if !pre_vote {
            self.shared.term = self.shared.term.next();
            self.shared.vote = Some(self.shared.id);
        }
        let candidate = Candidate {
            pre_vote,
            granted: BTreeSet::from([self.shared.id]),
            rejected: BTreeSet::new(),
            election_elapsed_ticks: 0,
        };
        self.role = Role::Candidate(candidate);
        self.shared.reset_election_timeout();
        // A pre-vote asks about the term we would campaign in, without moving to it.
        let campaign_term = if pre_vote { self.shared.term.next() } else { self.shared.term };
        let last_log_id = self.shared.log.last_log_id()?;
        for voter in self.shared.other_voters() {
            let request = Message::RequestVote { last_log_id, pre_vote, leader_transfer };
            self.shared.send_with_term(voter, campaign_term, request);
        }
        self.count_votes()
    }

    /// Answers a (pre-)vote request. We grant a vote when the candidate's log is at least as
    /// up to date as ours (Raft §5.4.1) and, for a real vote, we have not voted for someone
    /// else in this term (Raft §5.2) and don't know of a leader in it.
    pub(crate) fn handle_request_vote(
        &mut self,
        candidate: NodeId,
        term: Term,
        last_log_id: LogId,
        pre_vote: bool,
    ) -> Result<(), Error> {
        let our_last = self.shared.log.last_log_id()?;
        let log_ok = last_log_id.is_up_to_date_with(&our_last);
        let shared = &self.shared;
        // A pre-vote for a later term is free: nobody votes in that term yet. (Whether we
        // still follow a live leader was checked before we got here.)
        let free_to_vote = shared.vote == Some(candidate)
            || (shared.vote.is_none() && self.leader().is_none())
            || (pre_vote && term > shared.term);
        // A node that withholds its vote (it may have lost the record of an earlier one)
        // grants nothing, pre-votes included.
        let granted = log_ok && free_to_vote && !shared.withholding_votes;
        if granted && !pre_vote {
            self.shared.vote = Some(candidate);
            if let Role::Follower(follower) = &mut self.role {
                follower.election_elapsed_ticks = 0;
            }
        }
        // A granted pre-vote answers in the term asked about, so the pre-candidate can tell
        // it from a stale answer; anything else carries our term.
        let reply_term = if pre_vote && granted { term } else { self.shared.term };
        self.shared.send_with_term(candidate, reply_term, Message::RequestVoteResponse { granted, pre_vote });
        Ok(())
    }

    pub(crate) fn handle_vote_response(&mut self, voter: NodeId, granted: bool, pre_vote: bool) -> Result<(), Error> {
        let Role::Candidate(candidate) = &mut self.role else { return Ok(()) };
        if candidate.pre_vote != pre_vote {
            return Ok(()); // an answer to an earlier round
        }
        if granted {
            candidate.granted.insert(voter);
        } else {
            candidate.rejected.insert(voter);
        }
        self.count_votes()
    }

    fn count_votes(&mut self) -> Result<(), Error> {
        let Role::Candidate(candidate) = &self.role else { return Ok(()) };
        match vote_result(&self.shared.membership().voters, &candidate.granted, &candidate.rejected) {
            VoteResult::Pending => Ok(()),
            VoteResult::Lost => {
                self.become_follower(self.shared.term, None);
                Ok(())
            }
            VoteResult::Won if candidate.pre_vote => self.campaign(Campaign::Election),
            VoteResult::Won => self.become_leader(),
        }
    }

    /// Wins the election: becomes leader and appends an empty entry of the new term, which
    /// commits everything before it (Raft §5.4.2, §8).
    fn become_leader(&mut self) -> Result<(), Error> {
        assert!(matches!(&self.role, Role::Candidate(c) if !c.pre_vote), "only a candidate becomes leader");
        let leader = Leader::new(&mut self.shared)?;
        self.role = Role::Leader(Box::new(leader));
        Ok(())
    }
}
