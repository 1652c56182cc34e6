//! The Redis protocol: RESP2 and RESP3 on a node's `redis` address, over the same keyspace
//! as the HTTP API (docs/redis.md).
//!
//! A connection reads whatever commands have arrived and runs them in order. Consecutive
//! writes go to the leader as one proposal (one log entry, one fsync, however many commands
//! a client pipelined); consecutive reads share one ReadIndex. A read after a write in the
//! same pipeline waits for the write, so a connection sees its own writes, as in Redis.
//! While a batch runs, nothing more is read from the connection: a client that sends
//! without reading its replies fills its socket buffers and waits, holding bounded memory.

mod commands;
mod glob;
pub mod resp;
mod transaction;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use skiff::config::ClusterConfig;
use skiff::{Node, NodeStatus, RoleName};

use crate::server::member_address;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use self::commands::{
    Answer, Budget, COMMANDS, Control, Cursors, Plan, Query, Reading, Spec, lookup, unknown_command, wrong_arity,
};
use self::resp::{Encoded, Frame, Parser, ParserLimits, Reply};
use self::transaction::Transaction;
use crate::auth::{Access, Auth, Token};
use crate::server::{Acceptor, ClientStream, Limits};
use crate::state::{Command, KvStore, Op, Output, Watched};

/// The Redis version whose commands and replies this listener follows, for clients that ask.
const REDIS_VERSION: &str = "7.0.0";
/// Commands run in one round, at most (the rest wait for the next).
const MAX_BATCH_COMMANDS: usize = 1024;
/// Bytes of one proposal, at most: a longer run of writes is split.
const MAX_PROPOSAL_BYTES: usize = 4 << 20;
/// The arguments of one command, at most.
pub(crate) const MAX_COMMAND_BYTES: usize = 8 << 20;
/// Encoded replies are written out once this many bytes are waiting.
const FLUSH_BYTES: usize = 64 << 10;
/// Values at least this long are written from the reply itself, not copied to be encoded.
const SHARE_FROM_BYTES: usize = 16 << 10;
/// A command must arrive whole within this long of its first byte (or within the idle
/// `timeout`, if shorter), whatever the `timeout`: a client trickling a command a byte at a
/// time is never idle, and would otherwise hold its connection forever.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// A connection keeps an input buffer up to this size between rounds.
const KEEP_BUFFER_BYTES: usize = 1 << 20;
/// A client that does not take its replies for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// What every connection of a node shares.
pub struct Redis {
    node: Arc<Node<KvStore>>,
    cluster: ClusterConfig,
    limits: Limits,
    cursors: Arc<Mutex<Cursors>>,
    next_client: AtomicU64,
    connected: AtomicUsize,
    started: Instant,
    metrics: Metrics,
    port: u16,
    /// The tokens, if the cluster has `[auth]`.
    auth: Option<Arc<Auth>>,
    /// The store's news: the cluster clock that writes are stamped with.
    published: Arc<crate::Published>,
}

impl Redis {
    pub fn new(
        node: Arc<Node<KvStore>>,
        cluster: ClusterConfig,
        limits: Limits,
        port: u16,
        auth: Option<Arc<Auth>>,
        published: Arc<crate::Published>,
    ) -> Redis {
        // Cursor numbers start somewhere random, so that a cursor taken to another node is
        // refused rather than misread.
        let start = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), port);
        let node_label = node.id().to_string();
        Redis {
            published,
            node,
            cluster,
            limits,
            cursors: Arc::new(Mutex::new(Cursors::new(start))),
            next_client: AtomicU64::new(1),
            connected: AtomicUsize::new(0),
            started: Instant::now(),
            metrics: Metrics::new(node_label),
            port,
            auth,
        }
    }
}

/// The listener's metrics, registered once (labels cost an allocation per use).
struct Metrics {
    writes: metrics::Counter,
    reads: metrics::Counter,
    other: metrics::Counter,
    errors: metrics::Counter,
    write_seconds: metrics::Histogram,
    read_seconds: metrics::Histogram,
}

impl Metrics {
    fn new(node: String) -> Metrics {
        let commands = |kind: &'static str| metrics::counter!("skiff_redis_commands_total", "node" => node.clone(), "kind" => kind);
        let seconds = |kind: &'static str| metrics::histogram!("skiff_redis_batch_seconds", "node" => node.clone(), "kind" => kind);
        Metrics {
            writes: commands("write"),
            reads: commands("read"),
            other: commands("other"),
            errors: metrics::counter!("skiff_redis_errors_total", "node" => node.clone()),
            write_seconds: seconds("write"),
            read_seconds: seconds("read"),
        }
    }
}

