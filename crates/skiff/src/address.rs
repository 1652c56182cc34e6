//! [`MemberAddress`]: where a member of the cluster can be reached, as the membership
//! records it.
//!
//! The consensus core keeps one string per member ([`skiff_raft::Membership::addresses`])
//! and never reads it; Skiff writes `raft=HOST:PORT http=HOST:PORT redis=HOST:PORT` there
//! (the last two only when the node serves them). Since the membership is replicated in the
//! log and in snapshots, every node learns where each member lives from its own state: the
//! cluster file names only the initial members.

use std::fmt;
use std::str::FromStr;

use skiff_raft::{Membership, NodeId};

/// The addresses a member advertises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberAddress {
    /// Where its peers connect (`host:port`).
    pub raft: String,
    /// Its client API, if it serves one.
    pub http: Option<String>,
    /// Its Redis-protocol API, if it serves one.
    pub redis: Option<String>,
}

impl MemberAddress {
    /// Member `id`'s address in `membership`, if it has one that parses.
    pub fn of(membership: &Membership, id: NodeId) -> Option<MemberAddress> {
        membership.address(id)?.parse().ok()
    }
}

impl fmt::Display for MemberAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={}", self.raft)?;
        if let Some(http) = &self.http {
            write!(f, " http={http}")?;
        }
        if let Some(redis) = &self.redis {
            write!(f, " redis={redis}")?;
        }
        Ok(())
    }
}

impl FromStr for MemberAddress {
    type Err = String;

    /// Parses `raft=HOST:PORT [http=HOST:PORT] [redis=HOST:PORT]`, in any order. Each value
    /// must look like `host:port` (the port a number), without spaces.
    fn from_str(text: &str) -> Result<MemberAddress, String> {
        let (mut raft, mut http, mut redis) = (None, None, None);
        for part in text.split_whitespace() {
            let (key, value) =
                part.split_once('=').ok_or_else(|| format!("`{part}` is not KEY=HOST:PORT (raft, http or redis)"))?;
            check_host_port(value).map_err(|why| format!("{key} address `{value}`: {why}"))?;
            let slot = match key {
                "raft" => &mut raft,
                "http" => &mut http,
                "redis" => &mut redis,
                other => return Err(format!("unknown address kind `{other}`; the kinds are raft, http and redis")),
            };
            if slot.replace(value.to_string()).is_some() {
                return Err(format!("{key} is given twice"));
            }
        }
        let raft = raft.ok_or("a member needs a raft address (raft=HOST:PORT)")?;
        Ok(MemberAddress { raft, http, redis })
    }
}

/// Whether `address` looks like `host:port`: a non-empty host and a port number.
pub fn check_host_port(address: &str) -> Result<(), String> {
    let (host, port) = address.rsplit_once(':').ok_or("not HOST:PORT")?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err("the host is missing".into());
    }
    port.parse::<u16>().map(|_| ()).map_err(|_| format!("`{port}` is not a port number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_roundtrips_through_its_text() {
        let address = MemberAddress { raft: "10.0.0.4:7001".into(), http: Some("10.0.0.4:8001".into()), redis: None };
        assert_eq!(address.to_string(), "raft=10.0.0.4:7001 http=10.0.0.4:8001");
        assert_eq!(address.to_string().parse::<MemberAddress>(), Ok(address));
        let v6: MemberAddress = "redis=[::1]:6001 raft=[::1]:7001".parse().unwrap();
        assert_eq!((v6.raft.as_str(), v6.redis.as_deref()), ("[::1]:7001", Some("[::1]:6001")));
    }

    #[test]
    fn malformed_addresses_say_what_is_wrong() {
        for (text, expected) in [
            ("http=h:1", "needs a raft address"),
            ("raft=h", "not HOST:PORT"),
            ("raft=h:port", "not a port number"),
            ("raft=:1", "host is missing"),
            ("raft=h:1 raft=h:2", "given twice"),
            ("grpc=h:1", "unknown address kind"),
            ("raft", "not KEY=HOST:PORT"),
        ] {
            let error = text.parse::<MemberAddress>().unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
