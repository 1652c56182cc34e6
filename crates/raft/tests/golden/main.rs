//! Golden-script tests of the consensus core (STYLE §7). Each file in `testscripts/` is one
//! scenario; this runner drives a cluster of `Raft<MemStorage>` nodes with manual message
//! delivery and prints what changed, one line each: role and term changes, truncations,
//! appends, commits, applies, reads, every message sent or lost, and every message a node
//! dropped as invalid, with the reason it gives. Messages wait in the
//! network until a command delivers them, so a script can interleave events exactly.
//!
//! Regenerate the expected output with `UPDATE_GOLDENFILES=1 cargo test -p skiff-raft --test
//! golden`, and read every changed line against the Raft rules before accepting it.
//!
//! Commands (a node is `1` or `n1`):
//! - `cluster nodes=N [learners=N] [heartbeat=N election=N pre_vote=B check_quorum=B
//!   lease_reads=B max_inflight=N max_append_bytes=N max_uncommitted=N]`: a new cluster of
//!   voters `n1..nN` then learners. Defaults: heartbeat 2 ticks, election timeout 10 ticks.
//! - `tick [ID...] [times=N]`: ticks the given (or all live) nodes.
//! - `campaign ID`, `propose ID DATA...`, `read ID READ_ID...` (several: reads that arrive together), `transfer ID TARGET`,
//!   `membership ID add-learner|add-voter|promote|remove TARGET`: inputs to one node.
//! - `compact ID INDEX`: the node's state machine snapshots up to INDEX; the log is compacted.
//! - `deliver [from=ID] [to=ID] [count=N]`: delivers the queued messages that match, in order;
//!   `drop` takes the same arguments and loses them instead.
//! - `stabilize [heartbeat=true]`: delivers and processes until nothing moves; with
//!   `heartbeat`, the leaders first tick one heartbeat interval.
//! - `partition ID...`: cuts the given nodes off from the others; `heal` joins everyone.
//! - `crash ID` (unsynced writes are lost), `restart ID`, `add-node ID` (a new empty node).
//! - `step ID from=ID KIND [term=N] ...`: hands the node a message built by the script
//!   (`AppendEntries prev= entries= commit=`, `AppendEntriesResponse match=|reject= hint=`,
//!   `Heartbeat commit= seq=`, `HeartbeatResponse seq=`, `RequestVote last= pre_vote=
//!   transfer=`, `TimeoutNow`, `InstallSnapshot snapshot=`, `ReadIndex id=`).
//! - `status [ID...]`, `log [ID...]`: print state without changing it.
//!
//! After every input command each live node's `Ready` is processed as its contract says, by
//! the executor the simulator also uses (`skiff_raft::testing`): persist (and sync when
//! `must_sync` asks: a Ready that only moves the commit index is not synced), queue the
//! messages, apply, answer reads, advance. With `ready=false`
//! the `Ready` is left for a later command, or lost by `crash`.

use std::collections::{BTreeMap, VecDeque};
use std::error::Error;
use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;

use bytes::Bytes;
use goldenscript::{ArgumentConsumer, Command, Context};
use skiff_raft::testing::{self, Batch, ReadyHandler};
use skiff_raft::{
    AppendResult, Config, Entry, Envelope, Index, LogId, MemStorage, Membership, MembershipChange, Message, NodeId,
    Payload, Raft, ReadId, ReadState, Ready, RoleName, SnapshotMeta, Storage, Term,
};

mod format;

use format::{
    describe_unsynced, format_entries, format_entry, format_message, format_status, log_ids, names, role_name,
};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Commands applied by a state machine, with their log indexes.
type Commands = Vec<(Index, String)>;

macro_rules! golden_scripts {
    ($($name:ident),* $(,)?) => {
        const SCRIPTS: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                run_script(stringify!($name));
            }
        )*
    };
}

golden_scripts! {
    election_basic,
    election_split_vote,
    election_stale_leader_rejoins,
    election_check_quorum_step_down,
    election_pre_vote_prevents_disruption,
    election_disruption_without_pre_vote,
    replication_batching,
    replication_pipeline,
    replication_divergent_log_overwritten,
    replication_fast_backup,
    replication_commit_capped_at_last_new_entry,
    replication_commit_current_term_only,
    replication_figure8,
    replication_figure8_current_term,
    proposal_not_leader,
    proposal_uncommitted_limit,
    read_index_leader,
    read_index_follower,
    read_index_follower_batch,
    read_index_leadership_change,
    read_index_new_leader_waits,
    read_lease,
    transfer_up_to_date,
    transfer_lagging_target,
    transfer_timeout,
    membership_add_learner,
    membership_promote_learner,
    membership_add_voter,
    membership_remove_follower,
    membership_remove_leader,
    membership_refused_before_term_commit,
    membership_one_change_at_a_time,
    snapshot_lagging_follower,
    snapshot_stream_fails,
    restart_from_storage,
    restart_crash_loses_unsynced,
    input_validation,
    input_validation_no_panic_from_the_wire,
}

