//! Skiff's key-value service: a replicated, ordered key-value map on the Skiff runtime,
//! served over a Consul-compatible HTTP API and the Redis protocol.
//!
//! - [`state`]: the state machine. Keys map to a value, the Raft indexes of the writes that
//!   created and last changed it, and flags. Writes may carry a request id: a retried write
//!   returns the first result without applying again (exactly-once, thesis §6.3).
//! - [`http`]: the API (`docs/http-api.md`): Consul's `/v1/kv`, `/v1/status` and
//!   `/v1/operator/raft` routes, Skiff's `/v1/skiff/*`, and `/metrics`.
//! - [`redis`]: RESP2 and RESP3 (`docs/redis.md`) over the same keyspace; pipelined
//!   writes share a log entry.
//! - [`auth`]: tokens, and what each may read and write.
//! - [`Server`]: one node: the Raft node and its HTTP listener, started from the cluster file.

pub mod auth;
pub mod clock;
mod error;
pub mod feed;
mod heavy;
pub mod http;
mod keymap;
mod metrics;
pub mod redis;
mod server;
pub mod state;
mod watch;

pub use error::{Error, Result, http_status, redis_error};
pub use http::{DemoControl, DemoNode};
pub use server::{DemoHandle, Limits, Server, ServerOptions};
pub use state::{Command, Entry, KvStore, Op, Output, Published, Retention, Value, View};
#[doc(hidden)]
pub use watch::gate as test_gate;

// The Rust blocks of the docs pages that use `skiff_kv` run as doctests of this crate, so
// what they show compiles (`cargo test -p skiff-kv --doc`).
#[cfg(doctest)]
#[doc = include_str!("../../../docs/embedding.md")]
pub struct EmbeddingDoctests;
