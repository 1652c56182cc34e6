//! The peer transport's frame reader and decoder (`skiff::transport::tcp`'s `frame.rs`,
//! `skiff::wire`) on bytes from a peer, before and after the handshake: no panic; every
//! frame read re-encodes to one that decodes to it; and frames built from the input's
//! choices, encoded and read back unchanged, decode to themselves.
//!
//! Input: byte 0 picks the mode. Raw: the rest is the stream, byte for byte (the frame
//! limit after the handshake from byte 1). Built: frames (a `Hello`, messages of every
//! kind, pings) are built from the input's choices, encoded, then perhaps changed
//! (`cursor::mutate`), and read. Wire: the rest is one `PeerMessage`'s postcard encoding,
//! or a cluster id's text.

use bytes::Bytes;
use skiff::transport::tcp::fuzzing::{self, Frame, Hello, PROTOCOL_VERSION};
use skiff::wire::{ClusterId, ForwardError, ForwardedRequest, PeerMessage};
use skiff::{ErrorKind, Index, LogId, MembershipChange, NodeId, Term};
use skiff_raft::SnapshotMeta;

#[path = "cursor.rs"]
pub(crate) mod cursor;
#[path = "raft_input.rs"]
pub(crate) mod raft_input;

use cursor::Cursor;
use raft_input::Receiver;

/// Runs one input (see the module documentation).
pub fn check(data: &[u8]) {
    let mut cursor = Cursor::new(data);
    match cursor.below(3) {
        0 => {
            let limit = 64 + usize::from(cursor.byte()) * 64;
            fuzzing::read_stream(cursor.rest(), limit);
        }
        1 => built(&mut cursor),
        _ => wire(cursor.rest()),
    }
}

/// Frames built from `cursor`, encoded, perhaps changed, and read back.
fn built(cursor: &mut Cursor) {
    let frames: Vec<Frame> = (0..cursor.below(6) + 1).map(|position| frame(cursor, position == 0)).collect();
    let mut stream: Vec<u8> = frames.iter().flat_map(fuzzing::frame_bytes).collect();
    let changed = cursor::mutate(cursor, &mut stream);
    let read = fuzzing::read_stream(&stream, 1 << 20);
    if changed {
        return;
    }
    let read_frames: Vec<Frame> = read.frames.into_iter().map(|frame| frame.expect("a valid frame reads")).collect();
    assert_eq!(read_frames, frames, "frames changed on the way through the wire");
    if let Some(Frame::Hello(hello)) = frames.first() {
        let (id, cluster, cluster_id) = fuzzing::acceptor();
        let acceptable = hello.protocol_version == PROTOCOL_VERSION
            && hello.cluster == cluster
            && hello.cluster_id.is_none_or(|theirs| theirs == cluster_id)
            && hello.to == id
            && hello.from == NodeId(1);
        assert_eq!(read.hello.map(|verdict| verdict.is_ok()), Some(acceptable), "the acceptor misjudged {hello:?}");
    }
}

fn frame(cursor: &mut Cursor, first: bool) -> Frame {
    match cursor.below(if first { 2 } else { 8 }) {
        0 => Frame::Hello(hello(cursor)),
        1 => Frame::Refused { reason: text(cursor) },
        2 => Frame::Ping { sent_micros: cursor.number() },
        3 => Frame::Pong { sent_micros: cursor.number() },
        _ => Frame::Message(message(cursor)),
    }
}

fn hello(cursor: &mut Cursor) -> Hello {
    // Mostly right, so that each check of the acceptor decides some of them.
    let (id, cluster, cluster_id) = fuzzing::acceptor();
    let wrong = cursor.byte();
    Hello {
        protocol_version: if wrong & 1 == 0 { PROTOCOL_VERSION } else { cursor.byte().into() },
        cluster: if wrong & 2 == 0 { cluster.to_string() } else { text(cursor) },
        from: if wrong & 4 == 0 { NodeId(1) } else { raft_input::node(cursor) },
        to: if wrong & 8 == 0 { id } else { raft_input::node(cursor) },
        cluster_id: match (wrong >> 4) % 3 {
            0 => Some(cluster_id),
            1 => None,
            _ => Some(ClusterId([cursor.byte(); 16])),
        },
    }
}

fn text(cursor: &mut Cursor) -> String {
    String::from_utf8_lossy(cursor.bytes()).into_owned()
}

fn log_id(cursor: &mut Cursor) -> LogId {
    LogId::new(Term(cursor.number()), Index(cursor.number()))
}

fn message(cursor: &mut Cursor) -> PeerMessage {
    match cursor.below(8) {
        0 | 1 => {
            let receiver = Receiver::default();
            PeerMessage::Raft(raft_input::envelope(cursor, &receiver))
        }
        2 => PeerMessage::Forward {
            request: cursor.number(),
            body: match cursor.below(3) {
                0 => ForwardedRequest::Propose(Bytes::copy_from_slice(cursor.bytes())),
                1 => ForwardedRequest::Membership(match cursor.below(4) {
                    0 => MembershipChange::AddLearner { id: raft_input::node(cursor), address: address(cursor) },
                    1 => MembershipChange::AddVoter { id: raft_input::node(cursor), address: address(cursor) },
                    2 => MembershipChange::Promote(raft_input::node(cursor)),
                    _ => MembershipChange::Remove(raft_input::node(cursor)),
                }),
                _ => ForwardedRequest::TransferLeader(cursor.bool().then(|| raft_input::node(cursor))),
            },
        },
        3 => PeerMessage::ForwardResult {
            request: cursor.number(),
            result: match cursor.below(4) {
                0 => Ok(Bytes::copy_from_slice(cursor.bytes())),
                1 => Err(ForwardError::Retry),
                2 => Err(ForwardError::OutcomeUnknown),
                _ => {
                    let kinds =
                        [ErrorKind::Unavailable, ErrorKind::Indeterminate, ErrorKind::Conflict, ErrorKind::Internal];
                    Err(ForwardError::Refused { kind: kinds[cursor.below(4)], message: text(cursor) })
                }
            },
        },
        4 | 5 => PeerMessage::SnapshotChunk {
            meta: SnapshotMeta { last_log_id: log_id(cursor), membership: raft_input::membership(cursor) },
            offset: cursor.number(),
            data: Bytes::copy_from_slice(cursor.bytes()),
            done: cursor.bool(),
            cluster_id: cursor.bool().then(|| ClusterId([cursor.byte(); 16])),
        },
        _ => PeerMessage::SnapshotAck {
            snapshot_index: Index(cursor.number()),
            offset: cursor.number(),
            ok: cursor.bool(),
        },
    }
}

/// `skiff::wire` on its own: a `PeerMessage` and a cluster id's text.
fn wire(bytes: &[u8]) {
    if let Ok(message) = postcard::from_bytes::<PeerMessage>(bytes) {
        let again = postcard::to_allocvec(&message).expect("a decoded message encodes");
        assert_eq!(
            postcard::from_bytes::<PeerMessage>(&again).ok(),
            Some(message),
            "a message changed when re-encoded"
        );
    }
    if let Ok(text) = std::str::from_utf8(bytes)
        && let Some(id) = ClusterId::parse(text)
    {
        assert_eq!(id.to_string(), text.to_ascii_lowercase(), "a cluster id prints as other text than it parsed from");
        assert_eq!(ClusterId::parse(&id.to_string()), Some(id));
    }
}

/// A member's address as a peer might send one: absent, or any text (possibly overlong).
fn address(cursor: &mut Cursor) -> Option<String> {
    cursor.bool().then(|| String::from_utf8_lossy(cursor.bytes()).into_owned())
}