fn scripts_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testscripts")
}

fn run_script(name: &str) {
    let path = scripts_dir().join(name);
    if let Err(error) = goldenscript::run(&mut Runner::default(), &path) {
        panic!("{}: {error}", path.display());
    }
}

/// A script that is not listed above would never run.
#[test]
fn every_script_is_listed() {
    let mut files: Vec<String> = std::fs::read_dir(scripts_dir())
        .expect("testscripts/ exists")
        .map(|entry| entry.expect("readable directory").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut listed: Vec<String> = SCRIPTS.iter().map(|name| name.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed, "testscripts/ and the list in golden.rs differ");
}

#[derive(Default)]
struct Runner {
    cluster: Cluster,
}

impl goldenscript::Runner for Runner {
    type Command = Command;

    fn run(&mut self, command: &Command, _context: &Context) -> Result<String> {
        let mut args = Args(command.consume_args());
        let cluster = &mut self.cluster;
        cluster.hold_ready = !args.key::<bool>("ready")?.unwrap_or(true);
        let result = cluster.run(&command.name, &mut args).and_then(|input| {
            args.finish()?;
            if input { cluster.settle_ready() } else { Ok(()) }
        });
        let output = std::mem::take(&mut cluster.out);
        result?;
        cluster.check_invariants();
        Ok(output)
    }
}

/// The arguments of one command, consumed as the command reads them.
struct Args<'a>(ArgumentConsumer<'a>);

impl<'a> Args<'a> {
    fn string(&mut self, what: &str) -> Result<&'a str> {
        self.0.next_pos().ok_or_else(|| format!("missing {what}").into())
    }

    fn parse<T: FromStr<Err: Error + 'static>>(&mut self, what: &str) -> Result<T> {
        Ok(self.string(what)?.parse()?)
    }

    fn id(&mut self) -> Result<NodeId> {
        parse_id(self.string("node id")?)
    }

    /// All remaining positional arguments, as node ids.
    fn ids(&mut self) -> Result<Vec<NodeId>> {
        std::iter::from_fn(|| self.0.next_pos()).map(parse_id).collect()
    }

    fn key<T: FromStr<Err: Error + 'static>>(&mut self, key: &str) -> Result<Option<T>> {
        Ok(self.0.take_key(key).map(str::parse).transpose()?)
    }

    fn key_id(&mut self, key: &str) -> Result<Option<NodeId>> {
        self.0.take_key(key).map(parse_id).transpose()
    }

    fn key_log_id(&mut self, key: &str) -> Result<Option<LogId>> {
        self.0.take_key(key).map(parse_log_id).transpose()
    }

    fn finish(&self) -> Result<()> {
        self.0.reject_next()
    }
}

fn parse_id(text: &str) -> Result<NodeId> {
    Ok(NodeId(text.strip_prefix('n').unwrap_or(text).parse()?))
}

/// `index@term`, as LogId prints.
fn parse_log_id(text: &str) -> Result<LogId> {
    let (index, term) = text.split_once('@').ok_or_else(|| format!("{text} is not index@term"))?;
    Ok(LogId::new(Term(term.parse()?), Index(index.parse()?)))
}

/// A node as its machine sees it: the core while it runs, only its disk while it is down.
enum Life {
    Up(Box<Raft<MemStorage>>),
    Down(Box<MemStorage>),
}

struct Host {
    life: Life,
    machine: StateMachine,
    /// What the output last said about this node, so only changes are printed.
    seen: Seen,
}

/// The application's state machine: the commands applied so far. Its snapshot is kept on
/// the node's disk and survives crashes; the rest is rebuilt from the log on restart.
#[derive(Default)]
struct StateMachine {
    applied: Index,
    commands: Commands,
    /// The durable snapshot: its last log id and the commands up to it.
    snapshot: (LogId, Commands),
    /// Snapshot data received with an `InstallSnapshot`, installed by the next `Ready`.
    received: Option<(LogId, Commands)>,
    /// Reads confirmed at an index not yet applied.
    waiting_reads: Vec<(ReadId, Index)>,
}

