//! The commands: their table (for `COMMAND`, arity checks and `redis-cli`'s hints), and how
//! each becomes a [`Plan`]: an answer now, a write (operations for the state machine), or a
//! read (a [`Query`] run on the state machine after ReadIndex).
//!
//! Errors use Redis's words, so that clients and people recognise them.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

use super::glob;
use super::resp::{NIL_BYTES, Reply, array_header_bytes, bulk_bytes};
use crate::auth::Access;
use crate::server::Limits;
use crate::state::{ExpireIf, Expiry, Keyspace, NOT_AN_INTEGER, OVERFLOW, Op, Output, When, parse_integer};

/// One command as `COMMAND` describes it.
pub struct Spec {
    pub name: &'static str,
    /// The number of arguments with the name; negative: at least that many.
    pub arity: i32,
    pub flags: &'static [&'static str],
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
    pub group: &'static str,
    pub summary: &'static str,
}

const fn spec(
    name: &'static str,
    arity: i32,
    flags: &'static [&'static str],
    keys: (i32, i32, i32),
    group: &'static str,
    summary: &'static str,
) -> Spec {
    Spec { name, arity, flags, first_key: keys.0, last_key: keys.1, step: keys.2, group, summary }
}

const READ: &[&str] = &["readonly", "fast"];
const WRITE: &[&str] = &["write", "denyoom", "fast"];
/// Writes that add no bytes (a deadline changes), as Redis flags EXPIRE.
const EXPIRES: &[&str] = &["write", "fast"];
const NONE: (i32, i32, i32) = (0, 0, 0);
const ONE: (i32, i32, i32) = (1, 1, 1);
const ALL: (i32, i32, i32) = (1, -1, 1);

pub const COMMANDS: &[Spec] = &[
    spec("append", 3, WRITE, ONE, "string", "Appends a string to the value of a key; creates the key if missing."),
    spec("auth", -2, &["noscript", "loading", "stale", "fast"], NONE, "connection", "Authenticates the connection."),
    spec("client", -2, &["noscript", "loading", "stale"], NONE, "connection", "Names and describes this connection."),
    spec("command", -1, &["loading", "stale"], NONE, "server", "Describes the commands."),
    spec("config", -2, &["admin", "noscript", "loading", "stale"], NONE, "server", "Reads configuration parameters."),
    spec("dbsize", 1, READ, NONE, "server", "Returns the number of keys."),
    spec("decr", 2, WRITE, ONE, "string", "Decrements the integer value of a key by one."),
    spec("decrby", 3, WRITE, ONE, "string", "Decrements the integer value of a key by a number."),
    spec("del", -2, &["write"], ALL, "generic", "Deletes keys and returns how many existed."),
    spec(
        "discard",
        1,
        &["noscript", "loading", "stale", "fast", "allow_busy"],
        NONE,
        "transactions",
        "Discards the commands queued since MULTI.",
    ),
    spec("echo", 2, &["fast"], NONE, "connection", "Returns the given string."),
    spec("exists", -2, READ, ALL, "generic", "Counts how many of the given keys exist."),
    spec(
        "exec",
        1,
        &["noscript", "loading", "stale", "skip_slowlog"],
        NONE,
        "transactions",
        "Runs the commands queued since MULTI as one log entry, all or nothing.",
    ),
    spec("expire", -3, EXPIRES, ONE, "generic", "Sets a key's time to live in seconds (NX, XX, GT, LT)."),
    spec("expireat", -3, EXPIRES, ONE, "generic", "Sets a key's expiry as a Unix time in seconds (NX, XX, GT, LT)."),
    spec("expiretime", 2, READ, ONE, "generic", "A key's expiry as a Unix time in seconds: -1 (none) or -2 (no key)."),
    spec("flushall", -1, &["write"], NONE, "server", "Deletes every key."),
    spec("flushdb", -1, &["write"], NONE, "server", "Deletes every key."),
    spec("get", 2, READ, ONE, "string", "Returns the value of a key (linearizable)."),
    spec("getex", -2, EXPIRES, ONE, "string", "Returns the value of a key and sets or removes its expiry."),
    spec("hello", -1, &["noscript", "loading", "stale", "fast"], NONE, "connection", "Chooses RESP2 or RESP3."),
    spec("incr", 2, WRITE, ONE, "string", "Increments the integer value of a key by one."),
    spec("incrby", 3, WRITE, ONE, "string", "Increments the integer value of a key by a number."),
    spec("info", -1, &["loading", "stale"], NONE, "server", "Server, Raft and keyspace information."),
    spec("keys", 2, &["readonly"], NONE, "generic", "Returns the keys that match a pattern."),
    spec("mget", -2, READ, ALL, "string", "Returns the values of several keys."),
    spec("mset", -3, &["write", "denyoom"], (1, -1, 2), "string", "Sets several keys atomically."),
    spec(
        "multi",
        1,
        &["noscript", "loading", "stale", "fast", "allow_busy"],
        NONE,
        "transactions",
        "Starts a transaction: commands are queued until EXEC.",
    ),
    spec("persist", 2, EXPIRES, ONE, "generic", "Removes a key's expiry."),
    spec("pexpire", -3, EXPIRES, ONE, "generic", "Sets a key's time to live in milliseconds (NX, XX, GT, LT)."),
    spec(
        "pexpireat",
        -3,
        EXPIRES,
        ONE,
        "generic",
        "Sets a key's expiry as a Unix time in milliseconds (NX, XX, GT, LT).",
    ),
    spec("pexpiretime", 2, READ, ONE, "generic", "A key's expiry as a Unix time in milliseconds: -1 or -2."),
    spec("ping", -1, &["fast"], NONE, "connection", "Answers PONG, or the given string."),
    spec("psetex", 4, &["write", "denyoom"], ONE, "string", "Sets a key with a time to live in milliseconds."),
    spec("pttl", 2, READ, ONE, "generic", "Time to live in milliseconds: -1 (no expiry) or -2 (no key)."),
    spec("quit", -1, &["fast"], NONE, "connection", "Closes the connection."),
    spec("readonly", 1, &["loading", "stale", "fast"], NONE, "cluster", "Reads answer from this node's state (stale)."),
    spec("readwrite", 1, &["loading", "stale", "fast"], NONE, "cluster", "Reads are linearizable again (the default)."),
    spec("scan", -2, &["readonly"], NONE, "generic", "Iterates over the keys with a cursor."),
    spec("select", 2, &["loading", "stale", "fast"], NONE, "connection", "Selects database 0 (the only one)."),
    spec(
        "set",
        -3,
        &["write", "denyoom"],
        ONE,
        "string",
        "Sets a key: NX, XX, GET, EX, PX, EXAT, PXAT, KEEPTTL, FENCE.",
    ),
    spec("setex", 4, &["write", "denyoom"], ONE, "string", "Sets a key with a time to live in seconds."),
    spec("strlen", 2, READ, ONE, "string", "Returns the length of a key's value."),
    spec("ttl", 2, READ, ONE, "generic", "Time to live in seconds: -1 (no expiry) or -2 (no key)."),
    spec("type", 2, READ, ONE, "generic", "Returns the type of a key: string, or none."),
    spec(
        "unwatch",
        1,
        &["noscript", "loading", "stale", "fast", "allow_busy"],
        NONE,
        "transactions",
        "Forgets the keys watched by WATCH.",
    ),
    spec(
        "watch",
        -2,
        &["noscript", "loading", "stale", "fast", "allow_busy"],
        ALL,
        "transactions",
        "Makes EXEC abort if any of the keys changes first.",
    ),
];

/// The command named `name`, in any case.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    COMMANDS.iter().find(|spec| spec.name.as_bytes().eq_ignore_ascii_case(name))
}

/// What a command becomes.
pub enum Plan {
    /// The answer, now.
    Reply(Reply),
    /// Operations to propose; `answer` turns their outputs into the reply.
    Write { ops: Vec<Op>, answer: Answer },
    /// A query on the state machine, after ReadIndex.
    Read(Query),
    /// MULTI, EXEC, DISCARD, WATCH or UNWATCH: run by the connection (`mod.rs`).
    Transaction(Control),
}

