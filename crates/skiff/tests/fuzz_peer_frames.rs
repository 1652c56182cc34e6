//! The peer frame fuzz target's checks (`fuzz/src/frames.rs`, see `docs/fuzzing.md`) as a
//! property test, so `cargo test` runs them on stable: the frame reader on random streams,
//! on streams of valid frames built from random choices (read back unchanged, and the
//! acceptor's verdict on a `Hello` right), on those streams changed a little, and
//! `skiff::wire`'s messages and cluster ids.

use proptest::prelude::*;

#[path = "../../../fuzz/src/frames.rs"]
mod harness;

/// The mode bytes of `harness::check`: raw stream, built frames, wire message.
const RAW: u8 = 0;
const BUILT: u8 = 1;
const WIRE: u8 = 2;

fn input(mode: u8, rest: Vec<u8>) -> Vec<u8> {
    let mut input = vec![mode];
    input.extend(rest);
    input
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_streams(rest in prop::collection::vec(any::<u8>(), 0..256)) {
        harness::check(&input(RAW, rest));
    }

    #[test]
    fn built_and_changed_frames(rest in prop::collection::vec(any::<u8>(), 0..512)) {
        harness::check(&input(BUILT, rest));
    }

    #[test]
    fn wire_messages(rest in prop::collection::vec(any::<u8>(), 0..128)) {
        harness::check(&input(WIRE, rest));
    }

    /// A message's own encoding, changed in one byte, never panics the reader (and decodes,
    /// if it does, to something that re-encodes to itself: checked inside).
    #[test]
    fn changed_messages(choices in prop::collection::vec(any::<u8>(), 0..256), at in any::<prop::sample::Index>(), flip in 1u8..) {
        let mut cursor = harness::cursor::Cursor::new(&choices);
        let frame = skiff::transport::tcp::fuzzing::Frame::Message(message(&mut cursor));
        let mut stream = skiff::transport::tcp::fuzzing::frame_bytes(&frame);
        let at = at.index(stream.len());
        stream[at] ^= flip;
        skiff::transport::tcp::fuzzing::read_stream(&stream, 1 << 20);
        harness::check(&input(WIRE, stream[4..].to_vec()));
    }
}

fn message(cursor: &mut harness::cursor::Cursor) -> skiff::wire::PeerMessage {
    let envelope = harness::raft_input::envelope(cursor, &harness::raft_input::Receiver::default());
    skiff::wire::PeerMessage::Raft(envelope)
}

/// The acceptor's verdict as `read_stream` reports it, for the cases the built inputs mix.
#[test]
fn a_hello_for_the_acceptor_is_accepted_and_others_refused() {
    use skiff::transport::tcp::fuzzing::{self, Frame, Hello, PROTOCOL_VERSION};
    let (id, cluster, cluster_id) = fuzzing::acceptor();
    let hello = |from: u64, cluster_id| {
        Frame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            cluster: cluster.into(),
            from: skiff::NodeId(from),
            to: id,
            cluster_id,
        })
    };
    let verdict = |frame: &Frame| fuzzing::read_stream(&fuzzing::frame_bytes(frame), 1 << 20).hello.map(|v| v.is_ok());
    assert_eq!(verdict(&hello(1, Some(cluster_id))), Some(true));
    assert_eq!(verdict(&hello(1, None)), Some(true));
    assert_eq!(verdict(&hello(3, None)), Some(false), "an unknown peer");
    assert_eq!(verdict(&hello(1, Some(skiff::wire::ClusterId([8; 16])))), Some(false), "another cluster id");
    assert_eq!(verdict(&Frame::Ping { sent_micros: 1 }), None, "not a Hello");
}

/// A first frame over the handshake's limit ends the connection before it is read.
#[test]
fn an_oversized_first_frame_is_refused() {
    use skiff::transport::tcp::fuzzing;
    let mut stream = 5000u32.to_be_bytes().to_vec();
    stream.resize(5004, 0);
    let read = fuzzing::read_stream(&stream, 1 << 20);
    assert_eq!(read.frames.len(), 1);
    let error = read.frames[0].as_ref().expect_err("over the handshake's limit");
    assert!(error.contains("over the limit of 4096 bytes"), "{error}");
}
