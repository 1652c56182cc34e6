//! The RESP wire format: a request parser (multibulk arrays of bulk strings, as clients
//! send, and inline commands, as `redis-benchmark` and telnet send) and the reply encoder
//! for RESP2 and RESP3.
//!
//! The parser is incremental: [`Parser::next`] takes what it can from the buffer and keeps
//! its place between calls, so a command may arrive in any number of pieces. Memory stays
//! bounded whatever a client sends: a bulk string over the value limit is not kept but
//! skipped as it arrives (the command is then answered with an error and the connection
//! goes on), and a command may not hold more than `max_command_bytes` in all.

use bytes::{Buf, Bytes, BytesMut};

/// Redis's own ceiling for one bulk string (`proto-max-bulk-len`); longer is a protocol error.
const MAX_BULK_LENGTH: i64 = 512 << 20;
/// Redis's ceiling for the arguments of one command.
const MAX_ARGUMENTS: i64 = 1 << 20;
/// The longest `*N` or `$N` line, and the longest inline command.
const MAX_HEADER_LINE: usize = 32;
const MAX_INLINE: usize = 64 << 10;
/// Arguments at least this long share the read buffer's memory; shorter ones are copied.
const SHARE_FROM_BYTES: usize = 256;

/// What one read of the buffer gives.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A command: its name and arguments.
    Command(Vec<Bytes>),
    /// A command that was too large to keep; its bytes were discarded. `name` is its first
    /// argument if that one was kept.
    TooLarge { name: Option<Bytes>, bytes: u64, limit: u64 },
}

/// The stream cannot be read further; the connection must close after saying why.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

#[derive(Clone, Copy, Debug)]
pub struct ParserLimits {
    /// A bulk string longer than this is skipped and its command refused.
    pub max_bulk: usize,
    /// What one command may hold: the lengths of its arguments, each plus
    /// [`ARGUMENT_COST`].
    pub max_command_bytes: usize,
}

/// What each argument costs beyond its length, against `max_command_bytes`: the most its
/// header and CRLF can take, and the handle it is kept in. Without it, a million empty
/// arguments would count as nothing.
pub const ARGUMENT_COST: u64 = MAX_HEADER_LINE as u64 + 2 + std::mem::size_of::<Bytes>() as u64;

#[derive(Debug)]
pub struct Parser {
    limits: ParserLimits,
    /// The multibulk command being read, if one is under way.
    command: Option<Partial>,
    /// How far an inline line has been searched for its newline, so that a long line
    /// arriving in small pieces is not searched again from its start each time.
    inline_scanned: usize,
}

#[derive(Debug, Default)]
struct Partial {
    /// Arguments still to come.
    remaining: usize,
    arguments: Vec<Bytes>,
    /// The lengths of all the arguments announced so far.
    bytes: u64,
    /// What the command holds, against `max_command_bytes`.
    cost: u64,
    /// Set once the command is over a limit: nothing more is kept.
    too_large: Option<u64>,
    /// Bytes of the current oversized bulk string still to discard (then its CRLF).
    skipping: Option<usize>,
}

impl Parser {
    pub fn new(limits: ParserLimits) -> Parser {
        Parser { limits, command: None, inline_scanned: 0 }
    }

    /// The next complete frame in `buffer`, taking its bytes; `None` if more input is needed.
    pub fn next(&mut self, buffer: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        loop {
            if self.command.is_none() {
                match buffer.first() {
                    None => return Ok(None),
                    Some(b'*') => {
                        let Some(count) = header_line(buffer, b'*', "multibulk length")? else { return Ok(None) };
                        if count > MAX_ARGUMENTS {
                            return Err(ProtocolError("invalid multibulk length".into()));
                        }
                        if count <= 0 {
                            continue; // `*0` and `*-1` are empty commands: Redis skips them
                        }
                        self.command = Some(Partial { remaining: count as usize, ..Partial::default() });
                    }
                    Some(_) => match self.inline(buffer)? {
                        Some(arguments) if arguments.is_empty() => continue,
                        Some(arguments) => return Ok(Some(Frame::Command(arguments))),
                        None => return Ok(None),
                    },
                }
            }
            let Some(partial) = self.command.as_mut() else { continue };
            if !read_arguments(partial, buffer, self.limits)? {
                return Ok(None);
            }
            let Some(done) = self.command.take() else { continue };
            return Ok(Some(match done.too_large {
                None => Frame::Command(done.arguments),
                Some(limit) => Frame::TooLarge { name: done.arguments.into_iter().next(), bytes: done.bytes, limit },
            }));
        }
    }

