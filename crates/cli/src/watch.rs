//! `skiff watch PREFIX [--from N] [--prev] [--json]`: prints the changes under a prefix as
//! they happen (the change feed, through [`skiff_client::Watch`], which resumes by itself
//! after a leader change or a node's restart), until Ctrl-C. Also the printing of the
//! shell's `watch`.

use std::io::Write;
use std::process::ExitCode;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine as _;
use skiff_client::{Client, FeedEvent, KeyChange, Watch, WatchOptions};
use tokio::signal::unix::SignalKind;

/// How often the main thread looks at the signals while the events are printed.
const POLL: Duration = Duration::from_millis(50);

/// How the events are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// One line per event for people: `42 put app/a = "1"`.
    Human,
    /// One JSON object per line, as the server sends it (values base64).
    Json,
}

/// Opens the feed of `prefix`: a refused request (an overlong prefix, a token that may not
/// read it) is an error here.
pub fn open(client: &Client, prefix: &str, from: Option<u64>, prev: bool) -> Result<Watch> {
    let options = WatchOptions { from, prev, ..WatchOptions::default() };
    client.feed(prefix, options).with_context(|| format!("cannot watch {prefix:?}"))
}

/// Runs `skiff watch`: prints events until Ctrl-C (or SIGTERM), then exits 0; exits 1 if
/// the feed fails in a way a new stream would not mend.
pub fn run(client: &Client, prefix: &str, from: Option<u64>, prev: bool, style: Style) -> Result<ExitCode> {
    let signals = crate::interrupts::listen(&[SignalKind::interrupt(), SignalKind::terminate()])
        .context("cannot listen for Ctrl-C")?;
    let watch = open(client, prefix, from, prev)?;
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || {
            let _ = done.send(print_all(watch, style));
        })
        .context("cannot start the watch")?;
    loop {
        if signals.try_recv().is_ok() {
            // The printing thread writes whole lines under the lock: none is cut in two.
            let mut out = std::io::stdout().lock();
            let _ = out.flush();
            return Ok(ExitCode::SUCCESS);
        }
        match finished.recv_timeout(POLL) {
            Ok(outcome) => {
                outcome?;
                return Ok(ExitCode::SUCCESS);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => anyhow::bail!("the watch stopped"),
        }
    }
}

/// Prints every event of `watch` on standard output (resumptions on standard error) until
/// the feed fails for good.
fn print_all(watch: Watch, style: Style) -> Result<()> {
    for event in watch {
        let event = event.context("the change feed failed")?;
        let mut out = std::io::stdout().lock();
        print_event(&mut out, &event, style)?;
        out.flush()?;
    }
    Ok(())
}

/// Writes one event: a line on `out`, or for a resumption a line on standard error.
pub fn print_event(out: &mut impl Write, event: &FeedEvent, style: Style) -> std::io::Result<()> {
    if let FeedEvent::Resumed { from, endpoint, reason } = event {
        eprintln!("skiff watch: resumed after index {from} on {endpoint} ({reason})");
        return Ok(());
    }
    match style {
        Style::Json => match json(event) {
            Some(json) => writeln!(out, "{json}"),
            None => Ok(()),
        },
        Style::Human => match human(event) {
            Some(line) => writeln!(out, "{line}"),
            None => Ok(()),
        },
    }
}

