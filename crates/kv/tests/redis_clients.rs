//! Real clients against the Redis-protocol listener of 3-node clusters on loopback: the
//! `redis-cli` and `redis-benchmark` binaries (Debian's `redis-tools`, 7.0), and Python's
//! `redis` (redis-py) and `py-consul`, all on the keyspace the HTTP API serves.
//!
//! - `redis_cli_*` replays `tests/clients/redis-cli.txt`, a transcript of redis-cli
//!   commands and their exact output, three times (through the leader, then through each
//!   follower), then checks what a transcript cannot hold: KEYS and SCAN (any order),
//!   HELLO, INFO, COMMAND, QUIT, TTLs through every node, FENCE, the size limits and the keyspace shared with
//!   the HTTP API. Every mismatch is collected, so one run reports them all.
//! - `redis_benchmark_*` runs `redis-benchmark` with pipelining and checks that every
//!   INCR was applied exactly once.
//! - `python_clients_*` runs `tests/clients/python_clients.py` (redis-py, RESP2 and
//!   RESP3, and py-consul, blocking queries included).
//! - `python_ttl*` runs `tests/clients/python_ttls.py` (redis-py's TTL commands, keys that
//!   expire on every node, and through a leader stop).
//! - `python_transactions*` runs `tests/clients/python_transactions.py` (redis-py's
//!   MULTI/EXEC pipelines, EXECABORT, DISCARD, and WATCH under contention).
//! - `*_with_tokens` run redis-cli (`-a`, `--user`/`--pass`) and the Python script's
//!   `--auth` checks (redis-py's `password=`, `username=`, RESP3's HELLO AUTH; py-consul's
//!   `token=` and `ACLPermissionDenied`) against a cluster with `[auth]`.
//!
//! A missing tool skips its test with a message saying how to install it, or fails it under
//! `SKIFF_REQUIRE_REAL_CLIENTS=1`, as the testkit's `real_clients` has it (the Python
//! interpreter is `SKIFF_PYTHON`, default `python3`).
//!
//! `redis_cli_transcript_matches_real_redis` (ignored; `cargo test -p skiff-kv --test
//! redis_clients -- --ignored`) replays the same transcript and checks, except what is
//! Skiff's own, against a real Redis 7 on 127.0.0.1:6379 (`SKIFF_COMPARE_REDIS_PORT`),
//! touching only `rc:*` and `pyval:*` keys: it shows the expected answers are Redis's.
//!
//! The clusters are the testkit's `KvCluster`s, on ports that never collide.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use skiff::NodeId;
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::KvCluster;
use skiff_testkit::real_clients;
/// How long one redis-cli invocation may take before it is killed.
const CLI_TIMEOUT: Duration = Duration::from_secs(20);
/// The documented limits (the defaults).
const MAX_KEY_BYTES: usize = 8 << 10;
const MAX_VALUE_BYTES: usize = 1 << 20;
/// The commands the listener implements, as COMMAND names them.
const COMMANDS: [&str; 40] = [
    "auth",
    "ping",
    "echo",
    "hello",
    "quit",
    "select",
    "get",
    "set",
    "del",
    "exists",
    "incr",
    "incrby",
    "decr",
    "decrby",
    "append",
    "strlen",
    "mget",
    "mset",
    "keys",
    "scan",
    "dbsize",
    "type",
    "ttl",
    "pttl",
    "flushdb",
    "flushall",
    "info",
    "command",
    "config",
    "client",
    "setex",
    "psetex",
    "getex",
    "expire",
    "pexpire",
    "expireat",
    "pexpireat",
    "expiretime",
    "pexpiretime",
    "persist",
];

// ---------------------------------------------------------------------------------------
// The tools: present, or the test is skipped (or fails, when they are required).

/// A program of Debian's `redis-tools`: its version, or why it cannot run.
fn redis_tool(program: &str) -> Result<String, String> {
    real_clients::program_version(program, "apt-get install redis-tools")
}

/// redis-py and py-consul in the interpreter: their versions, or why they cannot be used.
fn python_clients() -> Result<String, String> {
    real_clients::python_modules(&["redis", "consul"], "pip install redis py-consul")
}

// ---------------------------------------------------------------------------------------
// Running a program, with a deadline.

struct Output {
    /// The command line, for failure messages.
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `command` with `stdin` (or none) to completion; kills it and fails after `timeout`.
fn run(mut command: Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Output {
    let what = shorten(&format!("{command:?}").replace('"', ""));
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|error| panic!("{what}: cannot start: {error}"));
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("a stdin pipe");
        // An early exit closes the pipe: that shows in the output, not here.
        std::thread::spawn(move || drop(pipe.write_all(&bytes)))
    });
    let stdout = read_all(child.stdout.take().expect("a stdout pipe"));
    let stderr = read_all(child.stderr.take().expect("a stderr pipe"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // Our own child, by its handle.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    if let Some(writer) = writer {
        writer.join().expect("the stdin writer");
    }
    let stdout = stdout.join().expect("the stdout reader");
    let stderr = stderr.join().expect("the stderr reader");
    let Some(status) = status else {
        panic!("{what}: did not finish within {timeout:?}\nstdout:\n{stdout}\nstderr:\n{stderr}")
    };
    Output { what, status, stdout, stderr }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Long arguments (1 MiB values) make unreadable failure messages.
fn shorten(text: &str) -> String {
    if text.len() <= 300 {
        return text.to_string();
    }
    let mut end = 240;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...({} bytes)", &text[..end], text.len())
}

// ---------------------------------------------------------------------------------------
// The cluster.

/// Three servers in one tokio runtime, each with an HTTP and a Redis listener.
fn start(name: &str) -> KvCluster {
    KvCluster::start(ClusterFile::builder(name, 3).http().redis().build())
}

/// The nodes as Redis endpoints: the leader first, then the followers.
fn target(cluster: &KvCluster, label: &str) -> Target {
    let leader = cluster.leader();
    let mut order = vec![leader];
    order.extend(cluster.others(leader));
    let nodes = order
        .into_iter()
        .map(|id| {
            let role = if id == leader { "leader" } else { "follower" };
            Endpoint { name: format!("{id} ({role})"), id: Some(id), address: cluster.redis_address(id) }
        })
        .collect();
    Target { label: label.to_string(), nodes, skiff: true }
}

// ---------------------------------------------------------------------------------------
// redis-cli.

/// One Redis listener: a Skiff node, or a real Redis.
#[derive(Clone)]
struct Endpoint {
    /// "n2 (follower)", for messages.
    name: String,
    id: Option<NodeId>,
    address: SocketAddr,
}

/// What the checks run against: Skiff's three nodes (leader first), or one real Redis.
struct Target {
    label: String,
    nodes: Vec<Endpoint>,
    /// False for a real Redis: only what Redis answers alike is checked.
    skiff: bool,
}

impl Target {
    /// The nodes starting at the `turn`-th: the transcript's @1, @2, @3 for one replay.
    fn rotated(&self, turn: usize) -> Vec<Endpoint> {
        let count = self.nodes.len();
        (0..3).map(|slot| self.nodes[(turn + slot) % count].clone()).collect()
    }

    fn node(&self, index: usize) -> &Endpoint {
        &self.nodes[index % self.nodes.len()]
    }
}

/// `redis-cli -h HOST -p PORT --no-raw ARGS`, with `stdin` (one command per line) or none.
fn redis_cli_output(endpoint: &Endpoint, args: &[&str], stdin: Option<Vec<u8>>) -> Output {
    let mut command = Command::new("redis-cli");
    command.arg("-h").arg(endpoint.address.ip().to_string()).arg("-p").arg(endpoint.address.port().to_string());
    command.arg("--no-raw").args(args);
    run(command, stdin, CLI_TIMEOUT)
}

/// redis-cli's stdout, which must come with exit status 0 and nothing on stderr.
fn cli_result(endpoint: &Endpoint, args: &[&str], stdin: Option<Vec<u8>>) -> Result<String, String> {
    let output = redis_cli_output(endpoint, args, stdin);
    if !output.status.success() || !output.stderr.trim().is_empty() {
        return Err(format!(
            "{} through {}: {}\nstdout: {:?}\nstderr: {:?}",
            output.what,
            endpoint.name,
            output.status,
            shorten(&output.stdout),
            shorten(&output.stderr)
        ));
    }
    Ok(output.stdout)
}

fn cli(endpoint: &Endpoint, args: &[&str]) -> String {
    cli_result(endpoint, args, None).unwrap_or_else(|error| panic!("{error}"))
}

/// Several commands, one per line, on one connection.
fn cli_piped(endpoint: &Endpoint, options: &[&str], lines: &[&str]) -> String {
    let stdin: String = lines.iter().map(|line| format!("{line}\n")).collect();
    cli_result(endpoint, options, Some(stdin.into_bytes())).unwrap_or_else(|error| panic!("{error}"))
}

/// The failures found so far: every check records instead of stopping, so one run shows them all.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, ok: bool, message: impl FnOnce() -> String) {
        if !ok {
            let message = message();
            eprintln!("MISMATCH: {message}\n");
            self.0.push(message);
        }
    }

    /// redis-cli's output for `what` must be `expected` (exactly, trailing spaces aside).
    fn output(&mut self, what: &str, endpoint: &Endpoint, expected: &str, got: &str) {
        let expected: Vec<String> = expected.lines().map(str::to_string).collect();
        self.lines(what, endpoint, &expected, got);
    }

    /// As [`Failures::output`], with the transcript's "~ GLOB" and "..." lines.
    fn lines(&mut self, what: &str, endpoint: &Endpoint, expected: &[String], got: &str) {
        self.check(transcript_match(expected, got), || {
            format!(
                "`{what}` through {}\n  expected:\n{}\n  got:\n{}",
                endpoint.name,
                indent(&expected.join("\n")),
                indent(&shorten(got.trim_end_matches('\n')))
            )
        });
    }

    fn finish(self, test: &str) {
        assert!(self.0.is_empty(), "{test}: {} mismatches:\n\n{}", self.0.len(), self.0.join("\n\n"));
    }
}

