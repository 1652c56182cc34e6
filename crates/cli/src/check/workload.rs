//! The clients: one thread each, issuing one operation at a time on a random key through a
//! random node, and recording what it asked, when, and what it was told.
//!
//! The recorded outcome follows what the answer proves. A `503` (no leader, leadership
//! lost, backlog full) and a refused connection prove the write was never appended: failed.
//! A `504`, a `500`, a timeout or a connection lost after sending prove nothing: a write may
//! have taken effect, so its outcome is unknown. A read that did not answer `200` or `404`
//! constrains nothing and the checker leaves it out.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use skiff_check::{Call, Operation, Outcome, Reply};
use ureq::http::Method;

use super::http::{Access, Answer, Http, KvEntry};
use super::membership::Roster;

/// How long a client waits after a node refused its connection (it is down): a refusal
/// takes no time, and a client would otherwise spin on that node.
const REFUSED_BACKOFF: Duration = Duration::from_millis(50);

/// What the clients share.
pub struct Workload<'a> {
    /// The members now: a client picks one for each operation.
    pub members: &'a Roster,
    pub keys: &'a [String],
    /// The common clock: every time recorded is nanoseconds since this instant.
    pub start: Instant,
    pub stop: &'a AtomicBool,
    /// Operations recorded so far by all clients, for the progress display.
    pub operations: &'a AtomicU64,
    pub request_timeout: Duration,
    pub access: &'a Access,
    pub seed: u64,
}

/// What one client recorded.
#[derive(Default)]
pub struct ClientLog {
    pub history: Vec<Operation>,
    /// Answers other than success, by kind (`HTTP 503`, `timeout`, ...).
    pub errors: BTreeMap<String, u64>,
}

impl Workload<'_> {
    /// Runs client `id` until told to stop: gets about half the time, then puts, cas
    /// (a read and a conditional write) and deletes.
    pub fn run_client(&self, id: u64) -> ClientLog {
        let mut rng = StdRng::seed_from_u64(self.seed ^ (id + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut client = Client::new(id, self.start, Http::new(self.request_timeout, self.access), self.operations);
        while !self.stop.load(Ordering::Relaxed) {
            let members = self.members.current();
            let base = &members[rng.random_range(0..members.len())].url;
            let key = &self.keys[rng.random_range(0..self.keys.len())];
            match rng.random_range(0..100) {
                0..50 => {
                    client.get(base, key);
                }
                50..75 => client.put(base, key),
                75..85 => client.delete(base, key),
                _ => client.cas(base, key),
            }
        }
        client.log
    }
}

/// One sequential client: its operations never overlap.
pub struct Client<'a> {
    id: u64,
    start: Instant,
    http: Http,
    counter: &'a AtomicU64,
    /// Values written so far; the next is `c<id>-<written + 1>`, unique in the run.
    written: u64,
    pub log: ClientLog,
}

