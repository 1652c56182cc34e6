//! Property tests of the RESP request parser (`skiff_kv::redis::resp`). It reads bytes straight
//! from clients, so whatever they send and however the bytes are cut into reads, it must not
//! panic, must give back the same frames as if the bytes had come at once, and must keep what
//! it buffers bounded by its limits.
//!
//! The inputs are mostly "protocol soup": pieces of valid commands, `*N` and `$N` lines with
//! edge-case numbers (negative, zero-padded to the header-line limit, over Redis's ceilings),
//! inline lines with quotes and escapes, and raw bytes, concatenated. Limits are small so
//! that the oversized-argument paths run often. The `resp_parser` target in `fuzz/` (see
//! `docs/fuzzing.md`) runs the same checks under libFuzzer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use skiff_kv::redis::resp::{ARGUMENT_COST, Frame, Parser, ParserLimits, ProtocolError};

/// The parser's own bounds (private in resp.rs): a `*N` or `$N` line must have its CRLF
/// within this many bytes, and an inline command is kept while it waits for its newline up
/// to this many bytes.
const MAX_HEADER_LINE: usize = 32;
const MAX_INLINE: usize = 64 << 10;

const CASES: u32 = 2048;

// ---------------------------------------------------------------------------------------
// Driving the parser.

/// How the input is cut into the pieces the parser is given.
#[derive(Clone, Debug)]
enum Split {
    /// Cut at these positions (empty pieces included: the parser is called with nothing new).
    At(Vec<Index>),
    /// Pieces of these sizes, repeated until the input is used up (`[1]`: byte by byte).
    Sizes(Vec<usize>),
}

fn split() -> impl Strategy<Value = Split> {
    prop_oneof![vec(any::<Index>(), 0..12).prop_map(Split::At), vec(1..9usize, 1..6).prop_map(Split::Sizes)]
}

fn cut<'a>(input: &'a [u8], split: &Split) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    match split {
        Split::At(at) => {
            let mut at: Vec<usize> = at.iter().map(|index| index.index(input.len() + 1)).collect();
            at.sort_unstable();
            let mut start = 0;
            for end in at {
                pieces.push(&input[start..end]);
                start = end;
            }
            pieces.push(&input[start..]);
        }
        Split::Sizes(sizes) => {
            let mut rest = input;
            for &size in sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (piece, tail) = rest.split_at(size.min(rest.len()));
                pieces.push(piece);
                rest = tail;
            }
        }
    }
    pieces
}

/// What parsing a stream gives: its frames, then the error that ended it or the bytes left
/// over waiting for more.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    frames: Vec<Frame>,
    end: Result<Bytes, ProtocolError>,
}

/// Feeds the pieces one at a time, as reads from a socket: after each, takes frames until the
/// parser asks for more (`waiting` is then shown what is left in the buffer) or fails.
fn drive(limits: ParserLimits, pieces: &[&[u8]], mut waiting: impl FnMut(&[u8])) -> Outcome {
    let mut parser = Parser::new(limits);
    let mut buffer = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buffer.extend_from_slice(piece);
        loop {
            let before = buffer.len();
            match parser.next(&mut buffer) {
                Ok(Some(frame)) => {
                    // A frame takes input: a parser that gave frames without taking any
                    // would keep a connection's loop busy forever.
                    assert!(buffer.len() < before, "{frame:?} came without taking any input");
                    // Empty commands (`*0`, `*-1`, blank lines) are skipped, as Redis does.
                    assert_ne!(frame, Frame::Command(Vec::new()), "an empty command");
                    frames.push(frame);
                }
                Ok(None) => {
                    waiting(&buffer);
                    break;
                }
                Err(error) => return Outcome { frames, end: Err(error) },
            }
        }
    }
    Outcome { frames, end: Ok(buffer.freeze()) }
}

fn parse_whole(limits: ParserLimits, input: &[u8]) -> Outcome {
    drive(limits, &[input], |_| {})
}