#[derive(Clone)]
struct Seen {
    role: String,
    term: Term,
    commit: Index,
    /// Messages dropped as invalid, by reason.
    dropped: BTreeMap<&'static str, u64>,
}

impl Seen {
    fn of(raft: &Raft<MemStorage>) -> Seen {
        let dropped = raft.status().dropped_messages;
        Seen { role: role_name(raft.role(), raft.leader()), term: raft.term(), commit: raft.commit_index(), dropped }
    }
}

/// A message on the wire, with the snapshot data the runtime streams alongside an
/// `InstallSnapshot`.
struct InFlight {
    envelope: Envelope,
    snapshot: Option<(LogId, Commands)>,
}

#[derive(Default)]
struct Cluster {
    /// The settings of every node (`id` and `seed` are set per node).
    config: Option<Config>,
    hosts: BTreeMap<NodeId, Host>,
    network: VecDeque<InFlight>,
    /// Partition groups: nodes in different groups can't talk. Absent means group 0.
    groups: BTreeMap<NodeId, u32>,
    /// Election Safety across the run: the leader of each term.
    leaders: BTreeMap<Term, NodeId>,
    /// State Machine Safety across the run: what was applied at each index, by anyone.
    applied: BTreeMap<Index, String>,
    /// `ready=false` was given: leave each node's `Ready` for later.
    hold_ready: bool,
    out: String,
}

impl Cluster {
    /// Runs one command. Returns whether it gave input to nodes, whose `Ready`s are due.
    fn run(&mut self, name: &str, args: &mut Args) -> Result<bool> {
        if name != "cluster" && self.config.is_none() {
            return Err("the script must start with `cluster`".into());
        }
        match name {
            "cluster" => self.create(args)?,
            "tick" => {
                let times = args.key("times")?.unwrap_or(1);
                let ids = args.ids()?;
                self.tick(ids, times)?;
            }
            "deliver" | "drop" => {
                let (from, to, count) = (args.key_id("from")?, args.key_id("to")?, args.key("count")?);
                let messages = self.take_messages(from, to, count.unwrap_or(usize::MAX));
                for message in messages {
                    match name {
                        "deliver" => self.deliver_one(message)?,
                        _ => writeln!(self.out, "drop {} (lost)", format_message(&message.envelope))?,
                    }
                }
            }
            "stabilize" => {
                let heartbeat = args.key("heartbeat")?.unwrap_or(false);
                self.stabilize(heartbeat)?;
            }
            "partition" => {
                let ids = args.ids()?;
                self.partition(&ids)?;
                return Ok(false);
            }
            "heal" => {
                self.groups.clear();
                return Ok(false);
            }
            "crash" => self.crash(args.id()?)?,
            "restart" => self.restart(args.id()?)?,
            "add-node" => self.add_node(args.id()?)?,
            "step" => self.inject(args)?,
            "compact" => {
                let id = args.id()?;
                self.compact(id, Index(args.parse("index")?))?;
            }
            "status" => return self.print_nodes(args.ids()?, |cluster, id| cluster.print_status(id)).map(|_| false),
            "log" => return self.print_nodes(args.ids()?, |cluster, id| cluster.print_log(id)).map(|_| false),
            _ => self.input(name, args)?,
        }
        Ok(true)
    }

    /// Commands that are one call on one node's core.
    fn input(&mut self, name: &str, args: &mut Args) -> Result<()> {
        let id = args.id()?;
        let raft = self.raft(id)?;
        match name {
            "campaign" => raft.campaign_now()?,
            "propose" => {
                let data: Vec<&str> = std::iter::from_fn(|| args.0.next_pos()).collect();
                if data.is_empty() {
                    return Err("missing data".into());
                }
                for command in data {
                    raft.propose(Bytes::from(command.to_string()))?;
                }
            }
            "read" => {
                // Several ids: reads that arrive together, before the next `Ready`.
                let ids: Vec<&str> = std::iter::from_fn(|| args.0.next_pos()).collect();
                if ids.is_empty() {
                    return Err("missing read id".into());
                }
                for id in ids {
                    raft.read_index(ReadId(id.parse()?))?;
                }
            }
            "transfer" => raft.transfer_leader(args.id()?)?,
            "membership" => {
                let kind = args.string("change")?;
                let target = args.id()?;
                let change = match kind {
                    "add-learner" => MembershipChange::AddLearner { id: target, address: None },
                    "add-voter" => MembershipChange::AddVoter { id: target, address: None },
                    "promote" => MembershipChange::Promote(target),
                    "remove" => MembershipChange::Remove(target),
                    _ => return Err(format!("unknown membership change {kind}").into()),
                };
                raft.propose_membership(change)?;
            }
            _ => return Err(format!("unknown command {name}").into()),
        }
        self.observe(id);
        Ok(())
    }