    /// Whether part of a multibulk command has been read (the rest has not arrived).
    pub fn is_partial(&self) -> bool {
        self.command.is_some()
    }

    /// An inline command: one line, arguments separated by spaces, as Redis reads
    /// `PING\r\n`. Double-quoted arguments may hold spaces and `\n`, `\r`, `\t`, `\"`, `\\`,
    /// `\xHH` escapes.
    fn inline(&mut self, buffer: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let searched = self.inline_scanned.min(buffer.len());
        let Some(end) = buffer[searched..].iter().position(|&byte| byte == b'\n').map(|at| searched + at) else {
            self.inline_scanned = buffer.len();
            if buffer.len() > MAX_INLINE {
                return Err(ProtocolError("too big inline request".into()));
            }
            return Ok(None);
        };
        self.inline_scanned = 0;
        // The same limit whether the line came in one read or many.
        if end > MAX_INLINE {
            return Err(ProtocolError("too big inline request".into()));
        }
        let line = buffer.split_to(end + 1);
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        split_inline(line).map(Some).ok_or_else(|| ProtocolError("unbalanced quotes in request".into()))
    }
}

/// Reads the arguments of a multibulk command; true once all have arrived.
fn read_arguments(partial: &mut Partial, buffer: &mut BytesMut, limits: ParserLimits) -> Result<bool, ProtocolError> {
    while partial.remaining > 0 {
        if let Some(left) = partial.skipping {
            let discarded = left.min(buffer.len());
            buffer.advance(discarded);
            partial.skipping = Some(left - discarded);
            if left > discarded {
                return Ok(false);
            }
            if buffer.len() < 2 {
                // A first byte that is not the CR is wrong already: say so now rather than
                // wait for a byte that cannot make it right.
                if buffer.first().is_some_and(|&byte| byte != b'\r') {
                    return Err(ProtocolError("a bulk string does not end with CRLF".into()));
                }
                return Ok(false);
            }
            crlf(buffer)?;
            partial.skipping = None;
            partial.remaining -= 1;
            continue;
        }
        let Some((line, length)) = peek_header_line(buffer, b'$', "bulk length")? else { return Ok(false) };
        if !(0..=MAX_BULK_LENGTH).contains(&length) {
            return Err(ProtocolError("invalid bulk length".into()));
        }
        let length = length as usize;
        let cost = partial.cost + length as u64 + ARGUMENT_COST;
        let over = if length > limits.max_bulk {
            Some(limits.max_bulk as u64)
        } else if cost > limits.max_command_bytes as u64 {
            Some(limits.max_command_bytes as u64)
        } else {
            None
        };
        partial.too_large = partial.too_large.or(over);
        if partial.too_large.is_some() {
            // Nothing more of this command is kept: the bytes are dropped as they come.
            buffer.advance(line);
            partial.bytes += length as u64;
            partial.cost = cost;
            partial.skipping = Some(length);
            continue;
        }
        if buffer.len() < line + length + 2 {
            buffer.reserve(line + length + 2 - buffer.len());
            return Ok(false);
        }
        buffer.advance(line);
        // A short argument is copied out: shared, it would keep the whole read buffer alive
        // for a few bytes. A long one is shared, not copied.
        let argument = if length < SHARE_FROM_BYTES {
            let argument = Bytes::copy_from_slice(&buffer[..length]);
            buffer.advance(length);
            argument
        } else {
            buffer.split_to(length).freeze()
        };
        crlf(buffer)?;
        partial.arguments.push(argument);
        partial.bytes += length as u64;
        partial.cost = cost;
        partial.remaining -= 1;
    }
    Ok(true)
}