/// Accepts connections until `stop`, then closes the listener and every connection as soon
/// as it waits for its next command.
pub(crate) async fn serve(acceptor: Acceptor, redis: Arc<Redis>, mut stop: oneshot::Receiver<()>) {
    let connections = tokio_util::task::TaskTracker::new();
    let closing = CancellationToken::new();
    while let Some(incoming) = acceptor.next(&mut stop).await {
        let redis = Arc::clone(&redis);
        let closing = closing.clone();
        connections.spawn(async move {
            let address = incoming.address().to_string();
            let Some((stream, slot)) = incoming.establish().await else { return };
            redis.connected.fetch_add(1, Ordering::Relaxed);
            if let Err(error) = serve_client(stream, address, &redis, closing).await {
                tracing::debug!(%error, "a Redis connection ended");
            }
            redis.connected.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    drop(acceptor);
    closing.cancel();
    connections.close();
    // A connection stuck writing to a client that reads nothing is not waited for long.
    let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
}

/// One connection's own state.
struct Session {
    id: u64,
    name: Option<Bytes>,
    resp3: bool,
    address: String,
    quit: bool,
    /// After `READONLY`: reads answer from this node's state without ReadIndex.
    stale: bool,
    /// With `[auth]`: the token this connection authenticated with, and the tokens file
    /// generation it was checked against.
    token: Option<(Arc<Token>, u64)>,
    /// After `MULTI`: the commands queued for `EXEC`.
    multi: Option<Transaction>,
    /// After `WATCH`: the keys watched and how they were, until `EXEC`, `DISCARD` or `UNWATCH`.
    watched: Vec<Watched>,
}

impl Session {
    /// What this connection may do now: its token as the current tokens file has it (a
    /// reload may have changed its rights, or removed it).
    fn access(&mut self, auth: &Auth) -> Option<Access> {
        let (token, generation) = self.token.as_ref()?;
        if *generation != auth.generation() {
            let generation = auth.generation();
            self.token = auth.revalidate(token).map(|token| (token, generation));
        }
        self.token.as_ref().map(|(token, _)| Access::Token(Arc::clone(token)))
    }
}

async fn serve_client(
    mut stream: ClientStream,
    address: String,
    redis: &Redis,
    closing: CancellationToken,
) -> std::io::Result<()> {
    let id = redis.next_client.fetch_add(1, Ordering::Relaxed);
    let mut session = Session {
        id,
        name: None,
        resp3: false,
        address,
        quit: false,
        stale: false,
        token: None,
        multi: None,
        watched: Vec::new(),
    };
    let max_bulk = redis.limits.max_value_bytes.max(redis.limits.max_key_bytes);
    let mut parser = Parser::new(ParserLimits { max_bulk, max_command_bytes: MAX_COMMAND_BYTES });
    let mut input = BytesMut::with_capacity(16 << 10);
    let mut output = Encoded::new(SHARE_FROM_BYTES);
    let idle = redis.limits.redis_timeout();
    // When the connection began waiting for the rest of a command.
    let mut partial_since: Option<Instant> = None;
    loop {
        let mut frames = Vec::new();
        let mut broken = None;
        while frames.len() < MAX_BATCH_COMMANDS {
            match parser.next(&mut input) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => {
                    broken = Some(error);
                    break;
                }
            }
        }
        if frames.is_empty() && broken.is_none() {
            let partial = !input.is_empty() || parser.is_partial();
            let deadline = if partial {
                let since = *partial_since.get_or_insert_with(Instant::now);
                Some(since + idle.map_or(COMMAND_TIMEOUT, |idle| idle.min(COMMAND_TIMEOUT)))
            } else {
                partial_since = None;
                idle.map(|idle| Instant::now() + idle)
            };
            let read = tokio::select! {
                read = stream.read_buf(&mut input) => read?,
                () = sleep_until(deadline) => {
                    let what = if partial { "sent part of a command and no more" } else { "was idle" };
                    tracing::debug!(client = session.id, address = %session.address, "closing a Redis connection that {what} for too long");
                    return Ok(());
                }
                _ = closing.cancelled() => 0,
            };
            if read == 0 {
                return Ok(());
            }
            continue;
        }
        partial_since = None;
        let mut replies = run(redis, &mut session, frames).await;
        if let Some(error) = &broken {
            replies.push(Reply::error(format!("ERR Protocol error: {}", error.0)));
        }
        write_replies(&mut stream, replies, session.resp3, &mut output).await?;
        // A large command leaves a large buffer behind: give it back.
        if input.is_empty() && input.capacity() > KEEP_BUFFER_BYTES {
            input = BytesMut::with_capacity(16 << 10);
        }
        if session.quit || broken.is_some() {
            return stream.shutdown().await;
        }
    }
}

/// Encodes and writes `replies` a little at a time: the elements of arrays one by one,
/// each dropped once encoded, long values shared rather than copied, and the bytes written
/// whenever [`FLUSH_BYTES`] are waiting. So a connection holds its replies and little more.
async fn write_replies(
    stream: &mut ClientStream,
    replies: Vec<Reply>,
    resp3: bool,
    output: &mut Encoded,
) -> std::io::Result<()> {
    let mut stack = vec![replies.into_iter()];
    while let Some(top) = stack.last_mut() {
        match top.next() {
            None => {
                stack.pop();
                continue;
            }
            Some(Reply::Array(items)) => {
                output.array_header(items.len());
                stack.push(items.into_iter());
            }
            Some(reply) => reply.encode_shared(resp3, output),
        }
        if output.len() >= FLUSH_BYTES {
            write_out(stream, output).await?;
        }
    }
    write_out(stream, output).await
}

/// Writes what `output` holds; a client that takes none of it for [`WRITE_TIMEOUT`] is an error.
async fn write_out(stream: &mut ClientStream, output: &mut Encoded) -> std::io::Result<()> {
    for chunk in output.take() {
        match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&chunk)).await {
            Ok(written) => written?,
            Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the client reads no replies")),
        }
    }
    Ok(())
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Runs a round of commands in order and returns their replies in order.
async fn run(redis: &Redis, session: &mut Session, frames: Vec<Frame>) -> Vec<Reply> {
    let mut replies: Vec<Option<Reply>> = Vec::with_capacity(frames.len());
    let mut pending = Pending::None;
    // The replies of the round share one budget (a read's reply checked before it is built).
    let mut budget = Budget::new(redis.limits.max_reply_bytes);
    for frame in frames {
        if session.quit {
            break;
        }
        let slot = replies.len();
        replies.push(None);
        let plan = match frame {
            Frame::Command(args) => command(redis, session, &args).await,
            Frame::TooLarge { name, bytes, limit } => {
                let name = name.map(|name| String::from_utf8_lossy(&name).to_lowercase()).unwrap_or_default();
                let message = if limit == redis.limits.max_value_bytes.max(redis.limits.max_key_bytes) as u64 {
                    format!("ERR '{name}' refused: an argument is over the limit of {limit} bytes")
                } else {
                    format!(
                        "ERR '{name}' refused: with {bytes} bytes of arguments, the command is over the limit of {limit} bytes"
                    )
                };
                Plan::Reply(Reply::error(message))
            }
        };
        if let Plan::Transaction(control) = plan {
            // What ran before goes first: WATCH reads, and EXEC writes, after it.
            pending.run(redis, session.stale, &mut replies, &mut budget).await;
            redis.metrics.other.increment(1);
            let reply = transaction(redis, session, control).await;
            budget.charge(reply.encoded_len(false));
            replies[slot] = Some(reply);
            continue;
        }
        if let Some(multi) = &mut session.multi {
            redis.metrics.other.increment(1);
            // QUIT is not queued: it answers and closes the connection, as in Redis.
            let reply = if session.quit { Reply::Ok } else { multi.queue(plan) };
            budget.charge(reply.encoded_len(false));
            replies[slot] = Some(reply);
            continue;
        }
        match plan {
            Plan::Reply(reply) => {
                redis.metrics.other.increment(1);
                budget.charge(reply.encoded_len(false));
                replies[slot] = Some(reply)
            }
            Plan::Write { ops, answer } => {
                let size: usize = ops.iter().map(op_size).sum();
                match &mut pending {
                    Pending::Writes(writes) if writes.bytes + size <= MAX_PROPOSAL_BYTES => {
                        writes.add(slot, ops, answer, size)
                    }
                    _ => {
                        pending.run(redis, session.stale, &mut replies, &mut budget).await;
                        let mut writes = Writes::default();
                        writes.add(slot, ops, answer, size);
                        pending = Pending::Writes(writes);
                    }
                }
            }
            Plan::Transaction(_) => unreachable!("transaction commands ran above"),
            Plan::Read(query) => match &mut pending {
                Pending::Reads(reads) => reads.push((slot, query)),
                _ => {
                    pending.run(redis, session.stale, &mut replies, &mut budget).await;
                    pending = Pending::Reads(vec![(slot, query)]);
                }
            },
        }
    }
    pending.run(redis, session.stale, &mut replies, &mut budget).await;
    let replies: Vec<Reply> =
        replies.into_iter().map(|reply| reply.unwrap_or_else(|| Reply::error("ERR no reply"))).collect();
    let errors = replies.iter().filter(|reply| matches!(reply, Reply::Error(_))).count();
    redis.metrics.errors.increment(errors as u64);
    replies
}

/// Commands waiting to run together.
enum Pending {
    None,
    Writes(Writes),
    Reads(Vec<(usize, Query)>),
}

#[derive(Default)]
struct Writes {
    ops: Vec<Op>,
    /// Per command: its reply slot, how its outputs become a reply, how many ops it has.
    commands: Vec<(usize, Answer, usize)>,
    bytes: usize,
}

impl Writes {
    fn add(&mut self, slot: usize, ops: Vec<Op>, answer: Answer, bytes: usize) {
        self.commands.push((slot, answer, ops.len()));
        self.ops.extend(ops);
        self.bytes += bytes;
    }
}

impl Pending {
    /// Runs the commands waiting, and puts their replies in their slots; each takes its
    /// share of `budget`.
    async fn run(&mut self, redis: &Redis, stale: bool, replies: &mut [Option<Reply>], budget: &mut Budget) {
        match std::mem::replace(self, Pending::None) {
            Pending::None => {}
            Pending::Writes(Writes { ops, commands, .. }) => {
                let started = Instant::now();
                redis.metrics.writes.increment(commands.len() as u64);
                // One operation travels bare (and reads well in the log); more as a batch.
                let (op, single) = match <[Op; 1]>::try_from(ops) {
                    Ok([op]) => (op, true),
                    Err(ops) => (Op::Batch(ops), false),
                };
                let op = op.within_quota(redis.limits.keyspace_quota_bytes).at(redis.published.now_ms());
                let outputs = match redis.node.propose(Command { request: None, op }).await {
                    Ok(Output::Batch(outputs)) if !single => Ok(outputs),
                    Ok(output) => Ok(vec![output]),
                    Err(error) => Err(node_error(&error)),
                };
                redis.metrics.write_seconds.record(started.elapsed().as_secs_f64());
                let mut at = 0;
                for (slot, answer, count) in commands {
                    let reply = match &outputs {
                        Ok(outputs) => answer.reply(outputs.get(at..at + count).unwrap_or_default()),
                        Err(reply) => reply.clone(),
                    };
                    budget.charge(reply.encoded_len(false));
                    replies[slot] = Some(reply);
                    at += count;
                }
            }
            Pending::Reads(queries) => {
                let started = Instant::now();
                redis.metrics.reads.increment(queries.len() as u64);
                let (slots, queries): (Vec<usize>, Vec<Query>) = queries.into_iter().unzip();
                let cursors = Arc::clone(&redis.cursors);
                let mut reading = Reading::new(*budget);
                let answered = if queries.iter().any(Query::is_heavy) {
                    // KEYS and SCAN walk the keyspace: on a view taken on the apply thread
                    // (a reference count), read here, so that apply goes on meanwhile.
                    let turn = crate::heavy::turn().await;
                    let view = |store: &KvStore| store.view();
                    let view = if stale { redis.node.read_stale(view).await } else { redis.node.read(view).await };
                    match view {
                        Ok(view) => tokio::task::spawn_blocking(move || {
                            let _turn = turn;
                            let answers = queries.into_iter().map(|query| query.run(&view, &cursors, &mut reading));
                            (answers.collect::<Vec<_>>(), reading.budget)
                        })
                        .await
                        .map_err(|error| Reply::error(format!("ERR the read failed: {error}"))),
                        Err(error) => Err(node_error(&error)),
                    }
                } else {
                    let run = move |store: &KvStore| {
                        let answers = queries.into_iter().map(|query| query.run(store, &cursors, &mut reading));
                        (answers.collect::<Vec<_>>(), reading.budget)
                    };
                    let answered = if stale { redis.node.read_stale(run).await } else { redis.node.read(run).await };
                    answered.map_err(|error| node_error(&error))
                };
                redis.metrics.read_seconds.record(started.elapsed().as_secs_f64());
                match answered {
                    Ok((answers, left)) => {
                        *budget = left;
                        for (slot, reply) in slots.into_iter().zip(answers) {
                            replies[slot] = Some(reply);
                        }
                    }
                    Err(reply) => {
                        for slot in slots {
                            replies[slot] = Some(reply.clone());
                        }
                    }
                }
            }
        }
    }
}

/// The size of an operation's keys and values, to bound proposals.
fn op_size(op: &Op) -> usize {
    match op {
        Op::Put { key, value, .. } | Op::Set { key, value, .. } | Op::Append { key, value, .. } => {
            key.len() + value.len()
        }
        Op::Delete { key, .. } | Op::IncrBy { key, .. } | Op::Expire { key, .. } => key.len(),
        Op::DeletePrefix { prefix } => prefix.len(),
        Op::Batch(ops) => ops.iter().map(op_size).sum(),
        Op::WithinQuota { op, .. } | Op::At { op, .. } | Op::Fenced { op, .. } => op_size(op),
        Op::Read { keys } => keys.iter().map(|key| key.len()).sum(),
        Op::Guarded { expect, op } => expect.iter().map(|watched| watched.key.len()).sum::<usize>() + op_size(op),
        Op::SetWith { key, value, .. }
        | Op::Acquire { key, value, .. }
        | Op::Release { key, value, .. }
        | Op::PutLeased { key, value, .. } => key.len() + value.len(),
        Op::LeaseGrant(spec) => spec.id.len() + spec.name.len() + spec.node.len(),
        Op::LeaseRenew { id } | Op::LeaseRevoke { id } => id.len(),
        Op::Tick { .. } => 0,
        Op::Txn(ops) => ops.iter().map(|op| op.key.len() + op.value.len() + op.session.len()).sum(),
    }
}

/// Runs MULTI, EXEC, DISCARD, WATCH or UNWATCH, with Redis 7's errors.
async fn transaction(redis: &Redis, session: &mut Session, control: Control) -> Reply {
    match (control, session.multi.is_some()) {
        (Control::Multi, true) => Reply::error("ERR MULTI calls can not be nested"),
        (Control::Multi, false) => {
            session.multi = Some(Transaction::default());
            Reply::Ok
        }
        (Control::Exec, false) => Reply::error("ERR EXEC without MULTI"),
        (Control::Discard, false) => Reply::error("ERR DISCARD without MULTI"),
        (Control::Exec, true) => {
            let watched = std::mem::take(&mut session.watched);
            match session.multi.take() {
                Some(multi) => multi.exec(redis, watched).await,
                None => Reply::error("ERR EXEC without MULTI"),
            }
        }
        (Control::Discard, true) => {
            session.multi = None;
            session.watched.clear();
            Reply::Ok
        }
        (Control::Watch(_), true) => Reply::error("ERR WATCH inside MULTI is not allowed"),
        (Control::Watch(keys), false) => {
            // Linearizable: the modify indexes are at least those of every write acknowledged
            // before WATCH, so a change after it is seen by EXEC's guard.
            match redis.node.read(move |store| transaction::read_watched(store, &keys)).await {
                Ok(found) => match transaction::add_watched(&mut session.watched, found) {
                    Ok(()) => Reply::Ok,
                    Err(refused) => refused,
                },
                Err(error) => node_error(&error),
            }
        }
        // Inside MULTI, Redis queues UNWATCH; EXEC forgets the keys anyway.
        (Control::Unwatch, true) => match &mut session.multi {
            Some(multi) => multi.queue(Plan::Reply(Reply::Ok)),
            None => Reply::Ok,
        },
        (Control::Unwatch, false) => {
            session.watched.clear();
            Reply::Ok
        }
    }
}

/// A node's error as a Redis error ([`crate::redis_error`]).
fn node_error(error: &skiff::Error) -> Reply {
    Reply::error(crate::redis_error(error))
}

/// Plans one command: the connection and server commands here, the keyspace ones in
/// [`commands::plan`].
async fn command(redis: &Redis, session: &mut Session, args: &[Bytes]) -> Plan {
    // With `[auth]`, nothing but authenticating (and PING, QUIT) before a token.
    let access = match &redis.auth {
        None => Access::Open,
        Some(auth) => match session.access(auth) {
            Some(access) => access,
            None if ["auth", "hello", "ping", "quit"]
                .iter()
                .any(|name| args[0].eq_ignore_ascii_case(name.as_bytes())) =>
            {
                Access::Open
            }
            None => return Plan::Reply(Reply::error("NOAUTH Authentication required.")),
        },
    };
    let Some(spec) = lookup(&args[0]) else { return Plan::Reply(unknown_command(args)) };
    let arity_ok =
        if spec.arity >= 0 { args.len() == spec.arity as usize } else { args.len() >= (-spec.arity) as usize };
    if !arity_ok {
        return Plan::Reply(wrong_arity(spec.name));
    }
    if let Err(refusal) = permitted(spec, args, &access) {
        return Plan::Reply(refusal);
    }
    if session.multi.is_some() && matches!(spec.name, "auth" | "hello" | "client" | "readonly" | "readwrite") {
        return Plan::Reply(Reply::error(transaction::NOT_IN_MULTI));
    }
    let reply = match spec.name {
        "auth" => authenticate(redis, session, &args[1..]),
        "ping" => match args.get(1) {
            None => Reply::Simple("PONG".into()),
            Some(message) if args.len() == 2 => Reply::Bulk(message.clone()),
            Some(_) => wrong_arity("ping"),
        },
        "echo" => Reply::Bulk(args[1].clone()),
        "quit" => {
            session.quit = true;
            Reply::Ok
        }
        "select" => match crate::state::parse_integer(&args[1]) {
            Some(0) => Reply::Ok,
            Some(_) => Reply::error("ERR DB index is out of range"),
            None => Reply::error(crate::state::NOT_AN_INTEGER),
        },
        "hello" => hello(redis, session, &args[1..]),
        "readonly" | "readwrite" => {
            session.stale = spec.name == "readonly";
            Reply::Ok
        }
        "client" => client(session, &args[1..]),
        "command" => command_info(&args[1..]),
        "config" => config(&redis.limits, &args[1..]),
        "info" => info(redis, &args[1..]).await,
        "multi" => return Plan::Transaction(Control::Multi),
        "exec" => return Plan::Transaction(Control::Exec),
        "discard" => return Plan::Transaction(Control::Discard),
        "watch" => return Plan::Transaction(Control::Watch(args[1..].to_vec())),
        "unwatch" => return Plan::Transaction(Control::Unwatch),
        _ => {
            return match commands::plan(spec, args, &redis.limits) {
                // Whole-keyspace reads show only the keys the token may read.
                Plan::Read(Query::Keys { pattern, .. }) => Plan::Read(Query::Keys { pattern, visible: access }),
                Plan::Read(Query::Scan { cursor, pattern, count, strings, .. }) => {
                    Plan::Read(Query::Scan { cursor, pattern, count, strings, visible: access })
                }
                plan => plan,
            };
        }
    };
    Plan::Reply(reply)
}

/// Whether `access` allows the command on its keys (reads for read-only commands, writes
/// for the others); whole-keyspace writes and counts need a management token. KEYS and SCAN
/// are filtered instead.
fn permitted(spec: &Spec, args: &[Bytes], access: &Access) -> Result<(), Reply> {
    if access.is_management() {
        return Ok(());
    }
    if matches!(spec.name, "flushall" | "flushdb" | "dbsize") {
        return Err(Reply::error(format!(
            "NOPERM User has no permissions to run the '{}' command (it needs a management token)",
            spec.name
        )));
    }
    if spec.first_key <= 0 {
        return Ok(());
    }
    let write = spec.flags.contains(&"write");
    let last = if spec.last_key < 0 { args.len() as i32 + spec.last_key } else { spec.last_key };
    let mut at = spec.first_key;
    while at <= last {
        if let Some(key) = args.get(at as usize) {
            let allowed = if write { access.can_write(key) } else { access.can_read(key) };
            if !allowed {
                return Err(Reply::error(
                    "NOPERM this user has no permissions to access one of the keys used as arguments",
                ));
            }
        }
        at += spec.step.max(1);
    }
    Ok(())
}

/// AUTH [username] password.
fn authenticate(redis: &Redis, session: &mut Session, args: &[Bytes]) -> Reply {
    let Some(auth) = &redis.auth else {
        if args.len() == 1 {
            return Reply::error(
                "ERR AUTH <password> called without any password configured for the default user. \
                 Are you sure your configuration is correct?",
            );
        }
        // Redis's default user without a password takes any: so does a node without [auth].
        return Reply::Ok;
    };
    let found = match args {
        [secret] => auth.authenticate(None, secret),
        [name, secret] => auth.authenticate(Some(name), secret),
        _ => return Reply::error("ERR syntax error"),
    };
    match found {
        Some(token) => {
            session.token = Some((token, auth.generation()));
            Reply::Ok
        }
        None => Reply::error(WRONGPASS),
    }
}

/// Redis's answer to credentials that match no user.
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Redis 7's answer to `HELLO` without `AUTH` on a connection that has not authenticated.
const NOAUTH_HELLO: &str = "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
    HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol \
    version at the same time";

/// HELLO [protover [AUTH username password] [SETNAME clientname]]
fn hello(redis: &Redis, session: &mut Session, args: &[Bytes]) -> Reply {
    let mut resp3 = session.resp3;
    let mut name = None;
    if let Some(version) = args.first() {
        match crate::state::parse_integer(version) {
            Some(2) => resp3 = false,
            Some(3) => resp3 = true,
            Some(_) => return Reply::error("NOPROTO unsupported protocol version"),
            None => return Reply::error("ERR Protocol version is not an integer or out of range"),
        }
        let mut rest = &args[1..];
        while let Some(option) = rest.first() {
            if option.eq_ignore_ascii_case(b"auth") && rest.len() >= 3 {
                if let Some(auth) = &redis.auth {
                    match auth.authenticate(Some(&rest[1]), &rest[2]) {
                        Some(token) => session.token = Some((token, auth.generation())),
                        None => return Reply::error(WRONGPASS),
                    }
                }
                rest = &rest[3..];
            } else if option.eq_ignore_ascii_case(b"setname") && rest.len() >= 2 {
                name = Some(rest[1].clone());
                rest = &rest[2..];
            } else {
                return Reply::error(format!("ERR Syntax error in HELLO option '{}'", String::from_utf8_lossy(option)));
            }
        }
    }
    // As Redis 7: HELLO without AUTH answers only an authenticated connection (it would
    // otherwise tell anyone the server's version and role, and switch the protocol).
    if let Some(auth) = &redis.auth
        && session.access(auth).is_none()
    {
        return Reply::error(NOAUTH_HELLO);
    }
    if let Some(name) = name {
        if let Err(reply) = check_client_name(&name) {
            return reply;
        }
        session.name = Some(name).filter(|name| !name.is_empty());
    }
    session.resp3 = resp3;
    let leader = redis.node.leader().leader == Some(redis.node.id());
    let pair = |key: &str, value: Reply| (Reply::bulk(key), value);
    Reply::Map(vec![
        pair("server", Reply::bulk("skiff")),
        pair("version", Reply::bulk(REDIS_VERSION)),
        pair("skiff_version", Reply::bulk(env!("CARGO_PKG_VERSION"))),
        pair("proto", Reply::Integer(if resp3 { 3 } else { 2 })),
        pair("id", Reply::Integer(session.id as i64)),
        pair("mode", Reply::bulk("standalone")),
        pair("role", Reply::bulk(if leader { "master" } else { "replica" })),
        pair("modules", Reply::Array(Vec::new())),
    ])
}

fn check_client_name(name: &[u8]) -> Result<(), Reply> {
    if name.iter().any(|&byte| !(b'!'..=b'~').contains(&byte)) {
        return Err(Reply::error("ERR Client names cannot contain spaces, newlines or special characters."));
    }
    Ok(())
}

/// CLIENT SETNAME | GETNAME | ID | INFO | LIST | SETINFO
fn client(session: &mut Session, args: &[Bytes]) -> Reply {
    let sub = String::from_utf8_lossy(&args[0]).to_lowercase();
    let arity = |count: usize| if args.len() == count { Ok(()) } else { Err(wrong_arity(&format!("client|{sub}"))) };
    let result = match sub.as_str() {
        "setname" => arity(2).and_then(|()| check_client_name(&args[1])).map(|()| {
            session.name = Some(args[1].clone()).filter(|name| !name.is_empty());
            Reply::Ok
        }),
        "getname" => arity(1).map(|()| session.name.clone().map_or(Reply::Nil, Reply::Bulk)),
        "id" => arity(1).map(|()| Reply::Integer(session.id as i64)),
        "setinfo" => arity(3).map(|()| Reply::Ok),
        "info" | "list" => {
            let name = session.name.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            let protocol = if session.resp3 { 3 } else { 2 };
            Ok(Reply::bulk(format!(
                "id={} addr={} name={name} db=0 resp={protocol}
",
                session.id, session.address
            )))
        }
        _ => Err(Reply::error(format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(&args[0])
        ))),
    };
    result.unwrap_or_else(|reply| reply)
}

