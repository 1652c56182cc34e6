//! [`Published`]: what the state machine tells the servers around it as it applies, without
//! them asking the node: which watched keys changed (so a blocking query wakes only when its
//! key or prefix did), and the keyspace's size and quota alarm (for status and metrics).
//!
//! The apply thread calls [`Published::changed`] for every key it writes or deletes. That
//! costs one atomic load when nothing is watched; otherwise a lock, one lookup of the key
//! and one of each distinct watched prefix length, and a wake-up of each matching watcher:
//! proportional to the watchers that match, not to all of them. A woken blocking query then
//! reads once. Nothing here goes through the Raft node or its driver.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

/// The state machine's published news. Shared (`Arc`) between the store and the servers.
#[derive(Debug, Default)]
pub struct Published {
    registry: Mutex<Registry>,
    /// Registered watches, read without the lock: the apply path skips it when 0.
    watching: AtomicUsize,
    /// The bytes of every key and value, after the last apply.
    used_bytes: AtomicU64,
    /// 0, or the quota a write was refused at and not yet followed by a freeing.
    alarm_quota: AtomicU64,
    /// The index of the last applied command.
    applied: AtomicU64,
    /// The replicated cluster clock as of the last apply, in milliseconds.
    clock_ms: AtomicU64,
    /// This node's reading of the cluster clock is `anchor_ms` plus the local milliseconds
    /// since `anchor_at` (since [`process_start`]; 0: no anchor yet). See [`Published::now_ms`].
    anchor_ms: AtomicU64,
    anchor_at: AtomicU64,
    /// The earliest deadline of a key or lease on the cluster clock; `u64::MAX` for none.
    next_deadline: AtomicU64,
    /// Whether this node leads, as the leader's clock task last saw ([`Published::set_leading`]).
    leading: AtomicBool,
    /// The change feed's history (`GET /v1/skiff/watch`).
    feed: crate::feed::Feed,
}

/// This process's first reading of the monotonic clock: what [`Published`] measures from.
fn process_start() -> std::time::Instant {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *START.get_or_init(std::time::Instant::now)
}

/// Milliseconds on this node's monotonic clock since [`process_start`], plus 1: never 0,
/// which marks "no anchor" in [`Published`].
fn local_ms() -> u64 {
    (process_start().elapsed().as_millis() as u64).saturating_add(1)
}

#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    /// Watches of one key, by key.
    keys: HashMap<Bytes, Vec<(u64, Arc<Notify>)>>,
    /// Watches of a prefix, by prefix.
    prefixes: HashMap<Bytes, Vec<(u64, Arc<Notify>)>>,
    /// How many watched prefixes have each length: a changed key is looked up at these
    /// lengths only.
    prefix_lengths: BTreeMap<usize, usize>,
}

impl Registry {
    fn table(&mut self, prefix: bool) -> &mut HashMap<Bytes, Vec<(u64, Arc<Notify>)>> {
        if prefix { &mut self.prefixes } else { &mut self.keys }
    }
}

/// A registered interest in a key or a prefix; unregistered when dropped.
#[derive(Debug)]
pub struct Watch {
    published: Arc<Published>,
    id: u64,
    key: Bytes,
    prefix: bool,
    notify: Arc<Notify>,
}