fn indent(text: &str) -> String {
    if text.is_empty() {
        return "    (nothing)".to_string();
    }
    text.lines().map(|line| format!("    {line}")).collect::<Vec<_>>().join("\n")
}

/// Whether redis-cli's stdout `got` matches the expected lines: equal line by line
/// (trailing spaces aside), "~ GLOB" lines by glob (`*` is any text), and a last line
/// "..." allows any further lines.
fn transcript_match(expected: &[String], got: &str) -> bool {
    let got: Vec<&str> = got.lines().map(|line| line.trim_end_matches([' ', '\r'])).collect();
    let (expected, open) = match expected.split_last() {
        Some((last, rest)) if last == "..." => (rest, true),
        _ => (expected, false),
    };
    if got.len() < expected.len() || (!open && got.len() != expected.len()) {
        return false;
    }
    expected.iter().zip(&got).all(|(expected, got)| match expected.strip_prefix("~ ") {
        Some(pattern) => glob(pattern.as_bytes(), got.as_bytes()),
        None => expected.trim_end_matches(' ') == *got,
    })
}

/// `*` matches any run of bytes; everything else matches itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some((byte, rest)) => text.first() == Some(byte) && glob(rest, &text[1..]),
    }
}

/// How redis-cli shows a string in its terminal style (hiredis's `sdscatrepr`).
fn repr(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &byte in bytes {
        match byte {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x07 => out.push_str("\\a"),
            0x08 => out.push_str("\\b"),
            0x20..=0x7e => out.push(byte as char),
            _ => out.push_str(&format!("\\x{byte:02x}")),
        }
    }
    out.push('"');
    out
}

/// The strings of a terminal-style array of strings (`1) "a"` lines, or `(empty array)`).
fn string_list(output: &str) -> Option<Vec<String>> {
    let lines: Vec<&str> = output.lines().collect();
    if lines == ["(empty array)"] {
        return Some(Vec::new());
    }
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let rest = line.trim_start().strip_prefix(&format!("{}) ", i + 1))?;
            unquote(rest)
        })
        .collect()
}

/// `"text"` as redis-cli shows it, decoded (the escapes of [`repr`]).
fn unquote(shown: &str) -> Option<String> {
    let inner = shown.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = Vec::new();
    let mut bytes = inner.bytes();
    while let Some(byte) = bytes.next() {
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        match bytes.next()? {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'x' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            other => out.push(other),
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

// ---------------------------------------------------------------------------------------
// The transcript.

enum Step {
    /// "@1".."@3": the following commands go to this slot of the rotation.
    Node(usize),
    Run(Case),
}

struct Case {
    /// 1-based line of the "> ARGS" line.
    line: usize,
    skiff_only: bool,
    args: Vec<String>,
    stdin: Vec<String>,
    expected: Vec<String>,
}

fn transcript_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/redis-cli.txt")
}

fn parse_transcript(text: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut stdin = Vec::new();
    let mut lines = text.lines().enumerate().map(|(i, line)| (i + 1, line)).peekable();
    while let Some((number, line)) = lines.next() {
        let command = match line {
            "" => continue,
            _ if line.starts_with('#') => continue,
            _ if line.starts_with('@') => {
                let slot: usize = line[1..].parse().unwrap_or_else(|_| panic!("transcript line {number}: {line:?}"));
                assert!((1..=3).contains(&slot), "transcript line {number}: only @1, @2 and @3");
                steps.push(Step::Node(slot - 1));
                continue;
            }
            _ if line == "<" || line.starts_with("< ") => {
                stdin.push(line.get(2..).unwrap_or("").to_string());
                continue;
            }
            _ => line,
        };
        let (skiff_only, args) = if let Some(args) = command.strip_prefix("skiff>") {
            (true, args)
        } else if let Some(args) = command.strip_prefix('>') {
            (false, args)
        } else {
            panic!("transcript line {number}: expected a command (\"> ...\"), got {line:?}");
        };
        let mut expected = Vec::new();
        while let Some((_, line)) = lines.next_if(|(_, line)| !line.is_empty()) {
            expected.push(line.to_string());
        }
        let stdin = std::mem::take(&mut stdin);
        steps.push(Step::Run(Case { line: number, skiff_only, args: split_args(args.trim()), stdin, expected }));
    }
    assert!(stdin.is_empty(), "transcript: \"<\" lines at the end, with no command after them");
    steps
}

/// Words as a shell splits them: whitespace separates, "double quotes" (with `\"` and `\\`)
/// and 'single quotes' group.
fn split_args(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return words;
        }
        let mut word = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
            match c {
                '"' => {
                    while let Some(c) = chars.next() {
                        match c {
                            '"' => break,
                            '\\' => word.push(chars.next().expect("an escaped character")),
                            _ => word.push(c),
                        }
                    }
                }
                '\'' => word.extend(chars.by_ref().take_while(|&c| c != '\'')),
                _ => word.push(c),
            }
        }
        words.push(word);
    }
}

