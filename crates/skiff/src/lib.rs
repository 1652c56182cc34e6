//! # skiff: embeddable Raft
//!
//! (crate docs: see the end of this work)
#![forbid(unsafe_code)]

pub mod config;
mod driver;
mod error;
mod node;
mod snapshot_stream;
pub mod state_machine;
pub mod store;
pub mod transport;
pub mod wire;

pub use error::{Error, Result};
pub use node::{LeaderInfo, Node, NodeOptions, NodeStatus, PeerView};
pub use skiff_raft::{Index, Membership, MembershipChange, NodeId};
pub use state_machine::StateMachine;
pub use store::{LogStore, MemStore};
