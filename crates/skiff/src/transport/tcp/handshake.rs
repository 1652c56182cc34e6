//! The handshake: the first frame each way is a [`Hello`], and a connection carries
//! messages only once both sides accepted the other's. With TLS, the TLS handshake comes
//! first and the `Hello`s travel inside it.
//!
//! The dialer speaks first; the acceptor checks the dialer's `Hello`, then answers with its
//! own (or with [`Frame::Refused`] and closes), and the dialer checks that answer. Either
//! side refuses a peer of another cluster (name or id) or protocol version, a `Hello`
//! addressed to some other node, and an id it does not expect: the acceptor takes only known
//! peers with a lower id than its own (the lower id dials, see the `tcp` module), the dialer
//! only the peer it meant to reach. Over TLS the acceptor also requires the dialer's
//! certificate to name the id its `Hello` claims (the dialer's TLS client already required
//! the acceptor's certificate to name the node it dialed).
//!
//! A refusal tells the other side nothing but "refused": the reason (which would name our
//! cluster, its id or our node id to whoever asks) stays in our log.

use rustls::pki_types::CertificateDer;
use skiff_raft::NodeId;

use super::Shared;
use super::frame::{Connection, Frame, FrameError, Hello, PROTOCOL_VERSION};
use crate::tls::certificate_names_node;
use crate::wire::ClusterId;

/// The one reason a refused dialer is given.
pub(super) const REFUSED: &str = "refused";

/// Who we are, as the handshake states it.
#[derive(Clone, Debug)]
pub(super) struct Identity {
    pub id: NodeId,
    pub cluster: String,
    /// Our cluster id, if we have one yet.
    pub cluster_id: Option<ClusterId>,
}

impl Identity {
    fn hello(&self, to: NodeId) -> Frame {
        Frame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            cluster: self.cluster.clone(),
            from: self.id,
            to,
            cluster_id: self.cluster_id,
        })
    }
}

/// Why a handshake failed. Each message names what the peer said and what we expected;
/// it goes to our log only.
#[derive(Debug, thiserror::Error)]
pub(super) enum HandshakeError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
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
    #[error("the peer belongs to cluster id {theirs}, this node to {ours}")]
    OtherClusterId { theirs: ClusterId, ours: ClusterId },
    #[error("the peer addressed its Hello to {addressed}, but this node is {ours}")]
    NotForUs { addressed: NodeId, ours: NodeId },
    #[error("the peer says it is {0}, which is not a peer of this node")]
    UnknownPeer(NodeId),
    #[error("the peer says it is {theirs}, which has a higher id than this node ({ours}): this node dials it")]
    WrongDirection { theirs: NodeId, ours: NodeId },
    #[error("the peer says it is {claimed}, but its TLS certificate {}", if *.certificate { "names another node" } else { "is missing" })]
    NotCertified { claimed: NodeId, certificate: bool },
    #[error("this node dialed {expected}, but {answered} answered")]
    WrongPeer { expected: NodeId, answered: NodeId },
    #[error("cannot record the cluster id {cluster_id} the peer presented: {reason}")]
    Record { cluster_id: ClusterId, reason: String },
    #[error("the peer refused the handshake (its log says why): {0:?}")]
    Refused(String),
    #[error("{0}")]
    Busy(&'static str),
}

/// The dialer's side: says `Hello` to `peer`, checks that `peer` answered, and adopts its
/// cluster id if we have none yet (recorded before this returns).
pub(super) async fn dial(connection: &mut Connection, shared: &Shared, peer: NodeId) -> Result<(), HandshakeError> {
    let ours = shared.identity();
    connection.send(&ours.hello(peer)).await?;
    let hello = match connection.receive().await? {
        None => return Err(HandshakeError::Closed),
        Some(Frame::Hello(hello)) => hello,
        Some(Frame::Refused { reason }) => return Err(HandshakeError::Refused(reason)),
        Some(other) => return Err(HandshakeError::NotHello(other.kind())),
    };
    check_common(&hello, &ours)?;
    if hello.from != peer {
        return Err(HandshakeError::WrongPeer { expected: peer, answered: hello.from });
    }
    if let Some(theirs) = hello.cluster_id {
        shared.adopt_cluster_id(theirs).await?;
    }
    Ok(())
}