/// A transaction command.
#[derive(Debug)]
pub enum Control {
    Multi,
    Exec,
    Discard,
    Watch(Vec<Bytes>),
    Unwatch,
}

/// How the outputs of a write become its reply.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    /// `+OK` (MSET, FLUSHDB).
    Ok,
    /// SET: `+OK` or nil; with GET, the old value.
    Set { get: bool },
    /// DEL: the number of keys deleted.
    Deleted,
    /// INCR, APPEND: the integer, or the refusal.
    Integer,
}

impl Answer {
    pub fn reply(self, outputs: &[Output]) -> Reply {
        match (self, outputs) {
            // A refusal (a batch's writes are refused all together, as for the keyspace quota).
            (_, [Output::Refused(message), ..]) => Reply::error(message.clone()),
            (Answer::Ok, _) => Reply::Ok,
            (Answer::Set { get: true }, [Output::Set { old, .. }]) => old.clone().map_or(Reply::Nil, Reply::Bulk),
            (Answer::Set { get: false }, [Output::Set { written, .. }]) => {
                if *written {
                    Reply::Ok
                } else {
                    Reply::Nil
                }
            }
            (Answer::Deleted, outputs) => {
                let count =
                    outputs.iter().map(|output| if let Output::Done { deleted, .. } = output { *deleted } else { 0 });
                Reply::Integer(count.sum::<u64>() as i64)
            }
            (Answer::Integer, [Output::Integer(number)]) => Reply::Integer(*number),
            (answer, outputs) => Reply::error(format!("ERR unexpected outputs {outputs:?} for {answer:?}")),
        }
    }
}

/// A read, run on the state machine.
#[derive(Debug)]
pub enum Query {
    Get(Bytes),
    MGet(Vec<Bytes>),
    Exists(Vec<Bytes>),
    StrLen(Bytes),
    Type(Bytes),
    /// TTL, PTTL (the time left), EXPIRETIME, PEXPIRETIME (`absolute`: the deadline as a
    /// Unix time); in milliseconds with `millis`, else in seconds rounded as Redis does.
    Ttl {
        key: Bytes,
        millis: bool,
        absolute: bool,
    },
    /// KEYS pattern: of the keys `visible` may read.
    Keys {
        pattern: Bytes,
        visible: Access,
    },
    Scan {
        cursor: u64,
        pattern: Option<Bytes>,
        count: usize,
        strings: bool,
        /// Only keys this may read are returned.
        visible: Access,
    },
    DbSize,
}

/// `SCAN ... COUNT n` examines at most this many keys per call, whatever `n` is: COUNT is a
/// hint in Redis too, and a larger one would hold the state (and the reply) for as long as
/// a `KEYS`.
pub const MAX_SCAN_COUNT: usize = 10_000;

/// What the replies of one round of a connection (the commands read at once, a pipeline
/// or part of one) may still take, in bytes as RESP2 encodes them: `max_reply_bytes` for
/// each reply, and for all of them together. A read whose reply does not fit gets an error
/// instead, computed before the reply is built; the replies of writes and of connection
/// commands are always sent (their size is bounded by their request) and take their share.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    limit: usize,
    left: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Budget {
        Budget { limit, left: limit }
    }

    /// Takes `bytes` for a reply that is sent whatever its size.
    pub fn charge(&mut self, bytes: usize) {
        self.left = self.left.saturating_sub(bytes);
    }

    /// Takes `bytes` for a read's reply, or refuses it: the error says what to do instead
    /// (`hint`, when the reply alone is over the limit).
    fn take(&mut self, bytes: usize, hint: &str) -> Result<(), Reply> {
        self.check(bytes, false, hint)?;
        self.left -= bytes;
        Ok(())
    }

    /// Whether a reply of `bytes` fits; the error if not (`at_least`: the reply is known to
    /// be at least that large, its full size is not known).
    fn check(&self, bytes: usize, at_least: bool, hint: &str) -> Result<(), Reply> {
        let size = if at_least { format!("at least {bytes}") } else { bytes.to_string() };
        let limit = self.limit;
        if bytes > limit {
            return Err(Reply::error(format!(
                "ERR reply of {size} bytes exceeds the reply budget of {limit} bytes (max-reply-bytes); {hint}"
            )));
        }
        if bytes > self.left {
            let left = self.left;
            return Err(Reply::error(format!(
                "ERR reply of {size} bytes exceeds the {left} bytes left of the reply budget of {limit} bytes \
                 for this pipeline (max-reply-bytes); read the replies before sending more"
            )));
        }
        Ok(())
    }
}

/// What the reads of one round share: the reply budget, and the values copied out of the
/// state (a key read several times in the round, by `MGET k k k` or by pipelined `GET`s,
/// shares one copy).
pub struct Reading {
    pub budget: Budget,
    values: HashMap<Bytes, Bytes>,
    /// This node's wall clock when the round's reads began, in Unix milliseconds: what
    /// `EXPIRETIME` reports deadlines in.
    wall_ms: i64,
}

impl Reading {
    pub fn new(budget: Budget) -> Reading {
        Reading { budget, values: HashMap::new(), wall_ms: unix_ms() }
    }

    /// The same, with the wall clock at `wall_ms` (for tests).
    #[cfg(test)]
    fn at_wall(budget: Budget, wall_ms: i64) -> Reading {
        Reading { budget, values: HashMap::new(), wall_ms }
    }

    /// The value of `key` as a reply, shared with every other read of it in the round.
    fn value(&mut self, store: &impl Keyspace, key: &Bytes) -> Reply {
        if let Some(value) = self.values.get(key) {
            return Reply::Bulk(value.clone());
        }
        let Some(found) = store.get(key) else { return Reply::Nil };
        let value = Bytes::copy_from_slice(found.value);
        self.values.insert(key.clone(), value.clone());
        Reply::Bulk(value)
    }
}

/// The size of a value's reply (its bulk string, or RESP2's nil), without copying it.
fn value_size(store: &impl Keyspace, key: &[u8]) -> usize {
    store.get(key).map_or(NIL_BYTES, |found| bulk_bytes(found.value.len()))
}

const FEWER_KEYS: &str = "ask for fewer keys";

impl Query {
    /// The keys the query reads, if it reads named keys only (not KEYS, SCAN, DBSIZE).
    pub fn keys(&self) -> Option<Vec<Bytes>> {
        match self {
            Query::Get(key) | Query::StrLen(key) | Query::Type(key) | Query::Ttl { key, .. } => Some(vec![key.clone()]),
            Query::MGet(keys) | Query::Exists(keys) => Some(keys.clone()),
            Query::Keys { .. } | Query::Scan { .. } | Query::DbSize => None,
        }
    }

    /// Whether the query walks the keyspace (KEYS, SCAN): it runs on a view, off the apply thread.
    pub fn is_heavy(&self) -> bool {
        matches!(self, Query::Keys { .. } | Query::Scan { .. })
    }

    /// The reply, if it fits `reading`'s budget; its size is known before it is built.
    pub fn run(self, store: &impl Keyspace, cursors: &Mutex<Cursors>, reading: &mut Reading) -> Reply {
        match self {
            Query::Get(key) => match reading.budget.take(value_size(store, &key), FEWER_KEYS) {
                Ok(()) => reading.value(store, &key),
                Err(refused) => refused,
            },
            Query::MGet(keys) => {
                let size =
                    array_header_bytes(keys.len()) + keys.iter().map(|key| value_size(store, key)).sum::<usize>();
                match reading.budget.take(size, FEWER_KEYS) {
                    Ok(()) => Reply::Array(keys.iter().map(|key| reading.value(store, key)).collect()),
                    Err(refused) => refused,
                }
            }
            Query::Keys { pattern, visible } => keys(store, &pattern, &visible, &mut reading.budget),
            Query::Scan { cursor, pattern, count, strings, visible } => {
                let scan = Scan { pattern, count, strings, visible };
                scan.run(store, cursors, cursor, &mut reading.budget)
            }
            small => {
                let reply = small.run_small(store, reading.wall_ms);
                match reading.budget.take(reply.encoded_len(false), FEWER_KEYS) {
                    Ok(()) => reply,
                    Err(refused) => refused,
                }
            }
        }
    }