    fn create(&mut self, args: &mut Args) -> Result<()> {
        let voters: u64 = args.key("nodes")?.ok_or("cluster needs nodes=N")?;
        let learners: u64 = args.key("learners")?.unwrap_or(0);
        let mut config = Config::new(NodeId(0));
        config.heartbeat_interval_ticks = args.key("heartbeat")?.unwrap_or(2);
        config.election_timeout_ticks = args.key("election")?.unwrap_or(10);
        config.pre_vote = args.key("pre_vote")?.unwrap_or(config.pre_vote);
        config.check_quorum = args.key("check_quorum")?.unwrap_or(config.check_quorum);
        config.lease_reads = args.key("lease_reads")?.unwrap_or(config.lease_reads);
        config.max_inflight = args.key("max_inflight")?.unwrap_or(config.max_inflight);
        config.max_append_bytes = args.key("max_append_bytes")?.unwrap_or(config.max_append_bytes);
        config.max_uncommitted_bytes = args.key("max_uncommitted")?.unwrap_or(config.max_uncommitted_bytes);
        *self = Cluster { config: Some(config), ..Cluster::default() };
        let mut membership = Membership::with_voters((1..=voters).map(NodeId));
        membership.learners = (voters + 1..=voters + learners).map(NodeId).collect();
        for id in membership.members().collect::<Vec<_>>() {
            self.start(id, MemStorage::new(membership.clone()))?;
        }
        self.print_nodes(Vec::new(), |cluster, id| cluster.print_status(id))
    }

    /// Starts (or restarts) node `id` from `storage`; the state machine restores from the
    /// snapshot on disk and replays the log.
    fn start(&mut self, id: NodeId, storage: MemStorage) -> Result<()> {
        let mut config = self.config.clone().expect("cluster exists");
        config.id = id;
        config.seed = id.0;
        let raft = Raft::new(config, storage)?;
        let machine = match self.hosts.remove(&id) {
            Some(host) => StateMachine::restart(host.machine.snapshot),
            None => StateMachine::default(),
        };
        let seen = Seen::of(&raft);
        self.hosts.insert(id, Host { life: Life::Up(Box::new(raft)), machine, seen });
        Ok(())
    }

    fn raft(&mut self, id: NodeId) -> Result<&mut Raft<MemStorage>> {
        match self.hosts.get_mut(&id).map(|host| &mut host.life) {
            Some(Life::Up(raft)) => Ok(raft),
            Some(Life::Down(_)) => Err(format!("{id} is down").into()),
            None => Err(format!("{id} does not exist").into()),
        }
    }

    fn live_ids(&self) -> Vec<NodeId> {
        self.hosts.iter().filter(|(_, host)| matches!(host.life, Life::Up(_))).map(|(&id, _)| id).collect()
    }

    /// Prints what changed on node `id` since it was last looked at, and checks Election
    /// Safety.
    fn observe(&mut self, id: NodeId) {
        let Some(host) = self.hosts.get_mut(&id) else { return };
        let Life::Up(raft) = &host.life else { return };
        let now = Seen::of(raft);
        let before = std::mem::replace(&mut host.seen, now.clone());
        if (&before.role, before.term) != (&now.role, now.term) {
            writeln!(self.out, "{id}: {} -> {} term={}", before.role, now.role, now.term).unwrap();
        }
        if before.commit != now.commit {
            writeln!(self.out, "{id}: commit {} -> {}", before.commit, now.commit).unwrap();
        }
        for (why, count) in &now.dropped {
            if before.dropped.get(why) != Some(count) {
                writeln!(self.out, "{id}: dropped a message: {why}").unwrap();
            }
        }
        if raft.role() == RoleName::Leader {
            let leader = *self.leaders.entry(now.term).or_insert(id);
            assert_eq!(leader, id, "Election Safety: {leader} and {id} both lead term {}", now.term);
        }
    }

