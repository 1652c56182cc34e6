//! Linearizable reads in flight. A read records, when it is invoked, the highest commit
//! index any node has reached: every write acknowledged before the read began is at or
//! below it. Whatever index the read is finally served at must not be lower (thesis §6.4).

use std::collections::BTreeMap;

use skiff_raft::{Index, NodeId, ReadId};

use crate::checker::Violation;

#[derive(Clone, Copy, Debug)]
struct PendingRead {
    node: NodeId,
    incarnation: u64,
    bound: Index,
}

#[derive(Default)]
pub struct ReadBook {
    pending: BTreeMap<ReadId, PendingRead>,
}

impl ReadBook {
    /// Records a read invoked on `node` when the highest known commit was `bound`.
    pub fn invoke(&mut self, id: ReadId, node: NodeId, incarnation: u64, bound: Index) {
        self.pending.insert(id, PendingRead { node, incarnation, bound });
    }

    /// The core refused the read outright.
    pub fn cancel(&mut self, id: ReadId) {
        self.pending.remove(&id);
    }

    /// `node` got an answer for `id`: returns the read's bound, or `None` when nobody waits
    /// for it any more (a duplicate answer, or a read of an earlier incarnation).
    pub fn claim(&mut self, id: ReadId, node: NodeId, incarnation: u64) -> Result<Option<Index>, Violation> {
        let Some(read) = self.pending.get(&id).copied() else { return Ok(None) };
        if read.node != node {
            let detail = format!("read r{} was invoked on {} but answered on {node}", id.0, read.node);
            return Err(Violation::new("Read routing", detail));
        }
        if read.incarnation != incarnation {
            return Ok(None);
        }
        self.pending.remove(&id);
        Ok(Some(read.bound))
    }

    /// `node` crashed: its clients are gone.
    pub fn forget_node(&mut self, node: NodeId) {
        self.pending.retain(|_, read| read.node != node);
    }
}
