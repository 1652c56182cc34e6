//! `skiff check`: run a workload against a real cluster while injecting faults, and check
//! that what the clients saw is linearizable and that the replicas end identical.
//!
//! The parts, in the order a run uses them:
//! 1. [`cluster`]: start N `skiff serve --fault-injection` child processes (or, with
//!    `--endpoints`, use the user's cluster) and wait for a leader ([`watch`]).
//! 2. [`workload`]: client threads issue gets, puts, deletes and cas on a few keys through
//!    random nodes, one operation at a time each, and record a history ([`skiff_check`]'s
//!    types) on one clock; [`faults`] kills, pauses, partitions and restarts nodes on a
//!    seeded schedule, and adds, removes and replaces them ([`membership`], which keeps
//!    the [`Roster`] of members everyone uses); [`watch`] counts leader changes and looks
//!    for two leaders in a term.
//! 3. Heal everything, read every key back through the leader ([`converge`]), wait until
//!    every final member has applied the same index and compare their copies.
//! 4. Check the history with [`skiff_check::check`] and print the [`report`].
//!
//! With the kv workload, [`feed`] also follows each node's change feed from before the
//! first write to an end marker written after a final read, and checks the events against
//! each other, the acknowledged writes and that read.
//!
//! The outcome of each operation is recorded as the answer proves it (see [`workload`]):
//! this is what makes a failed check a real finding rather than a guess.

mod cluster;
mod converge;
mod faults;
mod feed;
mod http;
mod locks;
mod membership;
mod options;
mod report;
mod transfers;
mod watch;
mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use skiff_check::Operation;

use self::cluster::LocalCluster;
use self::converge::Convergence;
use self::faults::{FaultLog, FaultPlan, clear_faults, faults_url};
use self::http::{Access, Answer, Http};
use self::membership::Roster;
pub use self::options::{CheckOptions, FaultKind, FaultList, WorkloadKind, parse_faults};
use self::report::{CheckSummary, Faults, Operations, Progress, Report, Settings};
use self::watch::{Leaders, wait_for_leader};
use self::workload::{ClientLog, Workload};

/// Exit code of a usage error.
const EXIT_USAGE: u8 = 2;
/// Exit code after a second Ctrl-C stopped the run at once.
const EXIT_INTERRUPTED: u8 = 130;
/// How long the cluster may take to elect a leader, at the start and after healing.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the nodes may take to apply the same index at the end.
const CONVERGENCE_TIMEOUT: Duration = Duration::from_secs(20);

/// A node of the cluster under test.
#[derive(Clone, Debug)]
pub struct Member {
    pub id: String,
    /// Its HTTP API, `http://host:port`.
    pub url: String,
}

/// SIGINT, SIGTERM and SIGHUP: the first ends the workload early (the run then heals,
/// checks and reports as usual); the second stops every wait at once.
pub struct Signals {
    count: Arc<AtomicUsize>,
}

impl Signals {
    fn install() -> Result<Signals> {
        use tokio::signal::unix::SignalKind;
        let first = "skiff check: interrupted: healing, then checking what was recorded (again to stop now)";
        let kinds = [SignalKind::interrupt(), SignalKind::terminate(), SignalKind::hangup()];
        Ok(Signals { count: crate::interrupts::count(&kinds, first.to_string(), None)? })
    }

    fn interrupted(&self) -> bool {
        self.count.load(Ordering::SeqCst) >= 1
    }

    fn aborted(&self) -> bool {
        self.count.load(Ordering::SeqCst) >= 2
    }

    fn bail_if_aborted(&self) -> Result<()> {
        if self.aborted() {
            bail!("interrupted twice");
        }
        Ok(())
    }
}

/// A line on standard error. Never panics: standard error may be a closed pipe (a
/// terminal gone, `| head`), and the nodes must still be stopped.
fn note(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "skiff check: {text}");
}