    fn check_invariants(&self) {
        for host in self.hosts.values() {
            if let Life::Up(raft) = &host.life {
                raft.assert_invariants();
            }
        }
    }

    fn tick(&mut self, ids: Vec<NodeId>, times: u32) -> Result<()> {
        let ids = if ids.is_empty() { self.live_ids() } else { ids };
        for _ in 0..times {
            for &id in &ids {
                self.raft(id)?.tick()?;
                self.observe(id);
            }
            self.settle_ready()?;
        }
        Ok(())
    }

    /// Processes every live node's `Ready`, unless the command said `ready=false`.
    fn settle_ready(&mut self) -> Result<()> {
        if self.hold_ready { Ok(()) } else { self.process_all_ready() }
    }

    fn process_all_ready(&mut self) -> Result<()> {
        for _ in 0..100 {
            let pending: Vec<NodeId> = self
                .hosts
                .iter()
                .filter(|(_, host)| matches!(&host.life, Life::Up(raft) if raft.has_ready()))
                .map(|(&id, _)| id)
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            for id in pending {
                self.process_ready(id)?;
            }
        }
        Err("Ready keeps coming".into())
    }

    /// Acts on one `Ready` in the order its contract says (the shared executor), printing
    /// what it does.
    fn process_ready(&mut self, id: NodeId) -> Result<()> {
        let host = self.hosts.get_mut(&id).expect("a live node");
        let Life::Up(raft) = &mut host.life else { return Ok(()) };
        let mut handler = GoldenHandler {
            id,
            out: &mut self.out,
            machine: &mut host.machine,
            network: &mut self.network,
            applied: &mut self.applied,
        };
        testing::execute(raft, &mut handler)?;
        self.observe(id);
        Ok(())
    }

    /// Takes up to `count` queued messages from `from` to `to` (either may be any node),
    /// oldest first.
    fn take_messages(&mut self, from: Option<NodeId>, to: Option<NodeId>, count: usize) -> Vec<InFlight> {
        let mut taken = Vec::new();
        let mut rest = VecDeque::new();
        for message in std::mem::take(&mut self.network) {
            let envelope = &message.envelope;
            let matches = from.is_none_or(|id| id == envelope.from) && to.is_none_or(|id| id == envelope.to);
            if matches && taken.len() < count {
                taken.push(message);
            } else {
                rest.push_back(message);
            }
        }
        self.network = rest;
        taken
    }

    fn deliver_one(&mut self, message: InFlight) -> Result<()> {
        let envelope = message.envelope;
        let (from, to) = (envelope.from, envelope.to);
        let group = |id| self.groups.get(&id).copied().unwrap_or(0);
        let dropped = if group(from) != group(to) {
            Some("partitioned".to_string())
        } else {
            match self.hosts.get(&to).map(|host| &host.life) {
                None => Some(format!("{to} does not exist")),
                Some(Life::Down(_)) => Some(format!("{to} is down")),
                Some(Life::Up(_)) => None,
            }
        };
        if let Some(why) = dropped {
            writeln!(self.out, "drop {} ({why})", format_message(&envelope))?;
            if matches!(envelope.message, Message::InstallSnapshot { .. })
                && let Ok(sender) = self.raft(from)
            {
                sender.report_snapshot(to, false); // the runtime saw the stream fail
            }
            return Ok(());
        }
        let host = self.hosts.get_mut(&to).expect("checked above");
        if message.snapshot.is_some() {
            host.machine.received = message.snapshot;
        }
        self.raft(to)?.step(envelope)?;
        self.observe(to);
        Ok(())
    }

    fn stabilize(&mut self, heartbeat: bool) -> Result<()> {
        if heartbeat {
            let leaders: Vec<NodeId> = self
                .live_ids()
                .into_iter()
                .filter(|&id| self.raft(id).is_ok_and(|raft| raft.role() == RoleName::Leader))
                .collect();
            let interval = self.config.as_ref().expect("cluster exists").heartbeat_interval_ticks;
            self.tick(leaders, interval)?;
        }
        for _ in 0..1000 {
            self.process_all_ready()?;
            if self.network.is_empty() {
                return Ok(());
            }
            for message in std::mem::take(&mut self.network) {
                self.deliver_one(message)?;
            }
        }
        Err("the cluster does not stabilize".into())
    }