/// Replays the transcript with @1, @2, @3 the nodes of `rotation`.
fn replay(steps: &[Step], rotation: &[Endpoint], skiff: bool, label: &str, failures: &mut Failures) -> usize {
    let mut slot = 0;
    let mut ran = 0;
    for step in steps {
        let case = match step {
            Step::Node(next) => {
                slot = *next;
                continue;
            }
            Step::Run(case) if case.skiff_only && !skiff => continue,
            Step::Run(case) => case,
        };
        let endpoint = &rotation[slot];
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let stdin = (!case.stdin.is_empty())
            .then(|| case.stdin.iter().map(|line| format!("{line}\n")).collect::<String>().into_bytes());
        let what = if case.stdin.is_empty() {
            format!("{label}, transcript line {}: {}", case.line, case.args.join(" "))
        } else {
            format!("{label}, transcript line {}: {} < {:?}", case.line, case.args.join(" "), case.stdin)
        };
        ran += 1;
        match cli_result(endpoint, &args, stdin) {
            Ok(got) => failures.lines(&what, endpoint, &case.expected, &got),
            Err(error) => failures.check(false, || format!("{what}: {error}")),
        }
    }
    ran
}

// ---------------------------------------------------------------------------------------
// Checks beyond the transcript. Each takes a `Target`, so those that hold for Redis too run
// against a real Redis as well.

/// KEYS and SCAN with Redis globs, through every node: the matches in any order.
fn check_keys_and_scan(target: &Target, failures: &mut Failures) {
    let keys = [
        "hello",
        "hallo",
        "hxllo",
        "hllo",
        "heeeello",
        "h*llo",
        "a[b]",
        "x-1",
        "x-2",
        "x-3",
        "X-1",
        "h?llo",
        "back\\slash",
    ];
    let writer = target.node(1);
    let mut mset = vec!["mset"];
    let names: Vec<String> = keys.iter().map(|key| format!("rc:g:{key}")).collect();
    for name in &names {
        mset.push(name);
        mset.push("v");
    }
    failures.output("MSET of the glob keys", writer, "OK", &cli(writer, &mset));
    let cases: [(&str, &[&str]); 17] = [
        ("rc:g:h?llo", &["hello", "hallo", "hxllo", "h*llo", "h?llo"]),
        ("rc:g:h*llo", &["hello", "hallo", "hxllo", "hllo", "heeeello", "h*llo", "h?llo"]),
        ("rc:g:h[ae]llo", &["hello", "hallo"]),
        ("rc:g:h[^e]llo", &["hallo", "hxllo", "h*llo", "h?llo"]),
        ("rc:g:h[a-b]llo", &["hallo"]),
        ("rc:g:h\\*llo", &["h*llo"]),
        ("rc:g:h\\?llo", &["h?llo"]),
        ("rc:g:a\\[b\\]", &["a[b]"]),
        ("rc:g:x-[1-2]", &["x-1", "x-2"]),
        ("rc:g:[xX]-1", &["x-1", "X-1"]),
        ("rc:g:back\\\\slash", &["back\\slash"]),
        ("rc:g:*", &keys),
        ("rc:G:*", &[]),
        ("rc:g:hel", &[]),
        ("rc:g:x-[3-2]", &["x-2", "x-3"]),
        ("rc:g:h[^a-e]llo", &["hxllo", "h*llo", "h?llo"]),
        ("rc:g:h?*llo", &["hello", "hallo", "hxllo", "heeeello", "h*llo", "h?llo"]),
    ];
    for (i, (pattern, expected)) in cases.iter().enumerate() {
        let endpoint = target.node(i);
        let expected: BTreeSet<String> = expected.iter().map(|key| format!("rc:g:{key}")).collect();
        let output = cli(endpoint, &["keys", pattern]);
        let got = string_list(&output).map(|list| list.into_iter().collect::<BTreeSet<String>>());
        failures.check(got.as_ref() == Some(&expected), || {
            format!(
                "`KEYS {pattern}` through {}: expected {expected:?} in any order, got:\n{}",
                endpoint.name,
                indent(&output)
            )
        });
        // The same through SCAN, a few keys at a time.
        let got = scan_all(endpoint, pattern, 2 + i % 3);
        failures.check(got.as_ref() == Ok(&expected), || {
            format!(
                "`SCAN ... MATCH {pattern} COUNT {}` through {}: expected {expected:?}, got {got:?}",
                2 + i % 3,
                endpoint.name
            )
        });
    }
    let deleted = cli(target.node(2), &[&["del"], &names.iter().map(String::as_str).collect::<Vec<_>>()[..]].concat());
    failures.output("DEL of the glob keys", target.node(2), &format!("(integer) {}", keys.len()), &deleted);
}

/// SCAN from cursor 0 until it is 0 again: every key seen, or what went wrong.
fn scan_all(endpoint: &Endpoint, pattern: &str, count: usize) -> Result<BTreeSet<String>, String> {
    let mut cursor = "0".to_string();
    let mut seen = BTreeSet::new();
    for _ in 0..1000 {
        let count = count.to_string();
        let output = cli(endpoint, &["scan", &cursor, "match", pattern, "count", &count]);
        let mut lines = output.lines();
        let next = lines.next().and_then(|line| line.strip_prefix("1) ")).and_then(unquote);
        let Some(next) = next.filter(|next| next.parse::<u64>().is_ok()) else {
            return Err(format!("SCAN {cursor}: no cursor in {output:?}"));
        };
        let rest: Vec<&str> = lines.collect();
        let keys = match rest.first().and_then(|line| line.strip_prefix("2) ")) {
            Some("(empty array)") if rest.len() == 1 => Vec::new(),
            Some(first) => {
                let list: Vec<String> = std::iter::once(first)
                    .chain(rest[1..].iter().map(|line| line.trim_start()))
                    .map(str::to_string)
                    .collect();
                string_list(&list.join("\n")).ok_or_else(|| format!("SCAN {cursor}: keys in {output:?}"))?
            }
            None => return Err(format!("SCAN {cursor}: no keys array in {output:?}")),
        };
        seen.extend(keys);
        if next == "0" {
            return Ok(seen);
        }
        cursor = next;
    }
    Err(format!("SCAN MATCH {pattern}: no end after 1000 calls"))
}

