//! The client commands: each makes its call, then prints the answer for a person or,
//! with `--json`, as the API's JSON.

use std::io::Write;

use anyhow::{Result, bail};
use comfy_table::Table;
use serde::Serialize;
use skiff_client::{Client, Consistency, DeleteOptions, Error, LogPage, NewMember, WriteOptions};

/// How to print answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
}

/// Prints an answer as the API's JSON, with a final newline. The server writes its JSON
/// objects with sorted keys, and so does a `serde_json::Value`: the output is the server's.
fn print_json(answer: &impl Serialize) -> Result<()> {
    let json = serde_json::to_value(answer)?;
    writeln!(std::io::stdout().lock(), "{json}")?;
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

/// `Some` answer, or `None` when the key does not exist.
fn found<T>(answer: skiff_client::Result<T>) -> Result<Option<T>> {
    match answer {
        Ok(answer) => Ok(Some(answer)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// `get KEY`: prints the value; `Ok(false)` when the key does not exist.
pub fn get(client: &Client, key: &str, stale: bool, raw: bool, format: Format) -> Result<bool> {
    let consistency = if stale { Consistency::Stale } else { Consistency::Consistent };
    if raw {
        let Some(value) = found(client.get_raw(key, consistency))? else { return Ok(false) };
        std::io::stdout().lock().write_all(&value)?;
        return Ok(true);
    }
    let Some(entry) = found(client.get(key, consistency))? else { return Ok(false) };
    match format {
        Format::Json => print_json(&[entry])?,
        Format::Human => {
            let mut out = std::io::stdout().lock();
            out.write_all(&entry.value)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(true)
}

fn print_ok(format: Format) -> Result<()> {
    match format {
        Format::Json => print_line("true"),
        Format::Human => print_line("OK"),
    }
}

/// `put KEY VALUE [--flags N]`.
pub fn put(client: &Client, key: &str, value: Vec<u8>, flags: Option<u64>, format: Format) -> Result<()> {
    if !client.put_with(key, value, WriteOptions { flags, ..WriteOptions::default() })? {
        bail!("the write of {key:?} was refused (answered false)");
    }
    print_ok(format)
}

/// `cas KEY VALUE --index N`: an error (exit 1) when the check fails.
pub fn cas(client: &Client, key: &str, value: Vec<u8>, index: u64, format: Format) -> Result<()> {
    if client.cas(key, value, index)? {
        return print_ok(format);
    }
    if format == Format::Json {
        print_line("false")?;
    }
    // Say why: what the key's index is now.
    let now = match found(client.get(key, Consistency::Consistent))? {
        Some(entry) => format!("has ModifyIndex {}", entry.modify_index),
        None => "does not exist".to_string(),
    };
    let expected = if index == 0 { "to not exist (--index 0)".to_string() } else { format!("ModifyIndex {index}") };
    bail!("cas failed: {key:?} {now}, expected {expected}; nothing was written")
}

/// `delete KEY [--recurse]`.
pub fn delete(client: &Client, key: &str, recurse: bool, format: Format) -> Result<()> {
    if !client.delete_with(key, DeleteOptions { recurse, ..DeleteOptions::default() })? {
        bail!("the delete of {key:?} was refused (answered false)");
    }
    print_ok(format)
}

/// `list [PREFIX] [--keys]`: every key under the prefix with its value, or the names only.
pub fn list(client: &Client, prefix: &str, keys_only: bool, format: Format) -> Result<()> {
    if keys_only {
        let keys = client.list_keys(prefix, Consistency::Consistent)?;
        if format == Format::Json {
            return print_json(&keys);
        }
        let mut out = std::io::stdout().lock();
        for key in keys {
            writeln!(out, "{key}")?;
        }
        return Ok(());
    }
    let entries = client.list(prefix, Consistency::Consistent)?;
    if format == Format::Json {
        return print_json(&entries);
    }
    let mut out = std::io::stdout().lock();
    let width = entries.iter().map(|entry| entry.key.chars().count()).max().unwrap_or(0);
    for entry in &entries {
        writeln!(out, "{:<width$}  {}", entry.key, display_value(&entry.value))?;
    }
    Ok(())
}

/// One line per log entry, `*` before the committed ones; a note first when the log
/// starts after a snapshot.
fn log_lines(page: &LogPage) -> Vec<String> {
    let width = page.entries.last().map_or(1, |entry| entry.index.to_string().len());
    let mut lines = Vec::new();
    if page.first_index > 1 && page.entries.first().is_none_or(|entry| entry.index == page.first_index) {
        lines.push(format!("  (entries before {} are compacted into a snapshot)", page.first_index));
    }
    for entry in &page.entries {
        let mark = if entry.committed { '*' } else { ' ' };
        lines.push(format!("{mark} {:>width$}  term {}  {}", entry.index, entry.term, entry.description));
    }
    lines
}

/// `log [--from N] [--limit N]`: the log of the node that answers.
pub fn log(client: &Client, from: Option<u64>, limit: Option<u64>, format: Format) -> Result<()> {
    let page = client.log(from, limit)?;
    if format == Format::Json {
        return print_json(&page);
    }
    let mut out = std::io::stdout().lock();
    for line in log_lines(&page) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `members list`.
pub fn members_list(client: &Client, format: Format) -> Result<()> {
    let members = client.members()?;
    if format == Format::Json {
        return print_json(&members);
    }
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

/// `members add ID [--raft HOST:PORT --http HOST:PORT --redis HOST:PORT] [--learner]`.
pub fn members_add(client: &Client, member: &NewMember, format: Format) -> Result<()> {
    let added = client.add_member(member)?;
    match format {
        Format::Json => print_json(&added),
        Format::Human => print_line(&format!(
            "added {} ({}) as a {}",
            added.id,
            added.raft,
            if added.voter { "voter" } else { "learner" }
        )),
    }
}

/// `members replace OLD --with NEW --raft HOST:PORT ...`: add the new node as a learner,
/// let it catch up, promote it, and only then remove the old one. The cluster never has
/// fewer voters than it started with, so a replacement of a live node keeps the fault
/// tolerance it had; replacing a dead one, the quorum includes the new node once it is
/// promoted (until the old one is removed, every other voter must be up).
pub fn members_replace(client: &Client, old: &str, new: &NewMember, format: Format) -> Result<()> {
    let members = client.members()?;
    let Some(replaced) = members.members.iter().find(|member| member.id == old) else {
        bail!("{old} is not a member; `skiff members list` shows the members");
    };
    if members.members.iter().any(|member| member.id == new.id) {
        bail!("{} is already a member: replace with a new id", new.id);
    }
    let human = format == Format::Human;
    let say = |line: String| if human { print_line(&line) } else { Ok(()) };
    let learner = NewMember { learner: true, ..new.clone() };
    say(format!("1/4 adding {} as a learner", new.id))?;
    client.add_member(&learner)?;
    say(format!("2/4 waiting for {} to catch up, then promoting it", new.id))?;
    let added = client.add_member(&NewMember { learner: !replaced.voter, ..new.clone() })?;
    say(format!("3/4 {} is a {}; removing {old}", added.id, if added.voter { "voter" } else { "learner" }))?;
    client.remove_member(old)?;
    say(format!("4/4 replaced {old} by {} ({})", added.id, added.raft))?;
    if format == Format::Json {
        print_json(&serde_json::json!({ "removed": old, "added": added }))?;
    }
    Ok(())
}

/// `members remove ID`.
pub fn members_remove(client: &Client, id: &str, format: Format) -> Result<()> {
    client.remove_member(id)?;
    match format {
        Format::Json => print_line("{}"),
        Format::Human => print_line(&format!("removed {id}")),
    }
}

/// `members promote ID`.
pub fn members_promote(client: &Client, id: &str, format: Format) -> Result<()> {
    let member = client.promote_member(id)?;
    match format {
        Format::Json => print_json(&member),
        Format::Human => print_line(&format!("promoted {id} to voter")),
    }
}

/// `transfer-leader [ID]`.
pub fn transfer_leader(client: &Client, id: Option<&str>, format: Format) -> Result<()> {
    client.transfer_leader(id)?;
    if format == Format::Json {
        return print_json(&serde_json::json!({ "Success": true }));
    }
    match client.members()?.leader {
        Some(leader) => print_line(&format!("leader is now {leader}")),
        None => print_line("leadership transferred; no leader is known yet"),
    }
}