/// Runs `skiff check`: exit code 0 if the history is linearizable and the replicas
/// converged, 1 if not (or if the check was inconclusive), 2 on a usage error.
pub fn run(options: CheckOptions) -> Result<ExitCode> {
    let kinds = match options.fault_kinds() {
        Ok(kinds) => kinds,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let signals = Signals::install().context("cannot listen for Ctrl-C")?;
    let seed = options.seed.unwrap_or_else(rand::random);
    match check(&options, &kinds, seed, &signals) {
        Ok(true) => Ok(ExitCode::SUCCESS),
        Ok(false) => Ok(ExitCode::FAILURE),
        Err(error) if signals.aborted() => {
            note(&format!("stopped ({error:#})"));
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
        Err(error) => Err(error),
    }
}

/// Whether `--endpoints` was given on the command line (not only its default or
/// `SKIFF_ENDPOINTS`, which are for the client commands): only then does `check` use the
/// user's cluster instead of starting one.
pub fn endpoints_given() -> bool {
    let matches = <crate::Cli as clap::CommandFactory>::command().get_matches();
    let given =
        |matches: &clap::ArgMatches| matches.value_source("endpoints") == Some(clap::parser::ValueSource::CommandLine);
    given(&matches) || matches.subcommand_matches("check").is_some_and(given)
}

/// The cluster under test.
struct Target {
    /// The processes, when started here.
    local: Option<LocalCluster>,
    /// The members the run started with.
    initial: Vec<Member>,
    /// The members now (the `membership` fault changes them).
    roster: Roster,
    voters: Vec<String>,
    /// The keys the workload uses: fresh ones, since every key must start absent.
    keys: Vec<String>,
    /// What the convergence check lists: everything on a cluster started here, the run's
    /// own keys on the user's.
    prefix: String,
    /// How the nodes are reached (CA, client certificate, token).
    access: Access,
    /// The same, for a [`skiff_client::Client`] (the lock workload's).
    security: crate::client::Security,
}

impl Target {
    fn local(options: &CheckOptions, run_id: &str, signals: &Signals) -> Result<Target> {
        let name = format!("skiff-check-{run_id}");
        let (local, members, security) = LocalCluster::start(
            options.nodes,
            options.base_port,
            options.snapshot_after_entries,
            options.secure,
            &name,
        )?;
        let access = Access::new(&security).context("the certificates skiff check made")?;
        note(&format!(
            "started {} nodes (http {}..) in {}; waiting for a leader",
            members.len(),
            members[0].url,
            local.dir().display()
        ));
        let http = Http::new(options.request_timeout, &access);
        wait_for_leader(&http, &members, Some(&local), signals, LEADER_TIMEOUT)?;
        let voters = members.iter().map(|member| member.id.clone()).collect();
        let keys = (1..=options.keys).map(|i| format!("k{i}")).collect();
        let roster = Roster::new(members.clone());
        Ok(Target {
            local: Some(local),
            initial: members,
            roster,
            voters,
            keys,
            prefix: String::new(),
            access,
            security,
        })
    }

    fn remote(options: &CheckOptions, endpoints: &[String], run_id: &str, signals: &Signals) -> Result<Target> {
        let access = Access::new(&options.security)?;
        let http = Http::new(options.request_timeout, &access);
        let mut members = Vec::new();
        let mut voters = Vec::new();
        for url in endpoints {
            let status = http.status(url).with_context(|| format!("cannot reach the node at {url}"))?;
            match http.send(ureq::http::Method::GET, &faults_url(url), None) {
                Answer::Reply { status: 200, .. } => {}
                Answer::Reply { status: 403, .. } => bail!(
                    "node {} at {url} does not allow fault injection (HTTP 403); start every node with \
                     --fault-injection (or SKIFF_FAULT_INJECTION=true) to check it",
                    status.id
                ),
                other => bail!("node {} at {url}: GET /v1/skiff/faults failed: {}", status.id, other.describe()),
            }
            voters.clone_from(&status.voters);
            members.push(Member { id: status.id, url: url.clone() });
        }
        wait_for_leader(&http, &members, None, signals, LEADER_TIMEOUT)?;
        let prefix = format!("skiff-check/{run_id}/");
        let keys = (1..=options.keys).map(|i| format!("{prefix}k{i}")).collect();
        let roster = Roster::new(members.clone());
        let security = options.security.clone();
        Ok(Target { local: None, initial: members, roster, voters, keys, prefix, access, security })
    }

    /// Brings every node back and clears every fault.
    fn heal(&self, http: &Http) -> Result<()> {
        if let Some(local) = &self.local {
            local.heal_all()?;
        }
        clear_faults(http, &self.roster.current(), self.local.is_some())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // The user's cluster must never be left partitioned, whatever happened.
        if self.local.is_none() {
            let _ = clear_faults(&Http::new(Duration::from_secs(1), &self.access), &self.initial, false);
        }
    }
}

fn check(options: &CheckOptions, kinds: &[FaultKind], seed: u64, signals: &Signals) -> Result<bool> {
    let run_id = format!("{:08x}", rand::random::<u32>());
    let target = match &options.endpoints {
        Some(endpoints) => Target::remote(options, endpoints, &run_id, signals)?,
        None => Target::local(options, &run_id, signals)?,
    };
    if options.workload == WorkloadKind::Transfer {
        let accounts = transfers::account_keys(&transfer_prefix(&target), options.keys);
        transfers::open_accounts(&target.roster, &target.security, &accounts, LEADER_TIMEOUT)?;
    }
    let feed = start_feed(options, &target)?;
    let mut recorded = record(options, kinds, seed, &target, signals);
    recorded.feed = feed;
    if let Err(error) = std::mem::replace(&mut recorded.recovered, Ok(())) {
        return Err(with_saved_history(error, options, &target, &run_id, &recorded.history));
    }
    let report = conclude(options, kinds, seed, &target, recorded, &run_id, signals)?;
    if options.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.human());
    }
    Ok(report.passed)
}

