//! Loopback ports for test clusters that never collide.
//!
//! The servers under test bind the addresses of a cluster file, and the cluster file
//! refuses port 0, so a test needs ports known to be free before it starts anything. This
//! allocator hands them out:
//!
//! - within a process, never the same port twice (a counter moves through the range), so
//!   tests running in parallel threads cannot take each other's ports, even after a test
//!   stopped a node and will restart it on the same port;
//! - each port is checked by binding it first, so a port some other process holds (a
//!   `skiff demo` on 6001-8003, a bench, another test binary) is skipped.
//!
//! The range lies below Linux's ephemeral range (32768-60999), not in it: the OS takes
//! ports from the ephemeral range for every outgoing connection, so a port found free by
//! binding port 0 could be taken by some client's socket before the server binds it. Below
//! it only explicit binds take ports. Each process starts at its own offset in the range,
//! so two test processes run at once rarely probe the same ports.

use std::net::TcpListener;
use std::sync::Mutex;

/// The range ports are taken from: above the well-known ports Skiff's demo and benches use
/// by default, below the ephemeral range.
const FIRST: u16 = 20_000;
const END: u16 = 32_000;

/// Where the allocator is: it walks from a per-process start to the end of the range, then
/// from the range's first port up to that start, and then has nothing left to give.
struct Cursor {
    start: u16,
    next: u16,
    /// The end (exclusive) of the current pass.
    limit: u16,
    wrapped: bool,
}

static CURSOR: Mutex<Option<Cursor>> = Mutex::new(None);

/// A free port on 127.0.0.1, never handed out before in this process.
pub fn free_port() -> u16 {
    block(1)
}

/// `127.0.0.1:<a free port>`.
pub fn free_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// The first of `length` consecutive free ports on 127.0.0.1 (for a program that takes a
/// base port and adds offsets to it, like `skiff check --base-port`).
pub fn block(length: u16) -> u16 {
    assert!(length > 0 && length < (END - FIRST) / 4, "a block of {length} ports");
    let mut cursor = CURSOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let cursor = cursor.get_or_insert_with(|| {
        let start = FIRST + (std::process::id() % u32::from(END - FIRST)) as u16;
        Cursor { start, next: start, limit: END, wrapped: false }
    });
    loop {
        if cursor.next + length > cursor.limit {
            assert!(!cursor.wrapped, "no {length} more consecutive free ports in 127.0.0.1:{FIRST}-{END}");
            (cursor.limit, cursor.next, cursor.wrapped) = (cursor.start, FIRST, true);
            continue;
        }
        let base = cursor.next;
        match (base..base + length).find(|&port| !is_free(port)) {
            None => {
                cursor.next = base + length;
                return base;
            }
            Some(taken) => cursor.next = taken + 1,
        }
    }
}

/// Whether 127.0.0.1:`port` can be bound now.
fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_and_never_handed_out_twice() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let port = free_port();
            assert!(seen.insert(port), "{port} handed out twice");
        }
        let base = block(5);
        assert!((base..base + 5).all(|port| !seen.contains(&port)));
    }

    #[test]
    fn a_bound_port_is_skipped() {
        let held = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let held_port = held.local_addr().expect("an address").port();
        for _ in 0..20 {
            assert_ne!(free_port(), held_port);
        }
    }
}
