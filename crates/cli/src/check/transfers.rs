//! The `transfer` workload: a bank. N accounts start with a known total; clients move random
//! amounts between two accounts with one transaction each, and every so often read every
//! account in one transaction and check the total.
//!
//! An account's value is `<balance> <transfers>`: its balance, and how many transfers
//! changed it. A client reads two accounts in one transaction (two `get`s), then writes both
//! in one transaction guarded by `cas` on the modify indexes it read (a 409: another
//! transfer got there first, nothing changed). A balance never goes below zero, since the
//! amount moved is at most the balance read and the `cas` proves it unchanged.
//!
//! **What is checked**, each a proof from recorded answers:
//! - Every read of all accounts (a `get-tree` in one transaction, so one point of the log)
//!   finds every account, each value well formed, and the total equal to the initial one.
//!   A transaction is all or nothing, so this holds whatever happened to transfers whose
//!   outcome is unknown (timeouts under faults): a violation is a real finding.
//! - At the end, the same read once more, and the number of transfers applied (half the
//!   sum of the accounts' counters: each applied transfer adds one to two accounts) lies
//!   between the transfers acknowledged and those plus the ones of unknown outcome. A
//!   transfer refused with a 409 must not be applied, an acknowledged one must be.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use skiff_client::{Client, Entry, Error, TxnOp, TxnOutcome};

use super::membership::Roster;
use crate::client::Security;

/// Every account's balance at the start.
pub const INITIAL_BALANCE: u64 = 1000;
/// A client reads every account after about this many transfers.
const AUDIT_EVERY: u64 = 5;
/// How long a client waits after an error before its next transaction.
const BACKOFF: Duration = Duration::from_millis(20);

/// What the transfer clients share.
pub struct TransferWorkload<'a> {
    pub members: &'a Roster,
    /// The accounts' keys, in order.
    pub accounts: &'a [String],
    /// The prefix every account key starts with, and no other key.
    pub prefix: &'a str,
    pub stop: &'a AtomicBool,
    /// Counts transactions, for the progress display.
    pub operations: &'a AtomicU64,
    pub request_timeout: Duration,
    pub security: &'a Security,
    pub seed: u64,
}

/// The accounts' keys under `prefix`.
pub fn account_keys(prefix: &str, count: usize) -> Vec<String> {
    (1..=count).map(|i| format!("{prefix}a{i:03}")).collect()
}

/// The constant total of `count` accounts.
pub fn total_of(count: usize) -> u64 {
    count as u64 * INITIAL_BALANCE
}

/// What the transfer clients recorded.
#[derive(Default)]
pub struct TransferLog {
    /// Transfers acknowledged (200), refused by a `cas` (409), and of unknown outcome.
    pub ok: u64,
    pub conflicted: u64,
    pub unknown: u64,
    /// Reads of every account, and the violations they found.
    pub totals_checked: u64,
    pub violations: Vec<String>,
    pub errors: BTreeMap<String, u64>,
}

impl TransferLog {
    fn error(&mut self, error: &Error) {
        *self.errors.entry(super::locks::client_error_class(error)).or_default() += 1;
    }

    fn merge(&mut self, other: TransferLog) {
        self.ok += other.ok;
        self.conflicted += other.conflicted;
        self.unknown += other.unknown;
        self.totals_checked += other.totals_checked;
        self.violations.extend(other.violations);
        for (class, count) in other.errors {
            *self.errors.entry(class).or_default() += count;
        }
    }
}

/// The clients' logs as one.
pub fn merge(logs: Vec<TransferLog>) -> TransferLog {
    let mut all = TransferLog::default();
    for log in logs {
        all.merge(log);
    }
    all
}

/// One account as read: its balance, its transfer counter, and the index a `cas` compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Account {
    pub balance: u64,
    pub transfers: u64,
    pub modify_index: u64,
}

/// An account's value, `<balance> <transfers>`.
fn account_value(balance: u64, transfers: u64) -> Vec<u8> {
    format!("{balance} {transfers}").into_bytes()
}

/// Reads an account's value; a balance below zero or anything else malformed is an error.
pub fn parse_account(entry: &Entry) -> Result<Account, String> {
    let text = String::from_utf8_lossy(&entry.value);
    let malformed = || format!("account {} holds {text:?}, not \"<balance> <transfers>\"", entry.key);
    let (balance, transfers) = text.split_once(' ').ok_or_else(malformed)?;
    if balance.starts_with('-') {
        return Err(format!("account {} has a negative balance ({balance})", entry.key));
    }
    Ok(Account {
        balance: balance.parse().map_err(|_| malformed())?,
        transfers: transfers.parse().map_err(|_| malformed())?,
        modify_index: entry.modify_index,
    })
}

