//! Nodes on separate hosts, as far as one machine can make them: each `skiff serve` runs in
//! its own network namespace with its own address on a bridge (10.x.y.N), so a node only
//! reaches the others at the addresses the membership gives. A cluster started from a file
//! grows by `--join` with a new address, loses a node, and replaces it by address.
//!
//! Needs root (to make namespaces) and `ip`: elsewhere it says so and passes, unless
//! `SKIFF_REQUIRE_NETNS=1` (CI) makes that a failure.

mod common;

use std::process::{Child, Command, Output, Stdio};

use common::{KillOnDrop, skiff, stderr, stdout, write_file};
use skiff_testkit::wait::{eventually, eventually_ok};

/// The bridge, the namespaces and their processes; all removed on drop.
struct Net {
    tag: String,
    subnet: String,
    namespaces: Vec<String>,
    children: Vec<(Child, KillOnDrop)>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip").args(args).output().map_err(|error| format!("ip: {error}"))?;
    if output.status.success() { Ok(()) } else { Err(format!("ip {args:?}: {}", stderr(&output))) }
}

impl Net {
    fn new() -> Result<Net, String> {
        let pid = std::process::id();
        let tag = format!("sk{}", pid % 100_000);
        let subnet = format!("10.{}.{}", 100 + pid % 100, pid % 250 + 1);
        let net = Net { tag, subnet, namespaces: Vec::new(), children: Vec::new() };
        ip(&["link", "add", &net.bridge(), "type", "bridge"])?;
        ip(&["addr", "add", &format!("{}.254/24", net.subnet), "dev", &net.bridge()])?;
        ip(&["link", "set", &net.bridge(), "up"])?;
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    fn address(&self, node: u32) -> String {
        format!("{}.{node}", self.subnet)
    }

    /// A namespace for node `node`, at [`Net::address`], linked to the bridge.
    fn host(&mut self, node: u32) -> Result<String, String> {
        let namespace = format!("{}n{node}", self.tag);
        let (outside, inside) = (format!("{}v{node}", self.tag), format!("{}e{node}", self.tag));
        ip(&["netns", "add", &namespace])?;
        self.namespaces.push(namespace.clone());
        ip(&["link", "add", &outside, "type", "veth", "peer", "name", &inside])?;
        ip(&["link", "set", &inside, "netns", &namespace])?;
        ip(&["link", "set", &outside, "master", &self.bridge(), "up"])?;
        let within = |args: &[&str]| {
            let mut all = vec!["netns", "exec", namespace.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        within(&["addr", "add", &format!("{}/24", self.address(node)), "dev", &inside])?;
        within(&["link", "set", &inside, "up"])?;
        within(&["link", "set", "lo", "up"])?;
        Ok(namespace)
    }

    /// `skiff serve ARGS` inside node `node`'s namespace.
    fn serve(&mut self, node: u32, args: &[&str]) -> usize {
        let namespace = format!("{}n{node}", self.tag);
        let child = Command::new("ip")
            .args(["netns", "exec", &namespace, common::SKIFF, "serve"])
            .args(args)
            .env_remove("SKIFF_ENDPOINTS")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start skiff serve in a namespace");
        let guard = KillOnDrop::new(&child);
        self.children.push((child, guard));
        self.children.len() - 1
    }

    fn kill(&mut self, index: usize) {
        let (child, _) = &mut self.children[index];
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for (child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for namespace in &self.namespaces {
            let _ = ip(&["netns", "del", namespace]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

fn cli(endpoint: &str, args: &[&str]) -> Output {
    skiff().args(["--endpoints", endpoint, "--timeout", "5s"]).args(args).output().unwrap()
}

fn cluster_file(net: &Net) -> String {
    let mut text = String::from("[cluster]\nname = \"netns\"\ninsecure = true\n");
    for node in 1..=3 {
        let address = net.address(node);
        text += &format!("\n[[node]]\nid = \"n{node}\"\nraft = \"{address}:7001\"\nhttp = \"{address}:8001\"\n");
    }
    text
}

#[test]
fn a_cluster_on_separate_hosts_grows_and_replaces_a_node_by_address() {
    let mut net = match Net::new() {
        Ok(net) => net,
        Err(why) if std::env::var_os("SKIFF_REQUIRE_NETNS").is_none() => {
            eprintln!("skipped: cannot make network namespaces here ({why}); SKIFF_REQUIRE_NETNS=1 makes this fail");
            return;
        }
        Err(why) => panic!("SKIFF_REQUIRE_NETNS is set but network namespaces cannot be made: {why}"),
    };
    for node in 1..=5 {
        net.host(node).expect("a namespace per node");
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(dir.path(), "cluster.toml", &cluster_file(&net));
    let data = |node: u32| dir.path().join(format!("n{node}")).display().to_string();
    let config = config.display().to_string();
    let subnet = net.subnet.clone();
    let address = move |node: u32| format!("{subnet}.{node}");
    let http = |node: u32| format!("{}:8001", address(node));
    let mut processes = Vec::new();
    for node in 1..=3 {
        processes.push(net.serve(node, &["--config", &config, "--id", &format!("n{node}"), "--data-dir", &data(node)]));
    }
    let n1 = http(1);
    let mut written = Vec::new();
    let put = |endpoint: &str, written: &mut Vec<String>| {
        let key = format!("k{}", written.len());
        eventually_ok(format!("put {key}"), || {
            let output = cli(endpoint, &["put", &key, "v"]);
            if output.status.success() { Ok(()) } else { Err(stderr(&output)) }
        });
        written.push(key);
    };
    put(&n1, &mut written);

    // n4 joins by address: no file lists 10.x.y.4.
    let join = format!("http://{n1}");
    let (raft4, http4) = (format!("{}:7001", address(4)), http(4));
    let joiner = ["--join", &join, "--id", "n4", "--raft", &raft4, "--http", &http4, "--data-dir", &data(4)];
    net.serve(4, &joiner);
    let voter = |endpoint: &str, id: &str| {
        let members: serde_json::Value =
            serde_json::from_str(&stdout(&cli(endpoint, &["--json", "members", "list"]))).unwrap_or_default();
        members["members"].as_array().is_some_and(|all| all.iter().any(|m| m["id"] == id && m["voter"] == true))
    };
    eventually("n4 is a voter", || voter(&n1, "n4"));
    put(&http4, &mut written);

    // n2 is lost; n5, waiting at a new address, replaces it.
    net.kill(processes[1]);
    let (raft5, http5) = (format!("{}:7001", address(5)), http(5));
    net.serve(5, &["--config", &config, "--id", "n5", "--raft", &raft5, "--http", &http5, "--data-dir", &data(5)]);
    let replaced = eventually_ok("members replace n2", || {
        let output = cli(&n1, &["members", "replace", "n2", "--with", "n5", "--raft", &raft5, "--http", &http5]);
        if output.status.success() { Ok(stdout(&output)) } else { Err(stderr(&output)) }
    });
    assert!(replaced.contains("4/4 replaced n2 by n5"), "{replaced}");
    put(&http5, &mut written);

    // Every acknowledged write, read through the new node; the members with their addresses.
    for key in &written {
        let output = cli(&http5, &["get", "--raw", key]);
        assert!(output.status.success(), "{key} through n5: {}", stderr(&output));
    }
    let members: serde_json::Value =
        serde_json::from_str(&stdout(&cli(&http5, &["--json", "members", "list"]))).unwrap();
    let listed: Vec<(String, String)> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap_or_default().to_string(), m["raft"].as_str().unwrap_or_default().to_string()))
        .collect();
    let expected: Vec<(String, String)> =
        [1, 3, 4, 5].iter().map(|node| (format!("n{node}"), format!("{}:7001", address(*node)))).collect();
    assert_eq!(listed, expected);
}
