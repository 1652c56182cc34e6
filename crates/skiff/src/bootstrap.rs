//! The bootstrap check: a node whose data directory is new does not vote until it knows
//! it never voted before.
//!
//! Raft's safety rests on each server voting at most once per term and keeping what it
//! acknowledged (Raft §5.2, §5.4). A server whose directory was wiped, failed to mount or was
//! mistyped (`--data-dir`) starts with no vote and no log: if it voted as before it could
//! elect a second leader in a term, or one that lacks committed entries. Yet the first start
//! of a cluster also opens new directories. Each new directory therefore starts *pending*
//! (with a random nonce, kept in the `bootstrap` file beside the log): the core withholds its
//! vote ([`skiff_raft::Raft::withhold_votes`]) until one of these confirms it:
//!
//! - **A new cluster.** The node asks the other initial members (the cluster file's voters)
//!   about their state. If a quorum of the initial voters *other than itself* are pending
//!   too, no vote was ever cast and no entry ever committed: each needs a quorum, which
//!   would include one of them, and a pending node votes for no one. The node confirms and
//!   records those peers' nonces as the witnesses of the new cluster. (A single-node cluster
//!   has no one to ask and confirms at once.) Until enough peers answer, it waits: the first
//!   start of a 3-node cluster needs all three, as Consul's `bootstrap_expect` does.
//! - **A slow first start.** A confirmed peer that recorded this node's current nonce as a
//!   witness knows this incarnation took part in the new cluster's bootstrap and never voted
//!   since (it was pending): the node confirms.
//! - **Rejoining** (`join`, after `skiff serve --join` asked the cluster to add it back as a
//!   learner): once the membership in effect names it, from a membership entry of the
//!   current leader's term, and its log holds an entry of that term. Any candidate that
//!   could still ask for its vote in that term or later needs a log as up to date, holding
//!   the current leader's entries; such a node is that leader's follower, not a candidate of
//!   its term.
//!
//! Once every other initial member has answered that it is confirmed, holds data (a log or
//! snapshot past index 0) and did not witness this incarnation, the cluster started without
//! it: the directory is a lost one, and the node stops with [`Error::LostData`], which says
//! how to rejoin. One such answer is not enough: a peer that confirmed because another
//! witnessed *it* (a slow first start) recorded no witnesses of its own, while the peer
//! that bootstrapped may have witnessed this node too. A directory made before this
//! check existed has no `bootstrap` file and counts as confirmed; `--bootstrap`
//! ([`BootstrapMode::Force`]) confirms a new directory at once, as etcd's
//! `--initial-cluster-state new` does.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use skiff_raft::{Index, Membership, NodeId, Term};

use crate::error::{Error, Result};
use crate::wire::PeerMessage;

/// The file, in the data directory, that records the check's state.
pub const FILE_NAME: &str = "bootstrap";
/// How often a pending node asks its peers, in ticks.
const PROBE_EVERY_TICKS: u64 = 10;
/// How often a pending node says in the log whom it waits for, in ticks.
const REPORT_EVERY_TICKS: u64 = 500;

/// How a node with a new data directory starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BootstrapMode {
    /// Withhold its vote until the check confirms the directory (the default).
    #[default]
    Check,
    /// Vote at once: the operator says this is the first start of a new cluster.
    Force,
}

/// Whether the data directory `dir` is new or was never confirmed: a node started on it
/// has never voted (so rejoining it by removing and adding it back loses nothing).
pub fn is_unconfirmed(dir: &Path) -> bool {
    match std::fs::read_to_string(dir.join(FILE_NAME)) {
        Ok(text) => matches!(parse(&text), Some(State::Pending { .. })),
        // No file: a new directory, unless a node made it before the check existed.
        Err(_) => !dir.join("node-id").exists(),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Pending { nonce: u64 },
    Confirmed { witnesses: BTreeMap<NodeId, u64> },
}

/// What a probe's answer says about the node that answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The answerer's nonce if it is pending, `None` once confirmed.
    pub pending: Option<u64>,
    /// Whether it holds a log or snapshot past index 0.
    pub has_data: bool,
    /// The nonce it recorded for the asker when it confirmed, if it did.
    pub witnessed: Option<u64>,
}

