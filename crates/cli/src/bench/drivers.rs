//! The threads that drive the connections: a tokio runtime of at most two worker threads,
//! whatever the number of connections.
//!
//! Each connection is one task ([`worker`]): an answer wakes its task without an OS
//! context switch, and one `epoll_wait` hands over the answers of many connections. Two
//! threads rather than one: on a machine the generator shares with the servers, one thread
//! that is preempted, or busy writing a batch of requests, holds back every connection;
//! measured (docs/bench.md), a single-threaded runtime spent 5 to 15% less CPU per
//! request, but the runs it drove had about 15% less throughput and a higher p99.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::runtime::Runtime;

use super::client::{Group, Job, JobKind, Shared};
use super::connection::{self, Connection};
use super::options::Settings;
use super::worker;

/// The most threads that drive connections.
const MAX_THREADS: usize = 2;

/// A job, owned, so that the tasks that run it can hold it.
pub struct Work {
    pub kind: JobKind,
    pub settings: Arc<Settings>,
    pub shared: Arc<Shared>,
}

/// The runtime that runs the connections' tasks.
pub struct Drivers {
    runtime: Runtime,
}

impl Drivers {
    /// A thread per core, up to [`MAX_THREADS`].
    pub fn new() -> Result<Drivers> {
        let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores.min(MAX_THREADS))
            .thread_name("bench-driver")
            .enable_all()
            .build()
            .context("cannot start the threads that drive the connections")?;
        Ok(Drivers { runtime })
    }

    /// Opens the run's connections, one after the other.
    pub fn open(&self, settings: &Settings) -> Result<Vec<Connection>> {
        self.runtime.block_on(async {
            let mut connections = Vec::with_capacity(settings.connections);
            for index in 0..settings.connections {
                connections.push(connection::open(settings, index).await?);
            }
            Ok(connections)
        })
    }

    /// Runs `work` as one task per connection, for the connection's group of clients, and
    /// `tick` on this thread until they all return: every `tick_at_most`, or sooner when
    /// `tick` says its next phase change comes sooner, so that the phases change on time.
    pub fn run<T>(
        &self,
        connections: &mut Vec<Connection>,
        groups: &mut Vec<Group>,
        work: &Work,
        tick_at_most: Duration,
        mut tick: T,
    ) -> Result<()>
    where
        T: FnMut() -> Duration,
    {
        self.runtime.block_on(async {
            // Each task owns its connection and group while it runs, and hands them back.
            let tasks: Vec<_> = connections
                .drain(..)
                .zip(groups.drain(..))
                .map(|(mut connection, mut group)| {
                    let (kind, settings, shared) = (work.kind, Arc::clone(&work.settings), Arc::clone(&work.shared));
                    tokio::spawn(async move {
                        let job = Job { kind, settings: &settings, shared: &shared };
                        worker::drive(&mut connection, &mut group, job).await;
                        (connection, group)
                    })
                })
                .collect();
            let mut next = tick();
            while !tasks.iter().all(|task| task.is_finished()) {
                tokio::time::sleep(next.clamp(Duration::from_millis(1), tick_at_most)).await;
                next = tick();
            }
            for (index, task) in tasks.into_iter().enumerate() {
                let (connection, group) =
                    task.await.with_context(|| format!("the task of connection {index} failed"))?;
                connections.push(connection);
                groups.push(group);
            }
            Ok(())
        })
    }
}