/// Takes the CRLF that ends a bulk string (two bytes must be there).
fn crlf(buffer: &mut BytesMut) -> Result<(), ProtocolError> {
    if &buffer[..2] != b"\r\n" {
        return Err(ProtocolError("a bulk string does not end with CRLF".into()));
    }
    buffer.advance(2);
    Ok(())
}

/// Reads a `<marker><integer>\r\n` line and takes it from the buffer.
fn header_line(buffer: &mut BytesMut, marker: u8, what: &str) -> Result<Option<i64>, ProtocolError> {
    Ok(peek_header_line(buffer, marker, what)?.map(|(line, value)| {
        buffer.advance(line);
        value
    }))
}

/// Reads a `<marker><integer>\r\n` line without taking it: its length and the integer.
fn peek_header_line(buffer: &BytesMut, marker: u8, what: &str) -> Result<Option<(usize, i64)>, ProtocolError> {
    match buffer.first() {
        None => return Ok(None),
        Some(&first) if first != marker => {
            let got = char::from(first).escape_default();
            return Err(ProtocolError(format!("expected '{}', got '{got}'", char::from(marker))));
        }
        Some(_) => {}
    }
    let window = &buffer[..buffer.len().min(MAX_HEADER_LINE)];
    let Some(end) = window.windows(2).position(|pair| pair == b"\r\n") else {
        if buffer.len() >= MAX_HEADER_LINE {
            return Err(ProtocolError(format!("invalid {what}")));
        }
        return Ok(None);
    };
    let value = std::str::from_utf8(&buffer[1..end])
        .ok()
        .and_then(|text| text.parse::<i64>().ok())
        .ok_or_else(|| ProtocolError(format!("invalid {what}")))?;
    Ok(Some((end + 2, value)))
}

/// Splits an inline command line into arguments; None if a quote is not closed.
pub fn split_inline(line: &[u8]) -> Option<Vec<Bytes>> {
    let mut arguments = Vec::new();
    let mut rest = line;
    loop {
        rest = trim_start(rest);
        let Some(&first) = rest.first() else { return Some(arguments) };
        let mut argument = Vec::new();
        if first == b'"' || first == b'\'' {
            let mut index = 1;
            loop {
                let byte = *rest.get(index)?;
                index += 1;
                if byte == first {
                    break;
                }
                if byte == b'\\' && first == b'"' {
                    let escaped = *rest.get(index)?;
                    index += 1;
                    let hex = |at: usize| rest.get(at).and_then(|&digit| char::from(digit).to_digit(16));
                    argument.push(match escaped {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'a' => 7,
                        b'b' => 8,
                        b'x' => match (hex(index), hex(index + 1)) {
                            (Some(high), Some(low)) => {
                                index += 2;
                                (high * 16 + low) as u8
                            }
                            _ => b'x',
                        },
                        other => other,
                    });
                } else if byte == b'\\' && rest.get(index) == Some(&b'\'') {
                    argument.push(b'\'');
                    index += 1;
                } else {
                    argument.push(byte);
                }
            }
            // A closing quote must be followed by a space or the end, as in Redis.
            if rest.get(index).is_some_and(|byte| !byte.is_ascii_whitespace()) {
                return None;
            }
            rest = &rest[index..];
        } else {
            let end = rest.iter().position(u8::is_ascii_whitespace).unwrap_or(rest.len());
            argument.extend_from_slice(&rest[..end]);
            rest = &rest[end..];
        }
        arguments.push(Bytes::from(argument));
    }
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|byte| !byte.is_ascii_whitespace()).unwrap_or(bytes.len());
    &bytes[start..]
}

/// A reply, encoded for the protocol version the client chose with `HELLO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Ok,
    Simple(String),
    /// An error line; the text starts with its code (`ERR`, `WRONGTYPE`, ...).
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    /// A missing value: `$-1` in RESP2, `_` in RESP3.
    Nil,
    /// A missing array (`EXEC` after a watched key changed): `*-1` in RESP2, `_` in RESP3.
    NilArray,
    Array(Vec<Reply>),
    /// A map in RESP3; a flat array of keys and values in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// Text for people (`INFO`): a verbatim string in RESP3, a bulk string in RESP2.
    Text(String),
}

