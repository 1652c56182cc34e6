//! The handshake: the first frame each way is a [`Hello`], and a connection carries
//! messages only once both sides accepted the other's.
//!
//! The dialer speaks first; the acceptor checks the dialer's `Hello`, then answers with its
//! own (or with [`Frame::Refused`] and closes), and the dialer checks that answer. Either
//! side refuses a peer of another cluster or protocol version, a `Hello` addressed to some
//! other node, and an id it does not expect: the acceptor takes only known peers with a
//! lower id than its own (the lower id dials, see the `tcp` module), the dialer only the
//! peer it meant to reach.

use skiff_raft::NodeId;

use super::frame::{Connection, Frame, FrameError, Hello, PROTOCOL_VERSION};

/// Who we are, as the handshake states it.
#[derive(Clone, Debug)]
pub(super) struct Identity {
    pub id: NodeId,
    pub cluster: String,
}

impl Identity {
    fn hello(&self, to: NodeId) -> Frame {
        Frame::Hello(Hello { protocol_version: PROTOCOL_VERSION, cluster: self.cluster.clone(), from: self.id, to })
    }
}

/// Why a handshake failed. Each message names what the peer said and what we expected.
#[derive(Debug, thiserror::Error)]
pub(super) enum HandshakeError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("the connection closed during the handshake")]
    Closed,
    #[error("the handshake did not finish in time")]
    TimedOut,
    #[error("expected a Hello frame first, got {0}")]
    NotHello(&'static str),
    #[error("the peer speaks protocol version {theirs}, this node speaks {ours}")]
    Version { theirs: u32, ours: u32 },
    #[error("the peer belongs to cluster {theirs:?}, this node to {ours:?}")]
    OtherCluster { theirs: String, ours: String },
    #[error("the peer addressed its Hello to {addressed}, but this node is {ours}")]
    NotForUs { addressed: NodeId, ours: NodeId },
    #[error("the peer says it is {0}, which is not a peer of this node")]
    UnknownPeer(NodeId),
    #[error("the peer says it is {theirs}, which has a higher id than this node ({ours}): this node dials it")]
    WrongDirection { theirs: NodeId, ours: NodeId },
    #[error("this node dialed {expected}, but {answered} answered")]
    WrongPeer { expected: NodeId, answered: NodeId },
    #[error("the peer refused the handshake: {0}")]
    Refused(String),
}

/// The dialer's side: says `Hello` to `peer`, then checks that `peer` answered.
pub(super) async fn dial(connection: &mut Connection, ours: &Identity, peer: NodeId) -> Result<(), HandshakeError> {
    connection.send(&ours.hello(peer)).await?;
    let hello = match connection.receive().await? {
        None => return Err(HandshakeError::Closed),
        Some(Frame::Hello(hello)) => hello,
        Some(Frame::Refused { reason }) => return Err(HandshakeError::Refused(reason)),
        Some(other) => return Err(HandshakeError::NotHello(other.kind())),
    };
    check_common(&hello, ours)?;
    if hello.from != peer {
        return Err(HandshakeError::WrongPeer { expected: peer, answered: hello.from });
    }
    Ok(())
}

/// The acceptor's side: reads the dialer's `Hello`, checks it (`is_peer` says whether an id
/// is a current peer), and answers. Returns the dialer's id. A refused dialer is told why.
pub(super) async fn accept(
    connection: &mut Connection,
    ours: &Identity,
    is_peer: impl Fn(NodeId) -> bool,
) -> Result<NodeId, HandshakeError> {
    let hello = match connection.receive().await? {
        None => return Err(HandshakeError::Closed),
        Some(Frame::Hello(hello)) => hello,
        Some(other) => return Err(HandshakeError::NotHello(other.kind())),
    };
    if let Err(error) = check_dialer(&hello, ours, is_peer) {
        // Best effort: the connection is closed either way.
        let _ = connection.send(&Frame::Refused { reason: error.to_string() }).await;
        return Err(error);
    }
    connection.send(&ours.hello(hello.from)).await?;
    Ok(hello.from)
}

fn check_dialer(hello: &Hello, ours: &Identity, is_peer: impl Fn(NodeId) -> bool) -> Result<(), HandshakeError> {
    check_common(hello, ours)?;
    if !is_peer(hello.from) {
        return Err(HandshakeError::UnknownPeer(hello.from));
    }
    if hello.from > ours.id {
        return Err(HandshakeError::WrongDirection { theirs: hello.from, ours: ours.id });
    }
    Ok(())
}

/// What both sides check: same version, same cluster, addressed to us.
fn check_common(hello: &Hello, ours: &Identity) -> Result<(), HandshakeError> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(HandshakeError::Version { theirs: hello.protocol_version, ours: PROTOCOL_VERSION });
    }
    if hello.cluster != ours.cluster {
        return Err(HandshakeError::OtherCluster { theirs: hello.cluster.clone(), ours: ours.cluster.clone() });
    }
    if hello.to != ours.id {
        return Err(HandshakeError::NotForUs { addressed: hello.to, ours: ours.id });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(cluster: &str, from: u64, to: u64) -> Hello {
        Hello { protocol_version: PROTOCOL_VERSION, cluster: cluster.into(), from: NodeId(from), to: NodeId(to) }
    }

    #[test]
    fn acceptor_checks() {
        let ours = Identity { id: NodeId(5), cluster: "c".into() };
        let known = |id: NodeId| id == NodeId(1) || id == NodeId(9);
        assert!(check_dialer(&hello("c", 1, 5), &ours, known).is_ok());
        assert!(matches!(check_dialer(&hello("d", 1, 5), &ours, known), Err(HandshakeError::OtherCluster { .. })));
        assert!(matches!(check_dialer(&hello("c", 1, 6), &ours, known), Err(HandshakeError::NotForUs { .. })));
        assert!(matches!(check_dialer(&hello("c", 2, 5), &ours, known), Err(HandshakeError::UnknownPeer(_))));
        assert!(matches!(check_dialer(&hello("c", 9, 5), &ours, known), Err(HandshakeError::WrongDirection { .. })));
        let mut old = hello("c", 1, 5);
        old.protocol_version = 0;
        assert!(matches!(check_dialer(&old, &ours, known), Err(HandshakeError::Version { .. })));
    }
}
