//! The `membership` fault: while the clients run, add a new node, remove one, or replace
//! one by a new node, as an operator would, through the members API of the leader.
//!
//! - **add**: start a new `skiff serve` process with a new id on free ports; it joins by
//!   itself (`--join`), or, in a `--secure` cluster (where `--join` needs the cluster file
//!   for the certificates), it waits to be added and `POST /v1/skiff/members` adds it
//!   (learner, catch-up, promotion).
//! - **remove**: a random voter leaves the clients' list, `DELETE /v1/skiff/members/ID`
//!   removes it, and its process is stopped for good.
//! - **replace**: what `skiff members replace` does: start the new node waiting, add it as
//!   a learner, add it again as a voter (the leader waits for its catch-up, then promotes
//!   it), remove the old one, stop the old process.
//!
//! The bounds: the cluster never has fewer voters than `min(3, --nodes)`, and at most
//! `--nodes + 2` processes run (a replacement needs one more while both are up). Each
//! injection takes the kind done the fewest times among those the bounds allow (ties drawn
//! from the seed), so a run of three injections does each once.
//!
//! The clients, the watcher and the final checks see the [`Roster`]: the voters started
//! here, updated as changes complete, so the workload always has live members to talk to
//! and the convergence check compares the final members only.

use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rand::Rng;
use rand::rngs::StdRng;
use serde::Deserialize;
use serde_json::json;
use ureq::http::Method;

use super::Member;
use super::cluster::{EXTRA_PROCESSES, LocalCluster, NewNode, Started};
use super::http::{Access, Answer, Http, snippet};
use super::watch::find_leader;

/// How long one members call may take: adding a voter waits for its catch-up (the server
/// gives up after 30 s).
const MEMBERS_CALL_TIMEOUT: Duration = Duration::from_secs(40);
/// How long one change may take in all, retries after leader changes included.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a status poll may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// The members the clients, the watcher and the final checks use: those started here that
/// are voters (as far as the last change knows). Shared by every thread; cheap to read.
pub struct Roster(RwLock<Vec<Member>>);

impl Roster {
    pub fn new(members: Vec<Member>) -> Roster {
        Roster(RwLock::new(members))
    }

    /// The members now.
    pub fn current(&self) -> Vec<Member> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn push(&self, member: Member) {
        self.0.write().unwrap_or_else(PoisonError::into_inner).push(member);
    }

    /// Takes `id` out; returns it, if it was in.
    fn remove(&self, id: &str) -> Option<Member> {
        let mut members = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let position = members.iter().position(|member| member.id == id)?;
        Some(members.remove(position))
    }
}

/// A membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Add,
    Remove,
    Replace,
}

/// How many changes of each kind were attempted, to pick the next.
#[derive(Debug, Default)]
pub struct ChangeCounts([u64; 3]);

impl ChangeCounts {
    fn get(&self, change: Change) -> u64 {
        self.0[change as usize]
    }

    fn count(&mut self, change: Change) {
        self.0[change as usize] += 1;
    }
}

/// What the changes need.
pub struct Changer<'a> {
    pub local: &'a LocalCluster,
    pub roster: &'a Roster,
    pub access: &'a Access,
    /// `--nodes`.
    pub initial: usize,
    /// A `--secure` cluster: new nodes are added through the members API, not `--join`.
    pub secure: bool,
}

/// `GET /v1/skiff/members`.
#[derive(Debug, Deserialize)]
struct MemberList {
    members: Vec<ListedMember>,
}

#[derive(Debug, Deserialize)]
struct ListedMember {
    id: String,
    voter: bool,
}