impl Reply {
    pub fn error(message: impl Into<String>) -> Reply {
        Reply::Error(message.into())
    }

    pub fn bulk(text: impl Into<String>) -> Reply {
        Reply::Bulk(Bytes::from(text.into()))
    }

    /// Appends the encoding of the reply to `out`.
    pub fn encode(&self, resp3: bool, out: &mut BytesMut) {
        let mut encoded = Encoded { chunks: Vec::new(), buffer: std::mem::take(out), share_from: usize::MAX };
        self.encode_into(resp3, &mut encoded);
        *out = encoded.buffer;
    }

    /// Appends the encoding of the reply to `out`, sharing the bytes of long bulk strings
    /// rather than copying them.
    pub fn encode_shared(&self, resp3: bool, out: &mut Encoded) {
        self.encode_into(resp3, out);
    }

    fn encode_into(&self, resp3: bool, out: &mut Encoded) {
        match self {
            Reply::Ok => out.buffer.extend_from_slice(b"+OK\r\n"),
            Reply::Simple(text) => line(&mut out.buffer, b'+', &one_line(text)),
            Reply::Error(text) => line(&mut out.buffer, b'-', &one_line(text)),
            Reply::Integer(number) => line(&mut out.buffer, b':', &number.to_string()),
            Reply::Bulk(bytes) => out.bulk(bytes),
            Reply::Nil if resp3 => out.buffer.extend_from_slice(b"_\r\n"),
            Reply::Nil => out.buffer.extend_from_slice(b"$-1\r\n"),
            Reply::NilArray if resp3 => out.buffer.extend_from_slice(b"_\r\n"),
            Reply::NilArray => out.buffer.extend_from_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                line(&mut out.buffer, b'*', &items.len().to_string());
                for item in items {
                    item.encode_into(resp3, out);
                }
            }
            Reply::Map(pairs) => {
                if resp3 {
                    line(&mut out.buffer, b'%', &pairs.len().to_string());
                } else {
                    line(&mut out.buffer, b'*', &(2 * pairs.len()).to_string());
                }
                for (key, value) in pairs {
                    key.encode_into(resp3, out);
                    value.encode_into(resp3, out);
                }
            }
            Reply::Text(text) if resp3 => bulk(&mut out.buffer, b'=', format!("txt:{text}").as_bytes()),
            Reply::Text(text) => bulk(&mut out.buffer, b'$', text.as_bytes()),
        }
    }

    /// The length of [`Reply::encode`]'s bytes, without encoding.
    pub fn encoded_len(&self, resp3: bool) -> usize {
        match self {
            Reply::Ok => 5,
            Reply::Simple(text) | Reply::Error(text) => text.len() + 3,
            Reply::Integer(number) => number.to_string().len() + 3,
            Reply::Bulk(bytes) => bulk_bytes(bytes.len()),
            Reply::Nil if resp3 => 3,
            Reply::Nil => NIL_BYTES,
            Reply::NilArray if resp3 => 3,
            Reply::NilArray => 5,
            Reply::Array(items) => {
                array_header_bytes(items.len()) + items.iter().map(|item| item.encoded_len(resp3)).sum::<usize>()
            }
            Reply::Map(pairs) => {
                let count = if resp3 { pairs.len() } else { 2 * pairs.len() };
                let items = pairs.iter().map(|(key, value)| key.encoded_len(resp3) + value.encoded_len(resp3));
                array_header_bytes(count) + items.sum::<usize>()
            }
            Reply::Text(text) if resp3 => bulk_bytes(text.len() + 4),
            Reply::Text(text) => bulk_bytes(text.len()),
        }
    }
}

/// Encoded replies: pieces to write in order, the long bulk strings shared with the
/// replies rather than copied.
pub struct Encoded {
    chunks: Vec<Bytes>,
    buffer: BytesMut,
    /// Bulk strings at least this long are shared.
    share_from: usize,
}

impl Encoded {
    /// Bulk strings of `share_from` bytes or more will be shared, not copied.
    pub fn new(share_from: usize) -> Encoded {
        Encoded { chunks: Vec::new(), buffer: BytesMut::new(), share_from }
    }

