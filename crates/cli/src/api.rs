//! The JSON the server answers with (docs/http-api.md), as far as the CLI reads it.
//! Unknown fields are ignored, so a server that says more still works.

use anyhow::{Context, Result};
use base64::Engine as _;
use serde::Deserialize;

/// One entry of `GET /v1/kv/<key>`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KvEntry {
    pub key: String,
    /// Base64; `null` for an empty value.
    pub value: Option<String>,
    pub modify_index: u64,
}

impl KvEntry {
    pub fn value_bytes(&self) -> Result<Vec<u8>> {
        match &self.value {
            None => Ok(Vec::new()),
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .with_context(|| format!("the value of {:?} is not valid base64", self.key)),
        }
    }
}

/// `GET /v1/skiff/status`.
#[derive(Debug, Deserialize)]
pub struct Status {
    pub id: String,
    pub role: String,
    pub term: u64,
    pub voted_for: Option<String>,
    pub leader: Option<String>,
    pub commit: u64,
    pub applied: u64,
    pub last_log: LogId,
    #[serde(default)]
    pub peers: Vec<Peer>,
}

#[derive(Debug, Deserialize)]
pub struct LogId {
    pub index: u64,
    pub term: u64,
}

#[derive(Debug, Deserialize)]
pub struct Peer {
    pub id: String,
    pub connected: bool,
}

/// `GET /v1/skiff/members`.
#[derive(Debug, Deserialize)]
pub struct Members {
    pub leader: Option<String>,
    pub members: Vec<Member>,
}

#[derive(Debug, Deserialize)]
pub struct Member {
    pub id: String,
    pub voter: bool,
    pub raft: String,
    pub http: Option<String>,
}

/// `GET /v1/skiff/log`.
#[derive(Debug, Deserialize)]
pub struct LogPage {
    pub first_index: u64,
    pub entries: Vec<LogEntry>,
}

#[derive(Debug, Deserialize)]
pub struct LogEntry {
    pub index: u64,
    pub term: u64,
    pub committed: bool,
    pub description: String,
}

impl LogPage {
    /// One line per entry, `*` before the committed ones; a note first when the log
    /// starts after a snapshot.
    pub fn lines(&self) -> Vec<String> {
        let width = self.entries.last().map_or(1, |entry| entry.index.to_string().len());
        let mut lines = Vec::new();
        if self.first_index > 1 && self.entries.first().is_none_or(|entry| entry.index == self.first_index) {
            lines.push(format!("  (entries before {} are compacted into a snapshot)", self.first_index));
        }
        for entry in &self.entries {
            let mark = if entry.committed { '*' } else { ' ' };
            lines.push(format!("{mark} {:>width$}  term {}  {}", entry.index, entry.term, entry.description));
        }
        lines
    }
}
