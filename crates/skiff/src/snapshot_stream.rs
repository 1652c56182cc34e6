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
#[derive(Default)]
pub(crate) struct Receiver {
    /// The snapshot, its file being written, and the bytes received.
    receiving: Option<(SnapshotMeta, Box<dyn SnapshotSink>, u64)>,
    /// The last snapshot whose data was saved: the only one the core may be told to install.
    pub saved: Option<SnapshotMeta>,
}

impl Receiver {
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
