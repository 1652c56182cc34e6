//! Serving one established connection: a reader and a writer running side by side until
//! either fails.
//!
//! The reader delivers messages into the node's inbox and waits when the inbox is full: the
//! node's slowness then backs up into TCP and from there into the sender's bounded queue,
//! which drops its oldest messages, so nothing grows without bound and no caller blocks.
//! The writer drains the peer's queue in batches, feeding frames into the codec's buffer and
//! flushing once per batch (one `write` for many small messages), and pings the peer on a
//! timer to measure the round trip. A connection on which nothing arrives for the idle
//! timeout is presumed dead (a peer that vanished without closing it).

use std::convert::Infallible;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tracing::warn;

use super::Shared;
use super::frame::{Connection, Frame, FrameError, ReadHalf, WriteHalf, decode, encode, read_error};
use super::peer::Peer;
use crate::wire::PeerMessage;

/// The most messages the writer takes from the queue before it flushes.
const MAX_BATCH_MESSAGES: usize = 256;
/// Pongs waiting for the writer; a peer that pings faster than that loses some answers.
const PENDING_PONGS: usize = 8;

type Reader = FramedRead<ReadHalf, LengthDelimitedCodec>;
type Writer = FramedWrite<WriteHalf, LengthDelimitedCodec>;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectionError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("nothing arrived for {0:?}")]
    Idle(Duration),
    #[error("unexpected {0} frame after the handshake")]
    Unexpected(&'static str),
    #[error("the node's inbox is closed (the node stopped)")]
    InboxClosed,
}

impl ConnectionError {
    /// Whether the peer broke the protocol (worth a warning), rather than went away.
    pub(super) fn is_protocol_violation(&self) -> bool {
        match self {
            ConnectionError::Frame(FrameError::Io(_)) | ConnectionError::Io(_) => false,
            ConnectionError::Frame(_) | ConnectionError::Unexpected(_) => true,
            ConnectionError::Closed | ConnectionError::Idle(_) | ConnectionError::InboxClosed => false,
        }
    }
}

/// Serves `connection` to `peer` until it fails (or the caller drops this future), and says
/// why it ended.
pub(super) async fn serve(shared: &Shared, peer: &Peer, connection: Connection) -> ConnectionError {
    let Connection { reader, writer, .. } = connection;
    let (pongs, pending_pongs) = mpsc::channel(PENDING_PONGS);
    let ended = tokio::select! {
        result = read_loop(shared, peer, reader, pongs) => result,
        result = write_loop(shared, peer, writer, pending_pongs) => result,
    };
    match ended {
        Err(error) => error,
        Ok(never) => match never {},
    }
}

async fn read_loop(
    shared: &Shared,
    peer: &Peer,
    mut reader: Reader,
    pongs: mpsc::Sender<u64>,
) -> Result<Infallible, ConnectionError> {
    let idle_timeout = shared.limits.idle_timeout;
    loop {
        let body = match tokio::time::timeout(idle_timeout, reader.next()).await {
            Err(_) => return Err(ConnectionError::Idle(idle_timeout)),
            Ok(None) => return Err(ConnectionError::Closed),
            Ok(Some(body)) => body.map_err(|error| read_error(error, &reader))?,
        };
        peer.touch();
        match decode(&body)? {
            Frame::Message(PeerMessage::SnapshotChunk { meta, cluster_id, .. })
                if !shared.accepts_snapshot_of(cluster_id) =>
            {
                shared.refused_snapshot_chunks.fetch_add(1, Ordering::Relaxed);
                warn!(peer = %peer.id, snapshot = %meta.last_log_id, theirs = ?cluster_id, ours = ?shared.cluster_id(),
                    "dropped a snapshot chunk of another cluster");
            }
            Frame::Message(message) => {
                shared.inbox.send((peer.id, message)).await.map_err(|_| ConnectionError::InboxClosed)?;
            }
            Frame::Ping { sent_micros } => {
                // Full only if the peer pings far faster than it should; skipping is fine.
                let _ = pongs.try_send(sent_micros);
            }
            Frame::Pong { sent_micros } => {
                // The value is our own clock, echoed; a value from the future is the peer's
                // invention and measures nothing.
                if let Some(elapsed) = shared.now_micros().checked_sub(sent_micros) {
                    peer.record_round_trip(Duration::from_micros(elapsed));
                }
            }
            other @ (Frame::Hello(_) | Frame::Refused { .. }) => {
                return Err(ConnectionError::Unexpected(other.kind()));
            }
        }
    }
}

async fn write_loop(
    shared: &Shared,
    peer: &Peer,
    mut writer: Writer,
    mut pongs: mpsc::Receiver<u64>,
) -> Result<Infallible, ConnectionError> {
    let mut ping = tokio::time::interval(shared.limits.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            Some(sent_micros) = pongs.recv() => feed(&mut writer, &Frame::Pong { sent_micros }).await?,
            _ = ping.tick() => feed(&mut writer, &Frame::Ping { sent_micros: shared.now_micros() }).await?,
            () = peer.wakeup.notified() => {}
        }
        write_batch(shared, peer, &mut writer).await?;
        SinkExt::<Bytes>::flush(&mut writer).await?;
    }
}

/// Feeds one batch from the peer's queue into the writer's buffer (the codec writes to the
/// socket when its buffer fills). Messages lost to a failed write are counted as dropped.
async fn write_batch(shared: &Shared, peer: &Peer, writer: &mut Writer) -> Result<(), ConnectionError> {
    let batch = peer.take_batch(MAX_BATCH_MESSAGES);
    if peer.has_queued() {
        // Come straight back for the rest, after answering any ping.
        peer.wakeup.notify_one();
    }
    let mut unsent = batch.len();
    for mut message in batch {
        if let PeerMessage::SnapshotChunk { cluster_id, .. } = &mut message {
            // Our id, so the follower can refuse a snapshot of another cluster.
            *cluster_id = shared.cluster_id();
        }
        let body = match encode(&Frame::Message(message)) {
            Ok(body) if body.len() <= shared.limits.max_frame_bytes => body,
            Ok(body) => {
                warn!(peer = %peer.id, bytes = body.len(), limit = shared.limits.max_frame_bytes,
                    "dropped a message larger than the frame limit; chunk it below the limit");
                peer.count_dropped(1);
                unsent -= 1;
                continue;
            }
            Err(error) => {
                warn!(peer = %peer.id, %error, "dropped a message that could not be encoded");
                peer.count_dropped(1);
                unsent -= 1;
                continue;
            }
        };
        if let Err(error) = writer.feed(body).await {
            peer.count_dropped(unsent);
            return Err(error.into());
        }
        unsent -= 1;
    }
    Ok(())
}

async fn feed(writer: &mut Writer, frame: &Frame) -> Result<(), ConnectionError> {
    let body = encode(frame).map_err(FrameError::from)?;
    writer.feed(body).await?;
    Ok(())
}