/// The check's state on one node (see the [module docs](self)).
pub(crate) struct Bootstrap {
    path: PathBuf,
    id: NodeId,
    state: State,
    /// The cluster file's voters: whom a pending node asks.
    initial: BTreeSet<NodeId>,
    /// The node was started to rejoin (`--join`).
    join: bool,
    /// The pending peers that answered, with their nonces.
    fresh: BTreeMap<NodeId, u64>,
    /// The confirmed peers that hold data and did not witness this incarnation.
    unwitnessed: BTreeSet<NodeId>,
    ticks: u64,
    /// This node makes the cluster's id when it confirms: the lowest initial voter does.
    pub makes_cluster_id: bool,
}

impl Bootstrap {
    /// Reads (or for a directory just `created`, starts) the check's state in `dir`.
    pub fn open(
        dir: &Path,
        id: NodeId,
        initial: &Membership,
        created: bool,
        join: bool,
        mode: BootstrapMode,
    ) -> Result<Bootstrap> {
        let path = dir.join(FILE_NAME);
        let state = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text).ok_or_else(|| Error::Bootstrap(format!("{} is damaged", path.display())))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && !created => {
                State::Confirmed { witnesses: BTreeMap::new() }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => State::Pending { nonce: nonce()? },
            Err(error) => return Err(Error::Bootstrap(format!("cannot read {}: {error}", path.display()))),
        };
        let mut bootstrap = Bootstrap {
            path,
            id,
            state,
            initial: initial.voters.clone(),
            join,
            fresh: BTreeMap::new(),
            unwitnessed: BTreeSet::new(),
            ticks: 0,
            makes_cluster_id: false,
        };
        let alone = bootstrap.initial.iter().all(|voter| *voter == id) && !join;
        if bootstrap.is_pending() && (mode == BootstrapMode::Force || alone) {
            bootstrap.confirm()?;
        } else if created {
            bootstrap.save()?;
        }
        Ok(bootstrap)
    }

    /// A node that needs no check (a store the caller made itself).
    pub fn confirmed() -> Bootstrap {
        Bootstrap {
            path: PathBuf::new(),
            id: NodeId(0),
            state: State::Confirmed { witnesses: BTreeMap::new() },
            initial: BTreeSet::new(),
            join: false,
            fresh: BTreeMap::new(),
            unwitnessed: BTreeSet::new(),
            ticks: 0,
            makes_cluster_id: false,
        }
    }

    pub fn is_pending(&self) -> bool {
        matches!(self.state, State::Pending { .. })
    }

    /// The answer to `asker`'s probe.
    pub fn answer(&self, asker: NodeId, has_data: bool) -> PeerMessage {
        let (pending, witnessed) = match &self.state {
            State::Pending { nonce } => (Some(*nonce), None),
            State::Confirmed { witnesses } => (None, witnesses.get(&asker).copied()),
        };
        PeerMessage::BootstrapAnswer { pending, has_data, witnessed }
    }

    /// Every [`PROBE_EVERY_TICKS`], while pending and not rejoining: the probes to send.
    pub fn tick(&mut self) -> Vec<(NodeId, PeerMessage)> {
        if !self.is_pending() {
            return Vec::new();
        }
        self.ticks += 1;
        if self.ticks.is_multiple_of(REPORT_EVERY_TICKS) {
            let waiting: Vec<String> = self.unanswered().map(|id| id.to_string()).collect();
            tracing::info!(
                node = %self.id,
                waiting_for = %waiting.join(", "),
                "this node's data directory is new: it votes once the other initial members show the cluster is \
                 new too (start them), or with --bootstrap"
            );
        }
        if self.join || self.ticks % PROBE_EVERY_TICKS != 1 {
            return Vec::new();
        }
        // Every other initial member, those that answered pending too: one may have
        // confirmed since, witnessing this node.
        let others = self.initial.iter().copied().filter(|peer| *peer != self.id);
        others.map(|peer| (peer, PeerMessage::BootstrapProbe)).collect()
    }

    fn unanswered(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.initial.iter().copied().filter(|peer| *peer != self.id && !self.fresh.contains_key(peer))
    }

    /// Takes `from`'s answer. `Ok(true)` when this node may now vote.
    pub fn on_answer(&mut self, from: NodeId, answer: Answer) -> Result<bool> {
        let State::Pending { nonce } = self.state else { return Ok(false) };
        if self.join || !self.initial.contains(&from) || from == self.id {
            return Ok(false);
        }
        match answer {
            Answer { pending: Some(theirs), .. } => {
                self.fresh.insert(from, theirs);
                // A quorum of the initial voters, not counting this node.
                if self.fresh.len() > self.initial.len() / 2 {
                    let witnesses = std::mem::take(&mut self.fresh);
                    self.state = State::Confirmed { witnesses };
                    self.save()?;
                    tracing::info!(node = %self.id, "the other initial members are new too: bootstrapping a new cluster");
                    return Ok(true);
                }
                Ok(false)
            }
            Answer { pending: None, witnessed: Some(witnessed), .. } if witnessed == nonce => {
                tracing::info!(node = %self.id, peer = %from, "the cluster started with this node: it may vote");
                self.confirm()?;
                Ok(true)
            }
            Answer { pending: None, has_data: true, .. } => {
                self.unwitnessed.insert(from);
                if self.initial.iter().filter(|peer| **peer != self.id).all(|peer| self.unwitnessed.contains(peer)) {
                    return Err(Error::LostData { id: self.id, peer: from });
                }
                Ok(false)
            }
            Answer { pending: None, .. } => Ok(false),
        }
    }

    /// For a node that rejoins: `Ok(true)` when the membership in effect (appended at
    /// `membership_index` in `membership_term`) names it and its log holds an entry of the
    /// current term (see the [module docs](self)).
    pub fn on_log(
        &mut self,
        membership: &Membership,
        membership_index: Index,
        membership_term: Term,
        last_log_term: Term,
        term: Term,
    ) -> Result<bool> {
        if !self.join || !self.is_pending() {
            return Ok(false);
        }
        let current = membership_index > Index(0) && membership_term == term && last_log_term == term;
        if current && membership.contains(self.id) {
            tracing::info!(node = %self.id, "added back to the cluster and caught up with its leader: it may vote");
            self.confirm()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn confirm(&mut self) -> Result<()> {
        let witnesses = std::mem::take(&mut self.fresh);
        self.state = State::Confirmed { witnesses };
        self.save()
    }

    /// Writes the state: a new file, synced, renamed over the old one, directory synced.
    fn save(&self) -> Result<()> {
        let io = |what: &str, error: std::io::Error| Error::Bootstrap(format!("cannot {what}: {error}"));
        let tmp = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp).map_err(|error| io("create the bootstrap file", error))?;
        file.write_all(render(&self.state).as_bytes()).map_err(|error| io("write the bootstrap file", error))?;
        file.sync_all().map_err(|error| io("sync the bootstrap file", error))?;
        std::fs::rename(&tmp, &self.path).map_err(|error| io("rename the bootstrap file", error))?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|error| io("sync the data directory", error))?;
        }
        Ok(())
    }
}

