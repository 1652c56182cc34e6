//! TLS: the cluster's certificates, and the rustls configurations built from them.
//!
//! A cluster has its own certificate authority. Each node has a certificate signed by it
//! whose subject alternative names carry the node's id as a DNS name (`n1`) and the hosts
//! clients reach it by (`127.0.0.1`, `db1.example`); clients may have one too.
//! [`generate`] writes such a set (`skiff certs`), [`TlsMaterial::load`] reads one.
//!
//! - **Peers** use mutual TLS: both sides present their node certificate and check the
//!   other's against the cluster CA ([`TlsMaterial::peer_acceptor`],
//!   [`TlsMaterial::peer_connector`]). The dialer checks that the certificate names the node
//!   it dialed; the acceptor checks that it names the id the dialer claims
//!   ([`certificate_names_node`]), so a node can only ever speak as itself.
//! - **Clients** (HTTPS, Redis over TLS) get the node's certificate
//!   ([`TlsMaterial::client_acceptor`]); with `verify_clients` they must present a
//!   certificate signed by the cluster CA as well.
//!
//! Crypto is rustls with the `ring` provider.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use skiff_raft::NodeId;
use thiserror::Error;

use crate::config::TlsFiles;

/// What went wrong loading or making certificates. Every message names the file.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// A file holds no usable certificate or key.
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    /// rustls refused the combination (a key that does not match its certificate, say).
    #[error("{0}")]
    Config(String),
    /// A certificate could not be made.
    #[error("cannot make a certificate: {0}")]
    Generate(String),
}

/// The certificates and key of one node, loaded and checked.
#[derive(Debug)]
pub struct TlsMaterial {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    verify_clients: bool,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> TlsMaterial {
        TlsMaterial {
            roots: Arc::clone(&self.roots),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            verify_clients: self.verify_clients,
        }
    }
}

/// The crypto provider Skiff uses everywhere: ring. (rustls deprecates it for want of
/// post-quantum key exchange; aws-lc-rs has that but costs a minute of every clean build
/// here. X25519 and the NIST curves remain.)
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsMaterial {
    /// Reads the CA, the node's certificate chain and its private key (PEM files).
    pub fn load(files: &TlsFiles) -> Result<TlsMaterial, TlsError> {
        let ca = read_certificates(&files.ca)?;
        let mut roots = RootCertStore::empty();
        for certificate in ca {
            roots.add(certificate).map_err(|error| TlsError::Invalid {
                path: files.ca.clone(),
                reason: format!("not a usable CA certificate: {error}"),
            })?;
        }
        let chain = read_certificates(&files.cert)?;
        let key = read_key(&files.key)?;
        let material = TlsMaterial { roots: Arc::new(roots), chain, key, verify_clients: files.verify_clients };
        // Build one of each config now, so a key that does not match its certificate is
        // reported at start, naming the files, rather than on the first connection.
        material.peer_acceptor().map_err(|error| {
            TlsError::Config(format!("{} with {}: {error}", files.cert.display(), files.key.display()))
        })?;
        Ok(material)
    }

    /// The node's own certificate (the first of its chain).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// Whether clients must present a certificate.
    pub fn verify_clients(&self) -> bool {
        self.verify_clients
    }

    /// The server side of a peer connection: presents the node's certificate and requires
    /// one from the dialer, signed by the cluster CA.
    pub fn peer_acceptor(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&self.roots), provider())
            .build()
            .map_err(|error| TlsError::Config(error.to_string()))?;
        self.server_config(verifier, &[])
    }

    /// The client side of a peer connection: presents the node's certificate and checks the
    /// peer's against the cluster CA. Give [`node_server_name`] of the dialed node as the
    /// server name, so the peer's certificate must name it.
    pub fn peer_connector(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Config(error.to_string()))?
            .with_root_certificates(Arc::clone(&self.roots))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|error| TlsError::Config(error.to_string()))?;
        Ok(Arc::new(config))
    }

    /// The server side of a client connection (HTTPS, Redis over TLS), offering the ALPN
    /// protocols in `alpn` (`b"http/1.1"`, say). With `verify_clients`, a client must present
    /// a certificate signed by the cluster CA; without, none is asked for.
    pub fn client_acceptor(&self, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = if self.verify_clients {
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&self.roots), provider())
                .build()
                .map_err(|error| TlsError::Config(error.to_string()))?
        } else {
            WebPkiClientVerifier::no_client_auth()
        };
        self.server_config(verifier, alpn)
    }

    fn server_config(
        &self,
        verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
        alpn: &[&[u8]],
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Config(error.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|error| TlsError::Config(error.to_string()))?;
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// The TLS server name under which node `id` is dialed: its id as a DNS name (`n1`).
pub fn node_server_name(id: NodeId) -> ServerName<'static> {
    match ServerName::try_from(id.to_string()) {
        Ok(name) => name,
        // `n` followed by digits is always a valid DNS label.
        Err(error) => unreachable!("node id {id} is not a DNS name: {error}"),
    }
}

