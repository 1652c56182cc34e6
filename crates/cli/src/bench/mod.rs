//! `skiff bench`: a load generator, like etcd's `benchmark` tool, for Skiff's HTTP API, its
//! Redis protocol, and etcd (through its v3 JSON gateway), so one generator measures both.
//!
//! A run, in order:
//! 1. [`options`]: check the options (a usage error exits 2).
//! 2. [`connection`]: open `--connections` persistent connections over the endpoints,
//!    round-robin ([`http`], [`resp`]); one that nothing answers stops the run (exit 1)
//!    with what to do.
//! 3. The fill (`get` and `mixed`, unless `--no-fill`): the clients write every key once.
//!    Not measured.
//! 4. The run: `--clients` logical clients ([`client`]), each one request at a time, back
//!    to back, on connection `client mod connections`, driven by one task per connection
//!    ([`worker`]) on one of a few threads ([`drivers`]): first the warm-up (not recorded), then the
//!    measured part, for `--duration` or `--total` requests. Latencies go into HDR histograms (microseconds),
//!    one per connection and operation, merged at the end.
//! 5. The [`report`], for people or as JSON.
//!
//! Errors do not stop a run: they are counted by kind. The generator is cheap per request
//! (no thread per connection, no hand-off between tasks, buffers reused), since it shares the machine's cores with the
//! servers it measures; docs/bench.md says what it can generate.

mod client;
pub(crate) mod connection;
mod drivers;
mod http;
mod options;
mod report;
mod resp;
/// Also the change-feed check's connections (`check::feed`).
pub(crate) mod stream;
mod worker;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use self::client::{Group, JobKind, OperationStats, Phase, Shared};
use self::connection::Connection;
use self::drivers::{Drivers, Work};
pub use self::options::{BenchOptions, Consistency, Target, Workload};
use self::options::{Settings, Stop};
use self::report::{Fill, Progress, Report, millis_u64};

/// Exit code of a usage error.
const EXIT_USAGE: u8 = 2;
/// Exit code after a second Ctrl-C stopped the run at once.
const EXIT_INTERRUPTED: u8 = 130;
/// How often the progress display is redrawn and the phases checked.
const TICK: Duration = Duration::from_millis(100);

/// A line on standard error.
fn note(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "skiff bench: {text}");
}

/// Whether `--endpoints` was given on the command line: otherwise the target's own
/// defaults apply (the global default and `SKIFF_ENDPOINTS` are the HTTP API's, for the
/// client commands).
pub fn endpoints_given() -> bool {
    let matches = <crate::Cli as clap::CommandFactory>::command().get_matches();
    let given =
        |matches: &clap::ArgMatches| matches.value_source("endpoints") == Some(clap::parser::ValueSource::CommandLine);
    given(&matches) || matches.subcommand_matches("bench").is_some_and(given)
}

