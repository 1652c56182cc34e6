//! Redis transactions: `MULTI` queues a connection's commands, `EXEC` proposes their writes
//! as one log entry applied all or nothing, `WATCH` makes that entry conditional on keys
//! being unchanged ([`Op::Guarded`]). See docs/redis.md.

use bytes::Bytes;

use std::collections::BTreeMap;

use super::commands::{Answer, Budget, Plan, Query, Reading};
use super::resp::Reply;
use super::{MAX_PROPOSAL_BYTES, Redis, node_error, op_size};
use crate::state::{Command, Entry, Keyspace, Op, Output, Value, Watched};

/// Commands one transaction may queue, at most.
pub(super) const MAX_QUEUED_COMMANDS: usize = 100_000;
/// Keys one connection may watch, at most.
pub(super) const MAX_WATCHED_KEYS: usize = 10_000;

/// Redis 7's answer to `EXEC` after an error at queue time.
pub(super) const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";
/// The answer to a command that would change the connection, inside `MULTI`.
pub(super) const NOT_IN_MULTI: &str = "ERR Command not allowed inside a transaction";
/// The answer to a whole-keyspace read inside `MULTI`.
pub(super) const NO_SCANS_IN_MULTI: &str =
    "ERR Skiff does not run KEYS, SCAN or DBSIZE inside MULTI: run them before MULTI, after WATCH";

/// The commands queued since `MULTI`.
#[derive(Default)]
pub(super) struct Transaction {
    queued: Vec<Queued>,
    /// The bytes of the queued writes' keys and values.
    bytes: usize,
    /// A command was refused at queue time: `EXEC` answers [`EXECABORT`].
    failed: bool,
}

/// A queued command.
enum Queued {
    /// Its reply, known when it was queued (PING, ECHO, SELECT, ...).
    Reply(Reply),
    /// Its operations, and how their outputs become its reply.
    Write { ops: Vec<Op>, answer: Answer },
    /// A read of named keys: an [`Op::Read`] in the entry, so that it answers the state at
    /// its place in the transaction.
    Read(Query),
}

impl Transaction {
    /// Queues the command planned as `plan` and answers `QUEUED`, or refuses it with the
    /// error, which makes `EXEC` abort.
    pub(super) fn queue(&mut self, plan: Plan) -> Reply {
        let refused = match plan {
            Plan::Reply(Reply::Error(error)) => Reply::Error(error),
            _ if self.queued.len() >= MAX_QUEUED_COMMANDS => {
                Reply::error(format!("ERR the transaction is over the limit of {MAX_QUEUED_COMMANDS} commands"))
            }
            Plan::Reply(reply) => {
                self.queued.push(Queued::Reply(reply));
                return queued();
            }
            Plan::Write { ops, answer } => {
                let bytes = self.bytes + ops.iter().map(op_size).sum::<usize>();
                if bytes > MAX_PROPOSAL_BYTES {
                    Reply::error(format!(
                        "ERR the transaction is over the limit of {MAX_PROPOSAL_BYTES} bytes of keys and values"
                    ))
                } else {
                    self.bytes = bytes;
                    self.queued.push(Queued::Write { ops, answer });
                    return queued();
                }
            }
            Plan::Read(query) => match query.keys() {
                Some(keys) => {
                    let bytes = self.bytes + keys.iter().map(Bytes::len).sum::<usize>();
                    if bytes > MAX_PROPOSAL_BYTES {
                        Reply::error(format!(
                            "ERR the transaction is over the limit of {MAX_PROPOSAL_BYTES} bytes of keys and values"
                        ))
                    } else {
                        self.bytes = bytes;
                        self.queued.push(Queued::Read(query));
                        return queued();
                    }
                }
                None => Reply::error(NO_SCANS_IN_MULTI),
            },
            Plan::Transaction(control) => Reply::error(format!("ERR {control:?} cannot be queued")),
        };
        self.failed = true;
        refused
    }

