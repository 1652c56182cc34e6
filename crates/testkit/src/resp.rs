//! A blocking RESP2 client over raw TCP, for the Redis listener's tests: it sends exactly
//! the bytes a test gives it (whole pipelines, malformed input) and reads the replies one
//! at a time, so a test sees each reply, in order, as a [`Reply`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use crate::wait::TIMEOUT;

/// A reply as RESP2 sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

/// A blocking RESP2 client. Reads wait at most [`TIMEOUT`]; a failed read or write panics
/// (the server is the one under test).
pub struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    pub fn open(address: SocketAddr) -> Connection {
        let stream = TcpStream::connect(address).unwrap_or_else(|error| panic!("connect {address}: {error}"));
        stream.set_read_timeout(Some(TIMEOUT)).expect("a read timeout");
        let writer = stream.try_clone().expect("a second handle");
        Connection { reader: BufReader::new(stream), writer }
    }

    /// Sends `bytes` as they are (inline commands, part of a command, garbage).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes).expect("sending to the server");
    }

    /// Sends `bytes` as they are; the error if the server has closed the connection.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// Sends `commands` in one write, each as a RESP2 array of bulk strings (a pipeline).
    pub fn send(&mut self, commands: &[Vec<&[u8]>]) {
        let mut bytes = Vec::new();
        for command in commands {
            bytes.extend_from_slice(format!("*{}\r\n", command.len()).as_bytes());
            for arg in command {
                bytes.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                bytes.extend_from_slice(arg);
                bytes.extend_from_slice(b"\r\n");
            }
        }
        self.send_raw(&bytes);
    }

    /// Sends the command `args` and reads its reply.
    pub fn call(&mut self, args: &[&[u8]]) -> Reply {
        self.send(&[args.to_vec()]);
        self.read()
    }

    /// Sends the command whose arguments are the words of `line` (split at each space)
    /// and reads its reply.
    pub fn call_words(&mut self, line: &str) -> Reply {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        self.call(&args)
    }

    /// One line of a reply, without its CRLF.
    fn line(&mut self) -> String {
        let mut line = String::new();
        let read = self.reader.read_line(&mut line).expect("a reply line");
        assert!(read > 0, "the server closed the connection");
        assert!(line.ends_with("\r\n"), "a reply line ends with CRLF: {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    /// Reads the next reply.
    pub fn read(&mut self) -> Reply {
        let line = self.line();
        let (kind, rest) = line.split_at(1);
        let number = || rest.parse::<i64>().unwrap_or_else(|_| panic!("a number in {line:?}"));
        match kind {
            "+" => Reply::Simple(rest.into()),
            "-" => Reply::Error(rest.into()),
            ":" => Reply::Integer(number()),
            "$" if number() < 0 => Reply::Bulk(None),
            "$" => {
                let mut bytes = vec![0; number() as usize + 2];
                self.reader.read_exact(&mut bytes).expect("a bulk string");
                bytes.truncate(bytes.len() - 2);
                Reply::Bulk(Some(bytes))
            }
            "*" => Reply::Array((0..number()).map(|_| self.read()).collect()),
            _ => panic!("not a RESP2 reply: {line:?}"),
        }
    }

    /// Whether the server closed the connection within [`TIMEOUT`] (a read gives end of
    /// file, or the connection is reset).
    pub fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.reader.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}
