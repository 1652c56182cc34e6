//! `skiff lock NAME -- COMMAND...`: run a command while holding a lock, like `consul lock`.
//!
//! The steps: create a session with a TTL; acquire the key NAME for it, waiting on a
//! blocking read of the key while another session holds it; run the command with the
//! fencing token in `SKIFF_FENCE`; renew the session every TTL/3 and watch the key; when the
//! command exits, release the key, destroy the session and exit with the command's status.
//!
//! The lock is lost when a renewal says the session is gone, when a read shows the key held
//! by another session (or deleted), or when no renewal succeeded for a whole TTL (the cluster
//! may have ended the session meanwhile). Then the command is stopped (SIGTERM to its process
//! group, SIGKILL after a grace period) and `skiff lock` exits with [`EXIT_LOCK_LOST`].
//!
//! The command runs in a process group of its own, so that stopping it stops what it
//! started too, and so that a Ctrl-C reaches it once: SIGINT, SIGTERM and SIGHUP sent to
//! `skiff lock` are passed on to the group, and the lock is released when the command exits.

use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::{Child, ExitCode, ExitStatus};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use skiff_client::{Client, Error, SessionId, SessionRequest};
use tokio::signal::unix::SignalKind;

/// Exit code when the lock was lost while the command ran (or could not be had in time).
pub const EXIT_LOCK_LOST: u8 = 1;
/// How often the command's state and the signals are looked at.
const POLL: Duration = Duration::from_millis(50);
/// The longest one blocking read of the key waits.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// What `skiff lock` was asked to do.
pub struct LockOptions {
    /// The key to lock.
    pub name: String,
    /// The command and its arguments.
    pub command: Vec<String>,
    /// The session's TTL.
    pub ttl: Duration,
    /// The session's lock delay.
    pub lock_delay: Duration,
    /// How long to wait for the lock; `None`: as long as it takes.
    pub wait: Option<Duration>,
    /// How long the command has to exit after SIGTERM before SIGKILL.
    pub grace: Duration,
    /// The value written to the key while held.
    pub value: Vec<u8>,
}

/// Why the lock was lost, from the watcher thread.
type Lost = String;

/// Runs `skiff lock`; the exit code is the command's (128 + the signal's number if a signal
/// ended it), or [`EXIT_LOCK_LOST`].
pub fn run(client: Client, options: LockOptions) -> Result<ExitCode> {
    if options.command.is_empty() {
        bail!("no command given: skiff lock NAME -- COMMAND [ARGS...]");
    }
    let signals = crate::interrupts::listen(&[SignalKind::interrupt(), SignalKind::terminate(), SignalKind::hangup()])
        .context("cannot listen for Ctrl-C")?;
    let request = SessionRequest {
        name: Some(format!("skiff lock {}", options.name)),
        ttl: Some(options.ttl),
        lock_delay: Some(options.lock_delay),
        ..SessionRequest::default()
    };
    let session = client.session_create(&request).context("cannot create a session")?;
    let outcome = hold(&client, &options, &session, &signals);
    // Whatever happened, the session goes: that releases the lock if the release did not.
    if let Err(error) = client.session_destroy(&session) {
        eprintln!("skiff lock: warning: cannot destroy session {session}: {error} (it ends after its TTL)");
    }
    outcome
}

/// Waits for the lock, runs the command under it, and releases it.
fn hold(client: &Client, options: &LockOptions, session: &SessionId, signals: &Receiver<i32>) -> Result<ExitCode> {
    let Some(fence) = wait_for_lock(client, options, session, signals)? else {
        return Ok(ExitCode::from(EXIT_LOCK_LOST));
    };
    let mut child = std::process::Command::new(&options.command[0])
        .args(&options.command[1..])
        .env("SKIFF_FENCE", fence.to_string())
        .env("SKIFF_LOCK_KEY", &options.name)
        .env("SKIFF_SESSION", session.as_str())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot run {:?}", options.command[0]))?;
    let (lost_sender, lost) = std::sync::mpsc::channel::<Lost>();
    let done = std::sync::atomic::AtomicBool::new(false);
    let status = std::thread::scope(|scope| {
        scope.spawn(|| {
            if let Some(reason) = watch(client, options, session, &done) {
                let _ = lost_sender.send(reason);
            }
        });
        let status = supervise(&mut child, options.grace, signals, &lost);
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        status
    })?;
    match status {
        Ended::Exited(status) => {
            match client.release(&options.name, &options.value, session) {
                Ok(true) => {}
                Ok(false) => eprintln!("skiff lock: the lock on {} was no longer held at release", options.name),
                Err(error) => eprintln!("skiff lock: warning: cannot release {}: {error}", options.name),
            }
            Ok(ExitCode::from(exit_code(status)))
        }
        Ended::Lost(reason) => {
            eprintln!("skiff lock: lost the lock on {}: {reason}; the command was stopped", options.name);
            Ok(ExitCode::from(EXIT_LOCK_LOST))
        }
    }
}

