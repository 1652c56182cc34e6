//! One task per connection drives the clients that share it ([`Group`]), each one request
//! at a time, back to back. The tasks run on a few threads ([`super::drivers`]),
//! not a thread each: a connection waiting for its answer costs no thread, and an answer
//! wakes its task without an OS context switch, so the generator's cost per request is
//! little more than the protocol's system calls.
//!
//! - **HTTP/1.1** carries one request at a time: the clients take turns, first come first
//!   served. A client's request is issued when its previous answer arrives; it then waits
//!   for the requests queued before it, and that wait is part of its latency. So a group
//!   of `m` clients behaves as `m` threads sharing one connection through a fair lock.
//! - **Redis** pipelines: every client's request is in flight at once. The replies come
//!   back in order; each one's client issues its next request, queued at once, and the
//!   queued commands are written together before the task waits for more replies.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::client::{Group, Issued, Job};
use super::connection::{Connection, Outcome, io_error_kind};
use super::http::HttpConnection;
use super::resp::RespConnection;

/// How long a connection's task pauses after the connection failed, so that a dead node
/// costs a few errors a second rather than a spin.
const FAILURE_PAUSE: Duration = Duration::from_millis(50);

/// Runs `job` for every client of `group` on `connection`, until all are done.
pub async fn drive(connection: &mut Connection, group: &mut Group, job: Job<'_>) {
    match connection {
        Connection::Http(connection) => drive_http(connection, group, job).await,
        Connection::Resp(connection) => drive_resp(connection, group, job).await,
    }
    group.finished = Some(Instant::now());
}

/// The clients take turns: `turns` holds each one's issued request, oldest first.
async fn drive_http(connection: &mut HttpConnection, group: &mut Group, job: Job<'_>) {
    let now = Instant::now();
    let mut turns: VecDeque<Issued> = (0..group.len()).filter_map(|client| group.issue(job, client, now)).collect();
    while let Some(issued) = turns.pop_front() {
        let outcome = connection.request(&group.request(&issued)).await;
        let failed = outcome.is_connection_failure();
        if let Some(next) = group.complete(job, issued, outcome, Instant::now()) {
            turns.push_back(next);
        }
        if failed {
            tokio::time::sleep(FAILURE_PAUSE).await;
        }
    }
}

/// Every client's request is in flight: `in_flight` in the order they were queued, which
/// is the order of the replies.
async fn drive_resp(connection: &mut RespConnection, group: &mut Group, job: Job<'_>) {
    let now = Instant::now();
    let mut in_flight: VecDeque<Issued> = VecDeque::with_capacity(group.len());
    for client in 0..group.len() {
        if let Some(issued) = group.issue(job, client, now) {
            connection.queue(&group.request(&issued));
            in_flight.push_back(issued);
        }
    }
    while !in_flight.is_empty() {
        // Write what is queued only once the replies already read are handled: one write
        // for the whole batch.
        let reply = match connection.buffered_reply() {
            Ok(Some(outcome)) => Ok(outcome),
            Ok(None) => match connection.flush().await {
                Ok(()) => connection.read().await,
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        match reply {
            Ok(outcome) => {
                let issued = in_flight.pop_front().expect("a reply is for a request in flight");
                if let Some(next) = group.complete(job, issued, outcome, Instant::now()) {
                    connection.queue(&group.request(&next));
                    in_flight.push_back(next);
                }
            }
            Err(error) => {
                // The connection is closed: every request in flight on it failed. The
                // next flush reconnects.
                let kind = io_error_kind(&error);
                let now = Instant::now();
                for _ in 0..in_flight.len() {
                    let issued = in_flight.pop_front().expect("counted");
                    if let Some(next) = group.complete(job, issued, Outcome::Error(kind.clone()), now) {
                        connection.queue(&group.request(&next));
                        in_flight.push_back(next);
                    }
                }
                if kind != "timeout" {
                    tokio::time::sleep(FAILURE_PAUSE).await;
                }
            }
        }
    }
}
