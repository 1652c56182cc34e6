//! Streaming snapshots between nodes, in chunks, one at a time (stop-and-wait).
//!
//! When the core asks to send `InstallSnapshot` to a follower, the leader's driver streams
//! the snapshot's data in [`CHUNK_BYTES`] chunks, each acknowledged before the next is sent,
//! so memory stays bounded and a lost chunk is simply sent again when the core asks again.
//! Only once the follower has saved the whole data does the leader send it the
//! `InstallSnapshot` message itself, so a follower's core never installs a snapshot whose
//! data it lacks.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use bytes::Bytes;
use skiff_raft::{Envelope, Index, NodeId, SnapshotMeta};

use crate::error::StorageFailure;
use crate::store::{LogStore, SnapshotSink};
use crate::wire::PeerMessage;

/// The size of one snapshot chunk, well below the transport's frame limit.
pub const CHUNK_BYTES: usize = 256 << 10;

/// A snapshot being sent to one follower.
pub(crate) struct Outgoing {
    /// The `InstallSnapshot` to deliver once the data is there.
    envelope: Envelope,
    meta: SnapshotMeta,
    data: Box<dyn Read + Send>,
    /// Bytes the follower acknowledged.
    acked: u64,
    /// The chunk in flight (sent at `acked`), and whether it is the last.
    in_flight: Bytes,
    last: bool,
}

/// The leader's outgoing streams, one per follower at most.
#[derive(Default)]
pub(crate) struct Sender {
    streams: BTreeMap<NodeId, Outgoing>,
}

impl Sender {
    /// The core asks to send `envelope` (an `InstallSnapshot` of `meta`) to `to`: start a
    /// stream, or resend the chunk in flight if one is already going.
    pub fn start<L: LogStore>(
        &mut self,
        store: &L,
        to: NodeId,
        envelope: Envelope,
        meta: SnapshotMeta,
    ) -> Result<Option<PeerMessage>, StorageFailure> {
        // A stream under way goes on even if a newer snapshot was taken since: restarting
        // from zero at every retry could keep a slow follower from ever catching up. (Its
        // file stays readable through the open handle.) A follower that lost it fails the
        // stream, and the next retry starts afresh.
        if let Some(stream) = self.streams.get(&to) {
            return Ok(Some(stream.chunk_message()));
        }
        let Some((stored_meta, data)) = store.open_snapshot()? else { return Ok(None) };
        if stored_meta != meta {
            return Ok(None); // a newer snapshot replaced it; the core will ask again
        }
        let mut stream = Outgoing { envelope, meta, data, acked: 0, in_flight: Bytes::new(), last: false };
        stream.read_next()?;
        let message = stream.chunk_message();
        self.streams.insert(to, stream);
        Ok(Some(message))
    }

    /// `from` acknowledged `offset` bytes of snapshot `index`: the next message to send it,
    /// if any (a chunk, or the `InstallSnapshot` itself after the last chunk), and whether
    /// the stream failed.
    pub fn acked(&mut self, from: NodeId, index: Index, offset: u64, ok: bool) -> Result<Ack, StorageFailure> {
        let Some(stream) = self.streams.get_mut(&from) else { return Ok(Ack::Nothing) };
        if stream.meta.last_log_id.index != index {
            return Ok(Ack::Nothing);
        }
        if !ok {
            self.streams.remove(&from);
            return Ok(Ack::Failed);
        }
        if offset != stream.acked + stream.in_flight.len() as u64 {
            return Ok(Ack::Nothing); // a duplicate or stale acknowledgement
        }
        stream.acked = offset;
        if stream.last {
            let stream = self.streams.remove(&from).expect("present");
            return Ok(Ack::Send(PeerMessage::Raft(stream.envelope)));
        }
        stream.read_next()?;
        Ok(Ack::Send(stream.chunk_message()))
    }

    /// Drops every stream (this node is no longer leader).
    pub fn clear(&mut self) {
        self.streams.clear();
    }
}

pub(crate) enum Ack {
    Nothing,
    Send(PeerMessage),
    Failed,
}

impl Outgoing {
    fn read_next(&mut self) -> Result<(), StorageFailure> {
        let mut chunk = Vec::with_capacity(CHUNK_BYTES);
        let read = (&mut self.data).take(CHUNK_BYTES as u64).read_to_end(&mut chunk);
        let index = self.meta.last_log_id.index;
        read.map_err(|source| StorageFailure::SnapshotData { action: "reading", index, source })?;
        self.last = chunk.len() < CHUNK_BYTES;
        self.in_flight = Bytes::from(chunk);
        Ok(())
    }

    fn chunk_message(&self) -> PeerMessage {
        PeerMessage::SnapshotChunk {
            meta: self.meta.clone(),
            offset: self.acked,
            data: self.in_flight.clone(),
            done: self.last,
            // The TCP transport stamps its cluster id as it sends the chunk.
            cluster_id: None,
        }
    }
}

