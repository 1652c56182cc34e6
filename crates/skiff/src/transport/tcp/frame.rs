//! What one frame on a peer connection holds, and a connection as a pair of framed halves.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of one postcard-encoded
//! [`Frame`]. The variant order of [`Frame`] and the field order of [`Hello`] are the wire
//! format: append new variants at the end. `Hello`'s first field is the protocol version, so
//! that any layout can still be told apart: a change of `Hello` (version 2 appended
//! `cluster_id`) bumps [`PROTOCOL_VERSION`], and [`hello_version`] reads the version of a
//! `Hello` this node cannot otherwise decode.
//!
//! A connection runs over plain TCP or over TLS: the framing is the same, inside TLS.

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use skiff_raft::NodeId;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::TlsStream;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec, LengthDelimitedCodecError};
use tokio_util::either::Either;

use crate::wire::{ClusterId, PeerMessage};

/// The version of this frame format. Both ends must speak the same one. Version 2: `Hello`
/// carries the cluster id; snapshot chunks carry it too. Version 3: memberships (in entries
/// and snapshots) carry each member's address, and membership changes the new member's.
pub const PROTOCOL_VERSION: u32 = 3;

/// The frame limit until the handshake succeeds: a stranger must not make us allocate
/// `max_frame_bytes` before we know who it is. A `Hello` is a few dozen bytes.
pub(super) const HANDSHAKE_FRAME_BYTES: usize = 4096;

/// One frame of the peer protocol. (Public only through the hidden [`fuzzing`] module.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
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
    pub fn kind(&self) -> &'static str {
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
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender. First, so every future layout starts alike.
    pub protocol_version: u32,
    /// The sender's cluster name: nodes of two clusters must never exchange messages.
    pub cluster: String,
    /// The sender's id.
    pub from: NodeId,
    /// The id the sender believes it reached: a stale address book that points at the wrong
    /// node is caught here.
    pub to: NodeId,
    /// The sender's cluster id, if it has one yet (see the `tcp` module).
    pub cluster_id: Option<ClusterId>,
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
    #[error("a Hello of protocol version {0}, this node speaks {PROTOCOL_VERSION}")]
    Version(u32),
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

/// The protocol version of a frame that looks like a `Hello` of some version (its variant
/// tag, then the version), for a clear error when the rest does not decode.
pub(super) fn hello_version(body: &[u8]) -> Option<u32> {
    let (tag, rest) = postcard::take_from_bytes::<u32>(body).ok()?;
    if tag != 0 {
        return None;
    }
    postcard::take_from_bytes::<u32>(rest).ok().map(|(version, _)| version)
}

/// Decodes the body of a frame as it arrived: as [`decode`], except that a body that does
/// not decode but starts like a `Hello` of another protocol version says so.
pub(super) fn decode_received(body: &[u8]) -> Result<Frame, FrameError> {
    decode(body).map_err(|error| match hello_version(body) {
        Some(version) if version != PROTOCOL_VERSION => FrameError::Version(version),
        _ => error,
    })
}

/// Says which read errors are the codec refusing an oversized frame, and with what limit.
pub(super) fn read_error<T>(error: io::Error, reader: &FramedRead<T, LengthDelimitedCodec>) -> FrameError {
    codec_error(error, reader.decoder().max_frame_length())
}

/// A read error of a codec whose frame limit is `limit`: the codec's refusal of an
/// oversized frame, or an I/O error.
fn codec_error(error: io::Error, limit: usize) -> FrameError {
    if error.get_ref().is_some_and(|inner| inner.is::<LengthDelimitedCodecError>()) {
        FrameError::TooLarge { limit }
    } else {
        FrameError::Io(error)
    }
}

/// A peer connection's stream, read side: a plain socket's own half (no lock between the
/// halves), or half of a TLS stream (which both halves share).
pub(super) type ReadHalf = Either<OwnedReadHalf, tokio::io::ReadHalf<TlsStream<TcpStream>>>;
/// The write side of a peer connection's stream.
pub(super) type WriteHalf = Either<OwnedWriteHalf, tokio::io::WriteHalf<TlsStream<TcpStream>>>;

/// A connection to a peer, plain TCP or TLS, split into a framed reader and a framed
/// writer so that a reader task and a writer task can each own one.
#[derive(Debug)]
pub(super) struct Connection {
    pub reader: FramedRead<ReadHalf, LengthDelimitedCodec>,
    pub writer: FramedWrite<WriteHalf, LengthDelimitedCodec>,
    /// The other end's address, for logs.
    pub remote: SocketAddr,
    /// Whether the connection runs over TLS.
    pub tls: bool,
    /// Over TLS, the certificate the other end presented (checked against the cluster CA
    /// by the TLS handshake).
    pub peer_certificate: Option<CertificateDer<'static>>,
}

/// Turns off Nagle's algorithm on a peer socket (Raft's messages are small and
/// latency-bound, and the writer coalesces) and returns its remote address.
pub(super) fn prepare(stream: &TcpStream) -> io::Result<SocketAddr> {
    stream.set_nodelay(true)?;
    stream.peer_addr()
}

fn handshake_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(HANDSHAKE_FRAME_BYTES).new_codec()
}

impl Connection {
    /// Frames a plain TCP `stream` (already [`prepare`]d) with the handshake's small frame
    /// limit.
    pub(super) fn plain(stream: TcpStream, remote: SocketAddr) -> Connection {
        let codec = handshake_codec();
        let (read_half, write_half) = stream.into_split();
        Connection {
            reader: FramedRead::new(Either::Left(read_half), codec.clone()),
            writer: FramedWrite::new(Either::Left(write_half), codec),
            remote,
            tls: false,
            peer_certificate: None,
        }
    }

