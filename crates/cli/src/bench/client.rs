//! The logical clients: each issues one request at a time, back to back, and waits for its
//! answer before the next. A [`Group`] holds the clients that share one connection (driven
//! by one task, [`super::worker`]), their random choices and what they measured; the
//! groups share nothing but a few counters while they run, and are merged at the end.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};

use super::connection::{Operation, Outcome, Request};
use super::options::{Settings, Stop};

/// The highest latency a histogram holds, in microseconds (`--request-timeout` is at most
/// 60 s; anything longer is recorded as this).
const HIGHEST_MICROS: u64 = 60_000_000;
/// How many times the fill tries to write a key.
const FILL_ATTEMPTS: u32 = 3;
/// Each put takes its value at a random offset into a buffer this much longer than the
/// value: values differ without being generated per request.
const VALUE_SLACK: usize = 4096;

/// Where the run is, as the clients see it.
pub struct Phase(AtomicU8);

impl Phase {
    pub const WARMUP: u8 = 0;
    pub const MEASURE: u8 = 1;
    pub const STOP: u8 = 2;

    pub fn get(&self) -> u8 {
        self.0.load(Ordering::Acquire)
    }

    pub fn set(&self, phase: u8) {
        self.0.store(phase, Ordering::Release);
    }
}

/// What the clients share while they run.
pub struct Shared {
    pub phase: Phase,
    /// Measured requests completed (errors included): the progress display's rate.
    pub completed: AtomicU64,
    pub errors: AtomicU64,
    /// With `--total`: requests claimed so far.
    pub claimed: AtomicU64,
    /// The fill: the next key to write, and how many are done.
    pub next_fill: AtomicU64,
    pub filled: AtomicU64,
}

impl Shared {
    pub fn new(phase: u8) -> Shared {
        Shared {
            phase: Phase(AtomicU8::new(phase)),
            completed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
            next_fill: AtomicU64::new(0),
            filled: AtomicU64::new(0),
        }
    }
}

/// What the clients do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// Write every key once (not measured).
    Fill,
    /// The workload: warm-up, then measured.
    Run,
}

/// A job and what it needs.
#[derive(Clone, Copy)]
pub struct Job<'a> {
    pub kind: JobKind,
    pub settings: &'a Settings,
    pub shared: &'a Shared,
}

/// A request a client has issued, and whose answer it waits for.
#[derive(Clone, Copy, Debug)]
pub struct Issued {
    /// The client, within its group.
    pub client: usize,
    pub operation: Operation,
    pub key: u64,
    /// When the client issued it: its latency starts here, whatever the request then waits
    /// for (its turn on the connection, the commands before it in the pipeline).
    pub at: Instant,
    /// Issued during the measured run: recorded.
    measured: bool,
    /// The fill's attempt at this key, from 1.
    attempt: u32,
}

/// The measured requests of one operation.
pub struct OperationStats {
    /// Latencies of the requests that were answered (misses included), in microseconds.
    pub latency: Histogram<u64>,
    pub misses: u64,
    pub errors: u64,
    /// Errors by kind.
    pub error_kinds: BTreeMap<String, u64>,
}

impl OperationStats {
    pub fn new() -> OperationStats {
        OperationStats {
            latency: Histogram::new_with_bounds(1, HIGHEST_MICROS, 3).expect("valid histogram bounds"),
            misses: 0,
            errors: 0,
            error_kinds: BTreeMap::new(),
        }
    }

    /// Answered requests (misses included) and errors.
    pub fn requests(&self) -> u64 {
        self.latency.len() + self.errors
    }

    pub fn merge(&mut self, other: &OperationStats) {
        self.latency.add(&other.latency).expect("histograms with the same bounds");
        self.misses += other.misses;
        self.errors += other.errors;
        for (kind, count) in &other.error_kinds {
            *self.error_kinds.entry(kind.clone()).or_default() += count;
        }
    }

    pub fn record(&mut self, outcome: Outcome, latency: Duration) {
        match outcome {
            Outcome::Ok | Outcome::Miss => {
                self.misses += u64::from(outcome == Outcome::Miss);
                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).clamp(1, HIGHEST_MICROS);
                self.latency.record(micros).expect("a value within the histogram's bounds");
            }
            Outcome::Error(kind) => {
                self.errors += 1;
                *self.error_kinds.entry(kind).or_default() += 1;
            }
        }
    }
}