    fn partition(&mut self, ids: &[NodeId]) -> Result<()> {
        let group = self.groups.values().max().copied().unwrap_or(0) + 1;
        for &id in ids {
            self.groups.insert(id, group);
        }
        let mut groups: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for &id in self.hosts.keys() {
            groups.entry(self.groups.get(&id).copied().unwrap_or(0)).or_default().push(id.to_string());
        }
        let groups: Vec<String> = groups.values().map(|ids| ids.join(" ")).collect();
        writeln!(self.out, "partition: {}", groups.join(" | "))?;
        Ok(())
    }

    /// Stops node `id` as a power loss would: what its driver wrote but did not sync is
    /// lost, and so is everything only in memory (its state machine, its unsent messages).
    fn crash(&mut self, id: NodeId) -> Result<()> {
        let host = self.hosts.get_mut(&id).ok_or_else(|| format!("{id} does not exist"))?;
        let Life::Up(raft) = &mut host.life else { return Err(format!("{id} is already down").into()) };
        let mut lost = Vec::new();
        if raft.has_ready() {
            // The driver took the Ready and wrote it, but the power went before the sync.
            let ready = raft.ready()?;
            testing::write(raft.storage_mut(), &ready)?;
            lost = describe_unsynced(&ready);
        }
        let life = std::mem::replace(&mut host.life, Life::Down(Box::default()));
        let Life::Up(raft) = life else { unreachable!("checked above") };
        let mut storage = raft.into_storage();
        storage.crash();
        host.life = Life::Down(Box::new(storage));
        host.machine = StateMachine::restart(std::mem::take(&mut host.machine.snapshot));
        match lost.is_empty() {
            true => writeln!(self.out, "{id}: crash")?,
            false => writeln!(self.out, "{id}: crash, losing unsynced {}", lost.join(", "))?,
        }
        Ok(())
    }

    fn restart(&mut self, id: NodeId) -> Result<()> {
        let host = self.hosts.get_mut(&id).ok_or_else(|| format!("{id} does not exist"))?;
        let Life::Down(storage) = &mut host.life else { return Err(format!("{id} is running").into()) };
        let storage = std::mem::take(storage);
        self.start(id, *storage)?;
        match &self.hosts[&id].machine.snapshot {
            (snapshot_id, _) if snapshot_id.index == Index(0) => writeln!(self.out, "{id}: restart")?,
            (snapshot_id, commands) => writeln!(
                self.out,
                "{id}: restart, state machine from snapshot {snapshot_id} state=[{}]",
                names(commands)
            )?,
        }
        self.print_status(id)
    }

    fn add_node(&mut self, id: NodeId) -> Result<()> {
        if self.hosts.contains_key(&id) {
            return Err(format!("{id} exists").into());
        }
        self.start(id, MemStorage::new(Membership::default()))?;
        writeln!(self.out, "{id}: new node")?;
        self.print_status(id)
    }

    /// The state machine snapshots what it applied up to `index`; the core and the log
    /// compact to it.
    fn compact(&mut self, id: NodeId, index: Index) -> Result<()> {
        let raft = self.raft(id)?;
        let meta = raft.compact(index)?;
        raft.storage_mut().compact(meta.clone())?;
        raft.storage_mut().sync()?;
        let first_index = raft.storage().first_index();
        let machine = &mut self.hosts.get_mut(&id).expect("node exists").machine;
        let commands: Commands = machine.commands.iter().filter(|(at, _)| *at <= index).cloned().collect();
        writeln!(self.out, "{id}: snapshot {} state=[{}], log from {first_index}", meta.last_log_id, names(&commands))?;
        machine.snapshot = (meta.last_log_id, commands);
        Ok(())
    }