/// HELLO: a RESP3 map with proto 3 (and the id CLIENT ID says), RESP2 a flat array.
fn check_hello(target: &Target, failures: &mut Failures) {
    for (i, endpoint) in target.nodes.iter().enumerate() {
        let output = cli_piped(endpoint, &[], &["hello 3", "client id", "hello 2", "ping"]);
        let lines: Vec<&str> = output.lines().collect();
        let map_end = lines.iter().position(|line| line.starts_with("(integer)")).unwrap_or(lines.len());
        let map = &lines[..map_end];
        let field = |name: &str| -> Option<&str> {
            let prefix = format!("# \"{name}\" => ");
            map.iter().find_map(|line| line.find(&prefix).map(|at| &line[at + prefix.len()..]))
        };
        let client_id = lines.get(map_end).copied();
        failures.check(
            map.first().is_some_and(|line| line.starts_with("1# "))
                && field("proto") == Some("(integer) 3")
                && field("server").is_some()
                && field("version").is_some()
                && field("id") == client_id,
            || {
                format!(
                    "`HELLO 3` then `CLIENT ID` through {}: expected a map with \"server\", \"version\", \"proto\" => \
                     (integer) 3 and the \"id\" CLIENT ID answers, got:\n{}",
                    endpoint.name,
                    indent(&output)
                )
            },
        );
        let rest = &lines[(map_end + 1).min(lines.len())..];
        let proto2 = rest.windows(2).any(|pair| pair[0].ends_with(") \"proto\"") && pair[1].ends_with(") (integer) 2"));
        failures.check(proto2 && rest.last() == Some(&"PONG"), || {
            let rest = indent(&rest.join("\n"));
            format!(
                "`HELLO 2` then `PING` through {}: expected a flat array with \"proto\", (integer) 2, then PONG, \
                 got:\n{rest}",
                endpoint.name
            )
        });
        let version = if i == 0 { "hello" } else { "hello 2" };
        let output = cli_piped(endpoint, &[], &[version]);
        failures.check(output.lines().any(|line| line.ends_with(") \"proto\"")) && !output.contains('#'), || {
            format!("`{version}` through {}: expected a RESP2 array, got:\n{}", endpoint.name, indent(&output))
        });
        let output = cli(endpoint, &["hello", "4"]);
        failures.check(output.starts_with("(error) "), || {
            format!("`HELLO 4` through {}: expected an error, got:\n{}", endpoint.name, indent(&output))
        });
    }
}

/// COMMAND COUNT, COMMAND (one entry per command, every implemented command there) and
/// COMMAND INFO.
fn check_command(target: &Target, failures: &mut Failures) {
    let endpoint = target.node(1);
    let output = cli(endpoint, &["command", "count"]);
    let count = output.trim().strip_prefix("(integer) ").and_then(|count| count.parse::<usize>().ok());
    failures.check(count.is_some_and(|count| count >= COMMANDS.len()), || {
        format!("`COMMAND COUNT` through {}: expected at least {}, got {output:?}", endpoint.name, COMMANDS.len())
    });
    let all = cli(target.node(2), &["command"]);
    if let Some(count) = count {
        // Terminal style numbers the top-level entries right-aligned to the widest number.
        let width = count.to_string().len();
        let top = |k: usize| all.lines().any(|line| line.starts_with(&format!("{k:>width$}) ")));
        let missing: Vec<usize> = (1..=count).filter(|&k| !top(k)).collect();
        failures.check(missing.is_empty() && !top(count + 1), || {
            format!(
                "`COMMAND` through {}: expected {count} entries (COMMAND COUNT); entries missing: {missing:?}",
                target.node(2).name
            )
        });
    }
    if target.skiff {
        let absent: Vec<&&str> = COMMANDS.iter().filter(|name| !all.contains(&format!(") \"{name}\""))).collect();
        failures
            .check(absent.is_empty(), || format!("`COMMAND` through {}: no entry for {absent:?}", target.node(2).name));
    }
    for (name, arity) in [("get", 2), ("set", -3), ("mget", -2), ("ping", -1)] {
        let output = cli(endpoint, &["command", "info", name]);
        let lines: Vec<&str> = output.lines().collect();
        let ok = lines.len() >= 2
            && glob(format!("1)*1) \"{name}\"").as_bytes(), lines[0].as_bytes())
            && lines[1].trim_start() == format!("2) (integer) {arity}");
        failures.check(ok, || {
            format!(
                "`COMMAND INFO {name}` through {}: expected name {name:?} and arity {arity} first, got:\n{}",
                endpoint.name,
                indent(&output)
            )
        });
    }
}

/// QUIT answers +OK and closes the connection: a command pipelined after it is not answered.
fn check_quit(target: &Target, failures: &mut Failures) {
    for endpoint in &target.nodes {
        let mut stream =
            TcpStream::connect(endpoint.address).unwrap_or_else(|error| panic!("{}: {error}", endpoint.name));
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout");
        stream.write_all(b"PING\r\nQUIT\r\nPING\r\n").expect("a write");
        let mut answer = Vec::new();
        let result = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        failures.check(result.is_ok() && answer == "+PONG\r\n+OK\r\n", || {
            format!(
                "`PING`, `QUIT`, `PING` on one connection to {}: expected +PONG, +OK and the connection closed, \
                 got {answer:?} ({result:?})",
                endpoint.name
            )
        });
    }
}

/// A key with a TTL written through one node has that TTL through every node, and SET's
/// `FENCE` (Skiff's) refuses a token that holds no lock, writing nothing.
fn check_ttls(target: &Target, failures: &mut Failures) {
    let writer = target.node(0);
    failures.output("SET rc:ttl x EX 1000", writer, "OK", &cli(writer, &["set", "rc:ttl", "x", "ex", "1000"]));
    for endpoint in &target.nodes {
        // Rounded to the nearest second: 1000 within 500 ms of the write (999 on a slow day).
        let integer = |output: &str| output.trim().strip_prefix("(integer) ").and_then(|n| n.parse::<i64>().ok());
        let ttl = cli(endpoint, &["ttl", "rc:ttl"]);
        failures.check(integer(&ttl).is_some_and(|s| (999..=1000).contains(&s)), || {
            format!("`TTL rc:ttl` through {}: expected 1000, got {ttl:?}", endpoint.name)
        });
        let pttl = cli(endpoint, &["pttl", "rc:ttl"]);
        failures.check(integer(&pttl).is_some_and(|ms| (990_000..=1_000_000).contains(&ms)), || {
            format!("`PTTL rc:ttl` through {}: expected about 1000000, got {pttl:?}", endpoint.name)
        });
    }
    let endpoint = target.node(1);
    let output = cli(endpoint, &["set", "rc:ttl", "y", "fence", "123456789"]);
    failures.check(output.starts_with("(error) ERR fenced"), || {
        format!(
            "`SET rc:ttl y FENCE 123456789` through {}: expected (error) ERR fenced..., got {output:?}",
            endpoint.name
        )
    });
    failures.output("GET rc:ttl after the fenced SET", endpoint, "\"x\"", &cli(endpoint, &["get", "rc:ttl"]));
    cli(endpoint, &["del", "rc:ttl"]);
}

/// CLIENT SETINFO, which clients send on connecting (Redis 7.2 has it, 7.0 does not).
fn check_client_setinfo(target: &Target, failures: &mut Failures) {
    let endpoint = target.node(2);
    let output = cli_piped(endpoint, &[], &["client setinfo lib-name skiff-tests", "client setinfo lib-ver 1.0"]);
    failures.output("CLIENT SETINFO lib-name skiff-tests, CLIENT SETINFO lib-ver 1.0", endpoint, "OK\nOK", &output);
}

/// Whether a refusal mentions the size limit.
fn mentions_limit(output: &str, limit: usize) -> bool {
    let lower = output.to_lowercase();
    output.starts_with("(error) ERR ") && (lower.contains("limit") || lower.contains(&limit.to_string()))
}