/// Runs `skiff bench`: exit code 0 after a run in which requests were answered, 1 if none
/// was (or nothing answers at the start), 2 on a usage error.
pub fn run(options: BenchOptions) -> Result<ExitCode> {
    let settings = match options.settings() {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let settings = Arc::new(settings);
    let drivers = Drivers::new()?;
    let mut connections = drivers.open(&settings)?;
    if settings.target.is_http() && settings.clients > settings.connections {
        note(&format!(
            "HTTP/1.1 carries one request at a time per connection: the {} clients take turns on {} connections, \
             so at most {} requests are in flight (the wait counts in the latency)",
            settings.clients, settings.connections, settings.connections
        ));
    }
    let interrupts = interrupts().context("cannot listen for Ctrl-C")?;
    let mut groups: Vec<Group> =
        (0..settings.connections).map(|connection| Group::new(connection, &settings)).collect();
    let fill =
        if settings.fill { Some(fill(&drivers, &settings, &mut connections, &mut groups, &interrupts)?) } else { None };
    if interrupts.load(Ordering::SeqCst) > 0 {
        note("interrupted during the fill; nothing was measured");
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    let duration = measure(&drivers, &settings, &mut connections, &mut groups, &interrupts)?;
    let (mut gets, mut puts) = (OperationStats::new(), OperationStats::new());
    for group in &groups {
        gets.merge(&group.gets);
        puts.merge(&group.puts);
    }
    let interrupted = interrupts.load(Ordering::SeqCst) > 0;
    let report = Report::new(&settings, fill, interrupted, duration, &gets, &puts);
    if settings.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    let refused =
        |kind: &String| kind == "HTTP 403" || ["NOAUTH", "NOPERM", "WRONGPASS"].iter().any(|k| kind.starts_with(k));
    if report.errors_by_kind.keys().any(refused) {
        note(if settings.token.is_some() {
            "the cluster refused the token for some requests: it must be allowed to read and write the key- keys"
        } else {
            "the cluster has tokens ([auth]): give one that may read and write the key- keys with --token"
        });
    }
    if report.requests > 0 && report.requests == report.errors {
        note("no request was answered: every one failed (see the errors above)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes every key once, with a progress bar; not measured.
fn fill(
    drivers: &Drivers,
    settings: &Arc<Settings>,
    connections: &mut Vec<Connection>,
    groups: &mut Vec<Group>,
    interrupts: &AtomicUsize,
) -> Result<Fill> {
    let shared = Arc::new(Shared::new(Phase::WARMUP));
    let start = Instant::now();
    let mut progress = Progress::new(settings.keys);
    let work = Work { kind: JobKind::Fill, settings: Arc::clone(settings), shared: Arc::clone(&shared) };
    drivers.run(connections, groups, &work, TICK, || {
        if interrupts.load(Ordering::SeqCst) > 0 {
            shared.phase.set(Phase::STOP);
        }
        let filled = shared.filled.load(Ordering::Relaxed);
        progress.update(filled, filled, &format!("fill: {filled}/{} keys", settings.keys));
        TICK
    })?;
    progress.finish();
    let failed = groups.iter().map(|group| group.fill_failures).sum();
    if failed > 0 {
        note(&format!("the fill could not write {failed} of {} keys; reads of them count as misses", settings.keys));
    }
    Ok(Fill { keys: settings.keys, failed, seconds: (start.elapsed().as_secs_f64() * 10.0).round() / 10.0 })
}

/// The warm-up, then the measured run; returns how long the measured part took (from the
/// end of the warm-up to the last answer).
fn measure(
    drivers: &Drivers,
    settings: &Arc<Settings>,
    connections: &mut Vec<Connection>,
    groups: &mut Vec<Group>,
    interrupts: &AtomicUsize,
) -> Result<Duration> {
    let first = if settings.warmup.is_zero() { Phase::MEASURE } else { Phase::WARMUP };
    let shared = Arc::new(Shared::new(first));
    let start = Instant::now();
    let mut measure_start = (first == Phase::MEASURE).then_some(start);
    let mut progress = Progress::for_run(settings);
    let work = Work { kind: JobKind::Run, settings: Arc::clone(settings), shared: Arc::clone(&shared) };
    drivers.run(connections, groups, &work, TICK, || {
        let now = Instant::now();
        if interrupts.load(Ordering::SeqCst) > 0 {
            shared.phase.set(Phase::STOP);
        }
        if measure_start.is_none() && now.duration_since(start) >= settings.warmup {
            measure_start = Some(now);
            shared.phase.set(Phase::MEASURE);
        }
        let completed = shared.completed.load(Ordering::Relaxed);
        let errors = shared.errors.load(Ordering::Relaxed);
        let Some(measuring) = measure_start else {
            let warmed = now.duration_since(start);
            let what = format!("warm-up {:.0}s/{:.0}s", warmed.as_secs_f64(), settings.warmup.as_secs_f64());
            progress.update(millis_u64(warmed), completed, &what);
            return settings.warmup.saturating_sub(warmed);
        };
        let elapsed = now.duration_since(measuring);
        let (position, what, next) = match settings.stop {
            Stop::After(duration) => {
                if elapsed >= duration {
                    shared.phase.set(Phase::STOP);
                }
                let what =
                    format!("{:.0}s/{:.0}s  {completed} requests", elapsed.as_secs_f64(), duration.as_secs_f64());
                (millis_u64(settings.warmup + elapsed), what, duration.saturating_sub(elapsed))
            }
            Stop::Total(total) => (completed, format!("{completed}/{total} requests"), TICK),
        };
        progress.update(position, completed, &format!("{what}  {errors} errors"));
        next
    })?;
    progress.finish();
    let end = groups.iter().filter_map(|group| group.finished).max().unwrap_or_else(Instant::now);
    Ok(measure_start.map(|measuring| end.saturating_duration_since(measuring)).unwrap_or_default())
}

/// Counts SIGINT and SIGTERM: the first ends the run early (it is reported as usual), the
/// second exits at once.
fn interrupts() -> Result<Arc<AtomicUsize>> {
    use tokio::signal::unix::SignalKind;
    let first = "skiff bench: interrupted: finishing the requests in flight, then reporting (again to stop now)";
    let kinds = [SignalKind::interrupt(), SignalKind::terminate()];
    Ok(crate::interrupts::count(&kinds, first.to_string(), Some(EXIT_INTERRUPTED))?)
}
