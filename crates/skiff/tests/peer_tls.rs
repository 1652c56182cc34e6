//! Peers over mutual TLS (a cluster file with `[tls]`): a three-node cluster elects and
//! replicates, every node records the cluster id the first voter made, and strangers on a
//! raft port get nowhere: no TLS, TLS without a certificate, a certificate of another CA,
//! and a certificate of this CA claiming another node's id are all refused, and the
//! cluster's leader, term and data are untouched.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use skiff::NodeId;
use skiff::tls::node_server_name;
use skiff_testkit::init_logs;
use skiff_testkit::node::{Journal, JournalCluster, TcpCluster};
use skiff_testkit::wait::TIMEOUT;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const CLUSTER_NAME: &str = "peer-tls";

/// A `Hello` of protocol 2 from `from` to `to` of this cluster, without a cluster id
/// (framed: 4-byte length, then postcard).
fn hello_frame(from: u64, to: u64) -> Vec<u8> {
    let mut body = vec![0, 3, CLUSTER_NAME.len() as u8];
    body.extend_from_slice(CLUSTER_NAME.as_bytes());
    body.extend_from_slice(&[from as u8, to as u8, 0]);
    framed(&body)
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

/// `Refused { reason: "refused" }`, framed.
fn refused_frame() -> Vec<u8> {
    framed(&[&[1, 7][..], b"refused"].concat())
}

/// Writes `bytes` and reads whatever comes back until the other side closes (or fails the
/// connection). Panics if it stays open.
async fn exchange(stream: &mut (impl AsyncRead + AsyncWrite + Unpin), bytes: &[u8]) -> Vec<u8> {
    // The node may close before reading everything; that is the point.
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
    let mut answer = Vec::new();
    let read = async {
        let mut buffer = [0; 1024];
        while let Ok(read @ 1..) = stream.read(&mut buffer).await {
            answer.extend_from_slice(&buffer[..read]);
        }
    };
    tokio::time::timeout(TIMEOUT, read).await.expect("the node closes a refused connection");
    answer
}

/// Speaks TLS with `config` to node `to` at `addr`, then says `hello`; returns the plain
/// text that came back (nothing if the TLS handshake failed).
async fn tls_exchange(addr: &str, config: Arc<ClientConfig>, to: u64, hello: &[u8]) -> Vec<u8> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    match TlsConnector::from(config).connect(node_server_name(NodeId(to)), stream).await {
        Ok(mut stream) => exchange(&mut stream, hello).await,
        Err(_) => Vec::new(),
    }
}

fn certificates(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path).expect("a PEM file").collect::<Result<_, _>>().expect("certificates")
}

/// A TLS client trusting the CA in `ca`, presenting `identity` (certificate, key) if any.
fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(ca) {
        roots.add(certificate).expect("a CA certificate");
    }
    let builder = ClientConfig::builder_with_provider(skiff::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    Arc::new(match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(certificates(cert), PrivateKeyDer::from_pem_file(key).expect("a key"))
            .expect("a client identity"),
    })
}

