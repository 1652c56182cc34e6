//! `skiff shell`: an interactive prompt with line editing, history and completion of
//! command names. When standard input is not a terminal it reads one command per line
//! without a prompt, so a script can pipe commands in.

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd as _;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use anyhow::{Result, bail};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{CompletionType, Context, Editor, Helper, Highlighter, Hinter, Validator};
use skiff_client::Client;
use tokio::signal::unix::SignalKind;

use crate::commands::{self, Format};
use crate::status;

const COMMANDS: &[(&str, &str)] = &[
    ("get KEY", "print the value of KEY"),
    ("put KEY VALUE", "set KEY to VALUE (the rest of the line; quotes are removed)"),
    ("delete KEY", "delete KEY"),
    ("list [PREFIX]", "every key under PREFIX, with its value"),
    ("show_log [N]", "the last N entries of the log (default 20), * before committed ones"),
    ("status", "every node's role, term, commit and health"),
    ("watch PREFIX [FROM]", "print the changes under PREFIX (after index FROM) until Enter or Ctrl-C"),
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
        let names = ["get", "put", "delete", "list", "show_log", "status", "watch", "help", "exit", "quit"];
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
        // A line at a time, the lock not held between lines: `watch` reads the next one.
        loop {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line)? == 0 || handle(client, &line, Input::Piped) == Flow::Exit {
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
                if handle(client, &line, Input::Terminal) == Flow::Exit {
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

/// Where the shell's commands come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Input {
    /// A person at a terminal (the line editor).
    Terminal,
    /// A pipe or a file, one command per line.
    Piped,
}

/// Runs one line; errors are printed, never fatal.
fn handle(client: &Client, line: &str, input: Input) -> Flow {
    let result = execute(client, line.trim(), input);
    let _ = std::io::stdout().flush();
    match result {
        Ok(flow) => flow,
        Err(error) => {
            println!("error: {error:#}");
            Flow::Continue
        }
    }
}

fn execute(client: &Client, line: &str, input: Input) -> Result<Flow> {
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
        "watch" => {
            let words = args(2)?;
            let Some(prefix) = words.first() else { bail!("usage: watch PREFIX [FROM]") };
            let from = match words.get(1) {
                Some(from) => Some(from.parse().map_err(|_| anyhow::anyhow!("watch FROM is an index, not {from:?}"))?),
                None => None,
            };
            watch(client, prefix, from, input)?;
        }
        "help" | "?" => print_help(),
        "exit" | "quit" => return Ok(Flow::Exit),
        other => println!("unknown command {other:?}; type help for the list of commands"),
    }
    Ok(Flow::Continue)
}

/// `watch PREFIX [FROM]`: prints the changes on a thread of their own until Enter (the next
/// line of input, or its end) or Ctrl-C. The thread stops printing at once; it ends with its
/// stream's next event (at most the 15 s between the server's `progress` events).
fn watch(client: &Client, prefix: &str, from: Option<u64>, input: Input) -> Result<()> {
    let watch = crate::watch::open(client, prefix, from, false)?;
    let stopped = Arc::new(Mutex::new(false));
    let printing = Arc::clone(&stopped);
    if input == Input::Terminal {
        println!("watching {prefix:?}; press Enter or Ctrl-C to stop");
    }
    std::thread::Builder::new().name("watch".into()).spawn(move || {
        for event in watch {
            // Held while printing, so that nothing is printed once the watch is stopped.
            let stopped = printing.lock().unwrap_or_else(PoisonError::into_inner);
            if *stopped {
                return;
            }
            let mut out = std::io::stdout().lock();
            match event {
                Ok(event) => {
                    let _ = crate::watch::print_event(&mut out, &event, crate::watch::Style::Human);
                }
                Err(error) => {
                    let _ = writeln!(out, "error: the watch ended: {error}");
                }
            }
            let _ = out.flush();
        }
    })?;
    let waited = wait_for_enter(input);
    *stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
    waited
}

/// Returns at the next line of input (or its end), or at Ctrl-C at a terminal.
fn wait_for_enter(input: Input) -> Result<()> {
    let mut line = String::new();
    if input == Input::Piped {
        std::io::stdin().read_line(&mut line)?;
        return Ok(());
    }
    let signals = interrupts()?;
    while signals.try_recv().is_ok() {} // from before this watch
    loop {
        if signals.try_recv().is_ok() {
            println!();
            return Ok(());
        }
        let stdin = std::io::stdin();
        let mut ready = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        match poll(&mut ready, PollTimeout::from(POLL_MS)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {
                stdin.read_line(&mut line)?;
                return Ok(());
            }
            Err(error) => bail!("cannot read the terminal: {error}"),
        }
    }
}

/// How long one wait for input lasts before the signals are looked at again, in ms.
const POLL_MS: u16 = 100;

/// Ctrl-C while a `watch` runs, listened for from the first `watch` on (the line editor
/// reads Ctrl-C as a key itself).
fn interrupts() -> Result<std::sync::MutexGuard<'static, Receiver<i32>>> {
    static SIGNALS: OnceLock<Mutex<Receiver<i32>>> = OnceLock::new();
    if SIGNALS.get().is_none() {
        let receiver = crate::interrupts::listen(&[SignalKind::interrupt()])?;
        let _ = SIGNALS.set(Mutex::new(receiver));
    }
    let signals = SIGNALS.get().ok_or_else(|| anyhow::anyhow!("no signal listener"))?;
    Ok(signals.lock().unwrap_or_else(PoisonError::into_inner))
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
        println!("  {usage:<19} {what}");
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
