//! Real clients, unchanged, against a cluster with TLS and tokens (`skiff demo --secure`):
//! py-consul (`token=`, `verify=`, `scheme="https"`) and redis-py (`ssl=True`, username and
//! password, RESP3), with a scoped token added to the tokens file and picked up on SIGHUP.
//! The checks are in `tests/clients/secure_clients.py`.
//!
//! A missing Python module skips the test with a message, or fails it under
//! `SKIFF_REQUIRE_REAL_CLIENTS=1`, as the testkit's `real_clients` has it (the interpreter
//! is `SKIFF_PYTHON`, default `python3`).

mod common;

use std::process::{Command, Stdio};

use common::{Demo, signal, skiff, stderr, stdout};
use skiff::NodeId;
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::real_clients;
use skiff_testkit::wait::eventually;

const APP_SECRET: &str = "app-secret-for-the-python-clients";

#[test]
fn py_consul_and_redis_py_over_tls_with_tokens() {
    let test = "py_consul_and_redis_py_over_tls_with_tokens";
    let clients = real_clients::python_modules(&["redis", "consul"], "pip install redis py-consul");
    if !real_clients::present(test, &[clients]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = ClusterFile::builder("secure-clients", 3).http().redis().build();
    let demo = Demo::start(dir.path(), &file, &["--secure"]);
    let (admin, ca) = (demo.token(), demo.ca());

    // A scoped token, added while the cluster runs.
    let tokens = demo.data.join("tokens.toml");
    let mut text = std::fs::read_to_string(&tokens).unwrap();
    text.push_str(&format!(
        "\n[[token]]\nname = \"app\"\nsecret = \"{APP_SECRET}\"\nread = [\"shared/\"]\nwrite = [\"app/\"]\n"
    ));
    std::fs::write(&tokens, text).unwrap();
    signal(&demo.child, libc::SIGHUP);
    let endpoints = file.http_addresses().join(",");
    eventually("the demo to take the new token", || {
        let output = skiff()
            .args(["--endpoints", &endpoints, "--token", APP_SECRET, "get", "app/none"])
            .env("SKIFF_CACERT", &ca)
            .output()
            .unwrap();
        output.status.code() == Some(3) // not found, rather than refused
    });

    let output = Command::new(real_clients::python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/secure_clients.py"))
        .env("SKIFF_HTTP", file.node(NodeId(1)).http.clone().unwrap())
        .env("SKIFF_REDIS", file.node(NodeId(2)).redis.clone().unwrap())
        .env("SKIFF_CA", &ca)
        .env("SKIFF_ADMIN", &admin)
        .env("SKIFF_APP", APP_SECRET)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    eprintln!("{}", stdout(&output));
    assert!(output.status.success(), "the Python clients failed:\n{}\n{}", stdout(&output), stderr(&output));

    let (status, rest) = demo.stop();
    assert_eq!(status.code(), Some(0), "after SIGINT: {rest:?}");
}