/// What one read of every account found, when it holds the invariant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Audit {
    pub total: u64,
    /// Transfers applied: half the sum of the accounts' counters.
    pub transfers: u64,
}

/// Checks a read of every account: each account present once and well formed, no other
/// key, and the total equal to `total`. The violation, in words, otherwise.
pub fn audit(entries: &[Entry], accounts: &[String], total: u64) -> Result<Audit, String> {
    let mut found = BTreeMap::new();
    for entry in entries {
        if !accounts.contains(&entry.key) {
            return Err(format!("a key that is no account: {}", entry.key));
        }
        if found.insert(entry.key.as_str(), parse_account(entry)?).is_some() {
            return Err(format!("account {} read twice", entry.key));
        }
    }
    if let Some(missing) = accounts.iter().find(|key| !found.contains_key(key.as_str())) {
        return Err(format!("account {missing} is missing ({} of {} read)", found.len(), accounts.len()));
    }
    let sum: u128 = found.values().map(|account| u128::from(account.balance)).sum();
    if sum != u128::from(total) {
        return Err(format!("the accounts hold {sum} in total, not {total}"));
    }
    let counters: u64 = found.values().map(|account| account.transfers).sum();
    if !counters.is_multiple_of(2) {
        return Err(format!("the transfer counters add up to {counters}, an odd number (each transfer adds 2)"));
    }
    Ok(Audit { total, transfers: counters / 2 })
}

/// Checks the number of transfers `applied` (from the final read) against what the clients
/// were told: at least those acknowledged, at most those plus the ones of unknown outcome.
pub fn check_applied(applied: u64, log: &TransferLog) -> Result<(), String> {
    if applied < log.ok {
        return Err(format!("{applied} transfers applied, fewer than the {} acknowledged", log.ok));
    }
    if applied > log.ok + log.unknown {
        return Err(format!(
            "{applied} transfers applied, more than the {} acknowledged plus {} of unknown outcome (a refused \
             transfer was applied, or one applied twice)",
            log.ok, log.unknown
        ));
    }
    Ok(())
}

/// A client of the members now, with `timeout` per call.
fn client(members: &Roster, security: &Security, timeout: Duration) -> Result<Client> {
    let urls: Vec<String> = members.current().into_iter().map(|member| member.url).collect();
    let builder = Client::builder().endpoints(urls).timeout(timeout);
    Ok(security.apply(builder).build()?)
}

/// Creates the accounts, each with [`INITIAL_BALANCE`], in one transaction of `cas 0`s:
/// retried until it answers, since a 409 proves an earlier attempt created them all.
pub fn open_accounts(members: &Roster, security: &Security, accounts: &[String], timeout: Duration) -> Result<()> {
    let client = client(members, security, timeout)?;
    let ops: Vec<TxnOp> = accounts
        .iter()
        .map(|key| TxnOp::Cas { key: key.clone(), value: account_value(INITIAL_BALANCE, 0), index: 0 })
        .collect();
    let mut last_error = None;
    for _ in 0..5 {
        match client.txn(&ops) {
            Ok(_) => return Ok(()),
            Err(error) => last_error = Some(error),
        }
    }
    match last_error {
        Some(error) => Err(error).context("cannot open the transfer workload's accounts"),
        None => bail!("cannot open the transfer workload's accounts"),
    }
}

/// Reads every account in one transaction and audits it: the audit, or the violation; an
/// error if the read did not answer.
pub fn read_all(client: &Client, accounts: &[String], prefix: &str) -> Result<Result<Audit, String>, Error> {
    let total = total_of(accounts.len());
    match client.txn(&[TxnOp::GetTree { prefix: prefix.to_string() }])? {
        TxnOutcome::Committed(entries) => Ok(audit(&entries, accounts, total)),
        TxnOutcome::RolledBack { what, .. } => Ok(Err(format!("a read of every account failed: {what}"))),
    }
}