/// Keys up to 8 KiB and values up to 1 MiB; larger ones get an ERR naming the limit, and
/// the connection goes on.
fn check_limits(cluster: &KvCluster, target: &Target, failures: &mut Failures) {
    let (leader, f1, f2) = (target.node(0), target.node(1), target.node(2));
    let largest = vec![b'y'; MAX_VALUE_BYTES];
    let output =
        cli_result(f1, &["-x", "set", "rc:big"], Some(largest.clone())).unwrap_or_else(|error| panic!("{error}"));
    failures.output("redis-cli -x SET rc:big <1 MiB>", f1, "OK", &output);
    let output = cli(f2, &["strlen", "rc:big"]);
    failures.output("STRLEN rc:big", f2, &format!("(integer) {MAX_VALUE_BYTES}"), &output);
    let over = format!("set rc:big2 {}", "z".repeat(MAX_VALUE_BYTES + 1));
    let output = cli_piped(f2, &[], &[&over, "get rc:big2", "ping", "strlen rc:big"]);
    let lines: Vec<&str> = output.lines().collect();
    failures.check(
        lines.len() == 4
            && mentions_limit(lines[0], MAX_VALUE_BYTES)
            && lines[1..] == ["(nil)", "PONG", &format!("(integer) {MAX_VALUE_BYTES}")],
        || {
            format!(
                "`SET rc:big2 <1 MiB + 1>`, `GET rc:big2`, `PING`, `STRLEN rc:big` on one connection through {}: \
                 expected (error) ERR ... limit, (nil), PONG, (integer) {MAX_VALUE_BYTES}, got:\n{}",
                f2.name,
                indent(&shorten(&output))
            )
        },
    );
    if let Some(id) = leader.id {
        let got = cluster.client.raw(id, "rc:big");
        failures.check(got.as_ref() == Some(&largest), || {
            format!(
                "GET /v1/kv/rc:big?raw through {id}: expected 1 MiB of 'y', got {:?} bytes",
                got.map(|value| value.len())
            )
        });
    }
    let key = "k".repeat(MAX_KEY_BYTES);
    failures.output("SET <8 KiB key>", leader, "OK", &cli(leader, &["set", &key, "v"]));
    failures.output("GET <8 KiB key>", f1, "\"v\"", &cli(f1, &["get", &key]));
    failures.output("DEL <8 KiB key>", f2, "(integer) 1", &cli(f2, &["del", &key]));
    let key = "k".repeat(MAX_KEY_BYTES + 1);
    let output = cli_piped(f1, &[], &[&format!("set {key} v"), "ping"]);
    let lines: Vec<&str> = output.lines().collect();
    failures.check(lines.len() == 2 && mentions_limit(lines[0], MAX_KEY_BYTES) && lines[1] == "PONG", || {
        format!(
            "`SET <8 KiB + 1 key> v`, `PING` through {}: expected (error) ERR ... limit, PONG, got:\n{}",
            f1.name,
            indent(&shorten(&output))
        )
    });
    failures.output("DEL rc:big", leader, "(integer) 1", &cli(leader, &["del", "rc:big"]));
}

/// One keyspace: what redis-cli writes the HTTP API reads, on every node, and the other way round.
fn check_cross_protocol(cluster: &KvCluster, target: &Target, failures: &mut Failures) {
    let ids = cluster.ids();
    let (leader, f1, f2) = (target.node(0), target.node(1), target.node(2));
    failures.output("SET rc:x:cli", f1, "OK", &cli(f1, &["set", "rc:x:cli", "from redis-cli"]));
    for &id in &ids {
        let got = cluster.client.raw(id, "rc:x:cli");
        failures.check(got.as_deref() == Some(b"from redis-cli".as_slice()), || {
            format!("SET rc:x:cli through {} then GET /v1/kv/rc:x:cli?raw through {id}: got {got:?}", f1.name)
        });
    }
    let value: Vec<u8> = [b"\x00\xff\"quoted\"\\ \n\t".as_slice(), "é".as_bytes()].concat();
    cluster.client.set(ids[1], "rc:x:http", &value);
    for endpoint in &target.nodes {
        let output = cli(endpoint, &["get", "rc:x:http"]);
        failures.output("GET rc:x:http (written over HTTP)", endpoint, &repr(&value), &output);
    }
    cluster.client.set(ids[2], "rc:x:count", b"41");
    failures.output("INCR rc:x:count (41, written over HTTP)", f2, "(integer) 42", &cli(f2, &["incr", "rc:x:count"]));
    let got = cluster.client.raw(ids[0], "rc:x:count");
    failures
        .check(got.as_deref() == Some(b"42".as_slice()), || format!("GET /v1/kv/rc:x:count?raw after INCR: {got:?}"));
    failures.output("DEL rc:x:cli rc:x:count", leader, "(integer) 2", &cli(leader, &["del", "rc:x:cli", "rc:x:count"]));
    for &id in &ids {
        let got = cluster.client.raw(id, "rc:x:cli");
        failures.check(got.is_none(), || format!("GET /v1/kv/rc:x:cli?raw through {id} after DEL over Redis: {got:?}"));
    }
    cluster.client.remove(ids[0], "rc:x:http");
    for endpoint in &target.nodes {
        failures.output(
            "EXISTS rc:x:http (deleted over HTTP)",
            endpoint,
            "(integer) 0",
            &cli(endpoint, &["exists", "rc:x:http"]),
        );
    }
}

/// `redis-cli --pipe` (mass insertion: raw RESP on stdin, replies counted) through a
/// follower: every command answered, none an error, each applied once.
fn check_mass_insertion(target: &Target, failures: &mut Failures) {
    let (sets, incrs) = (5_000, 500);
    let mut protocol = Vec::new();
    let mut command = |args: &[&str]| {
        protocol.extend(format!("*{}\r\n", args.len()).into_bytes());
        for arg in args {
            protocol.extend(format!("${}\r\n{arg}\r\n", arg.len()).into_bytes());
        }
    };
    for i in 0..sets {
        command(&["SET", &format!("rc:mass:{i}"), &format!("value {i}")]);
        if i % 10 == 0 {
            command(&["INCR", "rc:mass-count"]);
        }
    }
    let endpoint = target.node(1);
    let output = redis_cli_output(endpoint, &["--pipe"], Some(protocol));
    let last = output.stdout.lines().last().unwrap_or("");
    let expected = format!("errors: 0, replies: {}", sets + incrs);
    failures.check(output.status.success() && last == expected, || {
        format!(
            "{} through {}: {}, expected a last line {expected:?}\nstdout:\n{}\nstderr:\n{}",
            output.what,
            endpoint.name,
            output.status,
            indent(&output.stdout),
            indent(&output.stderr)
        )
    });
    let reader = target.node(2);
    failures.output(
        "GET rc:mass-count after --pipe",
        reader,
        &format!("\"{incrs}\""),
        &cli(reader, &["get", "rc:mass-count"]),
    );
    let output = cli(reader, &["mget", "rc:mass:0", "rc:mass:4999"]);
    failures.output("MGET rc:mass:0 rc:mass:4999 after --pipe", reader, "1) \"value 0\"\n2) \"value 4999\"", &output);
    failures.output("DBSIZE after --pipe", reader, &format!("(integer) {}", sets + 1), &cli(reader, &["dbsize"]));
    failures.output("FLUSHDB after --pipe", target.node(0), "OK", &cli(target.node(0), &["flushdb"]));
}