/// The clients that share one connection, and what they measured.
pub struct Group {
    /// One generator per client, seeded from `--seed` and the client's index.
    rngs: Vec<SmallRng>,
    /// Printable random bytes, `VALUE_SLACK` longer than a value.
    values: Vec<u8>,
    value_size: usize,
    /// `key-<n>`.
    key: Vec<u8>,
    pub gets: OperationStats,
    pub puts: OperationStats,
    /// Keys the fill could not write.
    pub fill_failures: u64,
    /// When the group's last request of the run ended.
    pub finished: Option<Instant>,
}

impl Group {
    /// The group of connection `connection`: clients `connection`, `connection +
    /// connections`, ... (their indexes in the whole run seed their choices).
    pub fn new(connection: usize, settings: &Settings) -> Group {
        let seed = |index: u64| settings.seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let clients = (connection..settings.clients).step_by(settings.connections);
        let rngs: Vec<SmallRng> = clients.map(|index| SmallRng::seed_from_u64(seed(index as u64))).collect();
        let mut rng = SmallRng::seed_from_u64(seed(u64::MAX - connection as u64));
        let values = (0..settings.value_size + VALUE_SLACK).map(|_| rng.random_range(b'!'..=b'~')).collect();
        Group {
            rngs,
            values,
            value_size: settings.value_size,
            key: Vec::with_capacity(32),
            gets: OperationStats::new(),
            puts: OperationStats::new(),
            fill_failures: 0,
            finished: None,
        }
    }

    pub fn len(&self) -> usize {
        self.rngs.len()
    }

    /// Client `client`'s next request, or `None` when it is done.
    pub fn issue(&mut self, job: Job<'_>, client: usize, now: Instant) -> Option<Issued> {
        let (settings, shared) = (job.settings, job.shared);
        let phase = shared.phase.get();
        if phase == Phase::STOP {
            return None;
        }
        let issued = |operation, key, measured| Issued { client, operation, key, at: now, measured, attempt: 1 };
        match job.kind {
            JobKind::Fill => {
                let key = shared.next_fill.fetch_add(1, Ordering::Relaxed);
                (key < settings.keys).then(|| issued(Operation::Put, key, false))
            }
            JobKind::Run => {
                let measured = phase == Phase::MEASURE;
                if let (true, Stop::Total(total)) = (measured, settings.stop)
                    && shared.claimed.fetch_add(1, Ordering::Relaxed) >= total
                {
                    return None;
                }
                let rng = &mut self.rngs[client];
                let read = settings.read_ratio >= 1.0 || rng.random_bool(settings.read_ratio);
                let operation = if read { Operation::Get } else { Operation::Put };
                Some(issued(operation, rng.random_range(0..settings.keys), measured))
            }
        }
    }

    /// Records the answer to `issued`; returns the client's next request.
    pub fn complete(&mut self, job: Job<'_>, issued: Issued, outcome: Outcome, now: Instant) -> Option<Issued> {
        let shared = job.shared;
        match job.kind {
            JobKind::Fill => {
                if outcome != Outcome::Ok && issued.attempt < FILL_ATTEMPTS {
                    return Some(Issued { at: now, attempt: issued.attempt + 1, ..issued });
                }
                self.fill_failures += u64::from(outcome != Outcome::Ok);
                shared.filled.fetch_add(1, Ordering::Relaxed);
            }
            JobKind::Run if issued.measured => {
                if matches!(outcome, Outcome::Error(_)) {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                }
                shared.completed.fetch_add(1, Ordering::Relaxed);
                let stats = match issued.operation {
                    Operation::Get => &mut self.gets,
                    Operation::Put => &mut self.puts,
                };
                stats.record(outcome, now.saturating_duration_since(issued.at));
            }
            JobKind::Run => {}
        }
        self.issue(job, issued.client, now)
    }

