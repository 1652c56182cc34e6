//! `skiff::tls`: certificates made by `generate` load, name their node, and chain to their CA.

use skiff::NodeId;
use skiff::config::TlsFiles;
use skiff::tls::{TlsMaterial, certificate_names_node, generate};

fn files(dir: &std::path::Path, name: &str) -> TlsFiles {
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
        verify_clients: false,
    }
}

#[test]
fn generated_certificates_name_their_node_only() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = [NodeId(1), NodeId(2)];
    let made = generate(dir.path(), &nodes, &["127.0.0.1".into(), "db.example".into()], false).unwrap();
    assert_eq!(made.written.len(), 8, "ca, two nodes, client, each with a key: {made:?}");
    let n1 = TlsMaterial::load(&files(dir.path(), "n1")).unwrap();
    assert!(certificate_names_node(n1.certificate(), NodeId(1)));
    assert!(!certificate_names_node(n1.certificate(), NodeId(2)));
    let client = TlsMaterial::load(&files(dir.path(), "client")).unwrap();
    assert!(!certificate_names_node(client.certificate(), NodeId(1)), "a client certificate is no node's");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("n1-key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "keys are private to their owner");
    }
}

#[test]
fn an_existing_ca_signs_new_nodes_and_keeps_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &[NodeId(1)], &[], false).unwrap();
    let ca_before = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let n1_before = std::fs::read(dir.path().join("n1.pem")).unwrap();
    let made = generate(dir.path(), &[NodeId(1), NodeId(4)], &[], false).unwrap();
    assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca_before);
    assert_eq!(std::fs::read(dir.path().join("n1.pem")).unwrap(), n1_before);
    assert!(made.written.contains(&dir.path().join("n4.pem")), "{made:?}");
    TlsMaterial::load(&files(dir.path(), "n4")).unwrap();
}

#[test]
fn bad_files_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &[NodeId(1)], &[], false).unwrap();
    std::fs::write(dir.path().join("n1-key.pem"), "not a key").unwrap();
    let error = TlsMaterial::load(&files(dir.path(), "n1")).unwrap_err().to_string();
    assert!(error.contains("n1-key.pem") && error.contains("private key"), "{error}");
    // A key of another certificate.
    generate(dir.path(), &[NodeId(2)], &[], false).unwrap();
    std::fs::copy(dir.path().join("n2-key.pem"), dir.path().join("n1-key.pem")).unwrap();
    let error = TlsMaterial::load(&files(dir.path(), "n1")).unwrap_err().to_string();
    assert!(error.contains("n1.pem"), "{error}");
    let error = TlsMaterial::load(&TlsFiles { ca: dir.path().join("nope.pem"), ..files(dir.path(), "n2") })
        .unwrap_err()
        .to_string();
    assert!(error.contains("nope.pem"), "{error}");
}