    /// Frames a TLS stream whose TLS handshake is done, with the handshake's small frame
    /// limit.
    pub(super) fn tls(stream: TlsStream<TcpStream>, remote: SocketAddr) -> Connection {
        let peer_certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| cert.clone().into_owned());
        let codec = handshake_codec();
        let (read_half, write_half) = tokio::io::split(stream);
        Connection {
            reader: FramedRead::new(Either::Right(read_half), codec.clone()),
            writer: FramedWrite::new(Either::Right(write_half), codec),
            remote,
            tls: true,
            peer_certificate,
        }
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
            Some(body) => {
                let body = body.map_err(|error| read_error(error, &self.reader))?;
                decode_received(&body).map(Some)
            }
        }
    }
}

/// The frame reader and decoder on bytes, with no socket: the entry points of the fuzz
/// targets (`fuzz/`) and of their property tests (`tests/fuzz_peer_frames.rs`). Not a
/// stable API.
#[doc(hidden)]
pub mod fuzzing {
    use bytes::{BufMut, BytesMut};
    use tokio_util::codec::Decoder;

    use super::super::handshake::{self, Identity};
    use super::*;
    pub use super::{Frame, Hello, PROTOCOL_VERSION};

    /// The acceptor [`read_stream`] checks a `Hello` as: node 2 of cluster `fuzz`, whose only
    /// peer is node 1, with a cluster id of sixteen 7s.
    pub fn acceptor() -> (NodeId, &'static str, ClusterId) {
        (NodeId(2), "fuzz", ClusterId([7; 16]))
    }

    /// What [`read_stream`] made of a stream.
    #[derive(Debug, Default)]
    pub struct StreamRead {
        /// Each frame read, then the error that ended the connection, if one did.
        pub frames: Vec<Result<Frame, String>>,
        /// The acceptor's verdict on the first frame, if it was a `Hello`.
        pub hello: Option<Result<(), String>>,
    }

    /// Reads `stream` as the bytes a peer sent on a new connection, as the acceptor does:
    /// frames under the handshake's limit until the first one, which, if a `Hello`, goes
    /// through the acceptor's checks, then frames up to `max_frame_bytes`, until the end
    /// of the stream or the first error (which ends the connection). Each frame read is
    /// re-encoded and must decode to itself.
    pub fn read_stream(stream: &[u8], max_frame_bytes: usize) -> StreamRead {
        let (id, cluster, cluster_id) = acceptor();
        let ours = Identity { id, cluster: cluster.to_string(), cluster_id: Some(cluster_id) };
        let mut codec = handshake_codec();
        let mut buffer = BytesMut::from(stream);
        let mut read = StreamRead::default();
        loop {
            let limit = codec.max_frame_length();
            let body = match codec.decode_eof(&mut buffer) {
                Ok(Some(body)) => body,
                Ok(None) => break,
                Err(error) => {
                    read.frames.push(Err(codec_error(error, limit).to_string()));
                    break;
                }
            };
            // Only the handshake's frame is told apart as a `Hello` of another version.
            let first = read.frames.is_empty();
            let frame = match if first { decode_received(&body) } else { decode(&body) } {
                Ok(frame) => frame,
                Err(error) => {
                    read.frames.push(Err(error.to_string()));
                    break;
                }
            };
            let again = encode(&frame).expect("a frame that decoded encodes");
            assert_eq!(decode(&again).expect("a re-encoded frame decodes"), frame, "a frame changed when re-encoded");
            if first {
                if let Frame::Hello(hello) = &frame {
                    let checked = handshake::check_dialer(hello, &ours, None, |peer| peer == NodeId(1));
                    read.hello = Some(checked.map_err(|error| error.to_string()));
                }
                codec.set_max_frame_length(max_frame_bytes);
            }
            read.frames.push(Ok(frame));
        }
        read
    }

    /// `frame` as it goes on the wire: its length, then its body.
    pub fn frame_bytes(frame: &Frame) -> Vec<u8> {
        let body = encode(frame).expect("every frame encodes");
        let mut bytes = BytesMut::with_capacity(4 + body.len());
        bytes.put_u32(u32::try_from(body.len()).expect("a frame under 4 GiB"));
        bytes.put_slice(&body);
        bytes.to_vec()
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
                cluster_id: Some(ClusterId([7; 16])),
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

    /// The start of the `Hello` layout is the one thing every future version must still read.
    #[test]
    fn hello_layout_is_fixed() {
        let hello = Frame::Hello(Hello {
            protocol_version: 2,
            cluster: "ab".into(),
            from: NodeId(3),
            to: NodeId(4),
            cluster_id: None,
        });
        let body = encode(&hello).unwrap();
        assert_eq!(&body[..], &[0, 2, 2, b'a', b'b', 3, 4, 0]);
        assert_eq!(hello_version(&body), Some(2));
        // A version 1 Hello, which has no cluster id: its version is still read.
        assert_eq!(hello_version(&[0, 1, 2, b'a', b'b', 3, 4]), Some(1));
        assert!(decode(&[0, 1, 2, b'a', b'b', 3, 4]).is_err());
        assert_eq!(hello_version(&encode(&Frame::Ping { sent_micros: 1 }).unwrap()), None);
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
