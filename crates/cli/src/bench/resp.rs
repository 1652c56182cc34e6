//! The Redis target: RESP2 written by hand over tokio's `TcpStream` (or TLS over it).
//!
//! The clients that share a connection pipeline on it, as a multiplexed Redis client does:
//! the connection's task ([`super::worker`]) keeps each client's request in flight,
//! queues commands here, writes them together, and reads the replies, which come back in
//! the order the commands were sent. So all `--clients` requests are in flight at once,
//! and a Skiff node batches the commands it reads together (one proposal for consecutive
//! writes, one ReadIndex for consecutive reads; docs/redis.md). One task per connection and
//! no hand-off between tasks keeps the generator cheap: a batch of replies costs one read
//! and one write.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, bail};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

use super::connection::{Access, Operation, Outcome, Request, io_error_kind, unreachable};
use super::options::{Endpoint, Target};
use super::stream::{self, Stream, Tls};

/// The longest a connection may take to open, and to answer `PING` and `READONLY`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The read buffer: many pipelined replies in one read. It grows for a reply that does
/// not fit (a value larger than this).
const READ_BUFFER: usize = 64 * 1024;

/// A persistent, pipelined connection to one Redis-protocol endpoint.
pub struct RespConnection {
    address: SocketAddr,
    /// Send `READONLY` on connect: reads answer from the node's own copy.
    readonly: bool,
    /// How long a read may wait for a reply before the requests in flight time out.
    timeout: Duration,
    /// `None` after a failure, until the next [`RespConnection::flush`] reconnects.
    socket: Option<Replies<Stream>>,
    /// TLS, for a node that serves the Redis protocol over it.
    tls: Option<Tls>,
    /// `AUTH <secret>`, sent first on every connection when a token is given.
    auth: Option<Vec<u8>>,
    /// Commands queued and not yet written.
    out: Vec<u8>,
}

/// Why a connection could not be opened.
enum Handshake {
    Io(io::Error),
    Refused { command: &'static str, reply: String },
}

impl From<io::Error> for Handshake {
    fn from(error: io::Error) -> Handshake {
        Handshake::Io(error)
    }
}

impl RespConnection {
    /// Opens a connection to `endpoint`, checks that it answers `PING` (and `READONLY`).
    pub async fn open(
        endpoint: &Endpoint,
        readonly: bool,
        timeout: Duration,
        access: Access<'_>,
    ) -> Result<RespConnection> {
        let auth = access.token.map(|secret| {
            let mut command = Vec::new();
            encode_command(&[b"AUTH", secret.as_bytes()], &mut command);
            command
        });
        let mut connection = RespConnection {
            address: endpoint.address,
            readonly,
            timeout,
            socket: None,
            tls: access.tls,
            auth,
            out: Vec::new(),
        };
        match connection.connect().await {
            Ok(socket) => connection.socket = Some(socket),
            Err(Handshake::Io(error)) => {
                return Err(unreachable(Target::SkiffRedis, &endpoint.name, &io_error_kind(&error)));
            }
            Err(Handshake::Refused { command: "AUTH", reply }) => {
                bail!("{} refused AUTH with the --token given ({reply:?})", endpoint.name)
            }
            Err(Handshake::Refused { command: "PING", reply }) if reply.starts_with("NOAUTH") => {
                bail!("{} wants a token ({reply:?}): give one with --token", endpoint.name)
            }
            Err(Handshake::Refused { command: "READONLY", reply }) => bail!(
                "{} refused READONLY ({reply:?}): --consistency stale needs a Skiff node, whose READONLY makes reads \
                 answer from the node's own copy",
                endpoint.name
            ),
            Err(Handshake::Refused { command, reply }) => {
                bail!("{} answered {command} with {reply:?}: is it a Redis-protocol server?", endpoint.name)
            }
        }
        Ok(connection)
    }