    /// The queries whose reply is an integer or a word.
    fn run_small(self, store: &impl Keyspace, wall_ms: i64) -> Reply {
        match self {
            Query::Exists(keys) => Reply::Integer(keys.iter().filter(|key| store.get(key).is_some()).count() as i64),
            Query::StrLen(key) => Reply::Integer(store.get(&key).map_or(0, |found| found.value.len() as i64)),
            Query::Type(key) => Reply::Simple(if store.get(&key).is_some() { "string" } else { "none" }.into()),
            Query::Ttl { key, millis, absolute } => Reply::Integer(ttl(store, &key, millis, absolute, wall_ms)),
            Query::DbSize => Reply::Integer(store.len() as i64),
            other => Reply::error(format!("ERR {other:?} is not a small query")),
        }
    }
}

/// TTL and its family, as Redis 7 answers them: -2 for a missing key, -1 for a key without
/// a deadline; else the time left until its deadline on this node's reading of the cluster
/// clock (at least 0), or with `absolute` that deadline as a Unix time on this node's wall
/// clock (`wall_ms`: clocks of other nodes may disagree). Seconds are rounded to the
/// nearest, as Redis does.
fn ttl(store: &impl Keyspace, key: &[u8], millis: bool, absolute: bool, wall_ms: i64) -> i64 {
    // The clock first: `get` reads it again, no earlier, so a key it shows is alive at `now`.
    let now = store.now_ms();
    let Some(entry) = store.get(key) else { return -2 };
    if entry.expires == 0 {
        return -1;
    }
    let left = i64::try_from(entry.expires.saturating_sub(now)).unwrap_or(i64::MAX);
    let ms = if absolute { wall_ms.saturating_add(left) } else { left };
    if millis { ms } else { ms.saturating_add(500) / 1000 }
}

/// KEYS: every key `visible` may read that matches, if they fit the budget; the keys are
/// copied as they are found, and the search stops as soon as the reply is over budget.
fn keys(store: &impl Keyspace, pattern: &[u8], visible: &Access, budget: &mut Budget) -> Reply {
    crate::watch::gate::pass(pattern);
    let mut found = Vec::new();
    // Reserve room for the array header of the largest count the keys could reach.
    let mut size = array_header_bytes(store.len());
    for entry in store.after(None).filter(|entry| visible.can_read(entry.key) && glob::matches(pattern, entry.key)) {
        size += bulk_bytes(entry.key.len());
        if let Err(refused) = budget.check(size, true, "use SCAN, which returns the keys a part at a time") {
            return refused;
        }
        found.push(Reply::Bulk(Bytes::copy_from_slice(entry.key)));
    }
    budget.charge(size);
    Reply::Array(found)
}

/// SCAN's options.
struct Scan {
    pattern: Option<Bytes>,
    count: usize,
    strings: bool,
    visible: Access,
}

impl Scan {
    /// Examines up to `count` keys after the cursor's (at most [`MAX_SCAN_COUNT`]), and
    /// returns those that match; it stops early, at a key whose reply would not fit the
    /// budget, and the cursor resumes there.
    fn run(self, store: &impl Keyspace, cursors: &Mutex<Cursors>, cursor: u64, budget: &mut Budget) -> Reply {
        let Ok(mut cursors) = cursors.lock() else { return Reply::error("ERR the cursor table is unusable") };
        let after = match cursor {
            0 => None,
            cursor => match cursors.take(cursor) {
                Some(key) => Some(key),
                None => return Reply::error("ERR invalid cursor"),
            },
        };
        let count = self.count.min(MAX_SCAN_COUNT);
        // The cursor (at most 20 digits) and the array headers, counted once.
        let mut size = 2 * array_header_bytes(2) + bulk_bytes(20) + array_header_bytes(count);
        let mut found = Vec::new();
        let mut last: Option<&[u8]> = None;
        for entry in store.after(after.as_deref()).take(count) {
            let matches = self.pattern.as_ref().is_none_or(|pattern| glob::matches(pattern, entry.key));
            if self.strings && matches && self.visible.can_read(entry.key) {
                let fits = budget.check(size + bulk_bytes(entry.key.len()), false, FEWER_KEYS);
                match fits {
                    Ok(()) => size += bulk_bytes(entry.key.len()),
                    // Not even one key fits: say so, rather than answer nothing forever.
                    Err(refused) if last.is_none() => return refused,
                    Err(_) => break,
                }
                found.push(Reply::Bulk(Bytes::copy_from_slice(entry.key)));
            }
            last = Some(entry.key);
        }
        budget.charge(size);
        let more = last.is_some_and(|last| store.after(Some(last)).next().is_some());
        let next = match last {
            Some(last) if more => cursors.insert(Bytes::copy_from_slice(last)),
            _ => 0,
        };
        Reply::Array(vec![Reply::bulk(next.to_string()), Reply::Array(found)])
    }
}

/// SCAN's cursors: a number stands for the last key returned, so that a scan resumes after
/// it whatever was written meanwhile (every key present throughout is returned). Kept per
/// node and bounded: the oldest cursors are forgotten, and answer `ERR invalid cursor`.
#[derive(Debug)]
pub struct Cursors {
    next: u64,
    keys: HashMap<u64, Bytes>,
    order: VecDeque<u64>,
}

const MAX_CURSORS: usize = 10_000;

impl Cursors {
    /// Numbers start at `start` (made random per node, so that a cursor taken to another
    /// node is most likely refused rather than misread).
    pub fn new(start: u64) -> Cursors {
        Cursors { next: start % (1 << 48) + 1, keys: HashMap::new(), order: VecDeque::new() }
    }

    fn insert(&mut self, key: Bytes) -> u64 {
        let cursor = self.next;
        self.next += 1;
        self.keys.insert(cursor, key);
        self.order.push_back(cursor);
        while self.order.len() > MAX_CURSORS {
            if let Some(oldest) = self.order.pop_front() {
                self.keys.remove(&oldest);
            }
        }
        cursor
    }

    /// The key a cursor stands for. Kept, not removed: a client may retry a SCAN call.
    fn take(&self, cursor: u64) -> Option<Bytes> {
        self.keys.get(&cursor).cloned()
    }
}

pub fn wrong_arity(name: &str) -> Reply {
    Reply::error(format!("ERR wrong number of arguments for '{name}' command"))
}

pub fn unknown_command(args: &[Bytes]) -> Reply {
    let quote = |bytes: &Bytes| String::from_utf8_lossy(&bytes[..bytes.len().min(128)]).into_owned();
    let name = args.first().map(quote).unwrap_or_default();
    let rest: String = args.iter().skip(1).take(20).map(|arg| format!("'{}' ", quote(arg))).collect();
    Reply::error(format!("ERR unknown command '{name}', with args beginning with: {rest}"))
}

fn syntax_error() -> Reply {
    Reply::error("ERR syntax error")
}

fn integer(arg: &[u8]) -> Result<i64, Reply> {
    parse_integer(arg).ok_or_else(|| Reply::error(NOT_AN_INTEGER))
}

fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// Plans a keyspace command (`spec` found and arity checked). Connection and server
/// commands (`HELLO`, `CLIENT`, `INFO`, ...) are the connection's own and do not come here.
/// Absolute times (`EXAT`, `EXPIREAT`, ...) are read with this node's wall clock now.
pub fn plan(spec: &Spec, args: &[Bytes], limits: &Limits) -> Plan {
    plan_at(spec, args, limits, unix_ms())
}