/// Whether `certificate` names node `id` among its subject alternative names. Only the
/// chain was checked by the TLS handshake; this says *which* node the certificate is for.
pub fn certificate_names_node(certificate: &CertificateDer<'_>, id: NodeId) -> bool {
    let Ok(certificate) = webpki::EndEntityCert::try_from(certificate) else { return false };
    certificate.verify_is_valid_for_subject_name(&node_server_name(id)).is_ok()
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = fs::read(path).map_err(|source| TlsError::Io { path: path.to_path_buf(), source })?;
    let certificates: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|error| TlsError::Invalid { path: path.to_path_buf(), reason: format!("bad PEM: {error}") })?;
    if certificates.is_empty() {
        return Err(TlsError::Invalid { path: path.to_path_buf(), reason: "holds no CERTIFICATE block".into() });
    }
    Ok(certificates)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = fs::read(path).map_err(|source| TlsError::Io { path: path.to_path_buf(), source })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| TlsError::Invalid {
        path: path.to_path_buf(),
        reason: format!("holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {error}"),
    })
}

/// What [`generate`] wrote or kept.
#[derive(Debug, Default)]
pub struct Generated {
    /// Files written.
    pub written: Vec<PathBuf>,
    /// Files that existed and were kept (an existing CA is reused to sign new certificates).
    pub kept: Vec<PathBuf>,
}

/// Writes a cluster CA (`ca.pem`, `ca-key.pem`) into `dir`, a certificate and key for each
/// node (`n1.pem`, `n1-key.pem`, ...) naming the node id and every host in `hosts`, and a
/// client certificate (`client.pem`, `client-key.pem`). An existing CA in `dir` is reused, and
/// existing files are kept unless `overwrite`, so certificates for a new node can be added
/// later. Keys are written readable by their owner only.
pub fn generate(dir: &Path, nodes: &[NodeId], hosts: &[String], overwrite: bool) -> Result<Generated, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        SanType,
    };
    let failed = |error: rcgen::Error| TlsError::Generate(error.to_string());
    fs::create_dir_all(dir).map_err(|source| TlsError::Io { path: dir.to_path_buf(), source })?;
    let mut generated = Generated::default();
    let (ca_path, ca_key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    // From the start of last year (clock skew between machines does no harm) for ten years.
    let year = current_year();
    let (not_before, not_after) = (rcgen::date_time_ymd(year - 1, 1, 1), rcgen::date_time_ymd(year + 10, 1, 1));

    let reuse_ca = !overwrite && ca_path.exists();
    if reuse_ca && !ca_key_path.exists() {
        return Err(TlsError::Invalid {
            path: ca_path,
            reason: "exists without ca-key.pem beside it, so it cannot sign new certificates; \
                     use --force to make a new CA (and new certificates for every node)"
                .into(),
        });
    }
    let issuer = if reuse_ca {
        let pem = read_text(&ca_path)?;
        let key = KeyPair::from_pem(&read_text(&ca_key_path)?)
            .map_err(|error| TlsError::Invalid { path: ca_key_path.clone(), reason: error.to_string() })?;
        generated.kept.extend([ca_path.clone(), ca_key_path.clone()]);
        Issuer::from_ca_cert_pem(&pem, key)
            .map_err(|error| TlsError::Invalid { path: ca_path.clone(), reason: error.to_string() })?
    } else {
        let key = KeyPair::generate().map_err(failed)?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "Skiff cluster CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        (params.not_before, params.not_after) = (not_before, not_after);
        let certificate = params.self_signed(&key).map_err(failed)?;
        write(&ca_path, certificate.pem(), false, &mut generated)?;
        write(&ca_key_path, key.serialize_pem(), true, &mut generated)?;
        Issuer::new(params, key)
    };

    let mut leaf = |name: String, sans: Vec<SanType>, server: bool| -> Result<(), TlsError> {
        let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
        // Certificates of an older CA are replaced along with it.
        if reuse_ca && cert_path.exists() && key_path.exists() {
            generated.kept.extend([cert_path, key_path]);
            return Ok(());
        }
        let key = KeyPair::generate().map_err(failed)?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name.as_str());
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if server {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = (not_before, not_after);
        let certificate = params.signed_by(&key, &issuer).map_err(failed)?;
        write(&cert_path, certificate.pem(), false, &mut generated)?;
        write(&key_path, key.serialize_pem(), true, &mut generated)
    };

    let mut host_names = Vec::new();
    for host in hosts {
        host_names.push(match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.as_str()
                    .try_into()
                    .map_err(|_| TlsError::Generate(format!("{host:?} is neither an IP address nor a host name")))?,
            ),
        });
    }
    for id in nodes {
        let name = id.to_string();
        let mut sans = vec![SanType::DnsName(name.as_str().try_into().map_err(failed)?)];
        sans.extend(host_names.iter().cloned());
        leaf(name, sans, true)?;
    }
    leaf("client".into(), Vec::new(), false)?;
    Ok(generated)
}

/// The current year by the system clock, close enough for a validity period.
fn current_year() -> i32 {
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs());
    1970 + i32::try_from(seconds / 31_556_952).unwrap_or(0)
}

fn read_text(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Io { path: path.to_path_buf(), source })
}

fn write(path: &Path, text: String, secret: bool, generated: &mut Generated) -> Result<(), TlsError> {
    let failed = |source| TlsError::Io { path: path.to_path_buf(), source };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(failed)?;
    io::Write::write_all(&mut file, text.as_bytes()).map_err(failed)?;
    generated.written.push(path.to_path_buf());
    Ok(())
}
