//! Feeds arbitrary bytes to the RESP request parser, cut into pieces as reads from a socket
//! would be, and checks that it does not panic, that every frame takes input, that what it
//! leaves in the buffer while waiting stays within the bound its limits give, and that the
//! pieces parse to the same frames and the same error (or leftover) as the input whole.
//!
//! Input layout: byte 0 picks the limits; byte 1 is how many piece sizes follow (0 to 7);
//! those bytes are the piece sizes (0 is an empty read), used in turn until the rest, the
//! data, is used up (byte by byte if there are none).

use bytes::{Bytes, BytesMut};
use skiff_kv::redis::resp::{Frame, Parser, ParserLimits, ProtocolError};

/// The parser's own bounds (private in resp.rs); see `crates/kv/tests/resp_properties.rs`.
const MAX_HEADER_LINE: usize = 32;
const MAX_INLINE: usize = 64 << 10;

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    frames: Vec<Frame>,
    end: Result<Bytes, ProtocolError>,
}

fn drive(limits: ParserLimits, pieces: &[&[u8]]) -> Outcome {
    let mut parser = Parser::new(limits);
    let mut buffer = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buffer.extend_from_slice(piece);
        loop {
            let before = buffer.len();
            match parser.next(&mut buffer) {
                Ok(Some(frame)) => {
                    assert!(buffer.len() < before, "{frame:?} came without taking any input");
                    assert_ne!(frame, Frame::Command(Vec::new()), "an empty command");
                    frames.push(frame);
                }
                Ok(None) => {
                    check_leftover(&buffer, limits);
                    break;
                }
                Err(error) => return Outcome { frames, end: Err(error) },
            }
        }
    }
    Outcome { frames, end: Ok(buffer.freeze()) }
}

/// What may wait in the buffer: an incomplete `*N` line; inside a command, a `$N` line,
/// with its bulk string (within the limits) still to come; or an inline line waiting for its
/// newline.
fn check_leftover(rest: &[u8], limits: ParserLimits) {
    let bulk = limits.max_bulk.min(limits.max_command_bytes);
    let bound = match rest.first() {
        None => 0,
        Some(b'*') => MAX_HEADER_LINE - 1,
        Some(b'$') if rest.contains(&b'\n') => MAX_HEADER_LINE + bulk + 1,
        Some(_) => {
            assert!(!rest.contains(&b'\n'), "an inline line with its newline was left in the buffer");
            MAX_INLINE
        }
    };
    assert!(rest.len() <= bound, "{} bytes left in the buffer, over {bound}", rest.len());
}

/// Runs one input (see the module documentation).
pub fn check(input: &[u8]) {
    let Some((&limits, rest)) = input.split_first() else { return };
    let Some((&count, rest)) = rest.split_first() else { return };
    let (sizes, data) = rest.split_at(usize::from(count % 8).min(rest.len()));
    // Small limits, so that oversized bulk strings and commands are common.
    let max_bulk = usize::from(limits & 0x3f);
    let limits = ParserLimits { max_bulk, max_command_bytes: usize::from(limits >> 6) * 40 + max_bulk / 2 };

    let whole = drive(limits, &[data]);
    let mut pieces = Vec::new();
    if sizes.iter().all(|&size| size == 0) {
        pieces.extend(data.chunks(1));
    } else {
        let mut rest = data;
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at(usize::from(size).min(rest.len()));
            pieces.push(piece);
            rest = tail;
        }
    }
    assert_eq!(drive(limits, &pieces), whole);
}