fn nonce() -> Result<u64> {
    let id = crate::wire::ClusterId::random()?;
    Ok(u64::from_str_radix(&id.to_string()[..16], 16).unwrap_or_default())
}

/// `pending NONCE`, or `confirmed` and one `witness ID NONCE` line per witness.
fn render(state: &State) -> String {
    match state {
        State::Pending { nonce } => format!("pending {nonce:016x}\n"),
        State::Confirmed { witnesses } => {
            let mut text = String::from("confirmed\n");
            for (id, nonce) in witnesses {
                text += &format!("witness {} {nonce:016x}\n", id.0);
            }
            text
        }
    }
}

fn parse(text: &str) -> Option<State> {
    let mut lines = text.lines();
    let first: Vec<&str> = lines.next()?.split_whitespace().collect();
    let hex = |text: &str| u64::from_str_radix(text, 16).ok();
    match first.as_slice() {
        ["pending", nonce] => Some(State::Pending { nonce: hex(nonce)? }),
        ["confirmed"] => {
            let mut witnesses = BTreeMap::new();
            for line in lines {
                let ["witness", id, nonce] = line.split_whitespace().collect::<Vec<_>>()[..] else { return None };
                witnesses.insert(NodeId(id.parse().ok()?), hex(nonce)?);
            }
            Some(State::Confirmed { witnesses })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(ids: &[u64]) -> Membership {
        Membership::with_voters(ids.iter().copied().map(NodeId))
    }

    fn pending(dir: &Path, id: u64, initial: &[u64]) -> Bootstrap {
        Bootstrap::open(dir, NodeId(id), &voters(initial), true, false, BootstrapMode::Check).unwrap()
    }

    fn fresh(nonce: u64) -> Answer {
        Answer { pending: Some(nonce), has_data: false, witnessed: None }
    }

    #[test]
    fn a_new_cluster_confirms_once_a_quorum_of_the_others_is_new_too() {
        let dir = tempfile::tempdir().unwrap();
        let mut n1 = pending(dir.path(), 1, &[1, 2, 3]);
        assert!(n1.is_pending() && is_unconfirmed(dir.path()));
        assert_eq!(n1.tick().len(), 2, "it asks both other initial members");
        assert!(!n1.on_answer(NodeId(2), fresh(22)).unwrap(), "one of two others is not a quorum of three");
        assert!(n1.on_answer(NodeId(3), fresh(33)).unwrap());
        assert!(!n1.is_pending());
        // Durable: reopened, it is confirmed, and answers n3 with the nonce it witnessed.
        let reopened = Bootstrap::open(dir.path(), NodeId(1), &voters(&[1, 2, 3]), false, false, BootstrapMode::Check);
        let reopened = reopened.unwrap();
        assert!(!reopened.is_pending() && !is_unconfirmed(dir.path()));
        let answer = reopened.answer(NodeId(3), true);
        assert_eq!(answer, PeerMessage::BootstrapAnswer { pending: None, has_data: true, witnessed: Some(33) });
    }

    #[test]
    fn a_wiped_member_is_refused_and_a_slow_one_admitted() {
        let dir = tempfile::tempdir().unwrap();
        let mut n3 = pending(dir.path(), 3, &[1, 2, 3]);
        let State::Pending { nonce } = n3.state else { panic!("new directories start pending") };
        // A confirmed peer with no data and no record of us: wait.
        let quiet = Answer { pending: None, has_data: false, witnessed: None };
        assert!(!n3.on_answer(NodeId(1), quiet).unwrap() && n3.is_pending());
        // A confirmed peer that witnessed this incarnation: it was only slow.
        let witnessed = Answer { pending: None, has_data: true, witnessed: Some(nonce) };
        assert!(n3.on_answer(NodeId(1), witnessed).unwrap());

        let dir = tempfile::tempdir().unwrap();
        let mut wiped = pending(dir.path(), 3, &[1, 2, 3]);
        let other_incarnation = Answer { pending: None, has_data: true, witnessed: Some(nonce ^ 1) };
        assert!(!wiped.on_answer(NodeId(1), other_incarnation).unwrap(), "one peer's answer is not enough");
        let error = wiped.on_answer(NodeId(2), other_incarnation).unwrap_err();
        assert!(matches!(error, Error::LostData { peer: NodeId(2), .. }), "{error}");
        assert!(error.to_string().contains("--join"), "{error}");
    }

    /// n2 saw n1 and n3 new and bootstrapped; n3 confirmed because n2 witnessed it, before
    /// n1 answered it, so n3 recorded no witness; n3 then holds the log. n1, slow to start,
    /// hears from n3 first: n3's silence about n1 proves nothing, since n2 witnessed n1.
    #[test]
    fn a_slow_member_is_admitted_though_a_peer_that_joined_late_did_not_witness_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut n1 = pending(dir.path(), 1, &[1, 2, 3]);
        let State::Pending { nonce } = n1.state else { panic!("new directories start pending") };
        let unwitnessed = Answer { pending: None, has_data: true, witnessed: None };
        assert!(!n1.on_answer(NodeId(3), unwitnessed).unwrap(), "n1 waits for the other initial member");
        assert!(n1.is_pending());
        let witnessed = Answer { pending: None, has_data: true, witnessed: Some(nonce) };
        assert!(n1.on_answer(NodeId(2), witnessed).unwrap());
        assert!(!n1.is_pending());
    }

    /// n1 heard n2 new, then n3 confirmed (witnessed by n2, recording no witnesses): n1 must
    /// ask n2 again, which has since bootstrapped and witnessed n1.
    #[test]
    fn a_pending_node_asks_again_a_peer_that_answered_pending() {
        let dir = tempfile::tempdir().unwrap();
        let mut n1 = pending(dir.path(), 1, &[1, 2, 3]);
        assert!(!n1.on_answer(NodeId(2), fresh(22)).unwrap());
        let unwitnessed = Answer { pending: None, has_data: true, witnessed: None };
        assert!(!n1.on_answer(NodeId(3), unwitnessed).unwrap());
        let asked: Vec<NodeId> = (0..PROBE_EVERY_TICKS).flat_map(|_| n1.tick()).map(|(peer, _)| peer).collect();
        assert!(asked.contains(&NodeId(2)), "n1 asks n2 again: {asked:?}");
    }

    #[test]
    fn a_single_node_or_forced_start_votes_at_once_and_old_directories_count_as_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!pending(dir.path(), 1, &[1]).is_pending());
        let dir = tempfile::tempdir().unwrap();
        let forced = Bootstrap::open(dir.path(), NodeId(1), &voters(&[1, 2, 3]), true, false, BootstrapMode::Force);
        assert!(!forced.unwrap().is_pending());
        let dir = tempfile::tempdir().unwrap();
        let old = Bootstrap::open(dir.path(), NodeId(1), &voters(&[1, 2, 3]), false, false, BootstrapMode::Check);
        assert!(!old.unwrap().is_pending(), "a directory from before the check has no file");
    }

    #[test]
    fn a_rejoining_node_votes_once_it_is_a_member_holding_the_current_term() {
        let dir = tempfile::tempdir().unwrap();
        let mut node = Bootstrap::open(dir.path(), NodeId(2), &voters(&[1, 2, 3]), true, true, BootstrapMode::Check);
        let node = node.as_mut().unwrap();
        assert!(node.tick().is_empty(), "a rejoining node does not probe");
        let mut added = voters(&[1, 3]);
        added.learners.insert(NodeId(2));
        let (t4, t5) = (Term(4), Term(5));
        assert!(!node.on_log(&added, Index(0), t5, t5, t5).unwrap(), "the initial membership proves nothing");
        assert!(!node.on_log(&added, Index(9), t4, t5, t5).unwrap(), "a membership of an earlier term");
        assert!(!node.on_log(&added, Index(9), t5, t4, t5).unwrap(), "not caught up with the current leader");
        assert!(!node.on_log(&voters(&[1, 3]), Index(9), t5, t5, t5).unwrap(), "not a member yet");
        assert!(node.on_log(&added, Index(9), t5, t5, t5).unwrap());
    }

    #[test]
    fn a_damaged_state_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "pending zz\n").unwrap();
        let opened = Bootstrap::open(dir.path(), NodeId(1), &voters(&[1, 2]), false, false, BootstrapMode::Check);
        assert!(matches!(opened, Err(Error::Bootstrap(message)) if message.contains("damaged")));
    }
}
