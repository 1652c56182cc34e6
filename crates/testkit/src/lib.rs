//! The test harness of Skiff's layers above the consensus core, one module per concern, so
//! every integration test of `skiff`, `skiff-kv` and `skiff-cli` starts clusters, waits and
//! picks ports the same way:
//!
//! - [`wait`]: `eventually`, for blocking and for async code, with a deadline and a message
//!   naming what was awaited.
//! - [`ports`]: loopback ports that never collide, within a process or with a `skiff demo`
//!   or a bench left running; [`cluster_file`] writes cluster files with them.
//! - [`node`]: clusters of `skiff::Node`s in one process, over the in-process transport
//!   and over TCP, and `Journal`, the small state machine the runtime's tests replicate.
//! - [`kv`] (feature `kv`): clusters of `skiff_kv::Server`s in one tokio runtime, driven
//!   from blocking test code, and a blocking HTTP client.
//! - [`process`]: the `skiff` binary as child processes, killed when dropped.
//! - [`resp`]: a blocking RESP2 client over raw TCP, for the Redis listener's tests.
//! - [`real_clients`]: whether the real clients a test drives (redis-cli, redis-py,
//!   py-consul, a browser) are here, and skipping the test, or failing it in CI, when not.
//! - [`tmpfs`]: a small mounted tmpfs, for the tests of a full disk (needs root).
//!
//! The consensus core has its own harness (golden scripts and the simulator) in
//! `skiff-raft` and `skiff-sim`.

pub mod cluster_file;
#[cfg(feature = "kv")]
pub mod kv;
pub mod node;
pub mod ports;
pub mod process;
pub mod real_clients;
pub mod resp;
pub mod tmpfs;
pub mod tokens;
pub mod wait;

/// Sends `tracing` output to the test's captured output; the first call wins.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
}