impl Changer<'_> {
    /// Makes one change, chosen as the module says; returns what was done (`add n4`,
    /// `remove n2`, `replace n2 by n6`).
    pub fn change(&self, counts: &mut ChangeCounts, rng: &mut StdRng) -> Result<String> {
        let roster = self.roster.current();
        let listed = self.members(&roster)?;
        let voters: Vec<&str> = listed.members.iter().filter(|member| member.voter).map(|m| m.id.as_str()).collect();
        let can_grow = self.local.live_count() < self.initial + EXTRA_PROCESSES;
        let can_shrink = voters.len() > self.initial.min(3);
        let mut choices = Vec::new();
        if can_grow {
            choices.extend([Change::Add, Change::Replace]);
        }
        if can_shrink {
            choices.push(Change::Remove);
        }
        let fewest = choices.iter().map(|&change| counts.get(change)).min();
        choices.retain(|&change| Some(counts.get(change)) == fewest);
        let Some(&change) = choices.get(rng.random_range(0..choices.len().max(1))) else {
            bail!("no membership change fits: {} voters, {} processes", voters.len(), self.local.live_count());
        };
        counts.count(change);
        // The node to remove or replace: a voter started here.
        let candidates: Vec<&Member> = roster.iter().filter(|member| voters.contains(&member.id.as_str())).collect();
        let old = candidates
            .get(rng.random_range(0..candidates.len().max(1)))
            .map(|member| (*member).clone())
            .ok_or_else(|| anyhow!("no voter of the cluster was started here"));
        match change {
            Change::Add => self.add(&roster),
            Change::Remove => self.remove(&old?),
            Change::Replace => self.replace(&old?),
        }
    }

    /// Starts a new node and has it added as a voter.
    fn add(&self, roster: &[Member]) -> Result<String> {
        if self.secure {
            let new = self.local.start_new(NewNode::Waiting)?;
            self.adopt(&new, |new| self.post_member(new, false))?;
            return Ok(format!("add {}", new.member.id));
        }
        // Any member will do: `--join` finds the leader.
        let via = &roster.first().ok_or_else(|| anyhow!("no member to join through"))?.url;
        let new = self.local.start_new(NewNode::Join(via))?;
        self.adopt(&new, |new| self.wait_for_voter(&new.member))?;
        Ok(format!("add {} (--join)", new.member.id))
    }

    /// Removes a voter and stops its process for good.
    fn remove(&self, old: &Member) -> Result<String> {
        self.retire(old)?;
        Ok(format!("remove {}", old.id))
    }

    /// Replaces a voter by a new node, as `skiff members replace` does.
    fn replace(&self, old: &Member) -> Result<String> {
        let new = self.local.start_new(NewNode::Waiting)?;
        self.adopt(&new, |new| {
            self.post_member(new, true).context("adding it as a learner")?;
            self.post_member(new, false).context("promoting it once caught up")
        })?;
        self.retire(old).with_context(|| format!("{} replaced {}, which", new.member.id, old.id))?;
        Ok(format!("replace {} by {}", old.id, new.member.id))
    }

    /// Runs `make_voter` for the node just started; then the clients may use it. If it
    /// fails, the node is removed (if the cluster got to add it) and stopped.
    fn adopt(&self, new: &Started, make_voter: impl FnOnce(&Started) -> Result<()>) -> Result<()> {
        match make_voter(new) {
            Ok(()) => {
                self.roster.push(new.member.clone());
                Ok(())
            }
            Err(error) => {
                let _ = self.delete_member(&new.member);
                let _ = self.local.retire(&new.member.id);
                Err(error.context(format!("{} was not added", new.member.id)))
            }
        }
    }

    /// Takes `old` out of the clients' list, removes it from the cluster, and stops it. If
    /// the removal fails and it is still a member, it goes back on the list.
    fn retire(&self, old: &Member) -> Result<()> {
        self.roster.remove(&old.id);
        if let Err(error) = self.delete_member(old) {
            let still_member = self
                .members(&self.with(old))
                .map(|list| list.members.iter().any(|member| member.id == old.id))
                .unwrap_or(true);
            if still_member {
                self.roster.push(old.clone());
                return Err(error.context(format!("removing {}", old.id)));
            }
        }
        self.local.retire(&old.id)
    }

    /// The roster and `extra`: where to look for the leader while `extra` is on its way in
    /// or out.
    fn with(&self, extra: &Member) -> Vec<Member> {
        let mut members = self.roster.current();
        if !members.iter().any(|member| member.id == extra.id) {
            members.push(extra.clone());
        }
        members
    }

    /// `POST /v1/skiff/members` for `new` (as a learner, or as a voter: catch-up, then
    /// promotion). A retry after a lost answer finds it added: fine.
    fn post_member(&self, new: &Started, learner: bool) -> Result<()> {
        let body = json!({ "id": new.member.id, "raft": new.raft, "http": new.http, "learner": learner }).to_string();
        let (status, body) =
            self.call_leader(Method::POST, "/v1/skiff/members", Some(body.as_bytes()), &self.with(&new.member))?;
        if status == 409 {
            // Already a member: a retried call that had gone through. Only a voter will do
            // for a voter.
            if !learner {
                self.wait_for_voter(&new.member)?;
            }
            return Ok(());
        }
        if !(200..300).contains(&status) {
            bail!("POST /v1/skiff/members answered HTTP {status}: {}", snippet(&body));
        }
        Ok(())
    }

    /// `DELETE /v1/skiff/members/ID` of `member`; a `404` (not a member, say after a retry) will do.
    fn delete_member(&self, member: &Member) -> Result<()> {
        let id = &member.id;
        let path = format!("/v1/skiff/members/{id}");
        let (status, body) = self.call_leader(Method::DELETE, &path, None, &self.with(member))?;
        if !(200..300).contains(&status) && status != 404 {
            bail!("DELETE /v1/skiff/members/{id} answered HTTP {status}: {}", snippet(&body));
        }
        Ok(())
    }

    /// Waits until the leader lists `member` as a voter.
    fn wait_for_voter(&self, member: &Member) -> Result<()> {
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        loop {
            let listed = self.members(&self.with(member));
            if let Ok(list) = &listed
                && list.members.iter().any(|listed| listed.id == member.id && listed.voter)
            {
                return Ok(());
            }
            if !self.local.is_running(&member.id) {
                bail!("{} stopped before it was a voter", member.id);
            }
            if Instant::now() >= deadline {
                bail!("{} is not a voter after {CHANGE_TIMEOUT:?} (last: {listed:?})", member.id);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The leader's `GET /v1/skiff/members`, the leader found among `candidates`.
    fn members(&self, candidates: &[Member]) -> Result<MemberList> {
        let (status, body) = self.call_leader(Method::GET, "/v1/skiff/members", None, candidates)?;
        if status != 200 {
            bail!("GET /v1/skiff/members answered HTTP {status}: {}", snippet(&body));
        }
        serde_json::from_slice(&body).with_context(|| format!("GET /v1/skiff/members answered {}", snippet(&body)))
    }

    /// Sends `method path` to the leader among `candidates` until an answer settles it:
    /// a `307` (not the leader any more), a `503` (no leader, or busy) or a request that
    /// never left is tried again, on the leader of the moment, until [`CHANGE_TIMEOUT`].
    /// Returns the status and body of the answer that settled it.
    fn call_leader(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        candidates: &[Member],
    ) -> Result<(u16, Vec<u8>)> {
        let status_http = Http::new(STATUS_TIMEOUT, self.access);
        let http = Http::new(MEMBERS_CALL_TIMEOUT, self.access);
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        let mut last = String::from("no leader found");
        while Instant::now() < deadline {
            if let Some(leader) = find_leader(&status_http, candidates) {
                let url = format!("{}{path}", candidates[leader].url);
                match http.send(method.clone(), &url, body) {
                    Answer::Reply { status: 307 | 503, body } => last = snippet(&body),
                    Answer::Reply { status, body } => return Ok((status, body)),
                    answer @ (Answer::NotSent(_) | Answer::Lost(_)) => last = answer.describe(),
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(anyhow!("{method} {path}: no leader settled it within {CHANGE_TIMEOUT:?} (last: {last})"))
    }
}