/// Checks what the parser leaves in the buffer when it asks for more input. From resp.rs:
/// - between commands, a `*N` line still without its CRLF: shorter than MAX_HEADER_LINE
///   (a longer one is an error);
/// - inside a command, a `$N` line still without its CRLF (shorter than MAX_HEADER_LINE), or
///   a `$N\r\n` line of at most MAX_HEADER_LINE bytes, kept (not taken) until its N bytes and
///   CRLF are all there, with N at most both `max_bulk` and `max_command_bytes` (a longer
///   bulk string is skipped as it arrives, so nothing of it waits in the buffer);
/// - between commands, an inline command waiting for its newline: at most MAX_INLINE bytes,
///   none of them a newline.
fn check_leftover(rest: &[u8], limits: ParserLimits) -> Result<(), String> {
    let bulk = limits.max_bulk.min(limits.max_command_bytes);
    let (bound, what) = match rest.first() {
        None => return Ok(()),
        Some(b'*') => (MAX_HEADER_LINE - 1, "an incomplete `*N` line"),
        Some(b'$') if rest.contains(&b'\n') => {
            (MAX_HEADER_LINE + bulk + 2 - 1, "a `$N` line waiting for its bulk string")
        }
        Some(_) if rest.contains(&b'\n') => {
            return Err(format!("an inline line with its newline was left in the buffer: {:?}", show(rest)));
        }
        Some(_) => (MAX_INLINE, "an inline command waiting for its newline"),
    };
    if rest.len() > bound {
        return Err(format!("{} bytes left in the buffer as {what}, over {bound}: {:?}", rest.len(), show(rest)));
    }
    Ok(())
}

fn show(bytes: &[u8]) -> String {
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned();
    if bytes.len() > 80 { format!("{shown}... ({} bytes)", bytes.len()) } else { shown }
}

// ---------------------------------------------------------------------------------------
// Inputs.

