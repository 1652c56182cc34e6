//! Shared by the CLI tests: the testkit's process harness, bound to this crate's `skiff`
//! binary (only this crate's tests know its path).

#![allow(dead_code, unused_imports)] // each test file uses a part

use std::process::Command;

pub use skiff_testkit::process::{DemoCluster as Cluster, KillOnDrop, signal, stderr, stdout, write_file};

pub const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");

/// `skiff` with no SKIFF_* variables from the environment.
pub fn skiff() -> Command {
    skiff_testkit::process::skiff(SKIFF)
}

/// A local cluster of `nodes` nodes (`skiff demo --config`) on free ports, with an agreed
/// leader.
pub fn cluster(nodes: u64) -> Cluster {
    Cluster::start(SKIFF, nodes)
}