/// Acquires the lock: `Some(fencing token)`, or `None` after the wait ran out or a signal
/// came (the message is printed).
fn wait_for_lock(
    client: &Client,
    options: &LockOptions,
    session: &SessionId,
    signals: &Receiver<i32>,
) -> Result<Option<u64>> {
    let start = Instant::now();
    let deadline = options.wait.map(|wait| start + wait);
    let mut renewed = Instant::now();
    let mut index = 0;
    loop {
        if let Some(fence) = client.acquire(&options.name, &options.value, session)? {
            return Ok(Some(fence));
        }
        // Held by another session: wait for the key to change, renewing ours meanwhile.
        loop {
            if signals.try_recv().is_ok() {
                eprintln!("skiff lock: interrupted while waiting for the lock on {}", options.name);
                return Ok(None);
            }
            let now = Instant::now();
            if deadline.is_some_and(|deadline| now >= deadline) {
                let holder = client
                    .get(&options.name, skiff_client::Consistency::Consistent)
                    .ok()
                    .and_then(|entry| entry.session)
                    .map(|holder| format!(" (held by session {holder})"))
                    .unwrap_or_default();
                eprintln!(
                    "skiff lock: gave up waiting for the lock on {} after {:?}{holder}",
                    options.name,
                    start.elapsed()
                );
                return Ok(None);
            }
            if now.duration_since(renewed) >= options.ttl / 3 {
                client.session_renew(session).context("cannot renew the session while waiting")?;
                renewed = Instant::now();
            }
            let mut wait = (options.ttl / 3).min(MAX_WAIT).min(Duration::from_secs(1));
            if let Some(deadline) = deadline {
                wait = wait.min(deadline.saturating_duration_since(now)).max(Duration::from_millis(1));
            }
            let watched = client.watch(&options.name, index, wait)?;
            index = watched.index;
            if watched.entry.as_ref().is_none_or(|entry| entry.session.is_none()) {
                break; // free (or in its lock delay, which the next acquire tells)
            }
        }
    }
}

/// Renews the session every TTL/3 and watches the key until `done`: the reason when the
/// lock is lost.
fn watch(
    client: &Client,
    options: &LockOptions,
    session: &SessionId,
    done: &std::sync::atomic::AtomicBool,
) -> Option<Lost> {
    let interval = options.ttl / 3;
    let mut renewed = Instant::now();
    let mut next_renewal = renewed + interval;
    let mut index = 0;
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        let now = Instant::now();
        if now >= next_renewal {
            match client.session_renew(session) {
                Ok(_) => {
                    renewed = Instant::now();
                    next_renewal = renewed + interval;
                }
                Err(Error::NoSuchSession { message, .. }) => return Some(format!("the session ended ({message})")),
                Err(error) => {
                    eprintln!("skiff lock: warning: cannot renew the session: {error}");
                    next_renewal = Instant::now() + interval.min(Duration::from_secs(1));
                }
            }
            if renewed.elapsed() >= options.ttl {
                return Some(format!("no renewal succeeded for {:?}, the session's TTL", options.ttl));
            }
            continue;
        }
        // Short blocking reads, so that `done` is seen soon after the command exits.
        let wait = next_renewal.saturating_duration_since(now).min(Duration::from_millis(500)).max(POLL);
        match client.watch(&options.name, index, wait) {
            Ok(watched) => {
                index = watched.index;
                match watched.entry {
                    None => return Some(format!("the key {} was deleted", options.name)),
                    Some(entry) if entry.session.as_deref() != Some(session.as_str()) => {
                        let holder = entry.session.map_or("no session".to_string(), |id| format!("session {id}"));
                        return Some(format!("the key {} is held by {holder}", options.name));
                    }
                    Some(_) => {}
                }
            }
            // Renewals decide whether the session lives; a failed read says nothing.
            Err(_) => std::thread::sleep(POLL),
        }
    }
    None
}

/// How the command's run ended.
enum Ended {
    /// It exited by itself (or after a signal passed on).
    Exited(ExitStatus),
    /// The lock was lost and the command stopped.
    Lost(Lost),
}

/// Waits for the child, passing signals on to its group, and stops it if the lock is lost.
fn supervise(child: &mut Child, grace: Duration, signals: &Receiver<i32>, lost: &Receiver<Lost>) -> Result<Ended> {
    let group = Pid::from_raw(-i32::try_from(child.id()).context("a process id out of range")?);
    loop {
        if let Some(status) = child.try_wait().context("cannot wait for the command")? {
            return Ok(Ended::Exited(status));
        }
        while let Ok(number) = signals.try_recv() {
            if let Ok(signal) = Signal::try_from(number) {
                let _ = nix::sys::signal::kill(group, signal);
            }
        }
        match lost.recv_timeout(POLL) {
            Ok(reason) => {
                stop(child, group, grace)?;
                return Ok(Ended::Lost(reason));
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
    }
}

/// SIGTERM to the command's group, then SIGKILL if it has not exited after `grace`.
fn stop(child: &mut Child, group: Pid, grace: Duration) -> Result<()> {
    let _ = nix::sys::signal::kill(group, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait().context("cannot wait for the command")?.is_some() {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
    let _ = nix::sys::signal::kill(group, Signal::SIGKILL);
    child.wait().context("cannot wait for the command")?;
    Ok(())
}

/// The exit code that passes the command's status on: its code, or 128 + the number of the
/// signal that ended it (as shells report it).
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(u8::MAX),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(u8::MAX),
        (None, None) => u8::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_pass_the_commands_status_on() {
        let run = |script: &str| std::process::Command::new("sh").arg("-c").arg(script).status().unwrap();
        assert_eq!(exit_code(run("exit 0")), 0);
        assert_eq!(exit_code(run("exit 7")), 7);
        assert_eq!(exit_code(run("kill -TERM $$")), 128 + 15);
    }
}