    /// The bytes encoded so far, not yet taken.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum::<usize>() + self.buffer.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pieces to write, in order; `self` is empty after.
    pub fn take(&mut self) -> Vec<Bytes> {
        if !self.buffer.is_empty() {
            self.chunks.push(self.buffer.split().freeze());
        }
        std::mem::take(&mut self.chunks)
    }

    /// An array's header, `*<count>` (its elements follow).
    pub fn array_header(&mut self, count: usize) {
        line(&mut self.buffer, b'*', &count.to_string());
    }

    fn bulk(&mut self, bytes: &Bytes) {
        if bytes.len() < self.share_from {
            return bulk(&mut self.buffer, b'$', bytes);
        }
        line(&mut self.buffer, b'$', &bytes.len().to_string());
        self.chunks.push(self.buffer.split().freeze());
        self.chunks.push(bytes.clone());
        self.buffer.extend_from_slice(b"\r\n");
    }
}

/// The length of RESP2's nil, `$-1\r\n`; RESP3's is shorter.
pub const NIL_BYTES: usize = 5;

/// The length of a bulk string of `len` bytes: `$<len>\r\n<bytes>\r\n`.
pub fn bulk_bytes(len: usize) -> usize {
    len + digits(len) + 5
}

/// The length of an array's header: `*<count>\r\n`.
pub fn array_header_bytes(count: usize) -> usize {
    digits(count) + 3
}

fn digits(number: usize) -> usize {
    number.checked_ilog10().map_or(1, |log| log as usize + 1)
}

