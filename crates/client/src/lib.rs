//! A blocking Rust client of Skiff's HTTP API (docs/http-api.md), for applications and for
//! the `skiff` command line.
//!
//! ```no_run
//! use skiff_client::{Client, Consistency, Error};
//!
//! let client = Client::new(["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"])?;
//! client.put("greeting", "hello")?;
//! let entry = client.get("greeting", Consistency::Consistent)?;
//! assert_eq!(entry.value, b"hello");
//! match client.get("missing", Consistency::Consistent) {
//!     Err(Error::NotFound { .. }) => {}
//!     other => panic!("unexpected: {other:?}"),
//! }
//! # Ok::<(), Error>(())
//! ```
//!
//! - [`Client`]: the calls (keys, the cluster's status, log and members), each with one
//!   deadline; endpoints tried in turn, a leader's redirect followed, writes retried with
//!   one `Idempotency-Key` so they are applied once (see its documentation for the rules).
//! - [`Error`]: what went wrong, told apart by what the caller can do (retry later, the
//!   key is missing, the write may or may not have happened, ...).
//! - The answers' types: [`Entry`], [`Status`], [`Members`], [`LogPage`]; a transaction's
//!   operations and outcome: [`TxnOp`], [`TxnOutcome`].
//! - [`Watch`]: the change feed under a prefix ([`Client::feed`]), an iterator of
//!   [`FeedEvent`]s that resumes by itself.
//!
//! This crate is separate from `skiff-kv` so that an application that only talks to a
//! cluster does not build the server: it depends on `ureq`, `serde_json`, `base64` and
//! `thiserror` only. docs/client.md has a longer walk through.

#![warn(missing_docs)]

mod api;
mod client;
mod error;
mod feed;
mod transport;

pub use api::{
    Behavior, ClusterInfo, Entry, Keyspace, Lease, LogEntry, LogId, LogPage, Member, Members, NewMember, Peer, Probe,
    Session, SessionId, SessionRequest, Status, TxnOp, TxnOutcome, Watched,
};
pub use client::{Client, ClientBuilder, Consistency, DEFAULT_TIMEOUT, DeleteOptions, WriteOptions};
pub use error::{Error, Result};
pub use feed::{DEFAULT_MAX_LINE_BYTES, FeedEvent, KeyChange, Watch, WatchOptions};
pub use transport::{encode_key, normalize_endpoint, normalize_endpoint_as};

/// The Rust examples of docs/client.md, compiled (and those that need no cluster run) as
/// doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/client.md")]
struct ClientDocTests;