    /// Connects, and says `PING` (and `READONLY`), within [`CONNECT_TIMEOUT`].
    async fn connect(&mut self) -> Result<Replies<Stream>, Handshake> {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.handshake()).await {
            Ok(result) => result,
            Err(_elapsed) => Err(Handshake::Io(io::ErrorKind::TimedOut.into())),
        }
    }

    async fn handshake(&mut self) -> Result<Replies<Stream>, Handshake> {
        // Without Nagle's delay: a batch of commands is one write, its replies awaited at
        // once.
        let stream = stream::connect(self.address, self.tls.as_ref()).await?;
        let mut socket = Replies::new(stream);
        let mut handshake = Vec::new();
        if let Some(auth) = &self.auth {
            handshake.push(("AUTH", auth.as_slice()));
        }
        handshake.push(("PING", b"*1\r\n$4\r\nPING\r\n".as_slice()));
        if self.readonly {
            handshake.push(("READONLY", b"*1\r\n$8\r\nREADONLY\r\n".as_slice()));
        }
        for (command, bytes) in handshake {
            socket.stream.write_all(bytes).await?;
            match socket.next().await? {
                Outcome::Ok => {}
                Outcome::Miss => return Err(Handshake::Refused { command, reply: "nil".into() }),
                Outcome::Error(reply) => return Err(Handshake::Refused { command, reply }),
            }
        }
        Ok(socket)
    }

    /// Queues a command; [`RespConnection::flush`] writes it.
    pub fn queue(&mut self, request: &Request<'_>) {
        encode(request, &mut self.out);
    }

    /// Writes the queued commands (one write), reconnecting first after a failure. On an
    /// error, the connection is closed and the queued commands are dropped: they all
    /// failed.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        // A node that stops reading must not block the write forever.
        let result = match tokio::time::timeout(self.timeout, self.write_queued()).await {
            Ok(result) => result,
            Err(_elapsed) => Err(io::ErrorKind::TimedOut.into()),
        };
        self.out.clear();
        if result.is_err() {
            self.socket = None;
        }
        result
    }

    async fn write_queued(&mut self) -> io::Result<()> {
        if self.socket.is_none() {
            self.socket = Some(self.connect().await.map_err(|error| match error {
                Handshake::Io(error) => error,
                Handshake::Refused { command, reply } => {
                    io::Error::new(io::ErrorKind::ConnectionRefused, format!("{command} refused: {reply}"))
                }
            })?);
        }
        let socket = self.socket.as_mut().expect("connected above");
        socket.stream.write_all(&self.out).await
    }

    /// The next reply if it is already read, so that taking it does not wait.
    pub fn buffered_reply(&mut self) -> io::Result<Option<Outcome>> {
        let Some(socket) = self.socket.as_mut() else {
            return Ok(None);
        };
        let result = socket.buffered();
        if result.is_err() {
            self.close();
        }
        result
    }

    /// Reads the next reply, waiting at most the request timeout. On an error, the
    /// connection is closed: every request in flight on it failed.
    pub async fn read(&mut self) -> io::Result<Outcome> {
        let Some(socket) = self.socket.as_mut() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let result = match tokio::time::timeout(self.timeout, socket.next()).await {
            Ok(result) => result,
            Err(_elapsed) => Err(io::ErrorKind::TimedOut.into()),
        };
        if result.is_err() {
            self.close();
        }
        result
    }

    fn close(&mut self) {
        self.socket = None;
        self.out.clear();
    }
}

/// The replies arriving on `stream`: a buffer of what was read and not yet taken
/// (`buffer[start..end]`), refilled by one read when it holds no whole reply.
struct Replies<S> {
    stream: S,
    buffer: Vec<u8>,
    start: usize,
    end: usize,
}

impl<S: AsyncRead + Unpin> Replies<S> {
    fn new(stream: S) -> Replies<S> {
        Replies { stream, buffer: vec![0; READ_BUFFER], start: 0, end: 0 }
    }

    /// The next reply, if the buffer holds all of it.
    fn buffered(&mut self) -> io::Result<Option<Outcome>> {
        Ok(parse(&self.buffer[self.start..self.end])?.map(|(outcome, length)| {
            self.start += length;
            outcome
        }))
    }