/// [`plan`], with the wall clock at `wall_ms` (Unix milliseconds).
fn plan_at(spec: &Spec, args: &[Bytes], limits: &Limits, wall_ms: i64) -> Plan {
    match plan_or_refuse(spec, args, limits, wall_ms) {
        Ok(plan) => plan,
        Err(reply) => Plan::Reply(reply),
    }
}

fn plan_or_refuse(spec: &Spec, args: &[Bytes], limits: &Limits, wall_ms: i64) -> Result<Plan, Reply> {
    let key = || args[1].clone();
    let keys = || args[1..].to_vec();
    let check_key = |key: &Bytes| {
        if key.len() > limits.max_key_bytes {
            let message = format!("ERR the key is {} bytes; the limit is {} bytes", key.len(), limits.max_key_bytes);
            return Err(Reply::error(message));
        }
        Ok(())
    };
    let check_value = |value: &Bytes| {
        if value.len() > limits.max_value_bytes {
            let limit = limits.max_value_bytes;
            return Err(Reply::error(format!("ERR the value is {} bytes; the limit is {limit} bytes", value.len())));
        }
        Ok(())
    };
    let write = |ops: Vec<Op>, answer| Ok(Plan::Write { ops, answer });
    let incr_by = |delta: i64| {
        check_key(&args[1])?;
        write(vec![Op::IncrBy { key: key(), delta }], Answer::Integer)
    };
    match spec.name {
        "get" => Ok(Plan::Read(Query::Get(key()))),
        "mget" => Ok(Plan::Read(Query::MGet(keys()))),
        "exists" => Ok(Plan::Read(Query::Exists(keys()))),
        "strlen" => Ok(Plan::Read(Query::StrLen(key()))),
        "type" => Ok(Plan::Read(Query::Type(key()))),
        "ttl" | "pttl" | "expiretime" | "pexpiretime" => {
            let (millis, absolute) = (spec.name.starts_with('p'), spec.name.ends_with("time"));
            Ok(Plan::Read(Query::Ttl { key: key(), millis, absolute }))
        }
        "keys" => Ok(Plan::Read(Query::Keys { pattern: key(), visible: Access::Open })),
        "dbsize" => Ok(Plan::Read(Query::DbSize)),
        "scan" => scan(args).map(Plan::Read),
        "set" => {
            let SetOptions { when, get, expiry, fence } = set_options(&args[3..], wall_ms)?;
            check_key(&args[1])?;
            check_value(&args[2])?;
            let value = args[2].clone();
            let op = match expiry {
                // Without an expiry option, SET removes the key's deadline.
                None => Op::Set { key: key(), value, when, get },
                Some(expiry) => Op::SetWith { key: key(), value, when, get, expiry },
            };
            let op = match fence {
                Some(token) => Op::Fenced { token, op: Box::new(op) },
                None => op,
            };
            write(vec![op], Answer::Set { get })
        }
        "setex" | "psetex" => {
            let unit = if spec.name == "setex" { TimeUnit::Seconds } else { TimeUnit::Millis };
            let expiry = positive_expiry(spec.name, &args[2], unit, wall_ms)?;
            check_key(&args[1])?;
            check_value(&args[3])?;
            let op = Op::SetWith { key: key(), value: args[3].clone(), when: When::Always, get: false, expiry };
            write(vec![op], Answer::Set { get: false })
        }
        "getex" => match getex_expiry(&args[2..], wall_ms)? {
            // Without an option, GETEX is a GET.
            None => Ok(Plan::Read(Query::Get(key()))),
            Some(expiry) => {
                let op = Op::Expire { key: key(), expiry, when: ExpireIf::Always, get: true };
                write(vec![op], Answer::Set { get: true })
            }
        },
        "expire" | "pexpire" | "expireat" | "pexpireat" => {
            let when = expire_condition(&args[3..])?;
            let unit = match spec.name {
                "expire" => TimeUnit::Seconds,
                "pexpire" => TimeUnit::Millis,
                "expireat" => TimeUnit::UnixSeconds,
                _ => TimeUnit::UnixMillis,
            };
            let expiry = any_expiry(spec.name, &args[2], unit, wall_ms)?;
            write(vec![Op::Expire { key: key(), expiry, when, get: false }], Answer::Integer)
        }
        "persist" => write(
            vec![Op::Expire { key: key(), expiry: Expiry::Clear, when: ExpireIf::Always, get: false }],
            Answer::Integer,
        ),
        "mset" => {
            if args.len().is_multiple_of(2) {
                return Err(wrong_arity(spec.name));
            }
            let mut ops = Vec::with_capacity(args.len() / 2);
            for pair in args[1..].chunks_exact(2) {
                check_key(&pair[0])?;
                check_value(&pair[1])?;
                ops.push(Op::Set { key: pair[0].clone(), value: pair[1].clone(), when: When::Always, get: false });
            }
            write(ops, Answer::Ok)
        }
        "del" => {
            write(args[1..].iter().map(|key| Op::Delete { key: key.clone(), cas: None }).collect(), Answer::Deleted)
        }
        "incr" => incr_by(1),
        "decr" => incr_by(-1),
        "incrby" => incr_by(integer(&args[2])?),
        "decrby" => incr_by(integer(&args[2])?.checked_neg().ok_or_else(|| Reply::error(OVERFLOW))?),
        "append" => {
            check_key(&args[1])?;
            let max_len = limits.max_value_bytes as u64;
            write(vec![Op::Append { key: key(), value: args[2].clone(), max_len }], Answer::Integer)
        }
        "flushdb" | "flushall" => match args.get(1) {
            None => write(vec![Op::DeletePrefix { prefix: Bytes::new() }], Answer::Ok),
            Some(mode) if args.len() == 2 && (is(mode, "sync") || is(mode, "async")) => {
                write(vec![Op::DeletePrefix { prefix: Bytes::new() }], Answer::Ok)
            }
            Some(_) => Err(syntax_error()),
        },
        _ => Err(unknown_command(args)),
    }
}

/// This node's wall clock, in Unix milliseconds.
pub fn unix_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// How a time argument counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimeUnit {
    /// Seconds from now (`EX`, `EXPIRE`, `SETEX`).
    Seconds,
    /// Milliseconds from now (`PX`, `PEXPIRE`, `PSETEX`).
    Millis,
    /// A Unix time in seconds (`EXAT`, `EXPIREAT`).
    UnixSeconds,
    /// A Unix time in milliseconds (`PXAT`, `PEXPIREAT`).
    UnixMillis,
}

impl TimeUnit {
    fn ms_per_unit(self) -> i64 {
        match self {
            TimeUnit::Seconds | TimeUnit::UnixSeconds => 1000,
            TimeUnit::Millis | TimeUnit::UnixMillis => 1,
        }
    }

    fn absolute(self) -> bool {
        matches!(self, TimeUnit::UnixSeconds | TimeUnit::UnixMillis)
    }

    /// The option that gives a time in this unit: `EX`, `PX`, `EXAT` or `PXAT`.
    fn option(option: &[u8]) -> Option<TimeUnit> {
        [
            ("ex", TimeUnit::Seconds),
            ("px", TimeUnit::Millis),
            ("exat", TimeUnit::UnixSeconds),
            ("pxat", TimeUnit::UnixMillis),
        ]
        .into_iter()
        .find(|(word, _)| is(option, word))
        .map(|(_, unit)| unit)
    }

    /// `ms` milliseconds in this unit, as an expiry on the cluster clock. A relative time is
    /// measured on the cluster clock from the entry's stamp; an absolute one is turned into
    /// the time left until it on this node's wall clock now (`wall_ms`), nothing if passed.
    fn expiry(self, ms: i64, wall_ms: i64) -> Expiry {
        let left = if self.absolute() { ms.saturating_sub(wall_ms) } else { ms };
        Expiry::After(u64::try_from(left).unwrap_or(0))
    }
}

/// Redis's refusal of a time it cannot use.
fn invalid_expire_time(command: &str) -> Reply {
    Reply::error(format!("ERR invalid expire time in '{command}' command"))
}