/// The acceptor's side: reads the dialer's `Hello`, checks it (and, over TLS, the dialer's
/// certificate), adopts its cluster id if we have none yet, and answers. Returns the
/// dialer's id. A refused dialer is told only [`REFUSED`].
pub(super) async fn accept(connection: &mut Connection, shared: &Shared) -> Result<NodeId, HandshakeError> {
    let hello = match connection.receive().await? {
        None => return Err(HandshakeError::Closed),
        Some(Frame::Hello(hello)) => hello,
        Some(other) => return Err(HandshakeError::NotHello(other.kind())),
    };
    let certificate = connection.tls.then_some(connection.peer_certificate.as_ref());
    let mut checked = check_dialer(&hello, &shared.identity(), certificate, |id| shared.peer(id).is_some());
    if checked.is_ok()
        && let Some(theirs) = hello.cluster_id
    {
        checked = shared.adopt_cluster_id(theirs).await;
    }
    if let Err(error) = checked {
        // Best effort: the connection is closed either way.
        let _ = connection.send(&Frame::Refused { reason: REFUSED.into() }).await;
        return Err(error);
    }
    connection.send(&shared.identity().hello(hello.from)).await?;
    Ok(hello.from)
}

/// The acceptor's checks of the dialer's `Hello`. `certificate` is `None` on a plain
/// connection, and over TLS the certificate the dialer presented, if any.
pub(super) fn check_dialer(
    hello: &Hello,
    ours: &Identity,
    certificate: Option<Option<&CertificateDer<'_>>>,
    is_peer: impl Fn(NodeId) -> bool,
) -> Result<(), HandshakeError> {
    check_common(hello, ours)?;
    if !is_peer(hello.from) {
        return Err(HandshakeError::UnknownPeer(hello.from));
    }
    if hello.from > ours.id {
        return Err(HandshakeError::WrongDirection { theirs: hello.from, ours: ours.id });
    }
    match certificate {
        None => Ok(()),
        Some(Some(certificate)) if certificate_names_node(certificate, hello.from) => Ok(()),
        Some(certificate) => {
            Err(HandshakeError::NotCertified { claimed: hello.from, certificate: certificate.is_some() })
        }
    }
}

/// What both sides check: same version, same cluster name and (when both have one) id,
/// addressed to us.
fn check_common(hello: &Hello, ours: &Identity) -> Result<(), HandshakeError> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(HandshakeError::Version { theirs: hello.protocol_version, ours: PROTOCOL_VERSION });
    }
    if hello.cluster != ours.cluster {
        return Err(HandshakeError::OtherCluster { theirs: hello.cluster.clone(), ours: ours.cluster.clone() });
    }
    if let (Some(theirs), Some(ours)) = (hello.cluster_id, ours.cluster_id)
        && theirs != ours
    {
        return Err(HandshakeError::OtherClusterId { theirs, ours });
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
        Hello {
            protocol_version: PROTOCOL_VERSION,
            cluster: cluster.into(),
            from: NodeId(from),
            to: NodeId(to),
            cluster_id: None,
        }
    }

    #[test]
    fn acceptor_checks() {
        let ours = Identity { id: NodeId(5), cluster: "c".into(), cluster_id: None };
        let known = |id: NodeId| id == NodeId(1) || id == NodeId(9);
        assert!(check_dialer(&hello("c", 1, 5), &ours, None, known).is_ok());
        assert!(matches!(
            check_dialer(&hello("d", 1, 5), &ours, None, known),
            Err(HandshakeError::OtherCluster { .. })
        ));
        assert!(matches!(check_dialer(&hello("c", 1, 6), &ours, None, known), Err(HandshakeError::NotForUs { .. })));
        assert!(matches!(check_dialer(&hello("c", 2, 5), &ours, None, known), Err(HandshakeError::UnknownPeer(_))));
        assert!(matches!(
            check_dialer(&hello("c", 9, 5), &ours, None, known),
            Err(HandshakeError::WrongDirection { .. })
        ));
        let mut old = hello("c", 1, 5);
        old.protocol_version = 1;
        assert!(matches!(check_dialer(&old, &ours, None, known), Err(HandshakeError::Version { .. })));
        // Over TLS, a dialer without a certificate is refused.
        assert!(matches!(
            check_dialer(&hello("c", 1, 5), &ours, Some(None), known),
            Err(HandshakeError::NotCertified { certificate: false, .. })
        ));
    }

    #[test]
    fn cluster_ids_must_agree_when_both_sides_have_one() {
        let (a, b) = (ClusterId([1; 16]), ClusterId([2; 16]));
        let known = |id: NodeId| id == NodeId(1);
        let with = |cluster_id| Hello { cluster_id, ..hello("c", 1, 5) };
        let ours = Identity { id: NodeId(5), cluster: "c".into(), cluster_id: Some(a) };
        assert!(check_dialer(&with(Some(a)), &ours, None, known).is_ok());
        assert!(check_dialer(&with(None), &ours, None, known).is_ok(), "a node without an id yet adopts ours");
        assert!(matches!(check_dialer(&with(Some(b)), &ours, None, known), Err(HandshakeError::OtherClusterId { .. })));
        let fresh = Identity { cluster_id: None, ..ours };
        assert!(check_dialer(&with(Some(b)), &fresh, None, known).is_ok());
        assert!(check_dialer(&with(None), &fresh, None, known).is_ok());
    }
}
