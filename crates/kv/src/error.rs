//! Errors of starting and stopping a [`crate::Server`].

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen for HTTP on {address} ({id}'s http address): {source}")]
    Listen { id: skiff::NodeId, address: String, source: std::io::Error },
    #[error(transparent)]
    Node(#[from] skiff::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
