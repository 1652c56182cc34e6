//! The report: what ran and what it measured, for people or as one JSON object; and the
//! progress display while the fill and the run go on.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::client::OperationStats;
use super::options::{Consistency, Settings, Stop, Target, Workload};

/// Everything `skiff bench` measured, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Report {
    pub workload: Workload,
    pub target: Target,
    pub endpoints: Vec<String>,
    pub clients: usize,
    pub connections: usize,
    /// The most requests in flight at once: `connections` over HTTP/1.1 (one request at a
    /// time per connection), `clients` over the Redis protocol (pipelined).
    pub in_flight: usize,
    pub keys: u64,
    pub value_size: usize,
    /// How reads were served (`None` for `put`).
    pub consistency: Option<Consistency>,
    /// The share of reads (`mixed` only).
    pub read_ratio: Option<f64>,
    pub seed: u64,
    pub warmup_seconds: f64,
    /// The fill phase, when there was one (not measured).
    pub fill: Option<Fill>,
    /// Whether Ctrl-C cut the run short.
    pub interrupted: bool,
    /// The measured time: from the end of the warm-up to the last answer.
    pub duration_seconds: f64,
    /// Requests measured: answered ones and errors.
    pub requests: u64,
    pub errors: u64,
    /// Errors by kind: `HTTP 503`, `timeout`, `connection refused`, `TRYAGAIN ...`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Reads of a key that did not exist (answers, not errors).
    pub misses: u64,
    /// Answered requests (errors not included) per second.
    pub throughput: f64,
    /// Latencies of the answered requests, in microseconds.
    pub latency_us: Latency,
    /// The same by operation (`get`, `put`), for those that ran.
    pub operations: BTreeMap<&'static str, OperationReport>,
}

/// The fill phase: every key written once before the run.
#[derive(Debug, Serialize)]
pub struct Fill {
    pub keys: u64,
    /// Keys that could not be written (reads of them are misses).
    pub failed: u64,
    pub seconds: f64,
}

/// Latency percentiles, in microseconds (0 when nothing was answered).
#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
    pub mean: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency { p50: 0, p90: 0, p99: 0, p99_9: 0, max: 0, mean: 0.0 };
        }
        Latency {
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p99: histogram.value_at_quantile(0.99),
            p99_9: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            mean: (histogram.mean() * 10.0).round() / 10.0,
        }
    }

    fn line(&self) -> String {
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            millis(self.p50),
            millis(self.p90),
            millis(self.p99),
            millis(self.p99_9),
            millis(self.max)
        )
    }
}

/// One operation's share of the run.
#[derive(Debug, Serialize)]
pub struct OperationReport {
    pub requests: u64,
    pub errors: u64,
    pub misses: u64,
    pub throughput: f64,
    pub latency_us: Latency,
}