impl TransferWorkload<'_> {
    /// Runs transfer client `id` until told to stop.
    pub fn run_client(&self, id: u64) -> TransferLog {
        let mut rng = StdRng::seed_from_u64(self.seed ^ (id + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut log = TransferLog::default();
        let mut client = None;
        let mut rounds = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            if client.is_none() {
                client = super::transfers::client(self.members, self.security, self.request_timeout).ok();
            }
            let Some(current) = &client else { break };
            rounds += 1;
            let answered = if rounds.is_multiple_of(AUDIT_EVERY) {
                self.audit_once(current, &mut log)
            } else {
                self.transfer_once(current, &mut rng, &mut log)
            };
            self.operations.fetch_add(1, Ordering::Relaxed);
            if !answered {
                // The members may have changed: the next call asks the members now.
                client = None;
                std::thread::sleep(BACKOFF);
            }
        }
        log
    }

    /// Reads every account and checks the total; `false` if the read did not answer.
    fn audit_once(&self, client: &Client, log: &mut TransferLog) -> bool {
        match read_all(client, self.accounts, self.prefix) {
            Ok(Ok(_)) => {
                log.totals_checked += 1;
                true
            }
            Ok(Err(violation)) => {
                log.totals_checked += 1;
                log.violations.push(violation);
                true
            }
            Err(error) => {
                log.error(&error);
                false
            }
        }
    }

    /// Reads two accounts and moves a random amount between them; `false` if a call did
    /// not answer.
    fn transfer_once(&self, client: &Client, rng: &mut StdRng, log: &mut TransferLog) -> bool {
        let count = self.accounts.len();
        let from = rng.random_range(0..count);
        let to = (from + rng.random_range(1..count)) % count;
        let (from_key, to_key) = (&self.accounts[from], &self.accounts[to]);
        let read = client.txn(&[TxnOp::Get { key: from_key.clone() }, TxnOp::Get { key: to_key.clone() }]);
        let entries = match read {
            Ok(TxnOutcome::Committed(entries)) => entries,
            Ok(TxnOutcome::RolledBack { what, .. }) => {
                log.violations.push(format!("a read of {from_key} and {to_key} failed: {what}"));
                return true;
            }
            Err(error) => {
                log.error(&error);
                return false;
            }
        };
        let accounts: Result<Vec<Account>, String> = entries.iter().map(parse_account).collect();
        let (source, target) = match accounts.as_deref() {
            Ok([source, target]) => (*source, *target),
            Ok(other) => {
                log.violations.push(format!("a read of two accounts answered {} results", other.len()));
                return true;
            }
            Err(violation) => {
                log.violations.push(violation.clone());
                return true;
            }
        };
        if source.balance == 0 {
            return true;
        }
        let amount = rng.random_range(1..=source.balance);
        let ops = [
            TxnOp::Cas {
                key: from_key.clone(),
                value: account_value(source.balance - amount, source.transfers + 1),
                index: source.modify_index,
            },
            TxnOp::Cas {
                key: to_key.clone(),
                value: account_value(target.balance.saturating_add(amount), target.transfers + 1),
                index: target.modify_index,
            },
        ];
        match client.txn(&ops) {
            Ok(TxnOutcome::Committed(_)) => log.ok += 1,
            Ok(TxnOutcome::RolledBack { .. }) => log.conflicted += 1,
            Err(error) => {
                // Whatever the error, the transfer may have been applied (whole) before it.
                log.unknown += 1;
                log.error(&error);
                return false;
            }
        }
        true
    }
}

/// The transfer workload's findings.
#[derive(Debug, Serialize)]
pub struct TransferReport {
    pub passed: bool,
    pub accounts: usize,
    /// The constant total.
    pub total: u64,
    /// Transfers acknowledged, refused by a `cas` (409), and of unknown outcome.
    pub ok: u64,
    pub conflicted: u64,
    pub unknown: u64,
    /// Reads of every account during the run (each checked), plus the final one.
    pub totals_checked: u64,
    /// Transfers applied, from the final read's counters.
    pub applied: Option<u64>,
    pub errors: BTreeMap<String, u64>,
    /// What contradicts the invariant, one line each.
    pub violations: Vec<String>,
}

/// Checks the final read (`None`: it did not answer) against the clients' log.
pub fn conclude(mut log: TransferLog, accounts: usize, last: Result<Audit, String>) -> TransferReport {
    let mut applied = None;
    log.totals_checked += 1;
    match last {
        Ok(audit) => {
            applied = Some(audit.transfers);
            if let Err(violation) = check_applied(audit.transfers, &log) {
                log.violations.push(violation);
            }
        }
        Err(violation) => log.violations.push(format!("the final read: {violation}")),
    }
    TransferReport {
        passed: log.violations.is_empty(),
        accounts,
        total: total_of(accounts),
        ok: log.ok,
        conflicted: log.conflicted,
        unknown: log.unknown,
        totals_checked: log.totals_checked,
        applied,
        errors: log.errors,
        violations: log.violations,
    }
}