    /// The next reply, reading until it is whole.
    async fn next(&mut self) -> io::Result<Outcome> {
        loop {
            if let Some(outcome) = self.buffered()? {
                return Ok(outcome);
            }
            // Room at the end: move the partial reply to the front, and grow the buffer
            // if it alone fills it.
            if self.start > 0 {
                self.buffer.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buffer.len() {
                self.buffer.resize(self.buffer.len() * 2, 0);
            }
            let read = self.stream.read(&mut self.buffer[self.end..]).await?;
            if read == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.end += read;
        }
    }
}

/// Appends `GET key` or `SET key value`, as a RESP array, to `out`.
/// Writes a command of any arguments as a RESP array (the handshake's `AUTH`).
fn encode_command(arguments: &[&[u8]], out: &mut Vec<u8>) {
    let _ = write!(out, "*{}\r\n", arguments.len());
    for argument in arguments {
        let _ = write!(out, "${}\r\n", argument.len());
        out.extend_from_slice(argument);
        out.extend_from_slice(b"\r\n");
    }
}

fn encode(request: &Request<'_>, out: &mut Vec<u8>) {
    let bulk = |out: &mut Vec<u8>, bytes: &[u8]| {
        let _ = write!(out, "${}\r\n", bytes.len());
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    };
    match request.operation {
        Operation::Get => {
            out.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
            bulk(out, request.key);
        }
        Operation::Put => {
            out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
            bulk(out, request.key);
            bulk(out, request.value);
        }
    }
}

/// The longest reply line (a type, and a length or a short message) read before the reply
/// counts as malformed.
const MAX_LINE: usize = 64 * 1024;
/// The largest bulk reply accepted (Redis's own limit is 512 MiB).
const MAX_BULK: i64 = 512 << 20;
/// How deep arrays may nest.
const MAX_DEPTH: usize = 8;

/// The first reply in `bytes`, classified (a nil is a miss, an error reply an error), and
/// how many bytes it takes; `None` if `bytes` holds only part of it.
fn parse(bytes: &[u8]) -> io::Result<Option<(Outcome, usize)>> {
    parse_nested(bytes, 0)
}

fn parse_nested(bytes: &[u8], depth: usize) -> io::Result<Option<(Outcome, usize)>> {
    let Some(newline) = bytes.iter().position(|&byte| byte == b'\n') else {
        return if bytes.len() > MAX_LINE { Err(invalid("a reply line too long")) } else { Ok(None) };
    };
    let Some(line) = bytes[..newline].strip_suffix(b"\r") else {
        return Err(invalid("a reply line without CRLF"));
    };
    let mut used = newline + 1;
    let length = || -> io::Result<i64> {
        std::str::from_utf8(&line[1..]).ok().and_then(|text| text.parse().ok()).ok_or_else(|| invalid("a bad length"))
    };
    let outcome = match line.first() {
        Some(b'+' | b':' | b',' | b'#') => Outcome::Ok,
        Some(b'-') => Outcome::Error(error_kind(&line[1..])),
        Some(b'_') => Outcome::Miss,
        Some(b'$') => match length()? {
            ..0 => Outcome::Miss,
            length if length > MAX_BULK => return Err(invalid("a bulk reply too large")),
            length => {
                // Checked above: a length from 0 to MAX_BULK.
                used += length as usize;
                if bytes.len() < used + 2 {
                    return Ok(None);
                }
                if &bytes[used..used + 2] != b"\r\n" {
                    return Err(invalid("a bulk reply without CRLF"));
                }
                used += 2;
                Outcome::Ok
            }
        },
        Some(b'*') if depth >= MAX_DEPTH => return Err(invalid("arrays nested too deep")),
        Some(b'*') => {
            let count = length()?;
            for _ in 0..count {
                match parse_nested(&bytes[used..], depth + 1)? {
                    Some((_, length)) => used += length,
                    None => return Ok(None),
                }
            }
            if count < 0 { Outcome::Miss } else { Outcome::Ok }
        }
        _ => return Err(invalid("an unknown reply type")),
    };
    Ok(Some((outcome, used)))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("protocol error: {what}"))
}

