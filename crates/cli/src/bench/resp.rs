//! The Redis target: RESP2 written by hand over a `TcpStream`.
//!
//! The clients that share a connection pipeline on it, as a multiplexed Redis client does:
//! the connection's thread ([`super::worker`]) keeps each client's request in flight,
//! queues commands here, writes them together, and reads the replies, which come back in
//! the order the commands were sent. So all `--clients` requests are in flight at once,
//! and a Skiff node batches the commands it reads together (one proposal for consecutive
//! writes, one ReadIndex for consecutive reads; docs/redis.md). One thread per connection
//! and no hand-off between threads keeps the generator cheap: a batch of replies costs one
//! read and one write.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Result, bail};

use super::connection::{Operation, Outcome, Request, io_error_kind, unreachable};
use super::options::{Endpoint, Target};

/// The longest a connection may take to open, and to answer `PING` and `READONLY`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The read buffer: many pipelined replies in one read.
const READ_BUFFER: usize = 64 * 1024;

/// A persistent, pipelined connection to one Redis-protocol endpoint.
pub struct RespConnection {
    address: SocketAddr,
    /// Send `READONLY` on connect: reads answer from the node's own copy.
    readonly: bool,
    /// How long a read may wait for a reply before the requests in flight time out.
    timeout: Duration,
    /// `None` after a failure, until the next [`RespConnection::flush`] reconnects.
    socket: Option<Socket>,
    /// Commands queued and not yet written.
    out: Vec<u8>,
    /// A reply line.
    line: Vec<u8>,
}

struct Socket {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
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
    pub fn open(endpoint: &Endpoint, readonly: bool, timeout: Duration) -> Result<RespConnection> {
        let mut connection = RespConnection {
            address: endpoint.address,
            readonly,
            timeout,
            socket: None,
            out: Vec::with_capacity(READ_BUFFER),
            line: Vec::new(),
        };
        match connection.connect() {
            Ok(socket) => connection.socket = Some(socket),
            Err(Handshake::Io(error)) => {
                return Err(unreachable(Target::SkiffRedis, &endpoint.name, &io_error_kind(&error)));
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

    /// Connects, and says `PING` (and `READONLY`).
    fn connect(&mut self) -> Result<Socket, Handshake> {
        let writer = TcpStream::connect_timeout(&self.address, CONNECT_TIMEOUT)?;
        writer.set_nodelay(true)?;
        writer.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        // A node that stops reading must not block the writes forever.
        writer.set_write_timeout(Some(self.timeout))?;
        let mut reader = BufReader::with_capacity(READ_BUFFER, writer.try_clone()?);
        let mut handshake = vec![("PING", b"*1\r\n$4\r\nPING\r\n".as_slice())];
        if self.readonly {
            handshake.push(("READONLY", b"*1\r\n$8\r\nREADONLY\r\n".as_slice()));
        }
        for (command, bytes) in handshake {
            (&writer).write_all(bytes)?;
            match read_reply(&mut reader, &mut self.line)? {
                Outcome::Ok => {}
                Outcome::Miss => return Err(Handshake::Refused { command, reply: "nil".into() }),
                Outcome::Error(reply) => return Err(Handshake::Refused { command, reply }),
            }
        }
        writer.set_read_timeout(Some(self.timeout))?;
        Ok(Socket { writer, reader })
    }

    /// Queues a command; [`RespConnection::flush`] writes it.
    pub fn queue(&mut self, request: &Request<'_>) {
        encode(request, &mut self.out);
    }

    /// Writes the queued commands, reconnecting first after a failure. On an error, the
    /// connection is closed and the queued commands are dropped: they all failed.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let result = self.write_queued();
        self.out.clear();
        if result.is_err() {
            self.socket = None;
        }
        result
    }

    fn write_queued(&mut self) -> io::Result<()> {
        if self.socket.is_none() {
            self.socket = Some(self.connect().map_err(|error| match error {
                Handshake::Io(error) => error,
                Handshake::Refused { command, reply } => {
                    io::Error::new(io::ErrorKind::ConnectionRefused, format!("{command} refused: {reply}"))
                }
            })?);
        }
        let socket = self.socket.as_mut().expect("connected above");
        socket.writer.write_all(&self.out)
    }

    /// Whether a reply is already read, so that reading it will not wait.
    pub fn has_buffered_reply(&self) -> bool {
        self.socket.as_ref().is_some_and(|socket| !socket.reader.buffer().is_empty())
    }

    /// Reads the next reply (waiting at most the request timeout). On an error, the
    /// connection is closed: every request in flight on it failed.
    pub fn read(&mut self) -> io::Result<Outcome> {
        let Some(socket) = self.socket.as_mut() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let result = read_reply(&mut socket.reader, &mut self.line);
        if result.is_err() {
            self.socket = None;
            self.out.clear();
        }
        result
    }
}

/// Appends `GET key` or `SET key value`, as a RESP array, to `out`.
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

/// Reads one reply (skipping its content): a nil is a miss, an error reply an error.
fn read_reply(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<Outcome> {
    line.clear();
    if reader.read_until(b'\n', line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if !line.ends_with(b"\r\n") {
        return Err(invalid("a reply line without CRLF"));
    }
    line.truncate(line.len() - 2);
    let length = || -> io::Result<i64> {
        std::str::from_utf8(&line[1..]).ok().and_then(|text| text.parse().ok()).ok_or_else(|| invalid("a bad length"))
    };
    match line.first() {
        Some(b'+' | b':' | b',' | b'#') => Ok(Outcome::Ok),
        Some(b'-') => Ok(Outcome::Error(error_kind(&line[1..]))),
        Some(b'_') => Ok(Outcome::Miss),
        Some(b'$') => match length()? {
            ..0 => Ok(Outcome::Miss),
            length => {
                skip(reader, length as u64 + 2)?;
                Ok(Outcome::Ok)
            }
        },
        Some(b'*') => {
            let count = length()?;
            for _ in 0..count {
                read_reply(reader, line)?;
            }
            Ok(if count < 0 { Outcome::Miss } else { Outcome::Ok })
        }
        _ => Err(invalid("an unknown reply type")),
    }
}

/// Consumes `count` bytes.
fn skip(reader: &mut impl BufRead, mut count: u64) -> io::Result<()> {
    while count > 0 {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let taken = available.len().min(usize::try_from(count).unwrap_or(usize::MAX));
        reader.consume(taken);
        count -= taken as u64;
    }
    Ok(())
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

    fn reply(bytes: &[u8]) -> io::Result<Outcome> {
        let mut reader = BufReader::new(bytes);
        read_reply(&mut reader, &mut Vec::new())
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
        assert_eq!(reply(b"").unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
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