fn encode(commands: &[Vec<Vec<u8>>]) -> Vec<u8> {
    let mut out = Vec::new();
    for command in commands {
        out.extend_from_slice(format!("*{}\r\n", command.len()).as_bytes());
        for argument in command {
            out.extend_from_slice(format!("${}\r\n", argument.len()).as_bytes());
            out.extend_from_slice(argument);
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

fn limits() -> impl Strategy<Value = ParserLimits> {
    (0..40usize, 0..120usize).prop_map(|(max_bulk, max_command_bytes)| ParserLimits { max_bulk, max_command_bytes })
}

/// Bytes that mean something to the parser, to make near-misses of valid input.
const SIGNIFICANT: &[u8] = b"*$\r\n\r\n \t\"'\\x0aF19-+";

/// One piece of protocol soup.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    let count = prop_oneof![-2i64..6, Just(1 << 20), Just((1 << 20) + 1), Just(i64::MAX), Just(i64::MIN)];
    let length = prop_oneof![-2i64..48, Just(512 << 20), Just((512 << 20) + 1), Just(i64::MAX)];
    let header = (select(&b"*$"[..]), prop_oneof![count, length], 0..34usize)
        .prop_map(|(marker, n, width)| format!("{}{n:0width$}\r\n", char::from(marker)).into_bytes());
    let word = vec(select(&b"ab  \"\"''\\\\xnrt09AF\t*$"[..]), 0..10);
    let inline = (vec(word, 0..4), any::<bool>()).prop_map(|(words, crlf)| {
        let mut line = words.join(&b' ');
        line.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        line
    });
    prop_oneof![
        3 => vec(vec(any::<u8>(), 0..48), 1..5).prop_map(|command| encode(&[command])),
        4 => header,
        2 => inline,
        2 => vec(select(SIGNIFICANT), 0..24),
        1 => vec(any::<u8>(), 0..24),
        1 => Just(b"\r\n".to_vec()),
    ]
}

/// Any input, valid or not: mostly protocol soup, sometimes plain random bytes.
fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![4 => vec(fragment(), 0..12).prop_map(|pieces| pieces.concat()), 1 => vec(any::<u8>(), 0..512)]
}

/// What the parser should make of one multibulk command, from its documented rules: the
/// arguments are kept until one is over `max_bulk` or their lengths, each plus
/// `ARGUMENT_COST`, add up to over `max_command_bytes`; from then on nothing more is kept,
/// but every length is counted.
fn expected_frame(arguments: &[Vec<u8>], limits: ParserLimits) -> Frame {
    let mut kept = Vec::new();
    let mut bytes = 0u64;
    let mut cost = 0u64;
    let mut over = None;
    for argument in arguments {
        bytes += argument.len() as u64;
        cost += argument.len() as u64 + ARGUMENT_COST;
        if over.is_none() {
            if argument.len() > limits.max_bulk {
                over = Some(limits.max_bulk as u64);
            } else if cost > limits.max_command_bytes as u64 {
                over = Some(limits.max_command_bytes as u64);
            } else {
                kept.push(Bytes::copy_from_slice(argument));
            }
        }
    }
    match over {
        None => Frame::Command(kept),
        Some(limit) => Frame::TooLarge { name: kept.into_iter().next(), bytes, limit },
    }
}

// ---------------------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// Whatever arrives, in whatever pieces, the parser does not panic, every frame takes
    /// input, and what it leaves in the buffer while it waits is an incomplete frame within
    /// the bound its limits give.
    #[test]
    fn any_input_in_any_pieces_is_parsed_within_bounds(input in input(), limits in limits(), split in split()) {
        let mut trouble = None;
        drive(limits, &cut(&input, &split), |rest| {
            if trouble.is_none() {
                trouble = check_leftover(rest, limits).err();
            }
        });
        if let Some(trouble) = trouble {
            prop_assert!(false, "{trouble}");
        }
    }

    /// Commands encoded as clients encode them, arguments within the limits, parse back to
    /// exactly themselves however the bytes are cut, and leave nothing behind. (Empty ones,
    /// `*0`, are skipped.)
    #[test]
    fn multibulk_commands_round_trip(
        commands in vec(vec(vec(any::<u8>(), 0..=ROUND_TRIP.max_bulk), 0..=5), 0..8),
        split in split(),
    ) {
        let input = encode(&commands);
        let outcome = drive(ROUND_TRIP, &cut(&input, &split), |_| {});
        let expected: Vec<Frame> = commands
            .iter()
            .filter(|command| !command.is_empty())
            .map(|command| Frame::Command(command.iter().map(|argument| Bytes::copy_from_slice(argument)).collect()))
            .collect();
        prop_assert_eq!(outcome, Outcome { frames: expected, end: Ok(Bytes::new()) });
    }

    /// Cutting the input into pieces changes nothing: the same frames, then the same error or
    /// the same bytes left waiting, as when it all comes at once.
    #[test]
    fn pieces_parse_as_the_whole(input in input(), limits in limits(), split in split()) {
        let whole = parse_whole(limits, &input);
        let pieces = drive(limits, &cut(&input, &split), |_| {});
        prop_assert_eq!(pieces, whole);
    }

    /// A command with an argument over `max_bulk` is refused as `TooLarge` (named by its first
    /// argument if that one was kept, its bytes all counted) and the command after it parses.
    #[test]
    fn an_oversized_argument_is_refused_and_the_next_command_parses(
        before in vec(vec(any::<u8>(), 0..=OVERSIZED.max_bulk), 0..4),
        oversized in prop_oneof![4 => OVERSIZED.max_bulk + 1..=OVERSIZED.max_bulk * 8, 1 => 1000..20_000usize],
        after in vec(vec(any::<u8>(), 0..=OVERSIZED.max_bulk), 0..4),
        next in vec(vec(any::<u8>(), 0..8), 1..4),
        split in split(),
    ) {
        let mut command = before;
        command.push(vec![b'x'; oversized]);
        command.extend(after);
        let input = encode(&[command.clone(), next.clone()]);
        let outcome = drive(OVERSIZED, &cut(&input, &split), |_| {});
        let refused = expected_frame(&command, OVERSIZED);
        prop_assert!(matches!(refused, Frame::TooLarge { .. }), "the command is within the limits");
        prop_assert_eq!(outcome, Outcome { frames: vec![refused, expected_frame(&next, OVERSIZED)], end: Ok(Bytes::new()) });
    }

    /// Arguments each within `max_bulk` but over `max_command_bytes` together are refused the
    /// same way, with the command limit named; within it, the command is kept whole.
    #[test]
    fn commands_over_the_command_limit_are_refused(
        command in vec(vec(any::<u8>(), 0..=OVERSIZED.max_bulk), 1..10),
        split in split(),
    ) {
        let input = encode(&[command.clone(), vec![b"PING".to_vec()]]);
        let outcome = drive(OVERSIZED, &cut(&input, &split), |_| {});
        let ping = Frame::Command(vec![Bytes::from_static(b"PING")]);
        prop_assert_eq!(outcome, Outcome { frames: vec![expected_frame(&command, OVERSIZED), ping], end: Ok(Bytes::new()) });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// An inline line over MAX_INLINE is refused ("too big inline request") whether or not
    /// its newline comes in the same read. (It once was refused only when MAX_INLINE + 1
    /// bytes of it arrived without the newline.)
    #[test]
    fn long_inline_lines_in_pieces_parse_as_the_whole(
        length in MAX_INLINE - 2..=MAX_INLINE + 2,
        at in MAX_INLINE - 2..=MAX_INLINE + 4,
    ) {
        let mut input = vec![b'a'; length];
        input.extend_from_slice(b"\r\n*1\r\n$4\r\nPING\r\n");
        let whole = parse_whole(ROUND_TRIP, &input);
        let pieces = drive(ROUND_TRIP, &[&input[..at], &input[at..]], |_| {});
        prop_assert_eq!(pieces, whole);
    }
}

/// Room for 5 arguments of `max_bulk` bytes each.
const ROUND_TRIP: ParserLimits = ParserLimits { max_bulk: 24, max_command_bytes: 5 * (24 + ARGUMENT_COST as usize) };
/// Room for 3 or 4 arguments, depending on their lengths.
const OVERSIZED: ParserLimits = ParserLimits { max_bulk: 16, max_command_bytes: 4 * ARGUMENT_COST as usize };

// ---------------------------------------------------------------------------------------
// Memory the parser holds between calls, beyond the buffer it is given.
//
// Each argument kept costs a `Bytes` handle (32 bytes) and keeps alive the read buffer it
// was cut from, header included, so arguments count their length plus ARGUMENT_COST against
// `max_command_bytes`. (They once counted their length only: a command of a million empty
// arguments, counted as 0 bytes, held tens of MiB.)

/// Counts the heap bytes each thread has live, to see what the parser keeps.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE.try_with(|live| live.set(live.get() + delta));
}

