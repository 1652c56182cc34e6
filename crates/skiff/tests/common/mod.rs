//! Shared by the runtime's integration tests.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use skiff::{Index, StateMachine};

/// A replicated list of strings; applying returns the list's new length.
#[derive(Default)]
pub struct Journal {
    pub lines: Vec<String>,
}

#[derive(Serialize, Deserialize)]
pub enum Command {
    Push(String),
}

impl StateMachine for Journal {
    type Command = Command;
    type Output = usize;

    fn apply(&mut self, _index: Index, command: Command) -> usize {
        let Command::Push(line) = command;
        self.lines.push(line);
        self.lines.len()
    }

    fn snapshot(&self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(self.lines.join("\n").as_bytes())
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> std::io::Result<()> {
        let mut text = String::new();
        snapshot.read_to_string(&mut text)?;
        self.lines = if text.is_empty() { Vec::new() } else { text.split('\n').map(str::to_string).collect() };
        Ok(())
    }
}