    /// Hands node `to` a message the script describes, as a faulty or malicious peer could.
    fn inject(&mut self, args: &mut Args) -> Result<()> {
        let to = args.id()?;
        let from = args.key_id("from")?.ok_or("step needs from=ID")?;
        let kind = args.string("message kind")?;
        let raft = self.raft(to)?;
        let term = args.key("term")?.map(Term).unwrap_or(raft.term());
        let membership = raft.membership().clone();
        let message = match kind {
            "AppendEntries" => {
                let entries: Option<String> = args.key("entries")?;
                let entries =
                    entries.unwrap_or_default().split_whitespace().map(parse_log_id).collect::<Result<Vec<_>>>()?;
                Message::AppendEntries {
                    prev_log_id: args.key_log_id("prev")?.unwrap_or_default(),
                    entries: entries.into_iter().map(|log_id| Entry { log_id, payload: Payload::Empty }).collect(),
                    leader_commit: Index(args.key("commit")?.unwrap_or(0)),
                }
            }
            "AppendEntriesResponse" => match args.key("match")? {
                Some(index) => Message::AppendEntriesResponse(AppendResult::Success { match_index: Index(index) }),
                None => Message::AppendEntriesResponse(AppendResult::Reject {
                    rejected_prev: Index(args.key("reject")?.ok_or("needs match= or reject=")?),
                    hint: args.key_log_id("hint")?.unwrap_or_default(),
                }),
            },
            "Heartbeat" => Message::Heartbeat {
                commit: Index(args.key("commit")?.unwrap_or(0)),
                heartbeat_round: args.key("seq")?.unwrap_or(1),
            },
            "HeartbeatResponse" => Message::HeartbeatResponse { heartbeat_round: args.key("seq")?.unwrap_or(0) },
            "RequestVote" => Message::RequestVote {
                last_log_id: args.key_log_id("last")?.unwrap_or_default(),
                pre_vote: args.key("pre_vote")?.unwrap_or(false),
                leader_transfer: args.key("transfer")?.unwrap_or(false),
            },
            "TimeoutNow" => Message::TimeoutNow,
            "InstallSnapshot" => {
                let last_log_id = args.key_log_id("snapshot")?.ok_or("needs snapshot=")?;
                Message::InstallSnapshot { meta: SnapshotMeta { last_log_id, membership } }
            }
            "ReadIndex" => Message::ReadIndex { id: ReadId(args.key("id")?.unwrap_or(0)) },
            "ReadIndexResponse" => Message::ReadIndexResponse {
                id: ReadId(args.key("id")?.unwrap_or(0)),
                index: args.key("index")?.map(Index),
            },
            _ => return Err(format!("step can't build a {kind}").into()),
        };
        let envelope = Envelope { from, to, term, message };
        writeln!(self.out, "step {}", format_message(&envelope))?;
        self.raft(to)?.step(envelope)?;
        self.observe(to);
        Ok(())
    }

    fn print_nodes(&mut self, ids: Vec<NodeId>, print: impl Fn(&mut Cluster, NodeId) -> Result<()>) -> Result<()> {
        let ids = if ids.is_empty() { self.hosts.keys().copied().collect() } else { ids };
        for id in ids {
            print(self, id)?;
        }
        Ok(())
    }

    fn print_status(&mut self, id: NodeId) -> Result<()> {
        let host = self.hosts.get(&id).ok_or_else(|| format!("{id} does not exist"))?;
        let Life::Up(raft) = &host.life else {
            writeln!(self.out, "{id}: down")?;
            return Ok(());
        };
        writeln!(self.out, "{}", format_status(&raft.status()))?;
        Ok(())
    }

    /// The node's log as its storage holds it (on disk, for a node that is down).
    fn print_log(&mut self, id: NodeId) -> Result<()> {
        let host = self.hosts.get(&id).ok_or_else(|| format!("{id} does not exist"))?;
        let storage = match &host.life {
            Life::Up(raft) => raft.storage(),
            Life::Down(storage) => storage,
        };
        let hard_state = storage.hard_state();
        let vote = hard_state.vote.map_or("none".to_string(), |id| id.to_string());
        let snapshot = storage.snapshot_meta().last_log_id;
        writeln!(
            self.out,
            "{id}: term={} vote={vote} commit={} snapshot={snapshot}",
            hard_state.term, hard_state.commit
        )?;
        let entries = storage.entries(storage.first_index(), storage.last_index().next(), u64::MAX)?;
        for entry in entries {
            writeln!(self.out, "{id}:   {}", format_entry(&entry))?;
        }
        Ok(())
    }
}

impl StateMachine {
    /// A state machine after a restart: its snapshot, nothing applied after it.
    fn restart(snapshot: (LogId, Commands)) -> StateMachine {
        let mut machine = StateMachine { snapshot, ..StateMachine::default() };
        machine.restore();
        machine
    }

    fn restore(&mut self) {
        self.applied = self.snapshot.0.index;
        self.commands = self.snapshot.1.clone();
    }
}

/// The golden runner's part of the `Ready` contract: it prints each step and keeps the
/// messages in the network until a command delivers them.
struct GoldenHandler<'a> {
    id: NodeId,
    out: &'a mut String,
    machine: &'a mut StateMachine,
    network: &'a mut VecDeque<InFlight>,
    applied: &'a mut BTreeMap<Index, String>,
}

