//! The byte stream under a connection: plain TCP, or TLS over it (rustls with ring) for a
//! cluster with `[tls]` (`https://` endpoints, or any endpoint when `--cacert` is given).
//!
//! One enum rather than a boxed trait object: a plain connection pays a match per read or
//! write, nothing more.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::client::Security;

/// A connection's stream.
pub enum Stream {
    Plain(TcpStream),
    /// Boxed: rustls's state is large, and a plain run should not carry its size.
    Tls(Box<TlsStream<TcpStream>>),
}

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
        None => Ok(Stream::Plain(stream)),
        Some(tls) => Ok(Stream::Tls(Box::new(tls.connector.connect(tls.name.clone(), stream).await?))),
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

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(stream) => stream.is_write_vectored(),
            Stream::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