fn live() -> isize {
    LIVE.with(Cell::get)
}

// SAFETY: every call is passed on to `System` as it came; only a thread-local count is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            count(layout.size() as isize);
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            count(layout.size() as isize);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Feeds the pieces and, each time the parser waits for more, moves what is left into a
/// buffer of its own size: the heap then live beyond that buffer is what the parser holds.
/// Returns the most it held. Frames are dropped as they come.
fn most_held(limits: ParserLimits, pieces: &[&[u8]]) -> usize {
    let start = live();
    let mut parser = Parser::new(limits);
    let mut buffer = BytesMut::new();
    let mut most = 0;
    for piece in pieces {
        buffer.extend_from_slice(piece);
        loop {
            match parser.next(&mut buffer) {
                Ok(Some(frame)) => drop(frame),
                Ok(None) => break,
                Err(_) => return most,
            }
        }
        buffer = BytesMut::from(&buffer[..]);
        let held = usize::try_from(live() - start).unwrap_or(0).saturating_sub(buffer.capacity());
        most = most.max(held);
    }
    most
}

/// What the parser may hold: the arguments of one command (`max_command_bytes`) and one
/// bulk string it reserves room for, with room for bookkeeping: 4 KiB, and the first four
/// argument handles (a `Vec` starts with room for four, whatever the limits).
fn memory_bound(limits: ParserLimits) -> usize {
    2 * limits.max_command_bytes + limits.max_bulk + MAX_HEADER_LINE + 4096 + 4 * std::mem::size_of::<Bytes>()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn the_parser_holds_memory_within_its_limits(
        commands in vec(vec(vec(any::<u8>(), 0..3), 1..600), 1..3),
        limits in limits(),
        split in split(),
    ) {
        let input = encode(&commands);
        let held = most_held(limits, &cut(&input, &split));
        prop_assert!(held <= memory_bound(limits), "held {held} bytes, over {} for {limits:?}", memory_bound(limits));
    }
}

/// The same with the server's limits: `*1048576` and then empty arguments, read 16 KiB at a
/// time, as the server reads.
#[test]
fn a_command_of_empty_arguments_holds_memory_within_the_limit() {
    let limits = ParserLimits { max_bulk: 1 << 20, max_command_bytes: 8 << 20 };
    let mut input = b"*1048576\r\n".to_vec();
    for _ in 0..(1 << 20) - 1 {
        input.extend_from_slice(b"$0\r\n\r\n");
    }
    let held = most_held(limits, &input.chunks(16 << 10).collect::<Vec<_>>());
    assert!(held <= memory_bound(limits), "held {held} bytes, over {}", memory_bound(limits));
}
