//! `skiff demo` with its default settings: the ports of `ClusterConfig::demo()` (raft
//! 7001-7003, http 8001-8003, redis 6001-6003), the default endpoints of the client
//! commands, and a clean stop on SIGINT.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{skiff, stdout};

#[test]
fn demo_serves_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let errors = dir.path().join("stderr");
    let mut child = skiff()
        .arg("demo")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&errors).unwrap())
        .spawn()
        .expect("start skiff demo");
    let guard = KillOnDrop(child.id());
    // Read the banner as it comes, on a thread, so the pipe never fills.
    let lines = BufReader::new(child.stdout.take().expect("stdout"));
    let (sender, receiver) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let mut banner = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !banner.iter().any(|line: &String| line.starts_with("running")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok(line) => banner.push(line),
            Err(_) => panic!(
                "no 'running' line in time (are ports 7001-7003, 8001-8003 free?); banner so far:\n{}\nstderr:\n{}",
                banner.join("\n"),
                std::fs::read_to_string(&errors).unwrap_or_default()
            ),
        }
    }
    let banner = banner.join("\n");
    for text in ["127.0.0.1:8001", "127.0.0.1:7003", "leader: n", "curl", "skiff get greeting", "┆ leader "] {
        assert!(banner.contains(text), "{text:?} not in the banner:\n{banner}");
    }

    // The client's default endpoints are the demo's.
    let put = skiff().args(["put", "greeting", "hello"]).output().unwrap();
    assert!(put.status.success(), "{put:?}");
    let get = skiff().args(["get", "greeting"]).output().unwrap();
    assert_eq!(stdout(&get), "hello\n", "{get:?}");

    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let status = child.wait().expect("wait for demo");
    std::mem::forget(guard);
    let _ = reader.join();
    let rest: Vec<String> = receiver.try_iter().collect();
    assert_eq!(status.code(), Some(0), "after SIGINT: {rest:?}");
    assert_eq!(rest.last().map(String::as_str), Some("stopped"), "{rest:?}");
}

/// Kills the demo if the test panics before it is stopped.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid, which the test has not reaped yet.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGKILL) };
    }
}