/// A snapshot being received from the leader, written to its file chunk by chunk.
pub(crate) struct Receiver {
    /// The snapshot, its file being written, and the bytes received.
    receiving: Option<(SnapshotMeta, Box<dyn SnapshotSink>, u64)>,
    /// The last snapshot whose data was saved: the only one the core may be told to install.
    pub saved: Option<SnapshotMeta>,
    /// The most bytes one snapshot may have; a stream past it is dropped, its file removed.
    max_bytes: u64,
}

impl Receiver {
    pub fn new(max_bytes: u64) -> Receiver {
        Receiver { receiving: None, saved: None, max_bytes }
    }

    /// A chunk arrived: returns the acknowledgement to send.
    pub fn chunk<L: LogStore>(
        &mut self,
        store: &mut L,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        done: bool,
    ) -> Result<PeerMessage, StorageFailure> {
        let index = meta.last_log_id.index;
        let same = matches!(&self.receiving, Some((receiving, _, _)) if *receiving == meta);
        if !same {
            if offset != 0 {
                return Ok(PeerMessage::SnapshotAck { snapshot_index: index, offset: 0, ok: false });
            }
            // A new snapshot replaces one half received (dropping its writer removes its file).
            let sink = store.snapshot_target().create(meta.clone())?;
            self.receiving = Some((meta, sink, 0));
        }
        let (_, sink, received) = self.receiving.as_mut().expect("set above");
        if offset < *received {
            return Ok(PeerMessage::SnapshotAck { snapshot_index: index, offset: *received, ok: true });
        }
        if offset > *received {
            let received = *received;
            self.receiving = None;
            return Ok(PeerMessage::SnapshotAck { snapshot_index: index, offset: received, ok: false });
        }
        if received.saturating_add(data.len() as u64) > self.max_bytes {
            // Not a storage failure: this node keeps running, and the leader retries (and
            // fails again) until an operator raises the limit. Say so loudly.
            tracing::error!(snapshot = %index, limit = self.max_bytes,
                "the leader's snapshot is larger than max_snapshot_bytes: dropped; raise the limit to let this node catch up");
            self.receiving = None;
            return Ok(PeerMessage::SnapshotAck { snapshot_index: index, offset: 0, ok: false });
        }
        sink.write_all(&data).map_err(|source| StorageFailure::SnapshotData { action: "writing", index, source })?;
        *received += data.len() as u64;
        let received = *received;
        if done {
            let (meta, sink, _) = self.receiving.take().expect("set above");
            sink.finish()?;
            self.saved = Some(meta);
        }
        Ok(PeerMessage::SnapshotAck { snapshot_index: index, offset: received, ok: true })
    }
}

#[cfg(test)]
mod tests {
    use skiff_raft::{Index, LogId, Membership, NodeId, SnapshotMeta, Term};

    use super::*;
    use crate::store::MemLogStore;

    fn meta() -> SnapshotMeta {
        let membership = Membership::with_voters([NodeId(1)]);
        SnapshotMeta { last_log_id: LogId::new(Term(1), Index(10)), membership }
    }

    /// A leader's snapshot stream is bounded: the chunk that would take it past
    /// `max_snapshot_bytes` is refused, nothing is saved, and the stream starts over.
    #[test]
    fn a_snapshot_stream_past_its_limit_is_dropped() {
        let mut store = MemLogStore::new(Membership::with_voters([NodeId(1)]));
        let mut receiver = Receiver::new(10);
        let chunk = |offset, data: &'static [u8], done| (meta(), offset, Bytes::from_static(data), done);
        let (m, offset, data, done) = chunk(0, b"0123456", false);
        let ack = receiver.chunk(&mut store, m, offset, data, done).expect("chunk");
        assert!(matches!(ack, PeerMessage::SnapshotAck { offset: 7, ok: true, .. }), "{ack:?}");
        let (m, offset, data, done) = chunk(7, b"7890", true);
        let ack = receiver.chunk(&mut store, m, offset, data, done).expect("chunk");
        assert!(matches!(ack, PeerMessage::SnapshotAck { offset: 0, ok: false, .. }), "{ack:?}");
        assert_eq!(receiver.saved, None, "nothing may be installed");

        let mut receiver = Receiver::new(11);
        let (m, offset, data, done) = chunk(0, b"01234567890", true);
        let ack = receiver.chunk(&mut store, m, offset, data, done).expect("chunk");
        assert!(matches!(ack, PeerMessage::SnapshotAck { offset: 11, ok: true, .. }), "{ack:?}");
        assert_eq!(receiver.saved, Some(meta()), "exactly at the limit is fine");
    }
}
