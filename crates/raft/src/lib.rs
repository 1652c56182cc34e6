//! # skiff-raft: the consensus core
//!
//! TODO essay
#![forbid(unsafe_code)]

mod config;
mod election;
mod follower;
mod leader;
mod log;
mod membership;
mod message;
pub mod progress;
mod quorum;
mod raft;
mod ready;
mod storage;
mod types;

pub use config::Config;
pub use message::{AppendResult, Envelope, Message};
pub use raft::Raft;
pub use ready::{Error, PeerStatus, Proposal, ReadError, ReadState, Ready, RoleName, Status};
pub use storage::{MemStorage, Storage, StorageError};
pub use types::{
    Entry, HardState, Index, LogId, Membership, MembershipChange, NodeId, Payload, ReadId, SnapshotMeta, Term,
};
