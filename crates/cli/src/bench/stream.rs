//! The byte stream under a connection: plain TCP, or TLS over it (rustls with ring) for a
//! cluster with `[tls]` (`https://` endpoints, or any endpoint when `--cacert` is given).
//!
//! An `Either` rather than a boxed trait object (as the KV server's client connections): a
//! plain connection pays a match per read or write, nothing more.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use crate::client::Security;

/// A connection's stream: plain, or TLS (boxed: rustls's state is large, and a plain run
/// should not carry its size).
pub type Stream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// How to wrap a connection in TLS: the client configuration, and the name the node's
/// certificate must carry (the host of the endpoint).
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl Tls {
    pub fn new(config: &Arc<ClientConfig>, name: &ServerName<'static>) -> Tls {
        Tls { connector: TlsConnector::from(Arc::clone(config)), name: name.clone() }
    }
}

/// Connects to `address` (without Nagle's delay: a request is one write, its answer awaited
/// at once), and makes the TLS handshake when `tls` is given.
pub async fn connect(address: SocketAddr, tls: Option<&Tls>) -> io::Result<Stream> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    match tls {
        None => Ok(Either::Left(stream)),
        Some(tls) => Ok(Either::Right(Box::new(tls.connector.connect(tls.name.clone(), stream).await?))),
    }
}

/// The TLS client configuration of `security`: its CA as the only root, its client
/// certificate if it has one, and `alpn` offered. `None` without a CA.
pub fn client_config(security: &Security, alpn: &[&[u8]]) -> Result<Option<Arc<ClientConfig>>, String> {
    let Some(ca) = &security.ca_pem else {
        if security.identity_pem.is_some() {
            return Err("--cert needs --cacert (the cluster's CA)".to_string());
        }
        return Ok(None);
    };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca) {
        let certificate = certificate.map_err(|error| format!("--cacert: {error}"))?;
        roots.add(certificate).map_err(|error| format!("--cacert: {error}"))?;
    }
    if roots.is_empty() {
        return Err("--cacert holds no PEM certificate".to_string());
    }
    let builder = ClientConfig::builder_with_provider(skiff::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots);
    let mut config = match &security.identity_pem {
        None => builder.with_no_client_auth(),
        Some((certificate, key)) => {
            let chain = CertificateDer::pem_slice_iter(certificate)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| format!("--cert: {error}"))?;
            if chain.is_empty() {
                return Err("--cert holds no PEM certificate".to_string());
            }
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|error| format!("--key: {error}"))?;
            builder.with_client_auth_cert(chain, key).map_err(|error| format!("--cert/--key: {error}"))?
        }
    };
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Some(Arc::new(config)))
}

/// The name a node's certificate must carry to be reached at `host` (an IP address or a
/// DNS name; `[::1]` is unbracketed).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let host = host.strip_prefix('[').and_then(|host| host.strip_suffix(']')).unwrap_or(host);
    ServerName::try_from(host.to_string()).map_err(|_| format!("{host:?} is not a host name a certificate can carry"))
}