    /// `EXEC`: the replies of the queued commands, their writes applied as one entry if
    /// every key of `watched` is unchanged; a nil array if one changed.
    pub(super) async fn exec(self, redis: &Redis, watched: Vec<Watched>) -> Reply {
        if self.failed {
            return Reply::error(EXECABORT);
        }
        let empty = self.queued.iter().all(|queued| matches!(queued, Queued::Reply(_)));
        if empty && watched.is_empty() {
            return Reply::Array(self.queued.into_iter().map(Queued::into_reply).collect());
        }
        let mut ops = Vec::new();
        for queued in &self.queued {
            match queued {
                Queued::Write { ops: some, .. } => ops.extend(some.iter().cloned()),
                Queued::Read(query) => ops.push(Op::Read { keys: query.keys().unwrap_or_default() }),
                Queued::Reply(_) => {}
            }
        }
        // Guarded even without watched keys: over the keyspace quota, the whole entry is
        // refused (a batch alone would have its deletes applied).
        let op = Op::Guarded { expect: watched, op: Box::new(Op::Batch(ops)) };
        let op = op.within_quota(redis.limits.keyspace_quota_bytes).at(redis.published.now_ms());
        let outputs = match redis.node.propose(Command { request: None, op }).await {
            Ok(Output::Batch(outputs)) => outputs,
            Ok(Output::Aborted) => return Reply::NilArray,
            Ok(Output::Refused(message)) => return Reply::error(message),
            Ok(output) => return Reply::error(format!("ERR unexpected output {output:?} for EXEC")),
            Err(error) => return node_error(&error),
        };
        let mut at = 0;
        let mut budget = Budget::new(redis.limits.max_reply_bytes);
        let mut replies = Vec::with_capacity(self.queued.len());
        for queued in self.queued {
            replies.push(match queued {
                Queued::Reply(reply) => reply,
                Queued::Write { ops, answer } => {
                    let reply = answer.reply(outputs.get(at..at + ops.len()).unwrap_or_default());
                    at += ops.len();
                    reply
                }
                Queued::Read(query) => {
                    let reply = match (query.keys(), outputs.get(at)) {
                        (Some(keys), Some(Output::Read { now_ms, found })) => {
                            let captured = Captured::new(*now_ms, keys, found.clone());
                            // A `Reading` of its own: a round's reading shares one copy of
                            // each key's value, and here a key may change between reads.
                            let mut reading = Reading::new(budget);
                            let reply = query.run(&captured, &redis.cursors, &mut reading);
                            budget = reading.budget;
                            reply
                        }
                        (_, output) => Reply::error(format!("ERR unexpected output {output:?} for a read")),
                    };
                    at += 1;
                    reply
                }
            });
        }
        Reply::Array(replies)
    }
}

impl Queued {
    fn into_reply(self) -> Reply {
        match self {
            Queued::Reply(reply) => reply,
            Queued::Write { .. } | Queued::Read(_) => Reply::error("ERR a command was not run"),
        }
    }
}

fn queued() -> Reply {
    Reply::Simple("QUEUED".into())
}

/// `WATCH`'s record of `keys` as `read` finds them, added to `watched` (a key watched
/// already keeps its first record, as in Redis); refused past [`MAX_WATCHED_KEYS`].
pub(super) fn add_watched(watched: &mut Vec<Watched>, found: Vec<Watched>) -> Result<(), Reply> {
    let mut all = watched.clone();
    for record in found {
        if !all.iter().any(|old| old.key == record.key) {
            all.push(record);
        }
    }
    if all.len() > MAX_WATCHED_KEYS {
        return Err(Reply::error(format!("ERR a connection may watch at most {MAX_WATCHED_KEYS} keys")));
    }
    *watched = all;
    Ok(())
}

/// The keys of `WATCH` as the store has them now.
pub(super) fn read_watched(store: &crate::state::KvStore, keys: &[Bytes]) -> Vec<Watched> {
    keys.iter().map(|key| Watched::new(key.clone(), store.get(key))).collect()
}

/// The keys an [`Op::Read`] found, as a keyspace for the queries that asked for them.
struct Captured {
    now_ms: u64,
    values: BTreeMap<Bytes, Value>,
}

impl Captured {
    fn new(now_ms: u64, keys: Vec<Bytes>, found: Vec<Option<Value>>) -> Captured {
        let values = keys.into_iter().zip(found).filter_map(|(key, value)| Some((key, value?))).collect();
        Captured { now_ms, values }
    }
}

fn entry<'a>(key: &'a Bytes, value: &'a Value) -> Entry<'a> {
    Entry {
        key,
        value: &value.value,
        create_index: value.create_index,
        modify_index: value.modify_index,
        flags: value.flags,
        expires: value.expires,
    }
}

impl Keyspace for Captured {
    fn get(&self, key: &[u8]) -> Option<Entry<'_>> {
        self.values.get_key_value(key).map(|(key, value)| entry(key, value))
    }

    fn after<'a>(&'a self, after: Option<&[u8]>) -> Box<dyn Iterator<Item = Entry<'a>> + 'a> {
        let after = after.map(Bytes::copy_from_slice);
        Box::new(
            self.values
                .iter()
                .filter(move |(key, _)| after.as_ref().is_none_or(|after| *key > after))
                .map(|(key, value)| entry(key, value)),
        )
    }

    fn len(&self) -> usize {
        self.values.len()
    }

    fn now_ms(&self) -> u64 {
        self.now_ms
    }
}