/// What the workload phase recorded.
struct Recorded {
    history: Vec<Operation>,
    errors: BTreeMap<String, u64>,
    faults: FaultLog,
    leaders: Leaders,
    exits: Vec<String>,
    start: Instant,
    workload: Duration,
    /// Whether the cluster came back with a leader once everything was healed.
    recovered: Result<()>,
    /// The lock workload's records.
    lock: Option<(locks::LockLog, Vec<locks::TtlKey>)>,
    /// The transfer workload's records.
    transfer: Option<transfers::TransferLog>,
    /// The change feed's watchers, still running.
    feed: Option<feed::Watchers>,
}

/// Starts a watcher on the change feed of each node (the kv workload, unless
/// `--no-feed-check`, and not with `membership` faults: the watchers follow the initial
/// nodes, which that fault may all replace, leaving later writes and the final read to
/// nodes no watcher follows).
fn start_feed(options: &CheckOptions, target: &Target) -> Result<Option<feed::Watchers>> {
    if !options.feed_check || options.workload != WorkloadKind::Kv {
        return Ok(None);
    }
    if options.fault_kinds().unwrap_or_default().contains(&FaultKind::Membership) {
        note("no change-feed check with membership faults (the watchers follow the initial nodes only)");
        return Ok(None);
    }
    note(&format!("following the change feed of each of the {} nodes", target.initial.len()));
    let watchers = feed::Watchers::start(&target.initial, &target.prefix, &target.security, LEADER_TIMEOUT)
        .context("cannot start the change-feed watchers")?;
    Ok(Some(watchers))
}