/// The time of SET's `EX`...`PXAT`, SETEX, PSETEX and GETEX, checked as Redis does: an
/// integer, above 0, whose milliseconds (and, for a relative time, their sum with the time
/// now) fit 64 bits; else `ERR invalid expire time in '<command>' command`.
fn positive_expiry(command: &str, arg: &[u8], unit: TimeUnit, wall_ms: i64) -> Result<Expiry, Reply> {
    let number = integer(arg)?;
    let invalid = || invalid_expire_time(command);
    if number <= 0 {
        return Err(invalid());
    }
    let ms = number.checked_mul(unit.ms_per_unit()).ok_or_else(invalid)?;
    if !unit.absolute() && ms.checked_add(wall_ms).is_none() {
        return Err(invalid());
    }
    Ok(unit.expiry(ms, wall_ms))
}

/// The time of EXPIRE and its family: any integer (0, a negative time or a Unix time
/// passed expires the key at once) whose milliseconds, plus the time now for a relative
/// one, fit 64 bits; else `ERR invalid expire time`.
fn any_expiry(command: &str, arg: &[u8], unit: TimeUnit, wall_ms: i64) -> Result<Expiry, Reply> {
    let number = integer(arg)?;
    let invalid = || invalid_expire_time(command);
    let ms = number.checked_mul(unit.ms_per_unit()).ok_or_else(invalid)?;
    if !unit.absolute() && ms.checked_add(wall_ms).is_none() {
        return Err(invalid());
    }
    Ok(unit.expiry(ms, wall_ms))
}

/// What SET's options ask for.
#[derive(Debug, PartialEq, Eq)]
struct SetOptions {
    when: When,
    get: bool,
    /// None: no expiry option (the key's deadline is removed).
    expiry: Option<Expiry>,
    /// `FENCE <token>`, Skiff's: write only while that lock acquisition holds its lock.
    fence: Option<u64>,
}

/// SET's options, as Redis 7 reads them: NX or XX; GET; one of EX, PX, EXAT, PXAT (the same
/// one may be given again, the last counts) or KEEPTTL; and Skiff's FENCE token. Anything
/// else, an option without its argument, or options that conflict: `ERR syntax error`; then
/// a time that cannot be used: `ERR invalid expire time in 'set' command`.
fn set_options(options: &[Bytes], wall_ms: i64) -> Result<SetOptions, Reply> {
    let (mut when, mut get, mut keep, mut fence) = (When::Always, false, false, None);
    let mut time: Option<(TimeUnit, &Bytes)> = None;
    let mut at = 0;
    while let Some(option) = options.get(at) {
        let next = options.get(at + 1);
        if is(option, "nx") && when != When::Present {
            when = When::Absent;
        } else if is(option, "xx") && when != When::Absent {
            when = When::Present;
        } else if is(option, "get") {
            get = true;
        } else if is(option, "keepttl") && time.is_none() {
            keep = true;
        } else if let (Some(unit), Some(value)) = (TimeUnit::option(option), next)
            && !keep
            && time.is_none_or(|(other, _)| other == unit)
        {
            time = Some((unit, value));
            at += 1;
        } else if let (true, Some(token), None) = (is(option, "fence"), next, fence) {
            fence = Some(fence_token(token)?);
            at += 1;
        } else {
            return Err(syntax_error());
        }
        at += 1;
    }
    let expiry = match time {
        Some((unit, value)) => Some(positive_expiry("set", value, unit, wall_ms)?),
        None if keep => Some(Expiry::Keep),
        None => None,
    };
    Ok(SetOptions { when, get, expiry, fence })
}

/// A fencing token: the positive integer a lock acquisition returned.
fn fence_token(arg: &[u8]) -> Result<u64, Reply> {
    parse_integer(arg)
        .filter(|&token| token > 0)
        .map(|token| token as u64)
        .ok_or_else(|| Reply::error("ERR FENCE needs a fencing token: a positive integer"))
}

/// GETEX's option: EX, PX, EXAT, PXAT (each with its time) or PERSIST, at most one kind
/// (as SET, the same one again is allowed); None without one (GETEX is then a GET).
fn getex_expiry(options: &[Bytes], wall_ms: i64) -> Result<Option<Expiry>, Reply> {
    let (mut persist, mut time): (bool, Option<(TimeUnit, &Bytes)>) = (false, None);
    let mut at = 0;
    while let Some(option) = options.get(at) {
        if is(option, "persist") && time.is_none() {
            persist = true;
        } else if let (Some(unit), Some(value)) = (TimeUnit::option(option), options.get(at + 1))
            && !persist
            && time.is_none_or(|(other, _)| other == unit)
        {
            time = Some((unit, value));
            at += 1;
        } else {
            return Err(syntax_error());
        }
        at += 1;
    }
    match time {
        Some((unit, value)) => positive_expiry("getex", value, unit, wall_ms).map(Some),
        None if persist => Ok(Some(Expiry::Clear)),
        None => Ok(None),
    }
}

/// EXPIRE's conditions, as Redis 7 reads them: NX, XX, GT, LT in any number; NX with any
/// other, or GT with LT, is refused; XX with GT is GT (which already needs a deadline).
fn expire_condition(options: &[Bytes]) -> Result<ExpireIf, Reply> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in options {
        let flag = if is(option, "nx") {
            &mut nx
        } else if is(option, "xx") {
            &mut xx
        } else if is(option, "gt") {
            &mut gt
        } else if is(option, "lt") {
            &mut lt
        } else {
            let shown = String::from_utf8_lossy(&option[..option.len().min(128)]).into_owned();
            return Err(Reply::error(format!("ERR Unsupported option {shown}")));
        };
        *flag = true;
    }
    if nx && (xx || gt || lt) {
        return Err(Reply::error("ERR NX and XX, GT or LT options at the same time are not compatible"));
    }
    if gt && lt {
        return Err(Reply::error("ERR GT and LT options at the same time are not compatible"));
    }
    Ok(match (nx, xx, gt, lt) {
        (true, ..) => ExpireIf::NoDeadline,
        (_, _, true, _) => ExpireIf::Later,
        (_, true, _, true) => ExpireIf::EarlierDeadline,
        (_, _, _, true) => ExpireIf::Earlier,
        (_, true, ..) => ExpireIf::HasDeadline,
        _ => ExpireIf::Always,
    })
}

/// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type].
fn scan(args: &[Bytes]) -> Result<Query, Reply> {
    let cursor = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| Reply::error("ERR invalid cursor"))?;
    let (mut pattern, mut count, mut strings) = (None, 10usize, true);
    for pair in args[2..].chunks(2) {
        let [option, value] = pair else { return Err(syntax_error()) };
        if is(option, "match") {
            pattern = Some(value.clone()).filter(|pattern| &pattern[..] != b"*");
        } else if is(option, "count") {
            count = usize::try_from(integer(value)?).ok().filter(|&count| count > 0).ok_or_else(syntax_error)?;
        } else if is(option, "type") {
            strings = is(value, "string");
        } else {
            return Err(syntax_error());
        }
    }
    Ok(Query::Scan { cursor, pattern, count, strings, visible: Access::Open })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Command, KvStore};
    use skiff::{Index, StateMachine};

    fn args(line: &str) -> Vec<Bytes> {
        line.split(' ').map(|part| Bytes::copy_from_slice(part.as_bytes())).collect()
    }

    /// Plans `line`, applies a write at `index` or runs a read, and returns the reply.
    fn run(store: &mut KvStore, cursors: &Mutex<Cursors>, index: u64, line: &str) -> Reply {
        let args = args(line);
        let spec = lookup(&args[0]).expect("a known command");
        match plan(spec, &args, &Limits::default()) {
            Plan::Reply(reply) => reply,
            Plan::Read(query) => {
                let mut reading = Reading::new(Budget::new(Limits::default().max_reply_bytes));
                query.run(store, cursors, &mut reading)
            }
            Plan::Write { ops, answer } => {
                let Output::Batch(outputs) = store.apply(Index(index), Command { request: None, op: Op::Batch(ops) })
                else {
                    panic!("a batch has a batch output")
                };
                answer.reply(&outputs)
            }
            Plan::Transaction(control) => panic!("{control:?} is the connection's"),
        }
    }

    #[test]
    fn string_commands_behave_as_in_redis() {
        let (mut store, cursors) = (KvStore::default(), Mutex::new(Cursors::new(0)));
        let mut index = 0;
        let mut check = |line: &str, expected: Reply| {
            index += 1;
            assert_eq!(run(&mut store, &cursors, index, line), expected, "{line}");
        };
        let bulk = |text: &str| Reply::bulk(text);
        check("SET a 1", Reply::Ok);
        check("SET a 2 NX", Reply::Nil);
        check("SET b 2 XX", Reply::Nil);
        check("SET a 3 XX GET", bulk("1"));
        check("SET a 4 NX XX", syntax_error());
        check("SET a 4 EX 10 PX 10", syntax_error());
        check("GET a", bulk("3"));
        check("INCR a", Reply::Integer(4));
        check("INCRBY a -10", Reply::Integer(-6));
        check("DECRBY a 4", Reply::Integer(-10));
        check("INCRBY a x", Reply::error(NOT_AN_INTEGER));
        check("SET big 9223372036854775807", Reply::Ok);
        check("INCR big", Reply::error(OVERFLOW));
        check("DECRBY big -9223372036854775808", Reply::error(OVERFLOW));
        check("APPEND s hello", Reply::Integer(5));
        check("APPEND s !", Reply::Integer(6));
        check("INCR s", Reply::error(NOT_AN_INTEGER));
        check("STRLEN s", Reply::Integer(6));
        check("MSET k1 v1 k2 v2", Reply::Ok);
        check("MSET k1 v1 k2", wrong_arity("mset"));
        check("MGET k1 nope k2", Reply::Array(vec![bulk("v1"), Reply::Nil, bulk("v2")]));
        check("EXISTS k1 k1 nope", Reply::Integer(2));
        check("DEL k1 k2 nope", Reply::Integer(2));
        check("TYPE k1", Reply::Simple("none".into()));
        check("TTL s", Reply::Integer(-1));
        check("KEYS [ab]*", Reply::Array(vec![bulk("a"), bulk("big")]));
        check("DBSIZE", Reply::Integer(3));
        check("FLUSHDB", Reply::Ok);
        check("DBSIZE", Reply::Integer(0));
    }

    /// A store driven as a node drives it: writes stamped with a cluster clock that the test
    /// moves (with the leader's clock entries), absolute times read on a wall clock it sets.
    struct Clocked {
        store: KvStore,
        cursors: Mutex<Cursors>,
        index: u64,
        now_ms: u64,
        wall_ms: i64,
    }

    /// The wall clock of a new [`Clocked`]: 2023-11-14, in milliseconds.
    const WALL_MS: i64 = 1_700_000_000_000;
    const WALL_S: i64 = WALL_MS / 1000;

    impl Clocked {
        fn new() -> Clocked {
            let mut clocked = Clocked {
                store: KvStore::default(),
                cursors: Mutex::new(Cursors::new(0)),
                index: 0,
                now_ms: 0,
                wall_ms: WALL_MS - 1000,
            };
            clocked.pass(1000);
            clocked
        }

        fn apply(&mut self, op: Op) -> Output {
            self.index += 1;
            self.store.apply(Index(self.index), Command { request: None, op })
        }

        /// `ms` pass on both clocks; the leader's clock entry says so to the state.
        fn pass(&mut self, ms: u64) {
            self.now_ms += ms;
            self.wall_ms += ms as i64;
            self.apply(Op::Tick { now_ms: self.now_ms });
        }

        fn run(&mut self, line: &str) -> Reply {
            let args = args(line);
            let spec = lookup(&args[0]).expect("a known command");
            match plan_at(spec, &args, &Limits::default(), self.wall_ms) {
                Plan::Reply(reply) => reply,
                Plan::Read(query) => {
                    let mut reading = Reading::at_wall(Budget::new(1 << 20), self.wall_ms);
                    query.run(&self.store, &self.cursors, &mut reading)
                }
                Plan::Write { ops, answer } => {
                    let now = self.now_ms;
                    let Output::Batch(outputs) = self.apply(Op::Batch(ops).at(now)) else {
                        panic!("a batch has a batch output")
                    };
                    answer.reply(&outputs)
                }
                Plan::Transaction(control) => panic!("{control:?} is the connection's"),
            }
        }

        fn check(&mut self, line: &str, expected: Reply) {
            assert_eq!(self.run(line), expected, "{line}");
        }
    }

    fn int(number: i64) -> Reply {
        Reply::Integer(number)
    }

    fn invalid(command: &str) -> Reply {
        invalid_expire_time(command)
    }

    #[test]
    fn set_with_an_expiry_and_the_ttl_reads_answer_as_redis_7() {
        let mut redis = Clocked::new();
        redis.check("SET k v EX 100", Reply::Ok);
        redis.check("TTL k", int(100));
        redis.check("PTTL k", int(100_000));
        redis.check("EXPIRETIME k", int(WALL_S + 100));
        redis.check("PEXPIRETIME k", int(WALL_MS + 100_000));
        // TTL rounds to the nearest second, as Redis's (pttl + 500) / 1000.
        redis.pass(400);
        redis.check("PTTL k", int(99_600));
        redis.check("TTL k", int(100));
        redis.pass(200);
        redis.check("TTL k", int(99));
        redis.check("EXPIRETIME k", int(WALL_S + 100));
        redis.check("SET k v2 KEEPTTL", Reply::Ok);
        redis.check("PTTL k", int(99_400));
        redis.check("SET k v3", Reply::Ok);
        redis.check("TTL k", int(-1));
        redis.check("PEXPIRETIME k", int(-1));
        for read in ["TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME"] {
            redis.check(&format!("{read} missing"), int(-2));
        }
        // NX, XX and GET with a time.
        redis.check("SET k x PX 1500 NX", Reply::Nil);
        redis.check("TTL k", int(-1));
        redis.check("SET n v PX 1500 NX", Reply::Ok);
        redis.check("PTTL n", int(1500));
        redis.check("SET n w XX GET EX 10", Reply::bulk("v"));
        redis.check("SET n w EX 10 EX 20", Reply::Ok);
        redis.check("TTL n", int(20));
        redis.check("SET nx w NX GET EX 10", Reply::Nil);
        redis.check("TTL nx", int(10));
        // Absolute times, on this node's wall clock (600 ms on from WALL_MS now).
        redis.check(&format!("SET a v EXAT {}", WALL_S + 50), Reply::Ok);
        redis.check("PTTL a", int(50_000 - 600));
        redis.check(&format!("SET a v PXAT {}", WALL_MS + 1234), Reply::Ok);
        redis.check("PTTL a", int(1234 - 600));
        redis.check(&format!("SET a v EXAT {}", WALL_S), Reply::Ok);
        redis.check("GET a", Reply::Nil);
        redis.check("EXISTS a", int(0));
        // The key is gone once the cluster clock passes its deadline, not a millisecond before.
        redis.check("SET e v PX 100", Reply::Ok);
        redis.pass(99);
        redis.check("GET e", Reply::bulk("v"));
        redis.check("PTTL e", int(1));
        redis.pass(1);
        redis.check("GET e", Reply::Nil);
        redis.check("TTL e", int(-2));
    }

    #[test]
    fn set_refuses_conflicting_options_and_unusable_times_in_redis_words() {
        let mut redis = Clocked::new();
        for line in [
            "SET k v EX 10 PX 10",
            "SET k v PX 10 EXAT 10",
            "SET k v EX 10 KEEPTTL",
            "SET k v KEEPTTL PXAT 10",
            "SET k v EX",
            "SET k v NX XX EX 10",
            "SET k v PERSIST",
            "SET k v FENCE",
            "SET k v FENCE 1 FENCE 1",
        ] {
            redis.check(line, syntax_error());
        }
        for line in ["SET k v EX 0", "SET k v EX -5", "SET k v PX 0", "SET k v EXAT 0", "SET k v PXAT -1"] {
            redis.check(line, invalid("set"));
        }
        // Milliseconds past 64 bits, or a relative time whose sum with now is.
        redis.check("SET k v EX 9223372036854775", invalid("set"));
        redis.check("SET k v PX 9223372036854775807", invalid("set"));
        redis.check("SET k v EXAT 9223372036854776", invalid("set"));
        redis.check("SET k v EX abc", Reply::error(NOT_AN_INTEGER));
        redis.check("SET k v PX 99999999999999999999", Reply::error(NOT_AN_INTEGER));
        redis.check("SET k v EX 1.5", Reply::error(NOT_AN_INTEGER));
        let fence = Reply::error("ERR FENCE needs a fencing token: a positive integer");
        for token in ["0", "-3", "x", "99999999999999999999"] {
            redis.check(&format!("SET k v FENCE {token}"), fence.clone());
        }
        redis.check("SETEX k 0 v", invalid("setex"));
        redis.check("SETEX k x v", Reply::error(NOT_AN_INTEGER));
        redis.check("PSETEX k -1 v", invalid("psetex"));
        redis.check("EXISTS k", int(0));
    }

    #[test]
    fn setex_psetex_and_getex() {
        let mut redis = Clocked::new();
        redis.check("SETEX s 10 v", Reply::Ok);
        redis.check("TTL s", int(10));
        redis.check("PSETEX p 1500 w", Reply::Ok);
        redis.check("PTTL p", int(1500));
        // GETEX without an option is a read: the deadline stays.
        redis.check("GETEX s", Reply::bulk("v"));
        redis.check("TTL s", int(10));
        redis.check("GETEX s EX 30", Reply::bulk("v"));
        redis.check("TTL s", int(30));
        redis.check("GETEX s PX 2500", Reply::bulk("v"));
        redis.check("PTTL s", int(2500));
        redis.check(&format!("GETEX s EXAT {}", WALL_S + 40), Reply::bulk("v"));
        redis.check("TTL s", int(40));
        redis.check("GETEX s PERSIST", Reply::bulk("v"));
        redis.check("TTL s", int(-1));
        redis.check("GETEX missing EX 10", Reply::Nil);
        redis.check("GETEX missing", Reply::Nil);
        redis.check("GETEX s EX 10 PERSIST", syntax_error());
        redis.check("GETEX s PERSIST PX 10", syntax_error());
        redis.check("GETEX s EX 10 PX 10", syntax_error());
        redis.check("GETEX s EX", syntax_error());
        redis.check("GETEX s KEEPTTL", syntax_error());
        redis.check("GETEX s NX", syntax_error());
        redis.check("GETEX s PX 0", invalid("getex"));
        redis.check("GETEX s EX x", Reply::error(NOT_AN_INTEGER));
        redis.check("TTL s", int(-1));
        // A Unix time already passed: the value is answered, and the key is gone.
        redis.check(&format!("GETEX p PXAT {}", WALL_MS - 1), Reply::bulk("w"));
        redis.check("GET p", Reply::Nil);
    }

    #[test]
    fn expire_and_its_family_follow_nx_xx_gt_lt_as_redis_7() {
        let mut redis = Clocked::new();
        redis.check("EXPIRE missing 10", int(0));
        redis.check("SET p v", Reply::Ok);
        redis.check("EXPIRE p 100 XX", int(0));
        redis.check("EXPIRE p 100 GT", int(0));
        redis.check("EXPIRE p 100 XX LT", int(0));
        redis.check("TTL p", int(-1));
        redis.check("EXPIRE p 100 LT", int(1));
        redis.check("TTL p", int(100));
        redis.check("EXPIRE p 50 GT", int(0));
        redis.check("EXPIRE p 200 gt", int(1));
        redis.check("EXPIRE p 300 LT", int(0));
        redis.check("EXPIRE p 150 XX LT", int(1));
        redis.check("EXPIRE p 300 XX GT", int(1));
        redis.check("EXPIRE p 100 NX", int(0));
        redis.check("TTL p", int(300));
        redis.check("PEXPIRE p 5000", int(1));
        redis.check("PTTL p", int(5000));
        redis.check(&format!("EXPIREAT p {}", WALL_S + 60), int(1));
        redis.check("TTL p", int(60));
        redis.check(&format!("PEXPIREAT p {}", WALL_MS + 7000), int(1));
        redis.check("PTTL p", int(7000));
        redis.check("PERSIST p", int(1));
        redis.check("PERSIST p", int(0));
        redis.check("PERSIST missing", int(0));
        redis.check("TTL p", int(-1));
        redis.check("EXPIRE p 100 NX", int(1));
        // Errors, in Redis's words; the options are read before the time.
        let nx = Reply::error("ERR NX and XX, GT or LT options at the same time are not compatible");
        redis.check("EXPIRE p 10 NX XX", nx.clone());
        redis.check("EXPIRE p 10 GT NX", nx.clone());
        redis.check("PEXPIRE p x NX LT", nx);
        redis.check("EXPIRE p 10 GT LT", Reply::error("ERR GT and LT options at the same time are not compatible"));
        redis.check("EXPIRE p 10 FOO", Reply::error("ERR Unsupported option FOO"));
        redis.check("EXPIRE p 10 XX 10", Reply::error("ERR Unsupported option 10"));
        redis.check("EXPIRE p abc", Reply::error(NOT_AN_INTEGER));
        redis.check("EXPIRE p 9223372036854775807", invalid("expire"));
        redis.check("EXPIRE p -9223372036854775808", invalid("expire"));
        redis.check("PEXPIRE p 9223372036854775807", invalid("pexpire"));
        redis.check("EXPIREAT p 9223372036854775807", invalid("expireat"));
        redis.check("TTL p", int(100));
        // The largest Unix time in milliseconds is a valid deadline, very far away.
        redis.check("PEXPIREAT p 9223372036854775807", int(1));
        redis.check("PEXPIRETIME p", int(i64::MAX));
        redis.check("TTL p", int((i64::MAX - WALL_MS + 500) / 1000));
        // A time not after now deletes the key and answers 1, once the conditions allow it.
        redis.check("SET q v", Reply::Ok);
        redis.check("EXPIRE q -10 XX", int(0));
        redis.check("GET q", Reply::bulk("v"));
        redis.check("EXPIRE q -10", int(1));
        redis.check("GET q", Reply::Nil);
        for line in ["EXPIRE r 0", "PEXPIRE r -1", "EXPIREAT r 1", "PEXPIREAT r 0"] {
            redis.check("SET r v", Reply::Ok);
            redis.check(line, int(1));
            redis.check("EXISTS r", int(0));
        }
    }

    #[test]
    fn set_with_fence_writes_only_while_its_token_holds_the_lock() {
        use crate::state::{Behavior, LeaseSpec, STALE_FENCE};
        let mut redis = Clocked::new();
        let spec = LeaseSpec {
            id: "s1".into(),
            name: "test".into(),
            node: "n1".into(),
            ttl_ms: 0,
            lock_delay_ms: 0,
            behavior: Behavior::Release,
        };
        redis.apply(Op::LeaseGrant(spec));
        let acquire =
            Op::Acquire { key: Bytes::from_static(b"lock"), value: Bytes::new(), flags: 0, session: "s1".into() };
        let Output::Acquired { ok: true, fence } = redis.apply(acquire) else { panic!("the lock is free") };
        redis.check(&format!("SET data one FENCE {fence}"), Reply::Ok);
        redis.check(&format!("SET data two XX GET PX 5000 FENCE {fence}"), Reply::bulk("one"));
        redis.check("PTTL data", int(5000));
        redis.apply(Op::LeaseRevoke { id: "s1".into() });
        let Reply::Error(message) = redis.run(&format!("SET data three FENCE {fence}")) else {
            panic!("a stale token wrote")
        };
        assert!(message.starts_with(STALE_FENCE), "{message}");
        assert!(message.starts_with("ERR fenced"), "{message}");
        let Reply::Error(message) = redis.run(&format!("SET other x EX 10 FENCE {}", fence + 100)) else {
            panic!("a token that never held a lock wrote")
        };
        assert!(message.starts_with("ERR fenced"), "{message}");
        redis.check("GET data", Reply::bulk("two"));
        redis.check("EXISTS other", int(0));
    }

    #[test]
    fn scan_visits_every_key_once_across_writes() {
        let (mut store, cursors) = (KvStore::default(), Mutex::new(Cursors::new(7)));
        for i in 0..25 {
            run(&mut store, &cursors, i + 1, &format!("SET key{i:02} v"));
        }
        let mut seen = Vec::new();
        let mut cursor = "0".to_string();
        let mut index = 100;
        loop {
            let reply = run(&mut store, &cursors, 0, &format!("SCAN {cursor} MATCH key* COUNT 4"));
            let Reply::Array(parts) = reply else { panic!("SCAN answers an array") };
            let [Reply::Bulk(next), Reply::Array(keys)] = &parts[..] else { panic!("{parts:?}") };
            seen.extend(keys.iter().map(|key| format!("{key:?}")));
            // Keys written during the scan, before and after the cursor, do not disturb it.
            index += 1;
            run(&mut store, &cursors, index, &format!("SET aaa{index} v"));
            cursor = String::from_utf8(next.to_vec()).expect("a number");
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(seen.len(), 25, "{seen:?}");
        assert_eq!(run(&mut store, &cursors, 0, "SCAN 12345 COUNT 4"), Reply::error("ERR invalid cursor"));
        assert_eq!(run(&mut store, &cursors, 0, "SCAN 0 COUNT 0"), syntax_error());
    }

    /// Runs the read `line` with `reading`.
    fn read(store: &KvStore, cursors: &Mutex<Cursors>, reading: &mut Reading, line: &str) -> Reply {
        let args = args(line);
        let spec = lookup(&args[0]).expect("a known command");
        let Plan::Read(query) = plan(spec, &args, &Limits::default()) else { panic!("{line} is not a read") };
        query.run(store, cursors, reading)
    }

    fn error_text(reply: &Reply) -> &str {
        match reply {
            Reply::Error(text) => text,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn a_key_read_many_times_in_a_round_shares_one_copy() {
        let (mut store, cursors) = (KvStore::default(), Mutex::new(Cursors::new(0)));
        run(&mut store, &cursors, 1, "SET big 0123456789");
        let mut reading = Reading::new(Budget::new(1 << 20));
        let line = format!("MGET{}", " big".repeat(1000));
        let Reply::Array(values) = read(&store, &cursors, &mut reading, &line) else { panic!("MGET answers an array") };
        let Reply::Bulk(first) = read(&store, &cursors, &mut reading, "GET big") else { panic!("a value") };
        assert_eq!(values.len(), 1000);
        for value in values {
            let Reply::Bulk(value) = value else { panic!("a value") };
            assert_eq!(value.as_ptr(), first.as_ptr(), "every read of the key shares the first copy");
        }
    }

    #[test]
    fn a_read_over_the_reply_budget_is_refused_before_it_is_built() {
        let (mut store, cursors) = (KvStore::default(), Mutex::new(Cursors::new(0)));
        run(&mut store, &cursors, 1, &format!("SET big {}", "x".repeat(1000)));
        // 10,000 times a 1,000-byte value: 10 MB asked, of a 1 MiB budget.
        let line = format!("MGET{}", " big".repeat(10_000));
        let mut reading = Reading::new(Budget::new(1 << 20));
        let refused = read(&store, &cursors, &mut reading, &line);
        let size = array_header_bytes(10_000) + 10_000 * bulk_bytes(1000);
        assert_eq!(
            error_text(&refused),
            format!(
                "ERR reply of {size} bytes exceeds the reply budget of 1048576 bytes (max-reply-bytes); ask for fewer keys"
            )
        );
        // What fits is answered, in order, and the rest of the round is refused.
        let limit = 3 * (bulk_bytes(1000) + Reply::Integer(1000).encoded_len(false));
        let mut reading = Reading::new(Budget::new(limit));
        for _ in 0..3 {
            assert_eq!(read(&store, &cursors, &mut reading, "STRLEN big"), Reply::Integer(1000));
            assert!(matches!(read(&store, &cursors, &mut reading, "GET big"), Reply::Bulk(_)));
        }
        let refused = read(&store, &cursors, &mut reading, "GET big");
        let expected = format!("0 bytes left of the reply budget of {limit} bytes for this pipeline");
        assert!(error_text(&refused).contains(&expected), "{refused:?}");
    }

    #[test]
    fn keys_over_the_budget_suggests_scan_and_scan_stops_at_the_budget() {
        let (mut store, cursors) = (KvStore::default(), Mutex::new(Cursors::new(0)));
        for i in 0..100 {
            run(&mut store, &cursors, i + 1, &format!("SET key{i:03} v"));
        }
        // Each key is 11 bytes as a bulk string ($6 key000): 100 of them do not fit 500 bytes.
        let mut reading = Reading::new(Budget::new(500));
        let refused = read(&store, &cursors, &mut reading, "KEYS *");
        assert!(error_text(&refused).ends_with("(max-reply-bytes); use SCAN, which returns the keys a part at a time"));
        let Reply::Array(keys) = read(&store, &cursors, &mut Reading::new(Budget::new(2000)), "KEYS *") else {
            panic!("KEYS answers an array")
        };
        assert_eq!(keys.len(), 100);
        // SCAN with a huge COUNT returns what fits, and its cursor resumes after it.
        let mut seen = 0;
        let mut cursor = "0".to_string();
        loop {
            let mut reading = Reading::new(Budget::new(500));
            let reply = read(&store, &cursors, &mut reading, &format!("SCAN {cursor} COUNT 1000000000"));
            assert!(reply.encoded_len(false) <= 500, "{reply:?}");
            let Reply::Array(parts) = reply else { panic!("SCAN answers an array") };
            let [Reply::Bulk(next), Reply::Array(keys)] = &parts[..] else { panic!("{parts:?}") };
            assert!(!keys.is_empty() && keys.len() < 100);
            seen += keys.len();
            cursor = String::from_utf8(next.to_vec()).expect("a number");
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(seen, 100);
    }

    #[test]
    fn scan_count_is_capped() {
        let (mut store, cursors) = (KvStore::default(), Mutex::new(Cursors::new(0)));
        let ops = (0..MAX_SCAN_COUNT + 5)
            .map(|i| Op::Set {
                key: Bytes::from(format!("k{i:06}")),
                value: Bytes::new(),
                when: When::Always,
                get: false,
            })
            .collect();
        store.apply(Index(1), Command { request: None, op: Op::Batch(ops) });
        let mut reading = Reading::new(Budget::new(1 << 30));
        let Reply::Array(parts) = read(&store, &cursors, &mut reading, "SCAN 0 COUNT 18446744073") else {
            panic!("SCAN answers an array")
        };
        let [Reply::Bulk(next), Reply::Array(keys)] = &parts[..] else { panic!("{parts:?}") };
        assert_eq!(keys.len(), MAX_SCAN_COUNT);
        assert_ne!(&next[..], b"0", "the scan is not over");
    }

    #[test]
    fn errors_use_redis_wording() {
        assert_eq!(
            unknown_command(&args("FOO a b")),
            Reply::error("ERR unknown command 'FOO', with args beginning with: 'a' 'b' ")
        );
        assert_eq!(wrong_arity("get"), Reply::error("ERR wrong number of arguments for 'get' command"));
    }
}