/// INFO on every node: the sections, the roles and the Raft fields, which agree with
/// `/v1/skiff/status`; the keyspace line counts the keys.
fn check_info(cluster: &KvCluster, target: &Target, failures: &mut Failures) {
    let leader = cluster.leader();
    let keys = ["rc:i:1", "rc:i:2", "rc:i:3"];
    failures.output(
        "MSET rc:i:*",
        target.node(0),
        "OK",
        &cli(target.node(0), &["mset", keys[0], "1", keys[1], "2", keys[2], "3"]),
    );
    for endpoint in &target.nodes {
        let id = endpoint.id.expect("a Skiff node");
        let output = cli(endpoint, &["info"]);
        let fields: BTreeMap<&str, &str> =
            output.lines().filter_map(|line| line.trim_end_matches('\r').split_once(':')).collect();
        let sections: Vec<&str> =
            output.lines().filter_map(|line| line.trim_end_matches('\r').strip_prefix("# ")).collect();
        for section in ["Server", "Clients", "Replication", "Keyspace"] {
            failures.check(sections.contains(&section), || {
                format!("`INFO` through {}: no \"# {section}\" in sections {sections:?}", endpoint.name)
            });
        }
        let status = cluster.client.status(id);
        let role = if id == leader { "master" } else { "slave" };
        let raft_role = if id == leader { "leader" } else { "follower" };
        let expected = [
            ("role", role.to_string()),
            ("raft_role", raft_role.to_string()),
            ("raft_leader", leader.to_string()),
            ("raft_term", status["term"].to_string()),
        ];
        for (name, value) in expected {
            let got = fields.get(name).copied();
            failures.check(got == Some(value.as_str()), || {
                format!("`INFO` through {}: {name}: expected {value:?}, got {got:?}", endpoint.name)
            });
        }
        let commit = fields.get("raft_commit_index").and_then(|index| index.parse::<u64>().ok());
        failures.check(commit.is_some_and(|commit| commit >= 1), || {
            format!(
                "`INFO` through {}: raft_commit_index: expected a number >= 1, got {:?}",
                endpoint.name,
                fields.get("raft_commit_index")
            )
        });
        failures.check(fields.get("redis_version").is_some_and(|version| !version.is_empty()), || {
            format!("`INFO` through {}: no redis_version", endpoint.name)
        });
        check_info_sections(endpoint, failures);
    }
    let output = cli(target.node(1), &["del", keys[0], keys[1], keys[2]]);
    failures.output("DEL rc:i:*", target.node(1), "(integer) 3", &output);
}

/// `INFO keyspace` counts the three keys; `INFO <section>` gives that section alone.
fn check_info_sections(endpoint: &Endpoint, failures: &mut Failures) {
    let keyspace = cli(endpoint, &["info", "keyspace"]);
    let lines: Vec<&str> =
        keyspace.lines().map(|line| line.trim_end_matches('\r')).filter(|line| !line.is_empty()).collect();
    failures.check(lines == ["# Keyspace", "db0:keys=3,expires=0,avg_ttl=0"], || {
        format!(
            "`INFO keyspace` through {}: expected # Keyspace, db0:keys=3,expires=0,avg_ttl=0, got {lines:?}",
            endpoint.name
        )
    });
    for (section, header, field) in [
        ("server", "# Server", "redis_version:"),
        ("replication", "# Replication", "role:"),
        ("clients", "# Clients", ""),
    ] {
        let output = cli(endpoint, &["info", section]);
        let lines: Vec<&str> =
            output.lines().map(|line| line.trim_end_matches('\r')).filter(|line| !line.is_empty()).collect();
        let ok = lines.first() == Some(&header)
            && lines.iter().all(|line| !line.starts_with("# ") || *line == header)
            && lines.iter().any(|line| line.starts_with(field));
        failures.check(ok, || {
            format!("`INFO {section}` through {}: expected only {header} with {field}..., got {lines:?}", endpoint.name)
        });
    }
}

// ---------------------------------------------------------------------------------------
// The tests.

#[test]
fn redis_cli_commands_through_every_node() {
    let test = "redis_cli_commands_through_every_node";
    if !real_clients::present(test, &[redis_tool("redis-cli")]) {
        return;
    }
    let text = std::fs::read_to_string(transcript_path()).expect("tests/clients/redis-cli.txt");
    let steps = parse_transcript(&text);
    let cluster = start("redis-cli");
    let target = target(&cluster, "skiff");
    let mut failures = Failures::default();
    let started = Instant::now();
    for turn in 0..3 {
        let rotation = target.rotated(turn);
        let names: Vec<&str> = rotation.iter().map(|endpoint| endpoint.name.as_str()).collect();
        let label = format!("replay {} (@1 {}, @2 {}, @3 {})", turn + 1, names[0], names[1], names[2]);
        let ran = replay(&steps, &rotation, true, &label, &mut failures);
        eprintln!("{test}: {label}: {ran} commands, {} ms so far", started.elapsed().as_millis());
    }
    check_keys_and_scan(&target, &mut failures);
    check_hello(&target, &mut failures);
    check_command(&target, &mut failures);
    check_quit(&target, &mut failures);
    check_ttls(&target, &mut failures);
    check_client_setinfo(&target, &mut failures);
    check_limits(&cluster, &target, &mut failures);
    check_cross_protocol(&cluster, &target, &mut failures);
    check_mass_insertion(&target, &mut failures);
    check_info(&cluster, &target, &mut failures);
    let leftover = cli(target.node(0), &["dbsize"]);
    failures.output("DBSIZE at the end", target.node(0), "(integer) 0", &leftover);
    eprintln!("{test}: done in {} ms", started.elapsed().as_millis());
    failures.finish(test);
    cluster.shutdown();
}

/// One `redis-benchmark -q` run: the requests per second of each test it reports.
fn benchmark(endpoint: &Endpoint, requests: usize) -> BTreeMap<String, f64> {
    let mut command = Command::new("redis-benchmark");
    command.arg("-h").arg(endpoint.address.ip().to_string()).arg("-p").arg(endpoint.address.port().to_string());
    // redis-benchmark 7 stops at the first error reply, printing it.
    command.args(["-t", "set,get,incr", "-n", &requests.to_string(), "-c", "16", "-P", "8", "-q"]);
    let output = run(command, None, Duration::from_secs(120));
    let transcript =
        format!("{} through {}\nstdout:\n{}\nstderr:\n{}", output.what, endpoint.name, output.stdout, output.stderr);
    assert!(output.status.success(), "{}: {}\n{transcript}", output.what, output.status);
    // Progress lines end in \r, results in \n.
    let lines: Vec<&str> = output.stdout.split(['\r', '\n']).chain(output.stderr.lines()).map(str::trim).collect();
    let errors: Vec<&&str> = lines
        .iter()
        .filter(|line| ["error", "warning", "could not", "err "].iter().any(|word| line.to_lowercase().contains(word)))
        .collect();
    assert!(errors.is_empty(), "redis-benchmark reported errors: {errors:?}\n{transcript}");
    let mut rates = BTreeMap::new();
    for line in &lines {
        if let Some((test, rest)) = line.split_once(": ")
            && let Some((rate, _)) = rest.split_once(" requests per second")
        {
            let rate: f64 = rate.parse().unwrap_or_else(|_| panic!("redis-benchmark: a rate {rate:?} in {line:?}"));
            rates.insert(test.to_string(), rate);
        }
    }
    let tests: Vec<&str> = rates.keys().map(String::as_str).collect();
    assert_eq!(tests, ["GET", "INCR", "SET"], "redis-benchmark: the tests that finished\n{transcript}");
    rates
}

