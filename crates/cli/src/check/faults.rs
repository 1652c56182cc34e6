//! The fault thread: on a seeded schedule, healthy for 1-3 s, then one fault for 2-5 s,
//! then heal, and again until the run ends. A `membership` change ([`super::membership`])
//! takes as long as it takes to make, and stays: there is nothing to heal.
//!
//! Kinds are drawn in rounds: each round is a shuffled list of every kind asked for, so a
//! run long enough for one round injects each kind at least once. Runs shorter than 8 s
//! per kind shrink both periods (down to a quarter) so that the first round still fits.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;
use ureq::http::Method;

use super::cluster::LocalCluster;
use super::http::{Access, Answer, Http};
use super::membership::{ChangeCounts, Changer, Roster};
use super::watch::find_leader;
use super::{FaultKind, Member};

/// How long the fault thread waits for an answer from the fault API.
const FAULT_API_TIMEOUT: Duration = Duration::from_secs(2);

/// What the fault thread needs.
pub struct FaultPlan<'a> {
    /// The members the faults pick from (the `membership` fault changes them).
    pub roster: &'a Roster,
    /// On the user's cluster: every voter's id, to name the peers a partitioned node stops
    /// hearing (on a cluster started here, the roster's).
    pub voters: &'a [String],
    /// `--nodes`, and whether the cluster started here is `--secure` (for `membership`).
    pub nodes: usize,
    pub secure: bool,
    /// The processes, when the cluster was started here (kill, pause, restart need it).
    pub local: Option<&'a LocalCluster>,
    pub kinds: &'a [FaultKind],
    pub seed: u64,
    /// Multiplies the healthy and faulty periods (1 for runs long enough).
    pub scale: f64,
    pub start: Instant,
    pub stop: &'a AtomicBool,
    /// The fault in force, for the progress display ("" when healthy).
    pub current: &'a Mutex<String>,
    /// How the fault API is reached.
    pub access: &'a Access,
}

/// One fault injected.
#[derive(Clone, Debug, Serialize)]
pub struct FaultEvent {
    pub kind: FaultKind,
    /// What was done: `kill n2`, `partition n1 | n2 n3`, ...
    pub description: String,
    /// When it was injected and healed, in nanoseconds on the history's clock.
    pub start_ns: u64,
    pub end_ns: u64,
}

/// What the fault thread did.
#[derive(Debug, Default)]
pub struct FaultLog {
    pub events: Vec<FaultEvent>,
    /// Faults that could not be injected or healed, and why.
    pub errors: Vec<String>,
}

/// What to undo when a fault heals.
enum Active {
    /// Nodes killed: restart them.
    Killed(Vec<String>),
    Paused(String),
    /// Faults posted to nodes' fault API: clear them on every node.
    Partitioned,
    /// A membership change: done for good, nothing to undo.
    Changed,
}