/// Runs the clients, the fault thread and the watcher for `--time`, then heals everything
/// and waits for a leader.
fn record(options: &CheckOptions, kinds: &[FaultKind], seed: u64, target: &Target, signals: &Signals) -> Recorded {
    let stop = AtomicBool::new(false);
    let stop_watching = AtomicBool::new(false);
    let operations = AtomicU64::new(0);
    let current = Mutex::new(String::new());
    let start = Instant::now();
    let workload = Workload {
        members: &target.roster,
        keys: &target.keys,
        start,
        stop: &stop,
        operations: &operations,
        request_timeout: options.request_timeout,
        access: &target.access,
        seed,
    };
    let plan = FaultPlan {
        roster: &target.roster,
        voters: &target.voters,
        nodes: options.nodes,
        secure: options.secure,
        local: target.local.as_ref(),
        kinds,
        seed,
        scale: (options.time.as_secs_f64() / (8.0 * kinds.len().max(1) as f64)).clamp(0.25, 1.0),
        start,
        stop: &stop,
        current: &current,
        access: &target.access,
    };
    let election_timeout = election_timeout();
    let lock_workload = locks::LockWorkload {
        members: &target.roster,
        prefix: &target.prefix,
        start,
        stop: &stop,
        request_timeout: options.request_timeout,
        security: &target.security,
        seed,
        ttl: options.lock_ttl,
        election_timeout,
    };
    let transfer_prefix = transfer_prefix(target);
    let accounts = transfers::account_keys(&transfer_prefix, options.keys);
    let transfer_workload = transfers::TransferWorkload {
        members: &target.roster,
        accounts: &accounts,
        prefix: &transfer_prefix,
        stop: &stop,
        operations: &operations,
        request_timeout: options.request_timeout,
        security: &target.security,
        seed,
    };
    let lock = options.workload == WorkloadKind::Lock;
    let transfer = options.workload == WorkloadKind::Transfer;
    let kv = !lock && !transfer;
    let name = if lock {
        "lock"
    } else if transfer {
        "transfer"
    } else {
        "kv"
    };
    note(&format!("running {} {name} clients for {:?} (seed {seed})", options.clients, options.time));
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| watch::watch(&target.roster, &target.access, &stop_watching));
        let workload = &workload;
        let lock_workload = &lock_workload;
        let transfer_workload = &transfer_workload;
        let clients: Vec<_> =
            (0..options.clients as u64).filter(|_| kv).map(|id| scope.spawn(move || workload.run_client(id))).collect();
        let lock_clients: Vec<_> = (0..options.clients as u64)
            .filter(|_| lock)
            .map(|id| scope.spawn(move || lock_workload.run_client(id)))
            .collect();
        let transfer_clients: Vec<_> = (0..options.clients as u64)
            .filter(|_| transfer)
            .map(|id| scope.spawn(move || transfer_workload.run_client(id)))
            .collect();
        let ttl_thread = lock.then(|| scope.spawn(move || lock_workload.run_ttl_keys(options.time)));
        let fault_thread = scope.spawn(|| plan.run());
        let mut exits = show_progress(options.time, start, &operations, &current, target, signals);
        let workload_time = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        let logs: Vec<ClientLog> =
            clients.into_iter().map(|client| client.join().expect("a client panicked")).collect();
        let lock_logs: Vec<locks::LockLog> =
            lock_clients.into_iter().map(|client| client.join().expect("a lock client panicked")).collect();
        let transfer_logs: Vec<transfers::TransferLog> =
            transfer_clients.into_iter().map(|client| client.join().expect("a transfer client panicked")).collect();
        let ttl_keys = ttl_thread.map(|thread| thread.join().expect("the TTL thread panicked"));
        let faults = fault_thread.join().expect("the fault thread panicked");
        collect_exits(target, start, &mut exits);
        note("healing every node and waiting for a leader");
        let http = Http::new(options.request_timeout, &target.access);
        let recovered = target
            .heal(&http)
            .and_then(|()| {
                let members = target.roster.current();
                wait_for_leader(&http, &members, target.local.as_ref(), signals, LEADER_TIMEOUT)
            })
            .map(|_| ())
            .context("the cluster did not recover after the faults were healed");
        stop_watching.store(true, Ordering::Relaxed);
        let leaders = watcher.join().expect("the watcher panicked");
        let (history, errors) = merge(logs);
        let lock = ttl_keys.map(|keys| (locks::merge(lock_logs), keys));
        let transfer = transfer.then(|| transfers::merge(transfer_logs));
        Recorded {
            history,
            errors,
            faults,
            leaders,
            exits,
            start,
            workload: workload_time,
            recovered,
            lock,
            transfer,
            feed: None,
        }
    })
}

/// Shows the progress until `time` has passed (or Ctrl-C), noting nodes that exit by
/// themselves; returns those.
fn show_progress(
    time: Duration,
    start: Instant,
    operations: &AtomicU64,
    current: &Mutex<String>,
    target: &Target,
    signals: &Signals,
) -> Vec<String> {
    let mut exits = Vec::new();
    let mut progress = Progress::new(time);
    while start.elapsed() < time && !signals.interrupted() {
        let fault = current.lock().unwrap_or_else(PoisonError::into_inner).clone();
        progress.update(start.elapsed(), operations.load(Ordering::Relaxed), &fault);
        collect_exits(target, start, &mut exits);
        std::thread::sleep(Duration::from_millis(100));
    }
    progress.finish();
    exits
}

/// The clients' histories as one, and their error tallies summed.
fn merge(logs: Vec<ClientLog>) -> (Vec<Operation>, BTreeMap<String, u64>) {
    let mut history = Vec::new();
    let mut errors = BTreeMap::new();
    for log in logs {
        history.extend(log.history);
        for (kind, count) in log.errors {
            *errors.entry(kind).or_default() += count;
        }
    }
    (history, errors)
}

