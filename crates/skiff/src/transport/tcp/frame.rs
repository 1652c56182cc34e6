//! What one frame on a peer connection holds, and a connection as a pair of framed halves.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of one postcard-encoded
//! [`Frame`]. The variant order of [`Frame`] and the field order of [`Hello`] are the wire
//! format: append new variants at the end, and never change `Hello`, whose first field is
//! the protocol version so that any future layout can still be told apart.

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use skiff_raft::NodeId;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec, LengthDelimitedCodecError};

use crate::wire::PeerMessage;

/// The version of this frame format. Both ends must speak the same one.
pub(super) const PROTOCOL_VERSION: u32 = 1;

/// The frame limit until the handshake succeeds: a stranger must not make us allocate
/// `max_frame_bytes` before we know who it is. A `Hello` is a few dozen bytes.
pub(super) const HANDSHAKE_FRAME_BYTES: usize = 4096;

/// One frame of the peer protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Frame {
    /// The first frame each way: who is talking, to whom, in which cluster.
    Hello(Hello),
    /// Why the accepting side refuses a `Hello`, sent before it closes, so the dialer can log
    /// the reason rather than a bare "connection closed".
    Refused { reason: String },
    /// A message for the node.
    Message(PeerMessage),
    /// Asks for a [`Frame::Pong`] carrying `sent_micros` back, to measure the round trip.
    /// The value is the sender's own clock (microseconds since its transport started), so
    /// the two nodes' clocks never need to agree.
    Ping { sent_micros: u64 },
    /// The answer to a [`Frame::Ping`], echoing its value.
    Pong { sent_micros: u64 },
}

impl Frame {
    /// The variant's name, for logs: never the payload.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "Hello",
            Frame::Refused { .. } => "Refused",
            Frame::Message(_) => "Message",
            Frame::Ping { .. } => "Ping",
            Frame::Pong { .. } => "Pong",
        }
    }
}

/// The handshake: each side introduces itself and names whom it expects to reach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender. First, so every future layout starts alike.
    pub protocol_version: u32,
    /// The sender's cluster name: nodes of two clusters must never exchange messages.
    pub cluster: String,
    /// The sender's id.
    pub from: NodeId,
    /// The id the sender believes it reached: a stale address book that points at the wrong
    /// node is caught here.
    pub to: NodeId,
}

/// A frame that could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum FrameError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("a frame over the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("malformed frame: {0} bytes after its end")]
    TrailingBytes(usize),
}

/// Encodes `frame` into the body of one length-delimited frame.
pub(super) fn encode(frame: &Frame) -> Result<Bytes, postcard::Error> {
    postcard::to_allocvec(frame).map(Bytes::from)
}

/// Decodes the body of one frame. Every byte must belong to the frame: trailing bytes mean
/// the two ends disagree about the format.
pub(super) fn decode(body: &[u8]) -> Result<Frame, FrameError> {
    let (frame, rest) = postcard::take_from_bytes::<Frame>(body)?;
    if !rest.is_empty() {
        return Err(FrameError::TrailingBytes(rest.len()));
    }
    Ok(frame)
}

/// Says which read errors are the codec refusing an oversized frame, and with what limit.
pub(super) fn read_error<T>(error: io::Error, reader: &FramedRead<T, LengthDelimitedCodec>) -> FrameError {
    if error.get_ref().is_some_and(|inner| inner.is::<LengthDelimitedCodecError>()) {
        FrameError::TooLarge { limit: reader.decoder().max_frame_length() }
    } else {
        FrameError::Io(error)
    }
}

/// A TCP connection to a peer, split into a framed reader and a framed writer so that a
/// reader task and a writer task can each own one.
#[derive(Debug)]
pub(super) struct Connection {
    pub reader: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    pub writer: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    /// The other end's address, for logs.
    pub remote: SocketAddr,
}

impl Connection {
    /// Frames `stream` with the handshake's small frame limit, and turns off Nagle's
    /// algorithm: Raft's messages are small and latency-bound, and the writer coalesces.
    pub(super) fn new(stream: TcpStream) -> io::Result<Connection> {
        stream.set_nodelay(true)?;
        let remote = stream.peer_addr()?;
        let codec = LengthDelimitedCodec::builder().max_frame_length(HANDSHAKE_FRAME_BYTES).new_codec();
        let (read_half, write_half) = stream.into_split();
        Ok(Connection {
            reader: FramedRead::new(read_half, codec.clone()),
            writer: FramedWrite::new(write_half, codec),
            remote,
        })
    }

    /// Raises the frame limit to `max_frame_bytes` once the peer is known.
    pub(super) fn open(&mut self, max_frame_bytes: usize) {
        self.reader.decoder_mut().set_max_frame_length(max_frame_bytes);
        self.writer.encoder_mut().set_max_frame_length(max_frame_bytes);
    }

    /// Writes one frame and flushes it: for the handshake, where each frame waits for an
    /// answer.
    pub(super) async fn send(&mut self, frame: &Frame) -> Result<(), FrameError> {
        let body = encode(frame)?;
        self.writer.send(body).await?;
        Ok(())
    }

    /// Reads one frame; `None` when the peer closed the connection.
    pub(super) async fn receive(&mut self) -> Result<Option<Frame>, FrameError> {
        match self.reader.next().await {
            None => Ok(None),
            Some(body) => Ok(Some(decode(&body.map_err(|error| read_error(error, &self.reader))?)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_raft::Index;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                cluster: "c".into(),
                from: NodeId(1),
                to: NodeId(2),
            }),
            Frame::Refused { reason: "no".into() },
            Frame::Message(PeerMessage::SnapshotAck { snapshot_index: Index(7), offset: 9, ok: true }),
            Frame::Ping { sent_micros: u64::MAX },
            Frame::Pong { sent_micros: 0 },
        ];
        for frame in frames {
            let body = encode(&frame).unwrap();
            assert_eq!(decode(&body).unwrap(), frame);
        }
    }

    /// The `Hello` layout is the one thing every future version must still read.
    #[test]
    fn hello_layout_is_fixed() {
        let hello = Frame::Hello(Hello { protocol_version: 1, cluster: "ab".into(), from: NodeId(3), to: NodeId(4) });
        assert_eq!(&encode(&hello).unwrap()[..], &[0, 1, 2, b'a', b'b', 3, 4]);
    }

    #[test]
    fn garbage_and_trailing_bytes_are_errors() {
        assert!(decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode(&[]).is_err());
        let mut body = encode(&Frame::Ping { sent_micros: 1 }).unwrap().to_vec();
        body.push(0);
        assert!(matches!(decode(&body), Err(FrameError::TrailingBytes(1))));
    }
}