impl ReadyHandler<MemStorage> for GoldenHandler<'_> {
    type Error = Box<dyn Error>;

    fn failed(&self, what: &'static str, error: skiff_raft::Error) -> Box<dyn Error> {
        format!("{}: {what} failed: {error}", self.id).into()
    }

    /// Sending a leader's messages with the others keeps each script's output in the order
    /// the reader expects.
    fn leader_messages_first(&self) -> bool {
        false
    }

    /// Prints what step 1 writes.
    fn persisting(&mut self, raft: &Raft<MemStorage>, ready: &Ready) -> Result<()> {
        let (id, storage) = (self.id, raft.storage());
        if let Some(meta) = &ready.snapshot {
            let data = self.machine.received.take().ok_or("a snapshot to install, but no data came with it")?;
            assert_eq!(data.0, meta.last_log_id, "snapshot data and metadata differ");
            writeln!(
                self.out,
                "{id}: install snapshot {} {} state=[{}]",
                meta.last_log_id,
                meta.membership,
                names(&data.1)
            )?;
            self.machine.snapshot = data;
        }
        if let Some(first) = ready.entries.first() {
            let last_index = storage.last_index();
            if first.index() <= last_index {
                let removed = storage.entries(first.index(), last_index.next(), u64::MAX)?;
                writeln!(self.out, "{id}: truncate {}", log_ids(&removed))?;
            }
            writeln!(self.out, "{id}: append {}", format_entries(&ready.entries))?;
        }
        Ok(())
    }

    /// Prints each message and queues it, with the snapshot data an `InstallSnapshot` streams.
    fn send(&mut self, raft: &Raft<MemStorage>, messages: Vec<Envelope>, _batch: Batch) -> Result<()> {
        let snapshot_id = raft.storage().snapshot_meta().last_log_id;
        for envelope in messages {
            writeln!(self.out, "{}", format_message(&envelope))?;
            let snapshot = matches!(envelope.message, Message::InstallSnapshot { .. })
                .then(|| (snapshot_id, self.machine.snapshot.1.clone()));
            self.network.push_back(InFlight { envelope, snapshot });
        }
        Ok(())
    }

    fn apply(&mut self, _raft: &Raft<MemStorage>, snapshot: Option<SnapshotMeta>, committed: Vec<Entry>) -> Result<()> {
        if snapshot.is_some() {
            self.machine.restore();
        }
        apply(self.out, self.id, self.machine, self.applied, &committed)
    }

    fn answer_reads(&mut self, _raft: &Raft<MemStorage>, reads: Vec<ReadState>) -> Result<()> {
        let id = self.id;
        for read in reads {
            match read.result {
                Ok(index) if index <= self.machine.applied => {
                    writeln!(self.out, "{id}: read {} index={index} served", read.id.0)?
                }
                Ok(index) => {
                    writeln!(self.out, "{id}: read {} index={index} waits to apply", read.id.0)?;
                    self.machine.waiting_reads.push((read.id, index));
                }
                Err(error) => writeln!(self.out, "{id}: read {} failed: {error}", read.id.0)?,
            }
        }
        Ok(())
    }
}

/// Step 3 of the contract: applies `committed` in order, checking State Machine Safety
/// against everything any node applied before, and serves the reads that waited for it.
fn apply(
    out: &mut String,
    id: NodeId,
    machine: &mut StateMachine,
    applied: &mut BTreeMap<Index, String>,
    committed: &[Entry],
) -> Result<()> {
    if committed.is_empty() {
        return Ok(());
    }
    for entry in committed {
        assert_eq!(entry.index(), machine.applied.next(), "{id} applies out of order");
        let described = format_entry(entry);
        let first = applied.entry(entry.index()).or_insert_with(|| described.clone());
        assert_eq!(*first, described, "State Machine Safety: {id} applies a different entry");
        if let Payload::Command(data) = &entry.payload {
            machine.commands.push((entry.index(), String::from_utf8_lossy(data).into_owned()));
        }
        machine.applied = entry.index();
    }
    writeln!(out, "{id}: apply {}", format_entries(committed))?;
    let applied_index = machine.applied;
    for (read, index) in std::mem::take(&mut machine.waiting_reads) {
        if index <= applied_index {
            writeln!(out, "{id}: read {} served (applied {applied_index})", read.0)?;
        } else {
            machine.waiting_reads.push((read, index));
        }
    }
    Ok(())
}
