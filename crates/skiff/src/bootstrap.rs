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
//!   about their state. If enough *other* initial voters are pending too that every
//!   majority of the initial voters includes one of them, no vote was ever cast and no entry
//!   ever committed: each needs a majority, and a pending node votes for no one. (Counting
//!   only others matters: this node's own empty directory proves nothing.) The node confirms
//!   and records those peers' nonces as the witnesses of the new cluster. A single-node
//!   cluster has no one to ask and confirms at once. Once enough answered, it still listens
//!   for the rest for a short grace (unless all answered), so that a member a moment late
//!   at the first start is a witness too. Until enough peers answer, it waits:
//!   the first start of a 3-node cluster needs all three (5 nodes: four), as Consul's
//!   `bootstrap_expect` waits for its servers.
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
//! A confirmed peer that holds data (a log or snapshot past index 0) and did not witness this
//! incarnation proves the cluster started without it: unless another peer that did witness
//! it answers within the grace, the directory is a lost one, and the node stops with
//! [`Error::LostData`], which says how to rejoin. Confirmed nodes pass on the witnesses they
//! know, so each learns the whole set. A directory made before this
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
const PROBE_EVERY_TICKS: u64 = 5;
/// How long a pending node waits, once it has heard enough, for the answers of the rest:
/// stragglers of a first start are then witnessed too, and a refusal may yet be answered by
/// a peer that witnessed this directory.
const GRACE_TICKS: u64 = 30;
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
        Ok(text) => matches!(parse(&text), Some((State::Pending { .. }, _))),
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The answerer's nonce if it is pending, `None` once confirmed.
    pub pending: Option<u64>,
    /// Whether it holds a log or snapshot past index 0.
    pub has_data: bool,
    /// Once confirmed: the initial members known to have started empty at the cluster's
    /// bootstrap, with the nonces of those directories.
    pub witnesses: Vec<(NodeId, u64)>,
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
    ticks: u64,
    /// When enough pending peers had answered (a tick count).
    quorum_at: Option<u64>,
    /// A confirmed peer with data that did not witness this directory, and when it said so.
    refused: Option<(NodeId, u64)>,
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
        // A directory made to rejoin stays so until confirmed, started with --join or not.
        let mut rejoin = false;
        let state = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let (state, join) =
                    parse(&text).ok_or_else(|| Error::Bootstrap(format!("{} is damaged", path.display())))?;
                rejoin = join;
                state
            }
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
            join: join || rejoin,
            ..Bootstrap::confirmed()
        };
        let alone = bootstrap.initial.iter().all(|voter| *voter == id) && !join;
        if bootstrap.is_pending() && (mode == BootstrapMode::Force || alone) {
            bootstrap.confirm()?;
        } else if created {
            bootstrap.save()?;
        }
        Ok(bootstrap)
    }

    /// A node that needs no check (a store the caller made itself); also the starting
    /// point of [`Bootstrap::open`]'s counters.
    pub fn confirmed() -> Bootstrap {
        Bootstrap {
            path: PathBuf::new(),
            id: NodeId(0),
            state: State::Confirmed { witnesses: BTreeMap::new() },
            initial: BTreeSet::new(),
            join: false,
            fresh: BTreeMap::new(),
            ticks: 0,
            quorum_at: None,
            refused: None,
            makes_cluster_id: false,
        }
    }

    pub fn is_pending(&self) -> bool {
        matches!(self.state, State::Pending { .. })
    }

    /// Pending, and rejoining: confirmed by its log ([`Bootstrap::on_log`]).
    pub fn is_rejoining(&self) -> bool {
        self.join && self.is_pending()
    }

    /// The answer to a probe.
    pub fn answer(&self, has_data: bool) -> PeerMessage {
        let (pending, witnesses) = match &self.state {
            State::Pending { nonce } => (Some(*nonce), Vec::new()),
            State::Confirmed { witnesses } => (None, witnesses.iter().map(|(id, nonce)| (*id, *nonce)).collect()),
        };
        PeerMessage::BootstrapAnswer { pending, has_data, witnesses }
    }

    /// What a node that just confirmed tells the other initial members, unasked: those
    /// still pending that it witnessed confirm at once, rather than at their next probe.
    pub fn announcements(&self, has_data: bool) -> Vec<(NodeId, PeerMessage)> {
        let others = self.initial.iter().copied().filter(|peer| *peer != self.id);
        others.map(|peer| (peer, self.answer(has_data))).collect()
    }

    /// One tick while pending: the probes to send (every [`PROBE_EVERY_TICKS`], unless
    /// rejoining), and `true` if this node may now vote (the grace after enough answers
    /// ran out). A refusal not answered within the grace stops the node.
    pub fn tick(&mut self) -> Result<(Vec<(NodeId, PeerMessage)>, bool)> {
        if !self.is_pending() {
            return Ok((Vec::new(), false));
        }
        self.ticks += 1;
        if self.quorum_at.is_some_and(|at| self.ticks - at >= GRACE_TICKS) {
            self.confirm_new_cluster()?;
            return Ok((Vec::new(), true));
        }
        if let Some((peer, at)) = self.refused
            && self.ticks - at >= GRACE_TICKS
        {
            return Err(Error::LostData { id: self.id, peer });
        }
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
            return Ok((Vec::new(), false));
        }
        // Every other initial member, those that answered too: one that was pending may
        // have confirmed since, witnessing this node.
        let others = self.initial.iter().copied().filter(|peer| *peer != self.id);
        Ok((others.map(|peer| (peer, PeerMessage::BootstrapProbe)).collect(), false))
    }

    /// Confirms a new cluster, with the pending peers heard as its witnesses.
    fn confirm_new_cluster(&mut self) -> Result<()> {
        let State::Pending { nonce } = self.state else { return Ok(()) };
        tracing::info!(node = %self.id, "the other initial members are new too: bootstrapping a new cluster");
        let mut witnesses = std::mem::take(&mut self.fresh);
        witnesses.insert(self.id, nonce);
        self.state = State::Confirmed { witnesses };
        self.save()
    }

    fn unanswered(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.initial.iter().copied().filter(|peer| *peer != self.id && !self.fresh.contains_key(peer))
    }

    /// Takes `from`'s answer. `Ok(true)` when this node may now vote.
    pub fn on_answer(&mut self, from: NodeId, answer: Answer) -> Result<bool> {
        if self.join || !self.initial.contains(&from) || from == self.id {
            return Ok(false);
        }
        // Remote input: only initial members can be witnesses.
        let witnesses: BTreeMap<NodeId, u64> =
            answer.witnesses.iter().filter(|(id, _)| self.initial.contains(id)).copied().collect();
        let nonce = match &mut self.state {
            State::Pending { nonce } => *nonce,
            State::Confirmed { witnesses: ours } => {
                // Facts learned from a peer: these directories started empty at the bootstrap.
                let before = ours.len();
                for (id, nonce) in witnesses {
                    ours.entry(id).or_insert(nonce);
                }
                if ours.len() != before {
                    self.save()?;
                }
                return Ok(false);
            }
        };
        if let Some(theirs) = answer.pending {
            self.fresh.insert(from, theirs);
            // Enough pending peers that every majority of the initial voters includes one of
            // them: |fresh| + majority > voters. With all of them heard, confirm now; else
            // after a grace, so that a straggler of the first start is witnessed too.
            let voters = self.initial.len();
            if self.fresh.len() + 1 == voters {
                self.confirm_new_cluster()?;
                return Ok(true);
            }
            if self.fresh.len() > voters - (voters / 2 + 1) && self.quorum_at.is_none() {
                self.quorum_at = Some(self.ticks);
            }
            return Ok(false);
        }
        if witnesses.get(&self.id) == Some(&nonce) {
            tracing::info!(node = %self.id, peer = %from, "the cluster started with this node: it may vote");
            let mut known = std::mem::take(&mut self.fresh);
            known.extend(witnesses);
            self.state = State::Confirmed { witnesses: known };
            self.save()?;
            return Ok(true);
        }
        if answer.has_data && self.refused.is_none() {
            // Stopped at the end of the grace, unless a peer that witnessed us answers.
            self.refused = Some((from, self.ticks));
        }
        Ok(false)
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
            tracing::info!(node = %self.id, "a member of the cluster, caught up with its leader: it may vote");
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
        file.write_all(render(&self.state, self.join).as_bytes())
            .map_err(|error| io("write the bootstrap file", error))?;
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

/// `pending NONCE` (and `rejoin` for a directory made by `--join`), or `confirmed` and one
/// `witness ID NONCE` line per witness.
fn render(state: &State, join: bool) -> String {
    match state {
        State::Pending { nonce } if join => format!("pending {nonce:016x}\nrejoin\n"),
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

/// The state, and whether a pending directory was made to rejoin.
fn parse(text: &str) -> Option<(State, bool)> {
    let mut lines = text.lines();
    let first: Vec<&str> = lines.next()?.split_whitespace().collect();
    let hex = |text: &str| u64::from_str_radix(text, 16).ok();
    match first.as_slice() {
        ["pending", nonce] => Some((State::Pending { nonce: hex(nonce)? }, lines.next() == Some("rejoin"))),
        ["confirmed"] => {
            let mut witnesses = BTreeMap::new();
            for line in lines {
                let ["witness", id, nonce] = line.split_whitespace().collect::<Vec<_>>()[..] else { return None };
                witnesses.insert(NodeId(id.parse().ok()?), hex(nonce)?);
            }
            Some((State::Confirmed { witnesses }, false))
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
        Answer { pending: Some(nonce), has_data: false, witnesses: Vec::new() }
    }

    fn confirmed(has_data: bool, witnesses: &[(u64, u64)]) -> Answer {
        let witnesses = witnesses.iter().map(|(id, nonce)| (NodeId(*id), *nonce)).collect();
        Answer { pending: None, has_data, witnesses }
    }

    #[test]
    fn a_new_cluster_confirms_once_a_quorum_of_the_others_is_new_too() {
        let dir = tempfile::tempdir().unwrap();
        let mut n1 = pending(dir.path(), 1, &[1, 2, 3]);
        assert!(n1.is_pending() && is_unconfirmed(dir.path()));
        assert_eq!(n1.tick().unwrap().0.len(), 2, "it asks both other initial members");
        assert!(!n1.on_answer(NodeId(2), fresh(22)).unwrap(), "n1 and n3 would be a majority without n2");
        assert!(n1.on_answer(NodeId(3), fresh(33)).unwrap());
        assert!(!n1.is_pending());
        // Durable: reopened, it is confirmed, and answers with every directory it saw start
        // empty, its own included.
        let reopened = Bootstrap::open(dir.path(), NodeId(1), &voters(&[1, 2, 3]), false, false, BootstrapMode::Check);
        let reopened = reopened.unwrap();
        assert!(!reopened.is_pending() && !is_unconfirmed(dir.path()));
        let PeerMessage::BootstrapAnswer { pending: None, has_data: true, witnesses } = reopened.answer(true) else {
            panic!("a confirmed node's answer")
        };
        let nonces: Vec<u64> = witnesses.iter().map(|(_, nonce)| *nonce).collect();
        assert_eq!((witnesses.len(), &nonces[1..]), (3, &[22, 33][..]), "{witnesses:?}");
    }

    #[test]
    fn how_many_new_peers_a_new_cluster_needs() {
        // Enough others that every majority includes one: 2 nodes 1, 3: 2, 4: 2, 5: 3, 7: 4.
        for (voters, needed) in [(2_u64, 1_usize), (3, 2), (4, 2), (5, 3), (7, 4)] {
            let dir = tempfile::tempdir().unwrap();
            let all: Vec<u64> = (1..=voters).collect();
            let mut node = pending(dir.path(), 1, &all);
            for peer in 2..needed as u64 + 2 {
                assert!(!node.on_answer(NodeId(peer), fresh(peer)).unwrap() || needed as u64 + 1 == voters);
            }
            // Enough: confirmed after the grace (the rest may still answer), or at once
            // when every other member answered.
            let ticks = (0..=GRACE_TICKS).take_while(|_| !node.tick().unwrap().1).count();
            assert!(!node.is_pending(), "{voters} voters, {needed} new peers");
            assert!(needed as u64 + 1 == voters || ticks as u64 == GRACE_TICKS - 1, "{voters}: {ticks}");
            let dir = tempfile::tempdir().unwrap();
            let mut short = pending(dir.path(), 1, &all);
            for peer in 2..needed as u64 + 1 {
                short.on_answer(NodeId(peer), fresh(peer)).unwrap();
            }
            for _ in 0..3 * GRACE_TICKS {
                short.tick().unwrap();
            }
            assert!(short.is_pending(), "{voters} voters, {} new peers are not enough", needed - 1);
        }
    }

    #[test]
    fn a_wiped_member_is_refused_and_a_slow_one_admitted() {
        let dir = tempfile::tempdir().unwrap();
        let mut n3 = pending(dir.path(), 3, &[1, 2, 3]);
        let State::Pending { nonce } = n3.state else { panic!("new directories start pending") };
        // A confirmed peer with no data and no record of us: wait.
        assert!(!n3.on_answer(NodeId(1), confirmed(false, &[(1, 11), (2, 22)])).unwrap() && n3.is_pending());
        // A confirmed peer that witnessed this incarnation: it was only slow. It learns
        // every witness the peer knows, and tells them in turn.
        assert!(n3.on_answer(NodeId(1), confirmed(true, &[(1, 11), (2, 22), (3, nonce), (9, 99)])).unwrap());
        let PeerMessage::BootstrapAnswer { witnesses, .. } = n3.answer(true) else { panic!("an answer") };
        assert_eq!(witnesses, [(NodeId(1), 11), (NodeId(2), 22), (NodeId(3), nonce)], "n9 is no initial member");

        let dir = tempfile::tempdir().unwrap();
        let mut wiped = pending(dir.path(), 3, &[1, 2, 3]);
        let other_incarnation = confirmed(true, &[(1, 11), (2, 22), (3, nonce ^ 1)]);
        assert!(!wiped.on_answer(NodeId(2), other_incarnation).unwrap(), "a refusal waits for the grace");
        let error = (0..=GRACE_TICKS).find_map(|_| wiped.tick().err()).expect("stopped after the grace");
        assert!(matches!(error, Error::LostData { peer: NodeId(2), .. }), "{error}");
        assert!(error.to_string().contains("--join"), "{error}");
    }

    /// n3 confirmed late without witnessing n1, while n2 did: n3's refusal waits for the
    /// grace, and n2's answer admits n1.
    #[test]
    fn a_slow_member_is_admitted_though_a_peer_that_confirmed_late_did_not_witness_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut n1 = pending(dir.path(), 1, &[1, 2, 3]);
        let State::Pending { nonce } = n1.state else { panic!("new directories start pending") };
        assert!(!n1.on_answer(NodeId(3), confirmed(true, &[(3, 33)])).unwrap(), "n1 waits for n2");
        n1.tick().unwrap();
        assert!(n1.is_pending());
        assert!(n1.on_answer(NodeId(2), confirmed(true, &[(1, nonce), (2, 22)])).unwrap());
        for _ in 0..2 * GRACE_TICKS {
            n1.tick().expect("the refusal is forgotten once confirmed");
        }
    }

    /// n1 heard n2 new, then n3 confirmed without it: n1 must ask n2 again, which has since
    /// bootstrapped and witnessed n1.
    #[test]
    fn a_pending_node_asks_again_a_peer_that_answered_pending() {
        let dir = tempfile::tempdir().unwrap();
        let mut n1 = pending(dir.path(), 1, &[1, 2, 3]);
        assert!(!n1.on_answer(NodeId(2), fresh(22)).unwrap());
        assert!(!n1.on_answer(NodeId(3), confirmed(true, &[(3, 33)])).unwrap());
        let asked: Vec<NodeId> =
            (0..PROBE_EVERY_TICKS).flat_map(|_| n1.tick().unwrap().0).map(|(peer, _)| peer).collect();
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
        assert!(node.tick().unwrap().0.is_empty(), "a rejoining node does not probe");
        let mut added = voters(&[1, 3]);
        added.learners.insert(NodeId(2));
        let (t4, t5) = (Term(4), Term(5));
        assert!(!node.on_log(&added, Index(0), t5, t5, t5).unwrap(), "the initial membership proves nothing");
        assert!(!node.on_log(&added, Index(9), t4, t5, t5).unwrap(), "a membership of an earlier term");
        assert!(!node.on_log(&added, Index(9), t5, t4, t5).unwrap(), "not caught up with the current leader");
        assert!(!node.on_log(&voters(&[1, 3]), Index(9), t5, t5, t5).unwrap(), "not a member yet");
        // Restarted before it confirmed, even without --join, it still rejoins.
        let again = Bootstrap::open(dir.path(), NodeId(2), &voters(&[1, 2, 3]), false, false, BootstrapMode::Check);
        assert!(again.unwrap().is_rejoining(), "the directory remembers it was made to rejoin");
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