/// COMMAND, COMMAND COUNT | LIST | INFO name... | DOCS [name...]
fn command_info(args: &[Bytes]) -> Reply {
    let named = |names: &[Bytes]| -> Vec<Option<&'static Spec>> {
        if names.is_empty() { COMMANDS.iter().map(Some).collect() } else { names.iter().map(|n| lookup(n)).collect() }
    };
    let Some(sub) = args.first() else { return Reply::Array(COMMANDS.iter().map(describe).collect()) };
    let sub = String::from_utf8_lossy(sub).to_lowercase();
    match sub.as_str() {
        "count" => Reply::Integer(COMMANDS.len() as i64),
        "list" => Reply::Array(COMMANDS.iter().map(|spec| Reply::bulk(spec.name)).collect()),
        "info" => Reply::Array(named(&args[1..]).into_iter().map(|spec| spec.map_or(Reply::Nil, describe)).collect()),
        "docs" => Reply::Map(
            named(&args[1..])
                .into_iter()
                .flatten()
                .map(|spec| {
                    let docs = vec![
                        (Reply::bulk("summary"), Reply::bulk(spec.summary)),
                        (Reply::bulk("since"), Reply::bulk("1.0.0")),
                        (Reply::bulk("group"), Reply::bulk(spec.group)),
                    ];
                    (Reply::bulk(spec.name), Reply::Map(docs))
                })
                .collect(),
        ),
        _ => Reply::error(format!("ERR unknown subcommand '{sub}'. Try COMMAND HELP.")),
    }
}