/// The event as the server sends it (`docs/http-api.md`), and the reader's
/// `snapshot-begin`; `None` for what is not printed.
fn json(event: &FeedEvent) -> Option<serde_json::Value> {
    let base64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let change = |kind: &str, change: &KeyChange, with_value: bool| {
        let mut json = serde_json::json!({
            "type": kind,
            "index": change.index,
            "key": change.key,
            "create_index": change.create_index,
            "modify_index": change.modify_index,
            "flags": change.flags,
        });
        if with_value {
            json["value"] = serde_json::json!(base64(&change.value));
        }
        if let Some(prev) = &change.prev_value {
            json["prev_value"] = serde_json::json!(prev.as_deref().map(base64));
        }
        json
    };
    Some(match event {
        FeedEvent::Put(put) => change("put", put, true),
        FeedEvent::Delete(delete) => change("delete", delete, false),
        FeedEvent::Expire(expire) => change("expire", expire, false),
        FeedEvent::Snapshot(key) => change("snapshot", key, true),
        FeedEvent::SnapshotBegin { index } => serde_json::json!({ "type": "snapshot-begin", "index": index }),
        FeedEvent::SnapshotEnd { index } => serde_json::json!({ "type": "snapshot-end", "index": index }),
        FeedEvent::Progress { index } => serde_json::json!({ "type": "progress", "index": index }),
        _ => return None,
    })
}

/// The event as one line for people; `None` for what is not printed (progress).
fn human(event: &FeedEvent) -> Option<String> {
    let previous = |change: &KeyChange| match &change.prev_value {
        None => String::new(),
        Some(None) => " (new)".to_string(),
        Some(Some(value)) => format!(" (was {})", shown(value)),
    };
    Some(match event {
        FeedEvent::Put(put) => format!("{} put {} = {}{}", put.index, put.key, shown(&put.value), previous(put)),
        FeedEvent::Delete(delete) => format!("{} delete {}{}", delete.index, delete.key, previous(delete)),
        FeedEvent::Expire(expire) => format!("{} expire {}{}", expire.index, expire.key, previous(expire)),
        FeedEvent::SnapshotBegin { index } => format!("-- snapshot at index {index}: the keys as they are --"),
        FeedEvent::Snapshot(key) => format!("{} snapshot {} = {}", key.index, key.key, shown(&key.value)),
        FeedEvent::SnapshotEnd { index } => {
            format!("-- end of snapshot at index {index}; the changes after it follow --")
        }
        _ => return None,
    })
}

/// A value for people: quoted text, or base64 when it is not UTF-8.
fn shown(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) => format!("{text:?}"),
        Err(_) => format!("base64:{}", base64::engine::general_purpose::STANDARD.encode(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(index: u64, key: &str, value: &[u8], prev: Option<Option<&[u8]>>) -> KeyChange {
        KeyChange {
            index,
            key: key.to_string(),
            value: value.to_vec(),
            create_index: 3,
            modify_index: index,
            flags: 0,
            prev_value: prev.map(|prev| prev.map(<[u8]>::to_vec)),
        }
    }

    #[test]
    fn events_are_one_line_each_for_people_and_for_scripts() {
        let put = FeedEvent::Put(change(42, "app/a", b"1", None));
        assert_eq!(human(&put).unwrap(), r#"42 put app/a = "1""#);
        let delete = FeedEvent::Delete(change(43, "app/b", b"", Some(Some(b"old"))));
        assert_eq!(human(&delete).unwrap(), r#"43 delete app/b (was "old")"#);
        let expire = FeedEvent::Expire(change(50, "app/tmp", b"", None));
        assert_eq!(human(&expire).unwrap(), "50 expire app/tmp");
        let binary = FeedEvent::Put(change(44, "b", &[0xff, 0], Some(None)));
        assert_eq!(human(&binary).unwrap(), "44 put b = base64:/wA= (new)");
        assert_eq!(human(&FeedEvent::Progress { index: 9 }), None);

        let json = json(&put).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"put","index":42,"key":"app/a","value":"MQ==","create_index":3,"modify_index":42,"flags":0})
        );
        let json = super::json(&delete).unwrap();
        assert_eq!(
            (json["type"].as_str(), json.get("value"), json["prev_value"].as_str()),
            (Some("delete"), None, Some("b2xk"))
        );
        let end = super::json(&FeedEvent::SnapshotEnd { index: 7 }).unwrap();
        assert_eq!(end, serde_json::json!({"type":"snapshot-end","index":7}));
    }
}