impl<'a> Client<'a> {
    pub fn new(id: u64, start: Instant, http: Http, counter: &'a AtomicU64) -> Client<'a> {
        Client { id, start, http, counter, written: 0, log: ClientLog::default() }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn fresh_value(&mut self) -> String {
        self.written += 1;
        format!("c{}-{}", self.id, self.written)
    }

    fn record(&mut self, key: &str, call: Call, invoke_ns: u64, outcome: Outcome, answer: &Answer) {
        if matches!(answer, Answer::NotSent(_)) {
            // A node that is down refuses at once: don't spin on it.
            std::thread::sleep(REFUSED_BACKOFF);
        }
        if let Some(class) = answer.error_class() {
            *self.log.errors.entry(class).or_default() += 1;
        }
        if matches!(outcome, Outcome::Unknown) && matches!(answer, Answer::Reply { status: 200 | 404, .. }) {
            *self.log.errors.entry("unparsable answer".into()).or_default() += 1;
        }
        self.log.history.push(Operation { client: self.id, key: key.to_string(), call, invoke_ns, outcome });
        self.counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A consistent read of `key` through `base`. Returns the value and its ModifyIndex
    /// (0 when absent) if the read succeeded.
    pub fn get(&mut self, base: &str, key: &str) -> Option<(Option<String>, u64)> {
        let invoke_ns = self.now_ns();
        let answer = self.http.send(Method::GET, &kv_url(base, key), None);
        let at_ns = self.now_ns();
        let read = read_result(&answer);
        let outcome = match &read {
            Some((value, _)) => Outcome::Ok { at_ns, result: Reply::Value(value.clone()) },
            None => failed_or_unknown(&answer),
        };
        self.record(key, Call::Get, invoke_ns, outcome, &answer);
        read
    }

    fn put(&mut self, base: &str, key: &str) {
        let value = self.fresh_value();
        let invoke_ns = self.now_ns();
        let answer = self.http.send(Method::PUT, &kv_url(base, key), Some(value.as_bytes()));
        let outcome = write_outcome(&answer, self.now_ns(), |body| (body == "true").then_some(Reply::Done));
        self.record(key, Call::Put { value }, invoke_ns, outcome, &answer);
    }

    fn delete(&mut self, base: &str, key: &str) {
        let invoke_ns = self.now_ns();
        let answer = self.http.send(Method::DELETE, &kv_url(base, key), None);
        let outcome = write_outcome(&answer, self.now_ns(), |body| (body == "true").then_some(Reply::Done));
        self.record(key, Call::Delete, invoke_ns, outcome, &answer);
    }

    /// Reads the key, then writes a new value only if its ModifyIndex is still the one
    /// read (0: only if still absent). The checker's model compares values instead, which
    /// is the same thing because every value written is unique.
    fn cas(&mut self, base: &str, key: &str) {
        let Some((expected, index)) = self.get(base, key) else { return };
        let new = self.fresh_value();
        let url = format!("{}?cas={index}", kv_url(base, key));
        let invoke_ns = self.now_ns();
        let answer = self.http.send(Method::PUT, &url, Some(new.as_bytes()));
        let outcome = write_outcome(&answer, self.now_ns(), |body| match body {
            "true" => Some(Reply::Swapped(true)),
            "false" => Some(Reply::Swapped(false)),
            _ => None,
        });
        self.record(key, Call::Cas { expected, new }, invoke_ns, outcome, &answer);
    }
}

pub fn kv_url(base: &str, key: &str) -> String {
    format!("{base}/v1/kv/{}", skiff_client::encode_key(key))
}

/// A read's value and ModifyIndex from a `200` (the first entry) or a `404` (absent, 0).
fn read_result(answer: &Answer) -> Option<(Option<String>, u64)> {
    match answer {
        Answer::Reply { status: 404, .. } => Some((None, 0)),
        Answer::Reply { status: 200, body } => {
            let entries: Vec<KvEntry> = serde_json::from_slice(body).ok()?;
            let entry = entries.into_iter().next()?;
            let bytes = match &entry.value {
                Some(encoded) => base64::engine::general_purpose::STANDARD.decode(encoded).ok()?,
                None => Vec::new(),
            };
            Some((Some(String::from_utf8(bytes).ok()?), entry.modify_index))
        }
        _ => None,
    }
}

/// The outcome of a put, delete or cas: `parse` reads a `200`'s body.
fn write_outcome(answer: &Answer, at_ns: u64, parse: impl Fn(&str) -> Option<Reply>) -> Outcome {
    match answer {
        Answer::Reply { status: 200, body } => match parse(String::from_utf8_lossy(body).trim()) {
            Some(result) => Outcome::Ok { at_ns, result },
            None => Outcome::Unknown,
        },
        _ => failed_or_unknown(answer),
    }
}

/// Failed if the answer proves nothing was done (`503`, or never sent); unknown otherwise.
fn failed_or_unknown(answer: &Answer) -> Outcome {
    match answer {
        Answer::Reply { status: 503, .. } | Answer::NotSent(_) => Outcome::Failed,
        Answer::Reply { .. } | Answer::Lost(_) => Outcome::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Answer {
        Answer::Reply { status, body: body.as_bytes().to_vec() }
    }

    #[test]
    fn outcomes_follow_what_the_answer_proves() {
        let done = |body: &str| (body == "true").then_some(Reply::Done);
        assert_eq!(write_outcome(&reply(200, "true"), 5, done), Outcome::Ok { at_ns: 5, result: Reply::Done });
        assert_eq!(write_outcome(&reply(503, "{}"), 5, done), Outcome::Failed);
        assert_eq!(write_outcome(&Answer::NotSent("connection refused".into()), 5, done), Outcome::Failed);
        assert_eq!(write_outcome(&reply(504, "{}"), 5, done), Outcome::Unknown);
        assert_eq!(write_outcome(&reply(500, "{}"), 5, done), Outcome::Unknown);
        assert_eq!(write_outcome(&Answer::Lost("timeout".into()), 5, done), Outcome::Unknown);
        assert_eq!(write_outcome(&reply(200, "nonsense"), 5, done), Outcome::Unknown);
    }

    #[test]
    fn reads_decode_the_value_and_its_index() {
        let body = r#"[{"Key":"k","Value":"YzEtMQ==","CreateIndex":3,"ModifyIndex":7,"LockIndex":0,"Flags":0}]"#;
        assert_eq!(read_result(&reply(200, body)), Some((Some("c1-1".to_string()), 7)));
        assert_eq!(read_result(&reply(404, "")), Some((None, 0)));
        assert_eq!(read_result(&reply(503, "{}")), None);
        assert_eq!(read_result(&Answer::Lost("timeout".into())), None);
    }
}
