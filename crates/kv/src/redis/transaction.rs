//! Redis transactions: `MULTI` queues a connection's commands, `EXEC` proposes their writes
//! as one log entry applied all or nothing, `WATCH` makes that entry conditional on keys
//! being unchanged ([`Op::Guarded`]). See docs/redis.md.

use bytes::Bytes;

use super::commands::{Answer, Plan};
use super::resp::Reply;
use super::{MAX_PROPOSAL_BYTES, Redis, node_error, op_size};
use crate::state::{Command, Op, Output, Watched};

/// Commands one transaction may queue, at most.
pub(super) const MAX_QUEUED_COMMANDS: usize = 100_000;
/// Keys one connection may watch, at most.
pub(super) const MAX_WATCHED_KEYS: usize = 10_000;

/// Redis 7's answer to `EXEC` after an error at queue time.
pub(super) const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";
/// The answer to a command that would change the connection, inside `MULTI`.
pub(super) const NOT_IN_MULTI: &str = "ERR Command not allowed inside a transaction";
/// The answer to a read inside `MULTI`: its reply would have to show the state at its place
/// in the entry, which the state machine does not answer for reads.
pub(super) const NO_READS_IN_MULTI: &str = "ERR Skiff does not run reads inside MULTI (their reply would have to \
    show the state inside the transaction): read before MULTI, after WATCH, and EXEC aborts if the keys changed";

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
            Plan::Read(_) => Reply::error(NO_READS_IN_MULTI),
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
        let writes = self.queued.iter().any(|queued| matches!(queued, Queued::Write { .. }));
        if !writes && watched.is_empty() {
            return Reply::Array(self.queued.into_iter().map(Queued::into_reply).collect());
        }
        let mut ops = Vec::new();
        for queued in &self.queued {
            if let Queued::Write { ops: some, .. } = queued {
                ops.extend(some.iter().cloned());
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
        let mut replies = Vec::with_capacity(self.queued.len());
        for queued in self.queued {
            replies.push(match queued {
                Queued::Reply(reply) => reply,
                Queued::Write { ops, answer } => {
                    let reply = answer.reply(outputs.get(at..at + ops.len()).unwrap_or_default());
                    at += ops.len();
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
            Queued::Write { .. } => Reply::error("ERR a write was not applied"),
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