/// The final read, through a client of the members now with a longer `timeout`.
pub fn final_audit(
    members: &Roster,
    security: &Security,
    accounts: &[String],
    prefix: &str,
    timeout: Duration,
) -> Result<Audit, String> {
    let client = client(members, security, timeout).map_err(|error| format!("{error:#}"))?;
    match read_all(&client, accounts, prefix) {
        Ok(audit) => audit,
        Err(error) => Err(format!("the read did not answer: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str) -> Entry {
        Entry {
            key: key.to_string(),
            value: value.as_bytes().to_vec(),
            create_index: 1,
            modify_index: 2,
            flags: 0,
            lock_index: 0,
            session: None,
            fence: None,
        }
    }

    fn accounts() -> Vec<String> {
        account_keys("transfer/", 3)
    }

    #[test]
    fn a_constant_total_passes_and_counts_the_transfers() {
        let keys = accounts();
        let entries = [entry(&keys[0], "900 1"), entry(&keys[1], "1100 2"), entry(&keys[2], "1000 1")];
        assert_eq!(audit(&entries, &keys, total_of(3)), Ok(Audit { total: 3000, transfers: 2 }));
    }

    #[test]
    fn a_wrong_total_fails() {
        let keys = accounts();
        let entries = [entry(&keys[0], "900 1"), entry(&keys[1], "1000 1"), entry(&keys[2], "1000 0")];
        let violation = audit(&entries, &keys, total_of(3)).unwrap_err();
        assert!(violation.contains("2900 in total, not 3000"), "{violation}");
    }

    #[test]
    fn missing_negative_malformed_and_foreign_accounts_fail() {
        let keys = accounts();
        let missing = audit(&[entry(&keys[0], "1500 1"), entry(&keys[1], "1500 1")], &keys, 3000).unwrap_err();
        assert!(missing.contains("is missing"), "{missing}");
        let negative = [entry(&keys[0], "-100 1"), entry(&keys[1], "2100 1"), entry(&keys[2], "1000 0")];
        assert!(audit(&negative, &keys, 3000).unwrap_err().contains("negative balance"));
        let malformed = [entry(&keys[0], "1000"), entry(&keys[1], "1000 0"), entry(&keys[2], "1000 0")];
        assert!(audit(&malformed, &keys, 3000).unwrap_err().contains("not \"<balance> <transfers>\""));
        let mut foreign = vec![entry(&keys[0], "1000 0"), entry(&keys[1], "1000 0"), entry(&keys[2], "1000 0")];
        foreign.push(entry("transfer/x", "0 0"));
        assert!(audit(&foreign, &keys, 3000).unwrap_err().contains("no account"));
        let twice = [entry(&keys[0], "1000 0"), entry(&keys[0], "1000 0"), entry(&keys[2], "1000 0")];
        assert!(audit(&twice, &keys, 3000).unwrap_err().contains("read twice"));
        let odd = [entry(&keys[0], "1000 1"), entry(&keys[1], "1000 0"), entry(&keys[2], "1000 0")];
        assert!(audit(&odd, &keys, 3000).unwrap_err().contains("odd"));
    }

    #[test]
    fn applied_transfers_lie_between_the_acknowledged_and_those_plus_the_unknown() {
        let log = TransferLog { ok: 10, conflicted: 4, unknown: 2, ..TransferLog::default() };
        assert!(check_applied(10, &log).is_ok());
        assert!(check_applied(12, &log).is_ok());
        assert!(check_applied(9, &log).unwrap_err().contains("fewer than the 10 acknowledged"));
        assert!(check_applied(13, &log).unwrap_err().contains("more than the 10 acknowledged plus 2"));
    }

    #[test]
    fn the_report_fails_on_any_violation() {
        let log = || TransferLog { ok: 3, unknown: 1, totals_checked: 2, ..TransferLog::default() };
        let passed = conclude(log(), 3, Ok(Audit { total: 3000, transfers: 4 }));
        assert!(passed.passed, "{passed:?}");
        assert_eq!((passed.totals_checked, passed.applied), (3, Some(4)));
        let wrong = conclude(log(), 3, Err("the accounts hold 2999 in total, not 3000".into()));
        assert!(!wrong.passed);
        assert!(wrong.violations[0].starts_with("the final read: the accounts hold 2999"), "{wrong:?}");
        let during = TransferLog { violations: vec!["a total of 1".into()], ..log() };
        assert!(!conclude(during, 3, Ok(Audit { total: 3000, transfers: 3 })).passed);
        assert!(!conclude(log(), 3, Ok(Audit { total: 3000, transfers: 5 })).passed, "more applied than possible");
    }

    #[test]
    fn account_values_read_back() {
        let account = parse_account(&entry("a", std::str::from_utf8(&account_value(42, 7)).unwrap())).unwrap();
        assert_eq!((account.balance, account.transfers, account.modify_index), (42, 7, 2));
    }
}
