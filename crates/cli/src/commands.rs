//! The client commands: each sends its request, then prints the answer for a person or,
//! with `--json`, the API's JSON as is.

use std::io::Write;
use std::time::Duration;

use anyhow::{Result, bail};
use comfy_table::Table;
use ureq::http::Method;

use crate::api::{KvEntry, LogPage, Members};
use crate::client::{Client, Reply, encode_key};

/// How `members add` may wait: the server waits up to 30 s for the learner to catch up.
const ADD_MEMBER_TIMEOUT: Duration = Duration::from_secs(40);

/// How to print answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
}

/// Prints a JSON answer's body as the server sent it, with a final newline.
fn print_body(reply: &Reply) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(&reply.body)?;
    if !reply.body.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn print_line(line: &str) -> Result<()> {
    writeln!(std::io::stdout().lock(), "{line}")?;
    Ok(())
}

/// A value for a one-line display: lossy UTF-8, line breaks escaped.
fn display_value(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace('\n', "\\n").replace('\r', "\\r")
}

/// `get KEY`: prints the value; `Ok(false)` when the key does not exist.
pub fn get(client: &Client, key: &str, stale: bool, raw: bool, format: Format) -> Result<bool> {
    let mut path = format!("/v1/kv/{}", encode_key(key));
    let params: Vec<&str> =
        [(stale, "stale"), (raw, "raw")].into_iter().filter(|(on, _)| *on).map(|(_, p)| p).collect();
    if !params.is_empty() {
        path = format!("{path}?{}", params.join("&"));
    }
    let reply = client.get(&path)?;
    if reply.status == 404 {
        return Ok(false);
    }
    let reply = reply.success()?;
    let mut out = std::io::stdout().lock();
    if raw {
        out.write_all(&reply.body)?;
    } else if format == Format::Json {
        drop(out);
        print_body(&reply)?;
    } else {
        let entries: Vec<KvEntry> = reply.json()?;
        let Some(entry) = entries.into_iter().next() else {
            bail!("{} answered an empty list for {key:?}", reply.endpoint)
        };
        out.write_all(&entry.value_bytes()?)?;
        out.write_all(b"\n")?;
    }
    Ok(true)
}

/// Checks a write's `true`/`false` answer.
fn write_result(reply: Reply) -> Result<(bool, Reply)> {
    let reply = reply.success()?;
    match String::from_utf8_lossy(&reply.body).trim() {
        "true" => Ok((true, reply)),
        "false" => Ok((false, reply)),
        other => bail!("{} answered {other:?}, neither true nor false", reply.endpoint),
    }
}

fn print_ok(reply: &Reply, format: Format) -> Result<()> {
    match format {
        Format::Json => print_body(reply),
        Format::Human => print_line("OK"),
    }
}

/// `put KEY VALUE [--flags N]`.
pub fn put(client: &Client, key: &str, value: Vec<u8>, flags: Option<u64>, format: Format) -> Result<()> {
    let mut path = format!("/v1/kv/{}", encode_key(key));
    if let Some(flags) = flags {
        path = format!("{path}?flags={flags}");
    }
    let (written, reply) = write_result(client.write(Method::PUT, &path, Some(value))?)?;
    if !written {
        bail!("{} refused the write of {key:?} (answered false)", reply.endpoint);
    }
    print_ok(&reply, format)
}

/// `cas KEY VALUE --index N`: an error (exit 1) when the check fails.
pub fn cas(client: &Client, key: &str, value: Vec<u8>, index: u64, format: Format) -> Result<()> {
    let path = format!("/v1/kv/{}?cas={index}", encode_key(key));
    let (written, reply) = write_result(client.write(Method::PUT, &path, Some(value))?)?;
    if written {
        return print_ok(&reply, format);
    }
    if format == Format::Json {
        print_body(&reply)?;
    }
    // Say why: what the key's index is now.
    let current = client.get(&format!("/v1/kv/{}", encode_key(key)))?;
    let now = match current.status {
        404 => "does not exist".to_string(),
        _ => match current.success()?.json::<Vec<KvEntry>>()?.first() {
            Some(entry) => format!("has ModifyIndex {}", entry.modify_index),
            None => "is in an unknown state".to_string(),
        },
    };
    let expected = if index == 0 { "to not exist (--index 0)".to_string() } else { format!("ModifyIndex {index}") };
    bail!("cas failed: {key:?} {now}, expected {expected}; nothing was written")
}

/// `delete KEY [--recurse]`.
pub fn delete(client: &Client, key: &str, recurse: bool, format: Format) -> Result<()> {
    let mut path = format!("/v1/kv/{}", encode_key(key));
    if recurse {
        path.push_str("?recurse");
    }
    let (deleted, reply) = write_result(client.write(Method::DELETE, &path, None)?)?;
    if !deleted {
        bail!("{} refused the delete of {key:?} (answered false)", reply.endpoint);
    }
    print_ok(&reply, format)
}