/// An error reply's kind: its text up to the first number or detail (`TRYAGAIN no leader is
/// known`, `ERR timed out after`), so that kinds stay few.
fn error_kind(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let end =
        text.find(|c: char| c.is_ascii_digit() || matches!(c, '(' | ';' | ':' | '\'' | '"')).unwrap_or(text.len());
    let mut kind: String = text[..end].trim_end().chars().take(48).collect();
    if kind.is_empty() {
        kind.push_str("ERR");
    }
    kind
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first reply in `bytes`, read as from a connection that then closes.
    fn reply(bytes: &[u8]) -> io::Result<Outcome> {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(Replies::new(bytes).next())
    }

    #[test]
    fn replies_are_read_and_classified() {
        assert_eq!(reply(b"+OK\r\n").unwrap(), Outcome::Ok);
        assert_eq!(reply(b"$5\r\nhello\r\n").unwrap(), Outcome::Ok);
        assert_eq!(reply(b"$-1\r\n").unwrap(), Outcome::Miss);
        assert_eq!(reply(b"*2\r\n$1\r\na\r\n$-1\r\n").unwrap(), Outcome::Ok);
        let tryagain = reply(b"-TRYAGAIN no leader is known (an election may be under way)\r\n").unwrap();
        assert_eq!(tryagain, Outcome::Error("TRYAGAIN no leader is known".into()));
        let timeout = reply(b"-ERR timed out after 5s; a write may still commit\r\n").unwrap();
        assert_eq!(timeout, Outcome::Error("ERR timed out after".into()));
        assert!(reply(b"$5\r\nhel").is_err());
        assert!(reply(b"?\r\n").is_err());
        assert!(reply(b"$5\r\nhello!!").is_err());
        assert_eq!(reply(b"").unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_reply_is_taken_only_when_whole() {
        let pipelined = b"+OK\r\n$5\r\nhello\r\n$-1\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n";
        // Every prefix that ends inside a reply waits for the rest of it.
        let ends = [5, 16, 21, pipelined.len()];
        let mut start = 0;
        for &end in &ends {
            for cut in start + 1..end {
                assert_eq!(parse(&pipelined[start..cut]).unwrap(), None, "{:?}", &pipelined[start..cut]);
            }
            let (_, length) = parse(&pipelined[start..]).unwrap().expect("a whole reply");
            assert_eq!(start + length, end);
            start = end;
        }
        assert_eq!(parse(b"").unwrap(), None);
        // Replies larger than the read buffer are read whole.
        let mut large = format!("${}\r\n", 3 * READ_BUFFER).into_bytes();
        large.resize(large.len() + 3 * READ_BUFFER, b'x');
        large.extend_from_slice(b"\r\n+OK\r\n");
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut replies = Replies::new(&large[..]);
        assert_eq!(runtime.block_on(replies.next()).unwrap(), Outcome::Ok);
        assert_eq!(replies.buffered().unwrap(), Some(Outcome::Ok));
        // Malformed input is refused rather than waited for.
        assert!(parse(&[b'+'; MAX_LINE + 1]).is_err());
        assert!(parse(b"$999999999999\r\n").is_err());
        assert!(parse(&b"*1\r\n".repeat(MAX_DEPTH + 1)).is_err());
    }

    #[test]
    fn commands_are_resp_arrays() {
        let mut out = Vec::new();
        encode(&Request { operation: Operation::Put, key: b"key-7", value: b"abc" }, &mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$5\r\nkey-7\r\n$3\r\nabc\r\n");
        out.clear();
        encode(&Request { operation: Operation::Get, key: b"key-7", value: b"" }, &mut out);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$5\r\nkey-7\r\n");
    }
}