#[test]
fn redis_benchmark_pipelined_writes_apply_exactly_once() {
    let test = "redis_benchmark_pipelined_writes_apply_exactly_once";
    if !real_clients::present(test, &[redis_tool("redis-benchmark"), redis_tool("redis-cli")]) {
        return;
    }
    let cluster = start("redis-benchmark");
    let target = target(&cluster, "skiff");
    let mut expected_count = 0;
    for (endpoint, requests) in [(target.node(0), 20_000), (target.node(1), 4_000)] {
        let started = Instant::now();
        let rates = benchmark(endpoint, requests);
        expected_count += requests;
        let rates: Vec<String> = rates.iter().map(|(test, rate)| format!("{test} {rate:.0}/s")).collect();
        eprintln!(
            "{test}: -n {requests} -c 16 -P 8 through {}: {} ({} ms)",
            endpoint.name,
            rates.join(", "),
            started.elapsed().as_millis()
        );
        // Each INCR of `counter:__rand_int__` (one key without -r) applied exactly once.
        for reader in &target.nodes {
            let got = cli(reader, &["get", "counter:__rand_int__"]);
            assert_eq!(
                got.trim(),
                format!("\"{expected_count}\""),
                "GET counter:__rand_int__ through {} after {expected_count} INCRs",
                reader.name
            );
        }
    }
    let node = target.node(2);
    // SET's value: 3 random characters (-d 3).
    let got = cli(node, &["strlen", "key:__rand_int__"]);
    assert_eq!(got.trim(), "(integer) 3", "STRLEN key:__rand_int__ through {}", node.name);
    assert_eq!(cli(node, &["dbsize"]).trim(), "(integer) 2", "DBSIZE through {}", node.name);
    cluster.shutdown();
}

#[test]
fn python_clients_redis_py_and_py_consul() {
    let test = "python_clients_redis_py_and_py_consul";
    if !real_clients::present(test, &[python_clients()]) {
        return;
    }
    let cluster = start("redis-python");
    let target = target(&cluster, "skiff");
    // Leader first, so each session writes through the leader and reads through followers,
    // and the other way round.
    let redis: Vec<String> = target.nodes.iter().map(|endpoint| endpoint.address.to_string()).collect();
    let http: Vec<String> =
        target.nodes.iter().map(|endpoint| cluster.client.address(endpoint.id.expect("a node")).to_string()).collect();
    let output = run_python(&["--redis", &redis.join(","), "--http", &http.join(",")]);
    cluster.shutdown();
    check_python(test, &output);
}

/// The tokens of the `*_with_tokens` tests: admin (management) and app (reads and writes
/// `app/`, reads `shared/`).
const ADMIN_SECRET: &str = "admin-secret-0123456789";
const APP_SECRET: &str = "app-secret-0123456789abc";

/// Three servers with HTTP and Redis listeners that require the tokens above; the tokens
/// file lives in the returned directory.
fn start_with_tokens(name: &str) -> (KvCluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("tokens.toml");
    let tokens = format!(
        "[[token]]\nname = \"admin\"\nsecret = \"{ADMIN_SECRET}\"\nmanagement = true\n\n\
         [[token]]\nname = \"app\"\nsecret = \"{APP_SECRET}\"\nread = [\"shared/\"]\nwrite = [\"app/\"]\n"
    );
    std::fs::write(&path, tokens).expect("writing the tokens file");
    (KvCluster::start(ClusterFile::builder(name, 3).http().redis().auth(&path, ADMIN_SECRET).build()), dir)
}

#[test]
fn redis_cli_with_tokens() {
    let test = "redis_cli_with_tokens";
    if !real_clients::present(test, &[redis_tool("redis-cli")]) {
        return;
    }
    let (cluster, _dir) = start_with_tokens("redis-cli-tokens");
    let target = target(&cluster, "skiff");
    let mut failures = Failures::default();
    let (leader, follower) = (target.node(0), target.node(1));
    let admin = ["--no-auth-warning", "-a", ADMIN_SECRET];
    let app = ["--no-auth-warning", "-a", APP_SECRET];
    let app_by_name = ["--no-auth-warning", "--user", "app", "--pass", APP_SECRET];
    fn with<'a>(options: &[&'a str], command: &[&'a str]) -> Vec<&'a str> {
        [options, command].concat()
    }
    const NOPERM: &str = "(error) NOPERM this user has no permissions to access one of the keys used as arguments";
    let cases: Vec<(&Endpoint, Vec<&str>, &str)> = vec![
        (leader, vec!["set", "app/k", "v"], "(error) NOAUTH Authentication required."),
        (leader, vec!["ping"], "PONG"),
        (leader, with(&app, &["set", "app/k", "v"]), "OK"),
        (follower, with(&app_by_name, &["get", "app/k"]), "\"v\""),
        (follower, with(&app_by_name, &["set", "other/k", "v"]), NOPERM),
        (leader, with(&app, &["get", "other/k"]), NOPERM),
        (leader, with(&app, &["mset", "app/a", "1", "other/b", "2"]), NOPERM),
        (
            follower,
            with(&app, &["flushall"]),
            "(error) NOPERM User has no permissions to run the 'flushall' command (it needs a management token)",
        ),
        (follower, with(&admin, &["mget", "app/k", "app/a", "other/b"]), "1) \"v\"\n2) (nil)\n3) (nil)"),
        (follower, with(&admin, &["set", "other/k", "o"]), "OK"),
        (leader, with(&app, &["keys", "*"]), "1) \"app/k\""),
        (leader, with(&admin, &["dbsize"]), "(integer) 2"),
    ];
    for (endpoint, args, expected) in cases {
        let got = cli(endpoint, &args);
        failures.output(&args.join(" "), endpoint, expected, &got);
    }
    // A wrong password: redis-cli reports the failed AUTH, and the command gets NOAUTH.
    let output = redis_cli_output(leader, &["--no-auth-warning", "-a", "not-the-secret-0000", "get", "app/k"], None);
    let both = format!("{}{}", output.stdout, output.stderr);
    failures.check(both.contains("WRONGPASS invalid username-password pair") && both.contains("NOAUTH"), || {
        format!("redis-cli -a <wrong> get app/k: expected WRONGPASS then NOAUTH, got {both:?}")
    });
    failures.finish(test);
    cluster.shutdown();
}

#[test]
fn python_clients_with_tokens() {
    let test = "python_clients_with_tokens";
    if !real_clients::present(test, &[python_clients()]) {
        return;
    }
    let (cluster, _dir) = start_with_tokens("redis-python-tokens");
    let target = target(&cluster, "skiff");
    let redis: Vec<String> = target.nodes.iter().map(|endpoint| endpoint.address.to_string()).collect();
    let http: Vec<String> =
        target.nodes.iter().map(|endpoint| cluster.client.address(endpoint.id.expect("a node")).to_string()).collect();
    let auth = format!("{ADMIN_SECRET},app,{APP_SECRET}");
    let output = run_python(&["--redis", &redis.join(","), "--http", &http.join(","), "--auth", &auth]);
    cluster.shutdown();
    check_python(test, &output);
}

fn run_python(args: &[&str]) -> Output {
    run(python_script("python_clients.py", args), None, Duration::from_secs(120))
}

/// `tests/clients/<script> ARGS` with the Python interpreter.
fn python_script(script: &str, args: &[&str]) -> Command {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients").join(script);
    let mut command = Command::new(real_clients::python());
    command.arg(script).args(args);
    command
}

/// The nodes' Redis addresses, the leader first, comma-separated.
fn redis_addresses(target: &Target) -> String {
    target.nodes.iter().map(|endpoint| endpoint.address.to_string()).collect::<Vec<_>>().join(",")
}