    /// The bytes of `issued`: its key, and a value for a put.
    pub fn request(&mut self, issued: &Issued) -> Request<'_> {
        self.key.clear();
        let _ = write!(self.key, "key-{}", issued.key);
        let value = match issued.operation {
            Operation::Put => {
                let offset = self.rngs[issued.client].random_range(0..VALUE_SLACK);
                &self.values[offset..offset + self.value_size]
            }
            Operation::Get => &[],
        };
        Request { operation: issued.operation, key: &self.key, value }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::options::{BenchOptions, Consistency, Target, Workload};

    fn settings(workload: Workload, total: Option<u64>) -> Settings {
        let options = BenchOptions {
            workload,
            target: Target::SkiffRedis,
            endpoints: None,
            clients: 4,
            connections: 2,
            keys: 10,
            value_size: 8,
            duration: None,
            total,
            warmup: Duration::ZERO,
            consistency: Consistency::Consistent,
            read_ratio: 0.5,
            fill: true,
            seed: Some(1),
            json: false,
            request_timeout: Duration::from_secs(1),
            security: crate::client::Security::default(),
        };
        options.settings().unwrap()
    }

    #[test]
    fn a_group_holds_every_connections_th_client() {
        let settings = settings(Workload::Put, None);
        assert_eq!(Group::new(0, &settings).len(), 2);
        let mut odd = settings.clone();
        odd.clients = 5;
        let settings = odd;
        assert_eq!((Group::new(0, &settings).len(), Group::new(1, &settings).len()), (3, 2));
    }

    #[test]
    fn the_fill_writes_each_key_once_and_retries_failures() {
        let settings = settings(Workload::Get, None);
        let shared = Shared::new(Phase::WARMUP);
        let job = Job { kind: JobKind::Fill, settings: &settings, shared: &shared };
        let mut group = Group::new(0, &settings);
        let now = Instant::now();
        let first = group.issue(job, 0, now).unwrap();
        assert_eq!((first.operation, first.key), (Operation::Put, 0));
        let request = group.request(&first);
        assert_eq!((request.key, request.value.len()), (&b"key-0"[..], 8));
        // A failed write is tried again, up to three times, then counted.
        let mut issued = first;
        for _ in 1..FILL_ATTEMPTS {
            issued = group.complete(job, issued, Outcome::Error("HTTP 503".into()), now).unwrap();
            assert_eq!(issued.key, 0);
        }
        let next = group.complete(job, issued, Outcome::Error("HTTP 503".into()), now).unwrap();
        assert_eq!((next.key, group.fill_failures), (1, 1));
        let mut issued = Some(next);
        while let Some(request) = issued {
            issued = group.complete(job, request, Outcome::Ok, now);
        }
        assert_eq!(shared.filled.load(Ordering::Relaxed), 10);
        assert_eq!(group.gets.requests() + group.puts.requests(), 0, "the fill is not measured");
    }

    #[test]
    fn a_run_records_measured_requests_until_the_total() {
        let settings = settings(Workload::Mixed, Some(5));
        let shared = Shared::new(Phase::WARMUP);
        let job = Job { kind: JobKind::Run, settings: &settings, shared: &shared };
        let mut group = Group::new(1, &settings);
        let now = Instant::now();
        // Warm-up requests are not recorded.
        let warm = group.issue(job, 0, now).unwrap();
        shared.phase.set(Phase::MEASURE);
        let mut issued = group.complete(job, warm, Outcome::Ok, now);
        let mut answered = 0;
        while let Some(request) = issued {
            answered += 1;
            let outcome = if answered == 2 { Outcome::Error("timeout".into()) } else { Outcome::Miss };
            issued = group.complete(job, request, outcome, now + Duration::from_millis(3));
        }
        assert_eq!(answered, 5);
        let (gets, puts) = (&group.gets, &group.puts);
        assert_eq!(gets.requests() + puts.requests(), 5);
        assert_eq!(gets.errors + puts.errors, 1);
        assert_eq!(gets.misses + puts.misses, 4);
        assert!(gets.requests() > 0 && puts.requests() > 0, "a mixed run does both");
        assert!(gets.latency.max().max(puts.latency.max()).abs_diff(3000) <= 3, "3 ms, to 3 digits");
        assert_eq!(shared.completed.load(Ordering::Relaxed), 5);
        assert_eq!(shared.errors.load(Ordering::Relaxed), 1);
        shared.phase.set(Phase::STOP);
        assert!(group.issue(job, 0, now).is_none());
    }
}