impl Watch {
    /// Resolves once the key (or a key under the prefix) changed since the watch was made or
    /// since the last call returned. A change that came before the call is not lost.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut registry = self.published.lock();
        let table = registry.table(self.prefix);
        let Some(watches) = table.get_mut(&self.key) else { return };
        watches.retain(|(id, _)| *id != self.id);
        if watches.is_empty() {
            table.remove(&self.key);
        }
        if self.prefix
            && let Some(count) = registry.prefix_lengths.get_mut(&self.key.len())
        {
            *count -= 1;
            if *count == 0 {
                registry.prefix_lengths.remove(&self.key.len());
            }
        }
        self.published.watching.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Published {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // The registry holds no invariant a panicking holder could break halfway.
        self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Watches `key`, or every key that starts with it with `prefix`.
    pub fn watch(self: &Arc<Self>, key: Bytes, prefix: bool) -> Watch {
        let notify = Arc::new(Notify::new());
        let mut registry = self.lock();
        let id = registry.next_id;
        registry.next_id += 1;
        registry.table(prefix).entry(key.clone()).or_default().push((id, Arc::clone(&notify)));
        if prefix {
            *registry.prefix_lengths.entry(key.len()).or_default() += 1;
        }
        self.watching.fetch_add(1, Ordering::Relaxed);
        Watch { published: Arc::clone(self), id, key, prefix, notify }
    }

    /// The change feed's history, which the state machine records into as it applies.
    pub fn feed(&self) -> &crate::feed::Feed {
        &self.feed
    }

    /// How many watches are registered.
    pub fn watches(&self) -> usize {
        self.watching.load(Ordering::Relaxed)
    }

    /// Wakes the watches of `key` and of every watched prefix of it.
    pub(crate) fn changed(&self, key: &[u8]) {
        if self.watching.load(Ordering::Relaxed) == 0 {
            return;
        }
        let registry = self.lock();
        let wake = |watches: Option<&Vec<(u64, Arc<Notify>)>>| {
            for (_, notify) in watches.into_iter().flatten() {
                notify.notify_one();
            }
        };
        wake(registry.keys.get(key));
        for &length in registry.prefix_lengths.keys() {
            if length > key.len() {
                break;
            }
            wake(registry.prefixes.get(&key[..length]));
        }
    }

    /// Wakes every watch: the whole state was replaced (a snapshot was restored).
    pub(crate) fn changed_all(&self) {
        let registry = self.lock();
        for watches in registry.keys.values().chain(registry.prefixes.values()) {
            for (_, notify) in watches {
                notify.notify_one();
            }
        }
    }

    /// The bytes of every key and value, as of the last apply.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::Relaxed)
    }

    /// The quota a write was last refused at, while no space has been freed since.
    pub fn quota_alarm(&self) -> Option<u64> {
        Some(self.alarm_quota.load(Ordering::Relaxed)).filter(|&quota| quota > 0)
    }

    /// The index of the last applied command.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    pub(crate) fn set_applied(&self, index: u64) {
        self.applied.store(index, Ordering::Relaxed);
    }

    /// This node's reading of the cluster clock, in milliseconds: its own monotonic clock,
    /// counted from the stamp of the last applied entry that moved the replicated clock. On a
    /// follower every such stamp sets it, forward or back; on the leader only a stamp ahead
    /// of it does.
    ///
    /// - A follower never runs ahead of the leader: every stamp is the leader's reading (the
    ///   leader stamps the writes followers forward, [`crate::KvStore`]'s forwarded hook), and
    ///   the entry reached the follower after it was stamped, so a stamp plus the time since
    ///   it was applied here is at most the leader's reading now. So a deadline is never seen
    ///   as passed early. Being set back matters after a full outage: each node's clock then
    ///   starts from the entries it replays, when it restarts, so one restarted before the
    ///   new leader reads ahead of it until it applies the leader's first stamp (a clock
    ///   entry within a second while a deadline exists). Before the first stamp of a new
    ///   cluster the clock reads 1 ms and does not run.
    /// - The leader does not lose time: applying its own stamp a few milliseconds after it
    ///   made it does not set it back by that delay (were it, the cluster clock would fall
    ///   behind real time by one commit latency per clock entry, and TTLs would grow with
    ///   uptime).
    pub fn now_ms(&self) -> u64 {
        let at = self.anchor_at.load(Ordering::Acquire);
        let anchor = self.anchor_ms.load(Ordering::Acquire);
        if at == 0 {
            // No stamp applied yet: the clock does not run. A stamp made now says 1 ms, and
            // the clock starts on every node when it applies the first stamp.
            return self.clock_ms.load(Ordering::Acquire).max(1);
        }
        anchor.saturating_add(local_ms().saturating_sub(at))
    }

    /// The cluster clock of the last applied entry that moved it, in milliseconds.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms.load(Ordering::Acquire)
    }

    /// The earliest deadline of a key or a lease on the cluster clock, if any has one.
    pub fn next_deadline(&self) -> Option<u64> {
        Some(self.next_deadline.load(Ordering::Relaxed)).filter(|&deadline| deadline != u64::MAX)
    }

    /// Whether this node leads: set by the leader's clock task ([`crate::clock`]), every
    /// few milliseconds. It decides whether a stamp behind this node's reading sets it back.
    pub(crate) fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Relaxed);
    }

    /// After an apply (on the apply thread, the only writer): the replicated clock, which
    /// sets this node's reading (see [`Published::now_ms`]), and the earliest deadline.
    pub(crate) fn set_clock(&self, clock_ms: u64, next_deadline: Option<u64>) {
        let previous = self.clock_ms.swap(clock_ms, Ordering::AcqRel);
        self.next_deadline.store(next_deadline.unwrap_or(u64::MAX), Ordering::Relaxed);
        // The same stamp as the last entry's (most entries applied within a millisecond
        // share one): it was compared with this node's reading then, and the reading only
        // moves forward since, so it cannot be ahead now. Saves a clock read per entry.
        if previous == clock_ms && self.anchor_at.load(Ordering::Relaxed) != 0 {
            return;
        }
        // The clock starts running at the first stamp (a replicated clock above 0), not at
        // the first apply: nodes apply the first entries of a new cluster at their own
        // start-up times, and a node started earlier would read the clock ahead of the
        // leader's and see deadlines pass early once it leads (the skew of start-up times,
        // not the election, would decide how much).
        let unset = self.anchor_at.load(Ordering::Relaxed) == 0;
        let follows = !self.leading.load(Ordering::Relaxed);
        if (unset && clock_ms > 0) || (!unset && (follows || clock_ms > self.now_ms())) {
            // The local time first: a reader between the two stores sees the new time with
            // the old anchor, a reading a little early, never one ahead.
            self.anchor_at.store(local_ms(), Ordering::Release);
            self.anchor_ms.store(clock_ms, Ordering::Release);
        }
    }

    pub(crate) fn set_keyspace(&self, used_bytes: u64, alarm: Option<u64>) {
        self.used_bytes.store(used_bytes, Ordering::Relaxed);
        self.alarm_quota.store(alarm.unwrap_or(0), Ordering::Relaxed);
    }
}