/// redis-py's TTL checks (`tests/clients/python_ttls.py`): SET with EX, PX (NX), EXAT and
/// KEEPTTL, SETEX, PSETEX, GETEX, EXPIRE with NX/XX/GT/LT, EXPIRETIME, PERSIST, TTL, PTTL,
/// their errors and FENCE; then a key with a 1.5 s TTL is there through every node until
/// its TTL and gone through every node within half a second after it.
#[test]
fn python_ttls_answer_as_redis_and_expire_on_every_node() {
    let test = "python_ttls_answer_as_redis_and_expire_on_every_node";
    if !real_clients::present(test, &[python_clients()]) {
        return;
    }
    let cluster = start("redis-python-ttls");
    let target = target(&cluster, "skiff");
    let output =
        run(python_script("python_ttls.py", &["--redis", &redis_addresses(&target)]), None, Duration::from_secs(120));
    cluster.shutdown();
    check_python(test, &output);
}

/// redis-py's transactions (`tests/clients/python_transactions.py`): `pipeline(transaction=True)`
/// through every node, a run-time error inside EXEC, EXECABORT, DISCARD, the WATCH retry
/// recipe, and 4 clients incrementing one counter 50 times each through WATCH: exactly 200.
#[test]
fn python_transactions_are_all_or_nothing_and_watch_loses_no_update() {
    let test = "python_transactions_are_all_or_nothing_and_watch_loses_no_update";
    if !real_clients::present(test, &[python_clients()]) {
        return;
    }
    let cluster = start("redis-python-transactions");
    let target = target(&cluster, "skiff");
    let output = run(
        python_script("python_transactions.py", &["--redis", &redis_addresses(&target)]),
        None,
        Duration::from_secs(120),
    );
    cluster.shutdown();
    check_python(test, &output);
}

/// Issue 18's guarantee through a leader change, with redis-py: a key written with
/// `EX 2` through the leader, which is stopped 1.4 s later, stays on the survivors until
/// its TTL (not shortened) and is gone by its TTL + the longest election timeout + 0.5 s
/// (not restarted: a TTL restarted by the new leader would last until 3.4 s at least).
#[test]
fn python_ttl_through_a_leader_stop_is_neither_restarted_nor_shortened() {
    let test = "python_ttl_through_a_leader_stop_is_neither_restarted_nor_shortened";
    if !real_clients::present(test, &[python_clients()]) {
        return;
    }
    let mut cluster = start("redis-python-ttl-leader");
    let target = target(&cluster, "skiff");
    let leader = target.node(0).id.expect("a Skiff node");
    let raft = &cluster.config.raft;
    // An election timeout is drawn from [timeout, 2 * timeout) ticks.
    let election_ms = 2 * u64::from(raft.core.election_timeout_ticks) * raft.tick_ms;
    let mut command = python_script(
        "python_ttls.py",
        &["--redis", &redis_addresses(&target), "--leader-stop", "--election-ms", &election_ms.to_string()],
    );
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|error| panic!("{test}: cannot start python_ttls.py: {error}"));
    let mut stdin = child.stdin.take().expect("a stdin pipe");
    let stdout = child.stdout.take().expect("a stdout pipe");
    let stderr = read_all(child.stderr.take().expect("a stderr pipe"));
    // The script's lines, as they come: it asks for the leader's stop with one.
    let (lines, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut transcript = Vec::new();
    let mut stopped = false;
    loop {
        match receive.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if line == "stop-leader" && !stopped {
                    cluster.stop(leader);
                    stopped = true;
                    writeln!(stdin, "stopped").expect("telling the script the leader is stopped");
                    stdin.flush().expect("a flush");
                }
                transcript.push(line);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // Our own child, by its handle.
                let _ = child.kill();
                let _ = child.wait();
                panic!("{test}: python_ttls.py did not finish within 60 s:\n{}", transcript.join("\n"));
            }
        }
    }
    let status = child.wait().expect("waiting for python_ttls.py");
    let stderr = stderr.join().expect("the stderr reader");
    let shown = format!("stdout:\n{}\nstderr:\n{stderr}", transcript.join("\n"));
    eprintln!("{test}: {shown}");
    assert!(stopped, "{test}: the script never asked for the leader's stop\n{shown}");
    assert!(status.success(), "{test}: python_ttls.py failed ({status})\n{shown}");
    cluster.shutdown();
}

fn check_python(test: &str, output: &Output) {
    let shown = format!("stdout:\n{}\nstderr:\n{}", output.stdout, output.stderr);
    assert!(output.status.success(), "{test}: {} failed ({}):\n{shown}", output.what, output.status);
    eprintln!("{test}: {} checks passed", output.stdout.lines().filter(|line| line.starts_with("ok: ")).count());
    for line in output.stdout.lines().filter(|line| line.starts_with("info: ")) {
        eprintln!("{test}: {line}");
    }
}

/// The transcript and the checks that hold for Redis too, against a real Redis 7: the
/// expected answers are Redis's own. Touches only `rc:*` and `pyval:*` keys, and refuses to
/// run if some exist.
#[test]
#[ignore = "needs a real Redis 7 on 127.0.0.1:6379 (SKIFF_COMPARE_REDIS_PORT)"]
fn redis_cli_transcript_matches_real_redis() {
    let test = "redis_cli_transcript_matches_real_redis";
    if !real_clients::present(test, &[redis_tool("redis-cli")]) {
        return;
    }
    let port: u16 = std::env::var("SKIFF_COMPARE_REDIS_PORT").map_or(6379, |port| port.parse().expect("a port"));
    let endpoint =
        Endpoint { name: format!("redis on port {port}"), id: None, address: SocketAddr::from(([127, 0, 0, 1], port)) };
    let target = Target { label: "redis".to_string(), nodes: vec![endpoint.clone()], skiff: false };
    assert_eq!(cli(&endpoint, &["ping"]).trim(), "PONG", "a Redis on port {port}");
    assert_eq!(cli(&endpoint, &["keys", "rc:*"]).trim(), "(empty array)", "rc:* keys exist already: not touching them");

    /// Deletes the rc:* keys however the test ends.
    struct Cleanup(Endpoint);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let keys = string_list(&cli(&self.0, &["keys", "rc:*"])).unwrap_or_default();
            if !keys.is_empty() {
                let mut args = vec!["del"];
                args.extend(keys.iter().map(String::as_str));
                cli(&self.0, &args);
            }
        }
    }
    let _cleanup = Cleanup(endpoint.clone());

    let text = std::fs::read_to_string(transcript_path()).expect("tests/clients/redis-cli.txt");
    let mut failures = Failures::default();
    let ran = replay(&parse_transcript(&text), &target.rotated(0), false, &target.label, &mut failures);
    eprintln!("{test}: {ran} transcript commands");
    check_keys_and_scan(&target, &mut failures);
    check_hello(&target, &mut failures);
    check_command(&target, &mut failures);
    check_quit(&target, &mut failures);
    if real_clients::present(test, &[python_clients()]) {
        let address = endpoint.address.to_string();
        let output = run_python(&["--redis", &address, "--prefix", "pyval:", "--plain-redis"]);
        check_python(test, &output);
        let script = python_script("python_ttls.py", &["--redis", &address, "--prefix", "pyval:", "--plain-redis"]);
        check_python(test, &run(script, None, Duration::from_secs(120)));
    }
    failures.finish(test);
}