/// `list [PREFIX] [--keys]`: every key under the prefix with its value, or the names only.
pub fn list(client: &Client, prefix: &str, keys_only: bool, format: Format) -> Result<()> {
    let mode = if keys_only { "keys" } else { "recurse" };
    let reply = client.get(&format!("/v1/kv/{}?{mode}", encode_key(prefix)))?;
    if reply.status == 404 {
        if format == Format::Json {
            print_line("[]")?;
        }
        return Ok(());
    }
    let reply = reply.success()?;
    if format == Format::Json {
        return print_body(&reply);
    }
    let mut out = std::io::stdout().lock();
    if keys_only {
        for key in reply.json::<Vec<String>>()? {
            writeln!(out, "{key}")?;
        }
    } else {
        let entries: Vec<KvEntry> = reply.json()?;
        let width = entries.iter().map(|entry| entry.key.chars().count()).max().unwrap_or(0);
        for entry in &entries {
            writeln!(out, "{:<width$}  {}", entry.key, display_value(&entry.value_bytes()?))?;
        }
    }
    Ok(())
}

/// `log [--from N] [--limit N]`: the log of the node that answers.
pub fn log(client: &Client, from: Option<u64>, limit: Option<u64>, format: Format) -> Result<()> {
    let params: Vec<String> = [("from", from), ("limit", limit)]
        .into_iter()
        .filter_map(|(name, value)| value.map(|value| format!("{name}={value}")))
        .collect();
    let query = if params.is_empty() { String::new() } else { format!("?{}", params.join("&")) };
    let reply = client.get(&format!("/v1/skiff/log{query}"))?.success()?;
    if format == Format::Json {
        return print_body(&reply);
    }
    let page: LogPage = reply.json()?;
    let mut out = std::io::stdout().lock();
    for line in page.lines() {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `members list`.
pub fn members_list(client: &Client, format: Format) -> Result<()> {
    let reply = client.get("/v1/skiff/members")?.success()?;
    if format == Format::Json {
        return print_body(&reply);
    }
    let members: Members = reply.json()?;
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(["ID", "ROLE", "RAFT", "HTTP", "LEADER"]);
    for member in &members.members {
        let role = if member.voter { "voter" } else { "learner" };
        let leader = if members.leader.as_deref() == Some(member.id.as_str()) { "*" } else { "" };
        table.add_row([&member.id, role, &member.raft, member.http.as_deref().unwrap_or("-"), leader]);
    }
    print_line(&table.to_string())
}

/// `members add ID [--learner]`.
pub fn members_add(client: &Client, id: &str, learner: bool, format: Format) -> Result<()> {
    let mut body = serde_json::json!({ "id": id });
    if learner {
        body["learner"] = serde_json::Value::Bool(true);
    }
    let body = serde_json::to_vec(&body)?;
    let mut reply = client.operation(Method::POST, "/v1/skiff/members", Some(body.clone()), ADD_MEMBER_TIMEOUT)?;
    // A follower points at the leader, which alone can tell when the new node caught up.
    if reply.status == 307
        && let Some(leader) = reply.location.clone()
    {
        reply = client.operation_at(Method::POST, &leader, Some(body), ADD_MEMBER_TIMEOUT)?;
    }
    let reply = reply.success()?;
    match format {
        Format::Json => print_body(&reply),
        Format::Human => print_line(&format!("added {id} as a {}", if learner { "learner" } else { "voter" })),
    }
}

/// `members remove ID`.
pub fn members_remove(client: &Client, id: &str, format: Format) -> Result<()> {
    let reply =
        client.operation(Method::DELETE, &format!("/v1/skiff/members/{}", encode_key(id)), None, Duration::ZERO)?;
    let reply = reply.success()?;
    match format {
        Format::Json if !reply.body.is_empty() => print_body(&reply),
        Format::Json => print_line("{}"),
        Format::Human => print_line(&format!("removed {id}")),
    }
}

/// `members promote ID`.
pub fn members_promote(client: &Client, id: &str, format: Format) -> Result<()> {
    let path = format!("/v1/skiff/members/{}/promote", encode_key(id));
    let reply = client.operation(Method::POST, &path, None, Duration::ZERO)?.success()?;
    match format {
        Format::Json if !reply.body.is_empty() => print_body(&reply),
        Format::Json => print_line("{}"),
        Format::Human => print_line(&format!("promoted {id} to voter")),
    }
}

/// `transfer-leader [ID]`.
pub fn transfer_leader(client: &Client, id: Option<&str>, format: Format) -> Result<()> {
    let query = id.map(|id| format!("?id={}", encode_key(id))).unwrap_or_default();
    let path = format!("/v1/operator/raft/transfer-leader{query}");
    let reply = client.operation(Method::POST, &path, None, Duration::ZERO)?.success()?;
    if format == Format::Json {
        return print_body(&reply);
    }
    let answer: serde_json::Value = reply.json()?;
    if answer.get("Success").and_then(serde_json::Value::as_bool) != Some(true) {
        bail!("leader transfer failed: {} answered {answer}", reply.endpoint);
    }
    let members: Members = client.get("/v1/skiff/members")?.success()?.json()?;
    match members.leader {
        Some(leader) => print_line(&format!("leader is now {leader}")),
        None => print_line("leadership transferred; no leader is known yet"),
    }
}
