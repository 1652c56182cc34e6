//! Fault injection, for testing a running cluster: messages to or from chosen peers are
//! dropped or delayed, as a network partition or a slow link would. It acts between the
//! transport and the consensus core, so the core sees a real partition: heartbeats and
//! votes are lost, forwarded requests too.
//!
//! Off unless a node is started with it ([`crate::Node::start_with_fault_injection`]);
//! when off, nothing here is on the message path.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skiff_raft::NodeId;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::{Inbox, PeerHealth, Transport};
use crate::wire::PeerMessage;

/// Which traffic a fault affects, from this node's side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Messages from the peers to this node.
    In,
    /// Messages from this node to the peers.
    Out,
    /// Both: the peers and this node cannot hear each other.
    #[default]
    Both,
}

/// What happens to the affected messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "action")]
pub enum Action {
    Drop,
    /// Held this long, then delivered (so they may arrive out of order).
    Delay {
        delay_ms: u64,
    },
}

/// One injected fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    #[serde(flatten)]
    pub action: Action,
    /// The peers cut off or slowed down, written `"n2"`.
    #[serde(with = "node_names")]
    pub peers: BTreeSet<NodeId>,
    #[serde(default)]
    pub direction: Direction,
}

/// Node ids as their names (`"n2"`), as people and the HTTP API write them.
mod node_names {
    use std::collections::BTreeSet;

    use serde::{Deserialize, Deserializer, Serializer};
    use skiff_raft::NodeId;

    pub fn serialize<S: Serializer>(ids: &BTreeSet<NodeId>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(ids.iter().map(NodeId::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeSet<NodeId>, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        names.iter().map(|name| crate::config::parse_node_id(name).map_err(serde::de::Error::custom)).collect()
    }
}

/// The faults active on one node. Cheap to clone; all clones share them.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    active: Arc<Mutex<Vec<Fault>>>,
}

/// What to do with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    Drop,
    Delay(Duration),
}

impl Faults {
    pub fn add(&self, fault: Fault) {
        self.lock().push(fault);
    }

    /// Removes every fault: the network is healed.
    pub fn clear(&self) {
        self.lock().clear();
    }

    pub fn list(&self) -> Vec<Fault> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Fault>> {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A drop wins over a delay; of several delays, the longest applies.
    fn verdict(&self, peer: NodeId, incoming: bool) -> Verdict {
        let mut verdict = Verdict::Pass;
        for fault in self.lock().iter() {
            let applies = fault.peers.contains(&peer)
                && match fault.direction {
                    Direction::Both => true,
                    Direction::In => incoming,
                    Direction::Out => !incoming,
                };
            if !applies {
                continue;
            }
            match fault.action {
                Action::Drop => return Verdict::Drop,
                Action::Delay { delay_ms } => {
                    let delay = Duration::from_millis(delay_ms);
                    if !matches!(verdict, Verdict::Delay(longer) if longer >= delay) {
                        verdict = Verdict::Delay(delay);
                    }
                }
            }
        }
        verdict
    }

    /// Wraps `transport`: outgoing messages pass the faults first.
    pub fn wrap(&self, transport: Arc<dyn Transport>, runtime: Handle) -> Arc<dyn Transport> {
        Arc::new(FaultyTransport { inner: transport, faults: self.clone(), runtime })
    }

    /// An inbox for the transport that passes incoming messages through the faults on
    /// their way to `inbox`. Must be called inside a tokio runtime.
    pub fn filter_inbox(&self, inbox: Inbox) -> Inbox {
        let (sender, mut receiver) = mpsc::channel::<(NodeId, PeerMessage)>(inbox.max_capacity());
        let faults = self.clone();
        tokio::spawn(async move {
            while let Some((from, message)) = receiver.recv().await {
                match faults.verdict(from, true) {
                    Verdict::Pass => {
                        if inbox.send((from, message)).await.is_err() {
                            return; // the node stopped
                        }
                    }
                    Verdict::Drop => {}
                    Verdict::Delay(delay) => {
                        let inbox = inbox.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = inbox.send((from, message)).await;
                        });
                    }
                }
            }
        });
        sender
    }
}

struct FaultyTransport {
    inner: Arc<dyn Transport>,
    faults: Faults,
    /// Where delayed messages wait: `send` may be called from threads outside any runtime.
    runtime: Handle,
}

impl Transport for FaultyTransport {
    fn send(&self, to: NodeId, message: PeerMessage) {
        match self.faults.verdict(to, false) {
            Verdict::Pass => self.inner.send(to, message),
            Verdict::Drop => {}
            Verdict::Delay(delay) => {
                let inner = Arc::clone(&self.inner);
                self.runtime.spawn(async move {
                    tokio::time::sleep(delay).await;
                    inner.send(to, message);
                });
            }
        }
    }

    fn peer_health(&self) -> BTreeMap<NodeId, PeerHealth> {
        self.inner.peer_health()
    }

    fn set_members(&self, members: &BTreeMap<NodeId, Option<String>>) {
        self.inner.set_members(members)
    }

    fn set_cluster_id(&self, id: crate::wire::ClusterId) -> std::io::Result<()> {
        self.inner.set_cluster_id(id)
    }

    fn learn_address(&self, id: NodeId, address: String) {
        self.inner.learn_address(id, address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(action: Action, peers: &[u64], direction: Direction) -> Fault {
        Fault { action, peers: peers.iter().map(|&id| NodeId(id)).collect(), direction }
    }

    #[test]
    fn faults_apply_to_their_peers_and_direction() {
        let faults = Faults::default();
        faults.add(fault(Action::Drop, &[2], Direction::Out));
        faults.add(fault(Action::Delay { delay_ms: 50 }, &[2, 3], Direction::Both));
        faults.add(fault(Action::Delay { delay_ms: 20 }, &[3], Direction::In));
        assert_eq!(faults.verdict(NodeId(2), false), Verdict::Drop);
        assert_eq!(faults.verdict(NodeId(2), true), Verdict::Delay(Duration::from_millis(50)));
        assert_eq!(faults.verdict(NodeId(3), true), Verdict::Delay(Duration::from_millis(50)), "the longest delay");
        assert_eq!(faults.verdict(NodeId(4), true), Verdict::Pass);
        faults.clear();
        assert_eq!(faults.verdict(NodeId(2), false), Verdict::Pass);
    }

    #[test]
    fn faults_read_and_write_as_json() {
        let text = r#"{"action":"delay","delay_ms":100,"peers":["n2"],"direction":"out"}"#;
        let parsed: Fault = serde_json::from_str(text).expect("a fault");
        assert_eq!(parsed, fault(Action::Delay { delay_ms: 100 }, &[2], Direction::Out));
        let parsed: Fault = serde_json::from_str(r#"{"action":"drop","peers":["n3"]}"#).expect("a fault");
        assert_eq!(parsed.direction, Direction::Both);
        assert_eq!(
            serde_json::to_string(&parsed).expect("json"),
            r#"{"action":"drop","peers":["n3"],"direction":"both"}"#
        );
    }
}