impl FaultPlan<'_> {
    /// Runs the schedule until `stop`; the last fault is healed before returning.
    pub fn run(&self) -> FaultLog {
        let mut log = FaultLog::default();
        if self.kinds.is_empty() {
            return log;
        }
        let mut rng = StdRng::seed_from_u64(self.seed);
        let http = Http::new(FAULT_API_TIMEOUT, self.access);
        let mut round: Vec<FaultKind> = Vec::new();
        let mut changes = ChangeCounts::default();
        loop {
            let healthy = self.period(&mut rng, 1.0, 3.0);
            if !self.sleep(healthy) {
                return log;
            }
            if round.is_empty() {
                round = self.kinds.to_vec();
                round.shuffle(&mut rng);
            }
            let kind = round.pop().expect("refilled above");
            let start_ns = self.now_ns();
            let (active, description) = match self.inject(kind, &http, &mut rng, &mut changes) {
                Ok(injected) => injected,
                Err(error) => {
                    // A fault still looking for a leader when the run ends is no news.
                    if !self.stop.load(Ordering::Relaxed) {
                        log.errors.push(format!("{kind} at {:.1}s: {error:#}", seconds(start_ns)));
                    }
                    continue;
                }
            };
            self.set_current(&description);
            // A membership change lasts as long as it takes to make; the others 2-5 s.
            if kind != FaultKind::Membership {
                let lasting = self.period(&mut rng, 2.0, 5.0);
                self.sleep(lasting);
            }
            if let Err(error) = self.heal(active, &http) {
                log.errors.push(format!("healing {description}: {error:#}"));
            }
            self.set_current("");
            log.events.push(FaultEvent { kind, description, start_ns, end_ns: self.now_ns() });
        }
    }

    fn period(&self, rng: &mut StdRng, low_s: f64, high_s: f64) -> Duration {
        Duration::from_secs_f64(rng.random_range(low_s..high_s) * self.scale)
    }

    /// Sleeps `duration` or until `stop`; whether the whole duration passed.
    fn sleep(&self, duration: Duration) -> bool {
        let end = Instant::now() + duration;
        while !self.stop.load(Ordering::Relaxed) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
        false
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn set_current(&self, text: &str) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = text.to_string();
    }

    fn local(&self) -> Result<&LocalCluster> {
        self.local.ok_or_else(|| anyhow!("only a cluster started by skiff check can be killed or paused"))
    }

    fn inject(
        &self,
        kind: FaultKind,
        http: &Http,
        rng: &mut StdRng,
        changes: &mut ChangeCounts,
    ) -> Result<(Active, String)> {
        let members = self.roster.current();
        let count = members.len();
        match kind {
            FaultKind::Kill => {
                let id = &members[rng.random_range(0..count)].id;
                self.local()?.kill(id)?;
                Ok((Active::Killed(vec![id.clone()]), format!("kill {id}")))
            }
            FaultKind::Pause => {
                let id = &members[rng.random_range(0..count)].id;
                self.local()?.pause(id)?;
                Ok((Active::Paused(id.clone()), format!("pause {id}")))
            }
            FaultKind::Partition => {
                // A minority: one node, or with five or more nodes sometimes more.
                let size = rng.random_range(1..=(count.saturating_sub(1) / 2).max(1));
                let mut indexes: Vec<usize> = (0..count).collect();
                indexes.shuffle(rng);
                let isolated: BTreeSet<usize> = indexes.into_iter().take(size).collect();
                self.isolate(&members, &isolated, http)
            }
            FaultKind::Leader => self.fault_leader(&members, http),
            FaultKind::RestartAll => {
                let local = self.local()?;
                let ids: Vec<String> = members.into_iter().map(|member| member.id).collect();
                for id in &ids {
                    local.kill(id)?;
                }
                Ok((Active::Killed(ids), "restart-all".to_string()))
            }
            FaultKind::Membership => {
                let changer = Changer {
                    local: self.local()?,
                    roster: self.roster,
                    access: self.access,
                    initial: self.nodes,
                    secure: self.secure,
                };
                Ok((Active::Changed, changer.change(changes, rng)?))
            }
        }
    }

    /// Kills the leader (a local cluster) or cuts it off from every other node.
    fn fault_leader(&self, members: &[Member], http: &Http) -> Result<(Active, String)> {
        let deadline = Instant::now() + Duration::from_secs(3);
        let leader = loop {
            if let Some(leader) = find_leader(http, members) {
                break leader;
            }
            if Instant::now() >= deadline || self.stop.load(Ordering::Relaxed) {
                bail!("no leader to fault within 3 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let id = &members[leader].id;
        match self.local {
            Some(local) => {
                local.kill(id)?;
                Ok((Active::Killed(vec![id.clone()]), format!("kill leader {id}")))
            }
            None => {
                let (active, _) = self.isolate(members, &BTreeSet::from([leader]), http)?;
                Ok((active, format!("isolate leader {id}")))
            }
        }
    }

    /// Cuts the members at `isolated` off from the others: each side drops the other's
    /// traffic, both ways.
    fn isolate(&self, members: &[Member], isolated: &BTreeSet<usize>, http: &Http) -> Result<(Active, String)> {
        let inside: BTreeSet<&str> = isolated.iter().map(|&index| members[index].id.as_str()).collect();
        let voters: Vec<&str> = match self.local {
            Some(_) => members.iter().map(|member| member.id.as_str()).collect(),
            None => self.voters.iter().map(String::as_str).collect(),
        };
        let outside: Vec<&str> = voters.into_iter().filter(|voter| !inside.contains(voter)).collect();
        for (index, member) in members.iter().enumerate() {
            let peers: Vec<&str> =
                if isolated.contains(&index) { outside.clone() } else { inside.iter().copied().collect() };
            let body = json!({ "action": "drop", "peers": peers, "direction": "both" }).to_string();
            let posted = http.expect_success(Method::POST, &faults_url(&member.url), Some(body.as_bytes()));
            // The isolated side's own drop is what makes the partition; the rest is a
            // second wall for the nodes we can reach.
            if let Err(error) = posted
                && isolated.contains(&index)
            {
                let _ = self.clear_faults(http);
                return Err(error).with_context(|| format!("cannot isolate {}", member.id));
            }
        }
        let description =
            format!("partition {} | {}", inside.iter().copied().collect::<Vec<_>>().join(" "), outside.join(" "));
        Ok((Active::Partitioned, description))
    }

    fn heal(&self, active: Active, http: &Http) -> Result<()> {
        match active {
            Active::Killed(ids) => {
                let local = self.local()?;
                ids.iter().try_for_each(|id| local.heal(id))
            }
            Active::Paused(id) => self.local()?.heal(&id),
            Active::Partitioned => self.clear_faults(http),
            Active::Changed => Ok(()),
        }
    }

    /// `DELETE /v1/skiff/faults` on every member. A local node that refuses the connection
    /// is not running, and a node starts with no fault: nothing to clear there.
    fn clear_faults(&self, http: &Http) -> Result<()> {
        clear_faults(http, &self.roster.current(), self.local.is_some())
    }
}

/// `DELETE /v1/skiff/faults` on every member, a few tries each; with `refused_is_clear`, a
/// node that refuses the connection counts as cleared (it is down, and will start clean).
pub fn clear_faults(http: &Http, members: &[Member], refused_is_clear: bool) -> Result<()> {
    let mut failures = Vec::new();
    for member in members {
        let url = faults_url(&member.url);
        let mut last = String::new();
        let cleared = (0..5).any(|attempt| {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200));
            }
            match http.send(Method::DELETE, &url, None) {
                Answer::Reply { status: 200..=299, .. } => true,
                Answer::NotSent(_) if refused_is_clear => true,
                other => {
                    last = other.describe();
                    false
                }
            }
        });
        if !cleared {
            failures.push(format!("{}: {last}", member.id));
        }
    }
    if !failures.is_empty() {
        bail!("cannot clear the faults of {}", failures.join("; "));
    }
    Ok(())
}

pub fn faults_url(base: &str) -> String {
    format!("{base}/v1/skiff/faults")
}

pub fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}