fn line(out: &mut BytesMut, marker: u8, text: &str) {
    out.reserve(text.len() + 3);
    out.extend_from_slice(&[marker]);
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut BytesMut, marker: u8, bytes: &[u8]) {
    line(out, marker, &bytes.len().to_string());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Simple strings and errors cannot hold line breaks.
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\r', '\n']) { text.replace(['\r', '\n'], " ").into() } else { text.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ParserLimits = ParserLimits { max_bulk: 16, max_command_bytes: 300 };

    fn parse_all(input: &[u8]) -> (Vec<Frame>, Result<(), ProtocolError>, usize) {
        let mut parser = Parser::new(LIMITS);
        let mut buffer = BytesMut::from(input);
        let mut frames = Vec::new();
        loop {
            match parser.next(&mut buffer) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => return (frames, Ok(()), buffer.len()),
                Err(error) => return (frames, Err(error), buffer.len()),
            }
        }
    }

    fn command(parts: &[&str]) -> Frame {
        Frame::Command(parts.iter().map(|part| Bytes::copy_from_slice(part.as_bytes())).collect())
    }

    #[test]
    fn multibulk_and_inline_commands_parse_alike() {
        let (frames, result, left) =
            parse_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\nPING\r\n  get  \"a b\\x41\" 'c'\n*0\r\n\r\n");
        assert_eq!(result, Ok(()));
        assert_eq!(frames, vec![command(&["SET", "k", ""]), command(&["PING"]), command(&["get", "a bA", "c"])]);
        assert_eq!(left, 0);
    }

    #[test]
    fn a_command_split_anywhere_parses_the_same() {
        let input = b"*2\r\n$4\r\nECHO\r\n$12\r\nhello\r\nworld\r\n";
        for cut in 0..input.len() {
            let mut parser = Parser::new(LIMITS);
            let mut buffer = BytesMut::from(&input[..cut]);
            let first = parser.next(&mut buffer).expect("valid so far");
            assert_eq!(first, None, "a complete frame from {cut} bytes");
            buffer.extend_from_slice(&input[cut..]);
            let frame = parser.next(&mut buffer).expect("valid").expect("complete");
            assert_eq!(frame, command(&["ECHO", "hello\r\nworld"]));
        }
    }

    #[test]
    fn a_skipped_argument_without_its_cr_is_refused_at_once() {
        // Found by the property test: `$4` over the limit, its 4 bytes, then `\n` alone.
        let limits = ParserLimits { max_bulk: 0, max_command_bytes: 0 };
        let mut parser = Parser::new(limits);
        let mut buffer = BytesMut::from(&b"*1\r\n$4\r\nabcd\n"[..]);
        assert!(parser.next(&mut buffer).is_err(), "left {:?}", buffer);
        let mut parser = Parser::new(limits);
        let mut buffer = BytesMut::from(&b"*1\r\n$4\r\nabcd\r"[..]);
        assert_eq!(parser.next(&mut buffer), Ok(None), "half a CRLF: wait for the rest");
    }

    #[test]
    fn an_oversized_argument_is_skipped_and_the_stream_goes_on() {
        let mut input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$20\r\n".to_vec();
        input.extend_from_slice(&[b'x'; 20]);
        input.extend_from_slice(b"\r\n*1\r\n$4\r\nPING\r\n");
        let (frames, result, _) = parse_all(&input);
        assert_eq!(result, Ok(()));
        let too_large = Frame::TooLarge { name: Some(Bytes::from_static(b"SET")), bytes: 24, limit: 16 };
        assert_eq!(frames, vec![too_large, command(&["PING"])]);
        // Arguments each under the bulk limit but over the command limit together: each
        // costs its length and ARGUMENT_COST (66), so the fourth passes 300.
        let input =
            b"*4\r\n$4\r\nMSET\r\n$16\r\naaaaaaaaaaaaaaaa\r\n$16\r\nbbbbbbbbbbbbbbbb\r\n$16\r\ncccccccccccccccc\r\n";
        let (frames, _, left) = parse_all(input);
        assert_eq!(frames, vec![Frame::TooLarge { name: Some(Bytes::from_static(b"MSET")), bytes: 52, limit: 300 }]);
        assert_eq!(left, 0);
    }

    #[test]
    fn protocol_errors_are_reported_not_panicked() {
        for (input, expected) in [
            (&b"*x\r\n"[..], "invalid multibulk length"),
            (b"*2000000\r\n", "invalid multibulk length"),
            (b"*1\r\n+OK\r\n", "expected '$', got '+'"),
            (b"*1\r\n$-5\r\n", "invalid bulk length"),
            (b"*1\r\n$999999999999\r\n", "invalid bulk length"),
            (b"*1\r\n$2\r\nabcd", "a bulk string does not end with CRLF"),
            (b"*1\r\n$11111111111111111111111111111111111", "invalid bulk length"),
            (b"GET \"open\n", "unbalanced quotes in request"),
        ] {
            let (_, result, _) = parse_all(input);
            assert_eq!(result, Err(ProtocolError(expected.into())), "{:?}", String::from_utf8_lossy(input));
        }
        let (_, result, _) = parse_all(&[b'a'; MAX_INLINE + 1]);
        assert_eq!(result, Err(ProtocolError("too big inline request".into())));
    }

    #[test]
    fn replies_encode_for_both_protocols() {
        let reply = Reply::Array(vec![
            Reply::Ok,
            Reply::Integer(-3),
            Reply::Nil,
            Reply::bulk("v"),
            Reply::Map(vec![(Reply::bulk("k"), Reply::Text("a\r\nb".into()))]),
            Reply::error("ERR bad\nthing"),
        ]);
        let encode = |resp3| {
            let mut out = BytesMut::new();
            reply.encode(resp3, &mut out);
            String::from_utf8(out.to_vec()).expect("ASCII")
        };
        for resp3 in [false, true] {
            assert_eq!(reply.encoded_len(resp3), encode(resp3).len(), "resp3: {resp3}");
            let mut shared = Encoded::new(1);
            reply.encode_shared(resp3, &mut shared);
            let pieces: Vec<u8> = shared.take().concat();
            assert_eq!(String::from_utf8(pieces).expect("ASCII"), encode(resp3), "shared, resp3: {resp3}");
        }
        assert_eq!(
            encode(false),
            "*6\r\n+OK\r\n:-3\r\n$-1\r\n$1\r\nv\r\n*2\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n-ERR bad thing\r\n"
        );
        assert_eq!(
            encode(true),
            "*6\r\n+OK\r\n:-3\r\n_\r\n$1\r\nv\r\n%1\r\n$1\r\nk\r\n=8\r\ntxt:a\r\nb\r\n-ERR bad thing\r\n"
        );
    }
}