impl Report {
    pub fn new(
        settings: &Settings,
        fill: Option<Fill>,
        interrupted: bool,
        duration: Duration,
        gets: &OperationStats,
        puts: &OperationStats,
    ) -> Report {
        let seconds = duration.as_secs_f64();
        let per_second = |count: u64| if seconds > 0.0 { (count as f64 / seconds * 10.0).round() / 10.0 } else { 0.0 };
        let mut all = OperationStats::new();
        all.merge(gets);
        all.merge(puts);
        let mut operations = BTreeMap::new();
        for (name, stats) in [("get", gets), ("put", puts)] {
            if stats.requests() > 0 {
                let report = OperationReport {
                    requests: stats.requests(),
                    errors: stats.errors,
                    misses: stats.misses,
                    throughput: per_second(stats.latency.len()),
                    latency_us: Latency::of(&stats.latency),
                };
                operations.insert(name, report);
            }
        }
        Report {
            workload: settings.workload,
            target: settings.target,
            endpoints: settings.endpoints.iter().map(|endpoint| endpoint.name.clone()).collect(),
            clients: settings.clients,
            connections: settings.connections,
            in_flight: if settings.target.is_http() { settings.connections } else { settings.clients },
            keys: settings.keys,
            value_size: settings.value_size,
            consistency: (settings.read_ratio > 0.0).then_some(settings.consistency),
            read_ratio: (settings.workload == Workload::Mixed).then_some(settings.read_ratio),
            seed: settings.seed,
            warmup_seconds: settings.warmup.as_secs_f64(),
            fill,
            interrupted,
            duration_seconds: (seconds * 1000.0).round() / 1000.0,
            requests: all.requests(),
            errors: all.errors,
            errors_by_kind: all.error_kinds.clone(),
            misses: all.misses,
            throughput: per_second(all.latency.len()),
            latency_us: Latency::of(&all.latency),
            operations,
        }
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let mut text = String::new();
        let _ = write!(
            text,
            "skiff bench {}: {} at {}, {} on {} ({} in flight at most), {} keys, {}-byte values",
            workload_name(self.workload),
            self.target.name(),
            plural(self.endpoints.len(), "endpoint"),
            plural(self.clients, "client"),
            plural(self.connections, "connection"),
            self.in_flight,
            self.keys,
            self.value_size,
        );
        if let Some(consistency) = self.consistency {
            let _ = write!(text, ", {} reads", if consistency == Consistency::Stale { "stale" } else { "consistent" });
        }
        if let Some(ratio) = self.read_ratio {
            let _ = write!(text, " ({:.0}% of requests)", ratio * 100.0);
        }
        let _ = writeln!(text, ", seed {}", self.seed);
        if let Some(fill) = &self.fill {
            let failed = if fill.failed > 0 { format!(", {} failed", fill.failed) } else { String::new() };
            let _ = writeln!(
                text,
                "fill        {} keys written in {:.1} s{failed} (not measured)",
                fill.keys, fill.seconds
            );
        }
        let interrupted = if self.interrupted { " (interrupted)" } else { "" };
        let warmup = if self.warmup_seconds > 0.0 {
            format!("after a {} s warm-up", self.warmup_seconds)
        } else {
            "no warm-up".into()
        };
        let _ =
            writeln!(text, "requests    {} in {:.2} s, {warmup}{interrupted}", self.requests, self.duration_seconds);
        let _ = writeln!(text, "throughput  {:.0} req/s", self.throughput);
        let _ = write!(text, "errors      {}", self.errors);
        if !self.errors_by_kind.is_empty() {
            let kinds: Vec<String> =
                self.errors_by_kind.iter().map(|(kind, count)| format!("{kind}: {count}")).collect();
            let _ = write!(text, " ({})", kinds.join(", "));
        }
        text.push('\n');
        if self.misses > 0 {
            let _ = writeln!(text, "misses      {} reads found no key", self.misses);
        }
        let _ = writeln!(text, "latency     {}", self.latency_us.line());
        if self.operations.len() > 1 {
            for (name, operation) in &self.operations {
                let _ = writeln!(
                    text,
                    "  {name}       {} requests, {} errors, {:.0} req/s, {}",
                    operation.requests,
                    operation.errors,
                    operation.throughput,
                    operation.latency_us.line()
                );
            }
        }
        text
    }
}

fn workload_name(workload: Workload) -> &'static str {
    match workload {
        Workload::Put => "put",
        Workload::Get => "get",
        Workload::Mixed => "mixed",
    }
}

fn plural(count: usize, noun: &str) -> String {
    if count == 1 { format!("1 {noun}") } else { format!("{count} {noun}s") }
}

/// Microseconds as milliseconds, to the microsecond.
fn millis(micros: u64) -> String {
    format!("{:.3} ms", micros as f64 / 1000.0)
}

/// The progress bar (hidden when standard error is not a terminal; then a line every
/// 10 s instead), with the current rate.
pub struct Progress {
    bar: ProgressBar,
    /// Recent (time, completed) samples: the rate over the last second.
    samples: VecDeque<(Instant, u64)>,
    last_line: Instant,
}

/// How often the progress is printed when there is no bar.
const PROGRESS_LINE_INTERVAL: Duration = Duration::from_secs(10);
/// The window of the current rate.
const RATE_WINDOW: Duration = Duration::from_secs(1);

impl Progress {
    /// A bar of `length` steps (milliseconds, keys or requests).
    pub fn new(length: u64) -> Progress {
        let bar = ProgressBar::new(length);
        let style = ProgressStyle::with_template("{bar:30.cyan/blue} {msg}").expect("a valid template");
        bar.set_style(style.progress_chars("=> "));
        Progress { bar, samples: VecDeque::new(), last_line: Instant::now() }
    }

    /// The bar for a run: its length in milliseconds, or in requests with `--total`.
    pub fn for_run(settings: &Settings) -> Progress {
        match settings.stop {
            Stop::After(duration) => Progress::new(millis_u64(settings.warmup + duration)),
            Stop::Total(total) => Progress::new(total),
        }
    }

    /// Moves the bar to `position` and shows `what` and the rate of `completed`.
    pub fn update(&mut self, position: u64, completed: u64, what: &str) {
        let now = Instant::now();
        self.samples.push_back((now, completed));
        while self.samples.len() > 2 && now.duration_since(self.samples[1].0) >= RATE_WINDOW {
            self.samples.pop_front();
        }
        let (since, before) = self.samples[0];
        let elapsed = now.duration_since(since).as_secs_f64();
        let rate = if elapsed > 0.0 { completed.saturating_sub(before) as f64 / elapsed } else { 0.0 };
        let message = format!("{what}  {rate:.0}/s");
        if self.bar.is_hidden() {
            if self.last_line.elapsed() >= PROGRESS_LINE_INTERVAL {
                super::note(&message);
                self.last_line = now;
            }
        } else {
            self.bar.set_position(position);
            self.bar.set_message(message);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

pub fn millis_u64(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
