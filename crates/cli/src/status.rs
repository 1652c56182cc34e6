//! `skiff status`: every member's view of itself, one row per node, once or as a
//! dashboard redrawn in place.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use comfy_table::{Cell, Color, Table};

use skiff_client::{Client, Probe, Status};

use crate::commands::Format;

/// How long one node may take to answer before its row says `unreachable`.
const NODE_TIMEOUT: Duration = Duration::from_secs(2);

/// A follower this many entries behind the leader's commit is reported as lagging.
const LAG_WARNING: u64 = 100;

/// One member and what its status request returned.
struct Row {
    id: String,
    http: Option<String>,
    answer: Result<Status>,
    /// What its probes (`/v1/health`, `/v1/ready`) answered, when its status did.
    probes: Option<Probes>,
}

/// A node's answers to its liveness and readiness probes, as an orchestrator sees them.
struct Probes {
    health: Result<Probe>,
    ready: Result<Probe>,
}

/// Asks for the member list, then every member for its status, in parallel.
fn collect(client: &Client) -> Result<Vec<Row>> {
    let members = client.members()?;
    let rows = std::thread::scope(|scope| {
        let handles: Vec<_> = members
            .members
            .into_iter()
            .map(|member| {
                scope.spawn(move || {
                    let answer = match &member.http {
                        Some(http) => client.node_status(http, NODE_TIMEOUT).map_err(Into::into),
                        None => Err(anyhow::anyhow!("no http address")),
                    };
                    let probes = match (&member.http, &answer) {
                        (Some(http), Ok(_)) => Some(Probes {
                            health: client.health(http, NODE_TIMEOUT).map_err(Into::into),
                            ready: client.ready(http, NODE_TIMEOUT).map_err(Into::into),
                        }),
                        _ => None,
                    };
                    Row { id: member.id, http: member.http, answer, probes }
                })
            })
            .collect();
        handles.into_iter().filter_map(|handle| handle.join().ok()).collect()
    });
    Ok(rows)
}

/// The table for the rows.
fn table(rows: &[Row]) -> Table {
    let leader_commit = rows.iter().filter_map(|row| row.answer.as_ref().ok()).find(|status| status.role == "leader");
    let leader_commit = leader_commit.map(|status| status.commit);
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "ID",
        "ADDRESS",
        "ROLE",
        "TERM",
        "VOTED FOR",
        "LEADER",
        "COMMIT",
        "APPLIED",
        "LAST LOG",
        "READY",
        "HEALTH",
    ]);
    for row in rows {
        let address = row.http.clone().unwrap_or_else(|| "-".to_string());
        match &row.answer {
            Ok(status) => {
                let (health, color) = health(status, leader_commit);
                let role_color = if status.role == "leader" { Color::Green } else { Color::Reset };
                let (ready, ready_color) = readiness(row.probes.as_ref());
                table.add_row(vec![
                    Cell::new(&status.id),
                    Cell::new(address),
                    Cell::new(&status.role).fg(role_color),
                    Cell::new(status.term),
                    Cell::new(status.voted_for.as_deref().unwrap_or("-")),
                    Cell::new(status.leader.as_deref().unwrap_or("-")),
                    Cell::new(status.commit),
                    Cell::new(status.applied),
                    Cell::new(format!("{} (term {})", status.last_log.index, status.last_log.term)),
                    Cell::new(ready).fg(ready_color),
                    Cell::new(health).fg(color),
                ]);
            }
            Err(error) => {
                let mut cells = vec![Cell::new(&row.id), Cell::new(address), Cell::new("unreachable").fg(Color::Red)];
                cells.extend((0..7).map(|_| Cell::new("-")));
                cells.push(Cell::new(format!("{error:#}")).fg(Color::Red));
                table.add_row(cells);
            }
        }
    }
    table
}

/// What a node's probes say, as an orchestrator would act on it: `ready`, `not ready` or
/// `stopped` with the reasons, or `-` when it did not answer them (a node older than the
/// probes answers 404).
fn readiness(probes: Option<&Probes>) -> (String, Color) {
    let Some(probes) = probes else { return ("-".to_string(), Color::Reset) };
    let failed = |probe: &Probe| format!("{}: {}", probe.status, probe.reasons.join("; "));
    match (&probes.health, &probes.ready) {
        (Ok(health), _) if !health.passed() => (failed(health), Color::Red),
        (_, Ok(ready)) if ready.passed() => (ready.status.clone(), Color::Green),
        (_, Ok(ready)) => (failed(ready), Color::Yellow),
        (_, Err(_)) => ("-".to_string(), Color::Reset),
    }
}

/// A node's health in a few words, and the color to show it in.
fn health(status: &Status, leader_commit: Option<u64>) -> (String, Color) {
    if status.leader.is_none() {
        return ("no leader".to_string(), Color::Red);
    }
    if status.role == "leader" {
        let cut_off: Vec<&str> =
            status.peers.iter().filter(|peer| !peer.connected).map(|peer| peer.id.as_str()).collect();
        if !cut_off.is_empty() {
            return (format!("cannot reach {}", cut_off.join(", ")), Color::Yellow);
        }
    }
    let behind = leader_commit.unwrap_or(status.commit).saturating_sub(status.applied);
    if behind > LAG_WARNING {
        return (format!("{behind} entries behind"), Color::Yellow);
    }
    ("ok".to_string(), Color::Green)
}

/// `status`: the table once, or the JSON array of every node's status.
pub fn show(client: &Client, format: Format) -> Result<()> {
    let rows = collect(client)?;
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            let array = rows.iter().map(row_json).collect::<Result<Vec<_>>>()?;
            writeln!(out, "{}", serde_json::to_string_pretty(&array)?)?;
        }
        Format::Human => writeln!(out, "{}", table(&rows))?,
    }
    Ok(())
}

/// A row as JSON: the node's status as the API answered it, or what is known of it.
fn row_json(row: &Row) -> Result<serde_json::Value> {
    Ok(match &row.answer {
        Ok(status) => {
            let mut json = serde_json::to_value(status)?;
            // The probes' answers, beside the status: `null` when not answered.
            if let Some(probes) = &row.probes {
                json["health"] = serde_json::to_value(probes.health.as_ref().ok())?;
                json["ready"] = serde_json::to_value(probes.ready.as_ref().ok())?;
            }
            json
        }
        Err(error) => serde_json::json!({
            "id": row.id, "http_address": row.http, "role": "unreachable", "error": format!("{error:#}"),
        }),
    })
}

/// `status --watch`: redraws the table every `interval` until interrupted.
pub fn watch(client: &Client, interval: Duration) -> Result<()> {
    let mut out = std::io::stdout();
    write!(out, "\x1b[2J")?;
    loop {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let (h, m, s) = ((now / 3600) % 24, (now / 60) % 60, now % 60);
        let header = format!("skiff status: every {interval:?}, Ctrl-C to stop ({h:02}:{m:02}:{s:02} UTC)");
        let body = match collect(client) {
            Ok(rows) => table(&rows).to_string(),
            Err(error) => format!("error: {error:#}"),
        };
        // Home, each line cleared to its end, then the rest of the screen cleared: no flicker.
        let mut frame = String::from("\x1b[H");
        for line in [header.as_str(), ""].into_iter().chain(body.lines()) {
            frame.push_str(line);
            frame.push_str("\x1b[K\n");
        }
        frame.push_str("\x1b[J");
        out.write_all(frame.as_bytes())?;
        out.flush()?;
        std::thread::sleep(interval);
    }
}