/// A command as `COMMAND INFO` describes it (Redis 7's ten fields).
fn describe(spec: &Spec) -> Reply {
    let words = |words: &[&str]| Reply::Array(words.iter().map(|word| Reply::Simple(word.to_string())).collect());
    let access = if spec.flags.contains(&"write") { "@write" } else { "@read" };
    let categories = [format!("@{}", spec.group), access.to_string()];
    Reply::Array(vec![
        Reply::bulk(spec.name),
        Reply::Integer(spec.arity.into()),
        words(spec.flags),
        Reply::Integer(spec.first_key.into()),
        Reply::Integer(spec.last_key.into()),
        Reply::Integer(spec.step.into()),
        Reply::Array(categories.into_iter().map(Reply::Simple).collect()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

/// CONFIG GET parameter...: the few parameters clients and `redis-benchmark` ask about,
/// and the idle `timeout` (seconds; 0: never).
fn config(limits: &Limits, args: &[Bytes]) -> Reply {
    let timeout = limits.redis_timeout_secs.to_string();
    let parameters: [(&str, &str); 6] = [
        ("appendfsync", "always"),
        ("appendonly", "yes"),
        ("databases", "1"),
        ("maxmemory", "0"),
        ("save", ""),
        ("timeout", &timeout),
    ];
    if !args[0].eq_ignore_ascii_case(b"get") {
        let sub = String::from_utf8_lossy(&args[0]);
        return Reply::error(format!("ERR unknown subcommand '{sub}'. Try CONFIG HELP. (Skiff supports CONFIG GET)"));
    }
    if args.len() < 2 {
        return wrong_arity("config|get");
    }
    let found = parameters
        .iter()
        .filter(|(name, _)| {
            args[1..].iter().any(|pattern| glob::matches(&pattern.to_ascii_lowercase(), name.as_bytes()))
        })
        .map(|(name, value)| (Reply::bulk(*name), Reply::bulk(*value)))
        .collect();
    Reply::Map(found)
}

/// INFO [section...]: server, clients, replication (the Raft view) and keyspace.
async fn info(redis: &Redis, args: &[Bytes]) -> Reply {
    let wanted = |section: &str| {
        args.is_empty()
            || args.iter().any(|arg| {
                ["all", "everything", "default", section].iter().any(|name| arg.eq_ignore_ascii_case(name.as_bytes()))
            })
    };
    let status = match redis.node.status().await {
        Ok(status) => status,
        Err(error) => return node_error(&error),
    };
    let (keys, expires) =
        redis.node.read_stale(|store| (store.len(), store.keys_with_deadline())).await.unwrap_or((0, 0));
    let mut text = String::new();
    if wanted("server") {
        text += &format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nskiff_version:{}\r\nredis_mode:standalone\r\n\
             process_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nnode_id:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            redis.port,
            redis.started.elapsed().as_secs(),
            status.id,
        );
    }
    if wanted("clients") {
        text += &format!("# Clients\r\nconnected_clients:{}\r\n\r\n", redis.connected.load(Ordering::Relaxed));
    }
    if wanted("replication") {
        text += &replication(redis, &status);
    }
    if wanted("keyspace") {
        text += "# Keyspace\r\n";
        if keys > 0 {
            text += &format!("db0:keys={keys},expires={expires},avg_ttl=0\r\n");
        }
    }
    Reply::Text(text)
}

/// INFO's replication section: Redis's role (the leader is the master), then Raft's view.
fn replication(redis: &Redis, status: &NodeStatus) -> String {
    let leader = status.leader.map(|id| id.to_string()).unwrap_or_else(|| "none".into());
    let mut text = String::from("# Replication\r\n");
    if status.role == RoleName::Leader {
        text += &format!("role:master\r\nconnected_slaves:{}\r\n", status.peers.len());
    } else {
        text += "role:slave\r\n";
        if let Some(address) =
            status.leader.and_then(|id| member_address(&redis.cluster, &status.membership, id)).and_then(|a| a.redis)
        {
            let (host, port) = address.rsplit_once(':').unwrap_or((&address, ""));
            text += &format!("master_host:{host}\r\nmaster_port:{port}\r\nmaster_link_status:up\r\n");
        }
    }
    text += &format!(
        "raft_role:{}\r\nraft_term:{}\r\nraft_leader:{leader}\r\nraft_commit_index:{}\r\n\
         raft_applied_index:{}\r\nraft_last_log_index:{}\r\nraft_voters:{}\r\n\r\n",
        status.role,
        status.term.0,
        status.commit.0,
        status.applied.0,
        status.last_log_id.index.0,
        status.membership.voters.len(),
    );
    text
}
