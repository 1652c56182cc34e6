//! `skiff shell`: an interactive prompt with line editing, history and completion of
//! command names. When standard input is not a terminal it reads one command per line
//! without a prompt, so a script can pipe commands in.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Result, bail};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{CompletionType, Context, Editor, Helper, Highlighter, Hinter, Validator};
use skiff_client::Client;

use crate::commands::{self, Format};
use crate::status;

const COMMANDS: &[(&str, &str)] = &[
    ("get KEY", "print the value of KEY"),
    ("put KEY VALUE", "set KEY to VALUE (the rest of the line; quotes are removed)"),
    ("delete KEY", "delete KEY"),
    ("list [PREFIX]", "every key under PREFIX, with its value"),
    ("show_log [N]", "the last N entries of the log (default 20), * before committed ones"),
    ("status", "every node's role, term, commit and health"),
    ("help", "this list"),
    ("exit, quit", "leave the shell (Ctrl-D too)"),
];

/// Entries `show_log` shows without an argument.
const DEFAULT_LOG_ENTRIES: u64 = 20;

#[derive(Helper, Highlighter, Hinter, Validator)]
struct ShellHelper;

impl Completer for ShellHelper {
    type Candidate = Pair;

    /// Completes the command name, the first word of the line.
    fn complete(&self, line: &str, pos: usize, _: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let typed = &line[..pos];
        if typed.contains(char::is_whitespace) {
            return Ok((pos, Vec::new()));
        }
        let names = ["get", "put", "delete", "list", "show_log", "status", "help", "exit", "quit"];
        let matches = names
            .iter()
            .filter(|name| name.starts_with(typed))
            .map(|name| Pair { display: name.to_string(), replacement: format!("{name} ") })
            .collect();
        Ok((0, matches))
    }
}

/// Whether the shell goes on after a line.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

/// Runs the shell until `exit`, end of input or an unrecoverable terminal error.
pub fn run(client: &Client) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        for line in std::io::stdin().lock().lines() {
            if handle(client, &line?) == Flow::Exit {
                break;
            }
        }
        return Ok(());
    }
    let config = rustyline::Config::builder().completion_type(CompletionType::List).auto_add_history(false).build();
    let mut editor: Editor<ShellHelper, DefaultHistory> = Editor::with_config(config)?;
    editor.set_helper(Some(ShellHelper));
    let history = history_file();
    if let Some(path) = &history {
        let _ = editor.load_history(path); // none yet on first use
    }
    let endpoints: Vec<&str> = client.endpoints().iter().map(|e| e.trim_start_matches("http://")).collect();
    println!("skiff shell on {}; type help for the commands, exit or Ctrl-D to leave", endpoints.join(","));
    loop {
        match editor.readline("skiff> ") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if handle(client, &line) == Flow::Exit {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => continue, // Ctrl-C drops the line, as in a shell
            Err(ReadlineError::Eof) => break,
            Err(error) => bail!("terminal error: {error}"),
        }
    }
    if let Some(path) = &history
        && let Err(error) = editor.save_history(path)
    {
        eprintln!("warning: could not save history to {}: {error}", path.display());
    }
    Ok(())
}

/// `~/.skiff_history` when the home directory exists; otherwise history stays in memory.
fn history_file() -> Option<PathBuf> {
    let home = PathBuf::from(std::env::var_os("HOME")?);
    home.is_dir().then(|| home.join(".skiff_history"))
}

/// Runs one line; errors are printed, never fatal.
fn handle(client: &Client, line: &str) -> Flow {
    let result = execute(client, line.trim());
    let _ = std::io::stdout().flush();
    match result {
        Ok(flow) => flow,
        Err(error) => {
            println!("error: {error:#}");
            Flow::Continue
        }
    }
}

fn execute(client: &Client, line: &str) -> Result<Flow> {
    let Some((command, rest)) = next_word(line)? else { return Ok(Flow::Continue) };
    let args = |count: usize| -> Result<Vec<String>> {
        let mut words = Vec::new();
        let mut rest = rest;
        while let Some((word, after)) = next_word(rest)? {
            words.push(word);
            rest = after;
        }
        if words.len() > count {
            bail!("{command} takes at most {count} argument(s); type help for usage");
        }
        Ok(words)
    };
    match command.as_str() {
        "get" => {
            let key = required(args(1)?, "get KEY")?;
            if !commands::get(client, &key, false, false, Format::Human)? {
                println!("(not found)");
            }
        }
        "put" | "set" => {
            let Some((key, value)) = next_word(rest)? else { bail!("usage: put KEY VALUE") };
            let value = unquote(value.trim());
            commands::put(client, &key, value.as_bytes().to_vec(), None, Format::Human)?;
        }
        "delete" | "del" => commands::delete(client, &required(args(1)?, "delete KEY")?, false, Format::Human)?,
        "list" | "ls" => commands::list(client, args(1)?.first().map_or("", String::as_str), false, Format::Human)?,
        "show_log" | "log" => {
            let limit = match args(1)?.first() {
                Some(count) => count.parse().map_err(|_| anyhow::anyhow!("show_log takes a number, not {count:?}"))?,
                None => DEFAULT_LOG_ENTRIES,
            };
            commands::log(client, None, Some(limit), Format::Human)?;
        }
        "status" => status::show(client, Format::Human)?,
        "help" | "?" => print_help(),
        "exit" | "quit" => return Ok(Flow::Exit),
        other => println!("unknown command {other:?}; type help for the list of commands"),
    }
    Ok(Flow::Continue)
}

fn required(words: Vec<String>, usage: &str) -> Result<String> {
    match words.into_iter().next() {
        Some(word) => Ok(word),
        None => bail!("usage: {usage}"),
    }
}

fn print_help() {
    println!("commands:");
    for (usage, what) in COMMANDS {
        println!("  {usage:<15} {what}");
    }
}

/// The first word of `text` (quoted with ' or " if it holds spaces) and the rest.
fn next_word(text: &str) -> Result<Option<(String, &str)>> {
    let text = text.trim_start();
    let Some(first) = text.chars().next() else { return Ok(None) };
    if first == '"' || first == '\'' {
        let Some(end) = text[1..].find(first) else { bail!("unclosed quote {first} in {text:?}") };
        return Ok(Some((text[1..=end].to_string(), &text[end + 2..])));
    }
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    Ok(Some((text[..end].to_string(), &text[end..])))
}

/// `"a b"` or `'a b'` without its quotes; anything else as is.
fn unquote(text: &str) -> &str {
    for quote in ['"', '\''] {
        if text.len() >= 2 && text.starts_with(quote) && text.ends_with(quote) {
            return &text[1..text.len() - 1];
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_quotes() {
        assert_eq!(next_word("  get a").unwrap(), Some(("get".to_string(), " a")));
        assert_eq!(next_word("'my key' v").unwrap(), Some(("my key".to_string(), " v")));
        assert_eq!(next_word("   ").unwrap(), None);
        assert!(next_word("\"open").is_err());
        assert_eq!(unquote("\"hello world\""), "hello world");
        assert_eq!(unquote("plain"), "plain");
        assert_eq!(unquote("\""), "\"");
    }
}