/// Notes the local nodes that exited by themselves.
fn collect_exits(target: &Target, start: Instant, exits: &mut Vec<String>) {
    let Some(local) = &target.local else { return };
    for exit in local.unexpected_exits() {
        exits.push(format!(
            "{} at {:.1}s ({}); the end of {}:\n{}",
            exit.id,
            start.elapsed().as_secs_f64(),
            exit.status,
            exit.log.display(),
            exit.log_tail
        ));
    }
}

/// Reads the keys back, checks convergence and the history, saves what must be saved, and
/// builds the report.
fn conclude(
    options: &CheckOptions,
    kinds: &[FaultKind],
    seed: u64,
    target: &Target,
    mut recorded: Recorded,
    run_id: &str,
    signals: &Signals,
) -> Result<Report> {
    note("reading every key back and comparing the replicas");
    let reader = options.clients as u64;
    // The final members: the convergence check compares theirs, not those removed.
    let members = target.roster.current();
    let reads = converge::final_reads(
        &members,
        &target.keys,
        reader,
        recorded.start,
        options.request_timeout,
        &target.access,
        signals,
    )
    .map_err(|error| with_saved_history(error, options, target, run_id, &recorded.history))?;
    recorded.history.extend(reads);
    recorded.history.sort_by_key(|operation| operation.invoke_ns);
    let http = Http::new(options.request_timeout, &target.access);
    let convergence: Convergence = converge::convergence(&http, &members, &target.prefix, CONVERGENCE_TIMEOUT);

    note(&format!("checking {} operations", recorded.history.len()));
    let checking = Instant::now();
    let result = skiff_check::check(&recorded.history, &skiff_check::Options::default())
        .context("the recorded history contradicts itself (a bug in skiff check)")?;
    let check = CheckSummary::new(result, checking.elapsed().as_secs_f64());

    let lock = match recorded.lock.take() {
        Some((log, ttl_keys)) => {
            let outages: Vec<(u64, u64)> = (recorded.faults.events.iter())
                .filter(|event| event.kind == FaultKind::RestartAll)
                .map(|event| (event.start_ns, event.end_ns))
                .collect();
            Some(conclude_locks(options, target, log, &ttl_keys, &outages)?)
        }
        None => None,
    };
    let transfer = recorded.transfer.take().map(|log| {
        let accounts = transfers::account_keys(&transfer_prefix(target), options.keys);
        let last = transfers::final_audit(
            &target.roster,
            &target.security,
            &accounts,
            &transfer_prefix(target),
            LEADER_TIMEOUT,
        );
        transfers::conclude(log, accounts.len(), last)
    });
    let feed = recorded.feed.take().map(|watchers| {
        note("comparing what each node's change feed sent");
        watchers.finish(&members, &recorded.history)
    });
    let passed = check.verdict == skiff_check::Verdict::Linearizable
        && feed.as_ref().is_none_or(|feed| feed.passed)
        && lock.as_ref().is_none_or(|lock| lock.passed)
        && transfer.as_ref().is_none_or(|transfer| transfer.passed)
        && convergence.converged
        && recorded.leaders.split_terms.is_empty()
        && recorded.exits.is_empty();
    let history = save_history(options, target, run_id, &recorded.history, passed)?;
    let data_dir = target.local.as_ref().and_then(|local| {
        if passed && !options.keep_data {
            local.remove_when_done();
        }
        local.is_kept().then(|| {
            local.announce_kept();
            local.dir().display().to_string()
        })
    });
    if target.local.is_none() && passed {
        // Leave the user's cluster as it was: the run's keys go.
        let url = format!("{}/v1/kv/{}?recurse", members[0].url, skiff_client::encode_key(&target.prefix));
        let _ = http.send(ureq::http::Method::DELETE, &url, None);
    }
    Ok(Report {
        passed,
        settings: settings(options, kinds, seed, target),
        interrupted: signals.interrupted(),
        workload_seconds: recorded.workload.as_secs_f64(),
        operations: Operations::count(&recorded.history),
        errors: recorded.errors,
        faults: fault_summary(kinds, recorded.faults),
        leaders: recorded.leaders,
        unexpected_exits: recorded.exits,
        convergence,
        check,
        lock,
        transfer,
        feed,
        history: history.map(|path| path.display().to_string()),
        data_dir,
    })
}