/// A test hook: holds the heavy reads (an HTTP listing of a prefix, a Redis `KEYS` of a
/// pattern) named by a test at their start, where they run (off the apply thread), until the
/// test lets them go; so a test can show that writes are applied while one is under way.
/// Costs one atomic load per heavy read when no test holds one.
#[doc(hidden)]
pub mod gate {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex, MutexGuard};
    use std::time::Duration;

    static HELD: AtomicUsize = AtomicUsize::new(0);
    static GATES: Mutex<Vec<(Vec<u8>, Arc<Gate>)>> = Mutex::new(Vec::new());

    #[derive(Default)]
    struct Gate {
        /// How many reads reached the gate; whether it is open.
        state: Mutex<(usize, bool)>,
        changed: Condvar,
    }

    impl Gate {
        fn lock(&self) -> MutexGuard<'_, (usize, bool)> {
            self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }

    /// Reads named `name` wait at the gate while this lives.
    pub struct Held {
        name: Vec<u8>,
        gate: Arc<Gate>,
    }

    /// Closes the gate for reads named `name` (a listing's prefix, a KEYS pattern).
    pub fn hold(name: &[u8]) -> Held {
        let gate = Arc::new(Gate::default());
        GATES.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push((name.to_vec(), Arc::clone(&gate)));
        HELD.fetch_add(1, Ordering::SeqCst);
        Held { name: name.to_vec(), gate }
    }

    impl Held {
        /// Waits until a read reached the gate (at most `limit`); whether one did.
        pub fn wait_entered(&self, limit: Duration) -> bool {
            let state = self.gate.lock();
            let (state, _) = self
                .gate
                .changed
                .wait_timeout_while(state, limit, |(entered, _)| *entered == 0)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state.0 > 0
        }

        /// How many reads are waiting at the gate now.
        pub fn waiting(&self) -> usize {
            self.gate.lock().0
        }
    }

    impl Drop for Held {
        fn drop(&mut self) {
            let mut gates = GATES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            gates.retain(|(name, gate)| !(name == &self.name && Arc::ptr_eq(gate, &self.gate)));
            HELD.fetch_sub(1, Ordering::SeqCst);
            self.gate.lock().1 = true;
            self.gate.changed.notify_all();
        }
    }

    /// Where a heavy read named `name` starts: waits while a test holds its gate.
    pub(crate) fn pass(name: &[u8]) {
        if HELD.load(Ordering::SeqCst) == 0 {
            return;
        }
        let gate = {
            let gates = GATES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            gates.iter().find(|(held, _)| held == name).map(|(_, gate)| Arc::clone(gate))
        };
        let Some(gate) = gate else { return };
        let mut state = gate.lock();
        state.0 += 1;
        gate.changed.notify_all();
        let mut state =
            gate.changed.wait_while(state, |(_, open)| !*open).unwrap_or_else(|poisoned| poisoned.into_inner());
        state.0 -= 1;
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    #[test]
    fn a_leaders_clock_reading_goes_forward_with_stamps_ahead_of_it_and_never_back() {
        let published = Published::default();
        published.set_leading(true);
        published.set_clock(1_000, None);
        std::thread::sleep(std::time::Duration::from_millis(40));
        let before = published.now_ms();
        assert!(before >= 1_040, "the local clock counts from the stamp: {before}");
        // A stamp behind the reading (this node's own, applied a few ms after it was made)
        // does not set it back.
        published.set_clock(1_010, None);
        assert!(published.now_ms() >= before, "{} < {before}", published.now_ms());
        assert_eq!(published.clock_ms(), 1_010, "the replicated clock is the stamp");
        // A stamp ahead of it (a leader whose clock is ahead) sets it forward.
        published.set_clock(50_000, Some(60_000));
        let after = published.now_ms();
        assert!((50_000..50_040).contains(&after), "{after}");
        assert_eq!(published.next_deadline(), Some(60_000));
    }

    #[test]
    fn a_followers_clock_reading_is_set_by_each_stamp_even_back() {
        let published = Published::default();
        // Restarted before the new leader after a full outage: the entries it replayed
        // started its clock 40 ms before the leader's.
        published.set_clock(1_000, None);
        std::thread::sleep(std::time::Duration::from_millis(40));
        assert!(published.now_ms() >= 1_040);
        // The leader's first stamp, made from a clock that started 40 ms later.
        published.set_clock(1_005, None);
        let reading = published.now_ms();
        assert!((1_005..1_035).contains(&reading), "set back to the leader's stamp: {reading}");
        // Once it leads, its own stamps, applied after it made them, do not set it back.
        published.set_leading(true);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let before = published.now_ms();
        published.set_clock(1_006, None);
        assert!(published.now_ms() >= before, "{} < {before}", published.now_ms());
    }

    #[test]
    fn the_clock_starts_at_the_first_stamp_not_when_a_node_starts() {
        let published = Published::default();
        // A new cluster's first entries (membership, no stamp) leave the clock at 0.
        published.set_clock(0, None);
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_eq!(published.now_ms(), 1, "no stamp applied: the clock does not run yet");
        // The first stamp starts it, on every node at the time it applies the stamp, so a
        // node that started first does not read ahead of the leader.
        published.set_clock(1, None);
        std::thread::sleep(std::time::Duration::from_millis(30));
        let reading = published.now_ms();
        assert!((31..200).contains(&reading), "the clock runs from the first stamp: {reading}");
    }

    /// Whether the watch's `changed()` is ready now (it consumes the wake-up if so).
    fn woken(watch: &Watch) -> bool {
        let mut changed = pin!(watch.changed());
        matches!(changed.as_mut().poll(&mut Context::from_waker(Waker::noop())), Poll::Ready(()))
    }

    #[test]
    fn only_the_watches_of_the_changed_key_and_its_prefixes_wake() {
        let published = Arc::new(Published::default());
        let exact = published.watch(Bytes::from_static(b"a/b"), false);
        let prefix = published.watch(Bytes::from_static(b"a/"), true);
        let everything = published.watch(Bytes::new(), true);
        let other = published.watch(Bytes::from_static(b"b"), false);
        let longer = published.watch(Bytes::from_static(b"a/bc"), true);
        assert_eq!(published.watches(), 5);
        published.changed(b"a/b");
        assert!(woken(&exact) && woken(&prefix) && woken(&everything));
        assert!(!woken(&other) && !woken(&longer));
        // The wake-up was consumed; a change before the next wait is kept.
        assert!(!woken(&exact));
        published.changed(b"a/b");
        assert!(woken(&exact));
        drop((prefix, longer));
        assert_eq!(published.watches(), 3);
        published.changed(b"a/bcd");
        assert!(woken(&everything) && !woken(&exact));
        published.changed_all();
        assert!(woken(&exact) && woken(&other));
    }
}
