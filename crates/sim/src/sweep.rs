//! Running seeds: one seed with its report, or a sweep over many seeds on several threads
//! (each seed is independent and deterministic, so the results do not depend on how the
//! seeds are spread over threads). A failing seed is run again with the trace on, to print
//! the events that led to the failure.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::panic_capture;
use crate::sim::Sim;
use crate::stats::Stats;
use crate::trace::TraceMode;

/// Events in the fault phase of one seed, unless told otherwise.
pub const DEFAULT_STEPS: u64 = 10_000;
/// Lines of trace printed for a failing seed.
pub const TRACE_TAIL_LINES: usize = 40;

/// One seed to run.
#[derive(Clone, Copy, Debug)]
pub struct SimOptions {
    pub seed: u64,
    /// Voters at the start (3 or 5).
    pub nodes: u64,
    /// Events in the fault phase.
    pub steps: u64,
    pub trace: TraceMode,
}

/// A violated property on one seed, with what is needed to see it and replay it.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub nodes: u64,
    pub steps: u64,
    pub property: String,
    pub detail: String,
    /// The seed's settings (core options, fault rates).
    pub config: String,
    /// The events before the failure, one per line.
    pub trace_tail: Vec<String>,
}

impl Failure {
    /// The command that runs this seed alone.
    pub fn replay_command(&self) -> String {
        let mut command =
            format!("cargo run --release -p skiff-sim -- --seeds 1 --start-seed {} --nodes {}", self.seed, self.nodes);
        if self.steps != DEFAULT_STEPS {
            command.push_str(&format!(" --steps {}", self.steps));
        }
        command
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "VIOLATION seed={} nodes={}: {}", self.seed, self.nodes, self.property)?;
        writeln!(f, "  {}", self.detail)?;
        writeln!(f, "  config: {}", self.config)?;
        writeln!(f, "  last {} events:", self.trace_tail.len())?;
        for line in &self.trace_tail {
            writeln!(f, "    {line}")?;
        }
        write!(f, "  replay: {}", self.replay_command())
    }
}

/// What one seed did.
#[derive(Clone, Debug)]
pub struct SeedReport {
    pub seed: u64,
    pub stats: Stats,
    pub failure: Option<Failure>,
    /// The trace kept by `options.trace`.
    pub trace: Vec<String>,
}

/// Runs one seed: the fault phase, then the liveness phase.
pub fn run_seed(options: &SimOptions) -> SeedReport {
    let _quiet = panic_capture::quiet();
    let (mut sim, result) = match Sim::new(options.seed, options.nodes, options.trace) {
        Ok(mut sim) => {
            let result = sim.run(options.steps);
            (Some(sim), result)
        }
        Err(violation) => (None, Err(violation)),
    };
    let stats = sim.as_ref().map(Sim::stats).unwrap_or_default();
    let config = sim.as_ref().map(|sim| sim.knobs().to_string()).unwrap_or_default();
    let trace = sim.take().map(Sim::into_trace).unwrap_or_default();
    let failure = result.err().map(|violation| Failure {
        seed: options.seed,
        nodes: options.nodes,
        steps: options.steps,
        property: violation.property,
        detail: violation.detail,
        config,
        trace_tail: trace.iter().rev().take(TRACE_TAIL_LINES).rev().cloned().collect(),
    });
    SeedReport { seed: options.seed, stats, failure, trace }
}

/// A range of seeds to run.
#[derive(Clone, Copy, Debug)]
pub struct SweepOptions {
    pub start_seed: u64,
    pub seeds: u64,
    pub nodes: u64,
    pub steps: u64,
    pub threads: usize,
}

#[derive(Clone, Debug)]
pub struct SweepReport {
    pub options: SweepOptions,
    pub stats: Stats,
    /// In seed order.
    pub failures: Vec<Failure>,
    pub elapsed: Duration,
}

impl SweepReport {
    /// The one-line summary the command prints.
    pub fn summary_line(&self) -> String {
        let stats = &self.stats;
        format!(
            "seeds={} nodes={} violations={} events={} proposals_committed={} reads={} elections={} crashes={} \
             snapshots_installed={} membership_changes={} transfers={} mid_ready_crashes={} partitions={} pauses={} \
             drops={} duplicates={} compactions={} elapsed={:.1}s",
            self.options.seeds,
            self.options.nodes,
            self.failures.len(),
            stats.events,
            stats.proposals_committed,
            stats.reads,
            stats.elections,
            stats.crashes,
            stats.snapshots_installed,
            stats.membership_changes,
            stats.transfers,
            stats.mid_ready_crashes,
            stats.partitions,
            stats.pauses,
            stats.drops,
            stats.duplicates,
            stats.compactions,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Runs every seed of the sweep; failing seeds are run again to capture their trace tail.
pub fn run_sweep(options: &SweepOptions) -> SweepReport {
    let started = Instant::now();
    let next = AtomicU64::new(options.start_seed);
    let end = options.start_seed + options.seeds;
    let results = Mutex::new((Stats::default(), Vec::new()));
    std::thread::scope(|scope| {
        for _ in 0..options.threads.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        return;
                    }
                    let report = run_seed(&sweep_seed(options, seed, TraceMode::Off));
                    let mut results = results.lock().expect("a sweep thread panicked outside a seed");
                    results.0 += report.stats;
                    results.1.extend(report.failure.map(|_| seed));
                }
            });
        }
    });
    let (stats, mut failing) = results.into_inner().expect("a sweep thread panicked outside a seed");
    failing.sort_unstable();
    let failures = failing.into_iter().map(|seed| replay_failure(options, seed)).collect();
    SweepReport { options: *options, stats, failures, elapsed: started.elapsed() }
}

fn sweep_seed(options: &SweepOptions, seed: u64, trace: TraceMode) -> SimOptions {
    SimOptions { seed, nodes: options.nodes, steps: options.steps, trace }
}

/// Runs a failing seed again with the trace on. A run that then passes is itself a bug:
/// the simulation is not deterministic.
fn replay_failure(options: &SweepOptions, seed: u64) -> Failure {
    let report = run_seed(&sweep_seed(options, seed, TraceMode::Tail(TRACE_TAIL_LINES)));
    report.failure.unwrap_or_else(|| Failure {
        seed,
        nodes: options.nodes,
        steps: options.steps,
        property: "Determinism".to_string(),
        detail: "the seed failed once and passed when replayed".to_string(),
        config: String::new(),
        trace_tail: Vec::new(),
    })
}