/// The prefix of the transfer workload's accounts: under the run's own prefix, and no
/// other key's.
fn transfer_prefix(target: &Target) -> String {
    format!("{}transfer/", target.prefix)
}

/// The longest election timeout of the cluster's `[raft]` settings (the defaults: `skiff
/// check` starts its clusters with them, and assumes them of the user's).
fn election_timeout() -> Duration {
    let raft = skiff::config::RaftSection::default();
    Duration::from_millis(raft.tick_ms) * raft.core.max_election_timeout_ticks()
}

/// Lists the fenced writes that were applied and checks the lock workload's records.
fn conclude_locks(
    options: &CheckOptions,
    target: &Target,
    log: locks::LockLog,
    ttl_keys: &[locks::TtlKey],
    outages: &[(u64, u64)],
) -> Result<locks::LockReport> {
    let urls: Vec<String> = target.roster.current().into_iter().map(|member| member.url).collect();
    let builder = skiff_client::Client::builder().endpoints(urls).timeout(LEADER_TIMEOUT);
    let client = target.security.apply(builder).build()?;
    let prefix = format!("{}fenced/", target.prefix);
    let listing: Vec<(String, Vec<u8>, u64)> = client
        .list(&prefix, skiff_client::Consistency::Consistent)
        .context("cannot list the fenced writes")?
        .into_iter()
        .map(|entry| (entry.key, entry.value, entry.modify_index))
        .collect();
    Ok(locks::conclude(log, &listing, ttl_keys, options.lock_ttl, locks::allowance(election_timeout()), outages))
}

fn settings(options: &CheckOptions, kinds: &[FaultKind], seed: u64, target: &Target) -> Settings {
    Settings {
        nodes: target.local.as_ref().map(|_| target.initial.len()),
        endpoints: target.initial.iter().map(|member| member.url.clone()).collect(),
        time_seconds: options.time.as_secs_f64(),
        faults: kinds.to_vec(),
        clients: options.clients,
        keys: target.keys.clone(),
        seed,
        request_timeout_ms: u64::try_from(options.request_timeout.as_millis()).unwrap_or(u64::MAX),
    }
}

fn fault_summary(kinds: &[FaultKind], log: FaultLog) -> Faults {
    let mut counts: BTreeMap<FaultKind, u64> = kinds.iter().map(|&kind| (kind, 0)).collect();
    for event in &log.events {
        *counts.entry(event.kind).or_default() += 1;
    }
    Faults { counts, total: log.events.len() as u64, events: log.events, errors: log.errors }
}

/// Saves the history to `--history`, or, when the check failed, next to the nodes' data
/// (or in the temp directory). Returns where.
fn save_history(
    options: &CheckOptions,
    target: &Target,
    run_id: &str,
    history: &[Operation],
    passed: bool,
) -> Result<Option<PathBuf>> {
    let path = match (&options.history, &target.local) {
        (Some(path), _) => path.clone(),
        (None, _) if passed => return Ok(None),
        (None, Some(local)) => local.dir().join("history.json"),
        (None, None) => std::env::temp_dir().join(format!("skiff-check-{run_id}-history.json")),
    };
    write_history(&path, history).with_context(|| format!("cannot save the history to {}", path.display()))?;
    Ok(Some(path))
}

/// `error`, after saving the history recorded so far and saying where.
fn with_saved_history(
    error: anyhow::Error,
    options: &CheckOptions,
    target: &Target,
    run_id: &str,
    history: &[Operation],
) -> anyhow::Error {
    match save_history(options, target, run_id, history, false) {
        Ok(Some(path)) => note(&format!("the history recorded so far is saved to {}", path.display())),
        Ok(None) => {}
        Err(save_error) => note(&format!("{save_error:#}")),
    }
    error
}

/// A JSON array, one operation per line.
fn write_history(path: &Path, history: &[Operation]) -> Result<()> {
    let mut text = String::from("[\n");
    for (position, operation) in history.iter().enumerate() {
        text.push_str(&serde_json::to_string(operation)?);
        text.push_str(if position + 1 < history.len() { ",\n" } else { "\n" });
    }
    text.push_str("]\n");
    std::fs::write(path, text)?;
    Ok(())
}