/// The `cluster-id` line of a data directory's `node-id` file.
fn cluster_id_line(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("node-id")).expect("node-id");
    text.lines().find(|line| line.starts_with("cluster-id ")).map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_works_and_strangers_on_its_raft_ports_get_nowhere() {
    init_logs();
    let cluster = TcpCluster::<Journal>::start_tls(CLUSTER_NAME, 1000).await;
    let leader = cluster.leader().await;
    for line in ["a", "b", "c"] {
        cluster.push(leader, line).await;
    }
    for id in cluster.ids() {
        cluster.wait_for_lines(id, &["a", "b", "c"], format!("{id} applies the writes")).await;
    }

    // n1 (the lowest initial voter) made the cluster id; n2 and n3, fresh, adopted and
    // recorded it before they took part.
    let n1_id = cluster_id_line(&cluster.data_dir(NodeId(1))).expect("n1 made a cluster id");
    assert_eq!(n1_id.len(), "cluster-id ".len() + 32, "{n1_id}");
    for id in [2, 3].map(NodeId) {
        assert_eq!(cluster_id_line(&cluster.data_dir(id)).as_ref(), Some(&n1_id), "{id} adopted n1's cluster id");
    }

    let before: Vec<_> = cluster.ids().iter().map(|&id| cluster.node(id).leader()).collect();
    let certs = cluster.certs_dir();
    let ca = certs.join("ca.pem");
    let other_ca_dir = tempfile::tempdir().expect("a temporary directory");
    skiff::tls::generate(other_ca_dir.path(), &[NodeId(1)], &["127.0.0.1".into()], false).expect("another CA");
    let other = other_ca_dir.path();

    for target in [2_u64, 3] {
        let addr = cluster.file.node(NodeId(target)).raft.clone();
        let hello = hello_frame(1, target);
        // (a) No TLS: a plain Hello, and garbage. At most a TLS alert comes back.
        for bytes in [hello.clone(), vec![0xff; 64]] {
            let mut stream = TcpStream::connect(&addr).await.expect("connect");
            let answer = exchange(&mut stream, &bytes).await;
            assert!(answer.is_empty() || answer[0] == 0x15, "n{target}: plain text got {answer:?}");
        }
        // (b) TLS without a client certificate.
        let answer = tls_exchange(&addr, client_config(&ca, None), target, &hello).await;
        assert!(answer.is_empty(), "n{target}: no certificate got {answer:?}");
        // (c) A certificate of another CA (trusting ours, so only the node's check stops it).
        let foreign = client_config(&ca, Some((&other.join("n1.pem"), &other.join("n1-key.pem"))));
        let answer = tls_exchange(&addr, foreign, target, &hello).await;
        assert!(answer.is_empty(), "n{target}: another CA's certificate got {answer:?}");
        // (d) A certificate of this CA, claiming another node's id: n3's, and the client's.
        for (cert, key) in [("n3.pem", "n3-key.pem"), ("client.pem", "client-key.pem")] {
            let posing = client_config(&ca, Some((&certs.join(cert), &certs.join(key))));
            let answer = tls_exchange(&addr, posing, target, &hello).await;
            assert_eq!(answer, refused_frame(), "n{target}: {cert} claiming n1");
        }
    }

    // Nothing changed: the same leader in the same term everywhere, the same data, and the
    // cluster still takes writes.
    let after: Vec<_> = cluster.ids().iter().map(|&id| cluster.node(id).leader()).collect();
    assert_eq!(after, before);
    for id in cluster.ids() {
        assert_eq!(cluster.lines(id).await, ["a", "b", "c"], "{id}");
    }
    cluster.push(leader, "d").await;

    // The control: n1's own certificate, claiming n1, is taken (so the refusals above were
    // the certificates', not a malformed Hello's).
    let n1 = client_config(&ca, Some((&certs.join("n1.pem"), &certs.join("n1-key.pem"))));
    let stream = TcpStream::connect(&cluster.file.node(NodeId(3)).raft).await.expect("connect");
    let mut stream = TlsConnector::from(n1).connect(node_server_name(NodeId(3)), stream).await.expect("TLS");
    stream.write_all(&hello_frame(1, 3)).await.expect("write");
    let mut header = [0; 5];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut header))
        .await
        .expect("an answer")
        .expect("read");
    assert_eq!(header[4], 0, "n3 answers n1's certificate with a Hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_tls_files_are_missing_does_not_start() {
    init_logs();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let certs = dir.path().join("certs");
    let file = skiff_testkit::cluster_file::ClusterFile::builder(CLUSTER_NAME, 1).tls(&certs).build();
    std::fs::remove_file(certs.join("n1-key.pem")).expect("remove the key");
    let error = match skiff::Node::start(&file.config(), NodeId(1), Journal::default(), dir.path().join("n1")).await {
        Ok(_) => panic!("started without its key"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("n1-key.pem"), "{error}");
    assert!(!dir.path().join("n1").exists(), "checked before the data directory is made");
}
