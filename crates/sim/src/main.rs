//! `skiff-sim`: runs many seeds of the deterministic cluster simulation and prints one
//! summary line; a failing seed prints the broken property, the events before it and the
//! command that replays it, and the exit status is 1.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use skiff_sim::{DEFAULT_STEPS, SimOptions, SweepOptions, TraceMode, run_seed, run_sweep};

/// Deterministic simulation of Skiff clusters under faults, with Raft's safety checks.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    start_seed: u64,
    /// Voters at the start of each run.
    #[arg(long, default_value_t = 3, value_parser = parse_nodes)]
    nodes: u64,
    /// Events in the fault phase of each seed (the liveness phase comes after).
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    steps: u64,
    /// Threads to run seeds on (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Print the whole event trace of each seed (use with `--seeds 1`).
    #[arg(long)]
    trace: bool,
}

/// The simulator runs clusters of 3 or 5 voters (plus spares to add).
fn parse_nodes(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(nodes @ (3 | 5)) => Ok(nodes),
        _ => Err(format!("--nodes must be 3 or 5, not {text:?}")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.trace {
        return print_traces(&args);
    }
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let options =
        SweepOptions { start_seed: args.start_seed, seeds: args.seeds, nodes: args.nodes, steps: args.steps, threads };
    let report = run_sweep(&options);
    for failure in &report.failures {
        println!("{failure}\n");
    }
    println!("{}", report.summary_line());
    if report.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// `--trace`: runs the seeds one by one and prints every event.
fn print_traces(args: &Args) -> ExitCode {
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    for seed in args.start_seed..args.start_seed + args.seeds {
        let report = run_seed(&SimOptions { seed, nodes: args.nodes, steps: args.steps, trace: TraceMode::Full });
        let mut text = report.trace.join("\n");
        match &report.failure {
            Some(failure) => {
                failed = true;
                text.push_str(&format!("\nVIOLATION seed={seed}: {}: {}", failure.property, failure.detail));
                text.push_str(&format!("\n  replay: {}", failure.replay_command()));
            }
            None => text.push_str(&format!("\nseed={seed} ok: {:?}", report.stats)),
        }
        // A closed pipe (`| head`) just ends the output.
        if writeln!(out, "{text}").is_err() {
            break;
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
