//! The cluster file: parsing TOML and JSON, validation messages, the `[raft]` section as
//! the core's own config (its defaults, its names, its validation), overriding settings as
//! flags and environment variables do, and the helpers the runtime uses.

use std::collections::BTreeMap;
use std::time::Duration;

use skiff::config::{ClusterConfig, ConfigError, ConfigProblem, NodeConfig, RaftSection, parse_node_id};
use skiff::{Membership, NodeId};
use skiff_raft::InvalidConfig;

/// An example cluster file: the demo's three nodes, with raft, http and redis addresses.
const DESIGN_EXAMPLE: &str = r#"
[cluster]
name = "demo"                       # peers of another cluster are refused
[[node]]
id = "n1"
raft = "127.0.0.1:7001"             # peer address
http = "127.0.0.1:8001"             # client API
redis = "127.0.0.1:6001"            # optional
[[node]]
id = "n2"
raft = "127.0.0.1:7002"
http = "127.0.0.1:8002"
redis = "127.0.0.1:6002"
[[node]]
id = "n3"
raft = "127.0.0.1:7003"
http = "127.0.0.1:8003"
redis = "127.0.0.1:6003"
[raft]
tick_ms = 10
heartbeat_ticks = 5
election_ticks = 30                 # randomized in [election_ticks, 2 * election_ticks)
snapshot_after_entries = 10000
"#;

const DESIGN_EXAMPLE_JSON: &str = r#"{
  "cluster": { "name": "demo" },
  "node": [
    { "id": "n1", "raft": "127.0.0.1:7001", "http": "127.0.0.1:8001", "redis": "127.0.0.1:6001" },
    { "id": "n2", "raft": "127.0.0.1:7002", "http": "127.0.0.1:8002", "redis": "127.0.0.1:6002" },
    { "id": "n3", "raft": "127.0.0.1:7003", "http": "127.0.0.1:8003", "redis": "127.0.0.1:6003" }
  ],
  "raft": { "tick_ms": 10, "heartbeat_ticks": 5, "election_ticks": 30, "snapshot_after_entries": 10000 }
}"#;

/// A valid two-node file with `extra` appended, for the error cases.
fn two_nodes(node2: &str, extra: &str) -> String {
    format!("[cluster]\nname = \"t\"\n[[node]]\nid = \"n1\"\nraft = \"127.0.0.1:7001\"\n[[node]]\n{node2}\n{extra}")
}

/// The message of the error `text` gives, which must be a validation error.
fn invalid(text: &str) -> String {
    match ClusterConfig::from_toml_str(text) {
        Err(error @ ConfigError::Invalid { .. }) => error.to_string(),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

fn assert_mentions(message: &str, words: &[&str]) {
    for word in words {
        assert!(message.contains(word), "{word:?} missing from: {message}");
    }
}

#[test]
fn design_example_parses() {
    let config = ClusterConfig::from_toml_str(DESIGN_EXAMPLE).unwrap();
    assert_eq!(config.cluster.name, "demo");
    assert_eq!(config.node.len(), 3);
    assert_eq!(config.node[0].raft, "127.0.0.1:7001");
    assert_eq!(config.node[0].raft_listen, None);
    assert_eq!(config.node[0].raft_listen_address(), "127.0.0.1:7001");
    assert_eq!(config.node[2].redis.as_deref(), Some("127.0.0.1:6003"));
    assert_eq!(config.raft.core.election_timeout_ticks, 30);
    assert_eq!(config, ClusterConfig::demo());
}

#[test]
fn json_parses_to_the_same_config() {
    let toml = ClusterConfig::from_toml_str(DESIGN_EXAMPLE).unwrap();
    assert_eq!(ClusterConfig::from_json_str(DESIGN_EXAMPLE_JSON).unwrap(), toml);
}

#[test]
fn load_picks_the_format_by_extension_or_content() {
    let dir = tempfile::tempdir().unwrap();
    let expected = ClusterConfig::demo();
    for (name, text) in [
        ("cluster.toml", DESIGN_EXAMPLE),
        ("cluster.json", DESIGN_EXAMPLE_JSON),
        ("cluster.conf", DESIGN_EXAMPLE_JSON), // starts with '{'
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        assert_eq!(ClusterConfig::load(&path).unwrap(), expected, "{name}");
    }
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, two_nodes("id = \"n1\"\nraft = \"127.0.0.1:7002\"", "")).unwrap();
    let message = ClusterConfig::load(&path).unwrap_err().to_string();
    assert_mentions(&message, &["cluster file", "cluster.toml", "node n1 is listed twice (entries 1 and 2)"]);

    let missing = dir.path().join("missing.toml");
    let message = ClusterConfig::load(&missing).unwrap_err().to_string();
    assert_mentions(&message, &["cannot read cluster file", "missing.toml"]);
}

#[test]
fn optional_sections_take_defaults() {
    let config = ClusterConfig::from_toml_str("[cluster]\nname = \"x\"\n[[node]]\nid = \"1\"\nraft = \"a:1\"").unwrap();
    assert_eq!(config.raft, Default::default());
    assert_eq!(config.raft.tick_ms, 10);
    assert!(config.raft.core.pre_vote && config.raft.core.check_quorum && !config.raft.core.lease_reads);
    assert_eq!(config.tick_interval(), Duration::from_millis(10));
}

#[test]
fn unknown_fields_are_named() {
    let message = ClusterConfig::from_toml_str(&two_nodes("id = \"n2\"\nraft = \"b:1\"", "[raft]\nheartbeat_tick = 5"))
        .unwrap_err()
        .to_string();
    assert_mentions(&message, &["cluster config: invalid TOML", "unknown field", "heartbeat_tick"]);
    assert_mentions(&message, &["the settings are check_quorum, election_timeout_ticks", "tick_ms"]);
    // A wrong type names the key, in either spelling of it.
    for key in ["election_timeout_ticks", "election_ticks"] {
        let text = two_nodes("id = \"n2\"\nraft = \"b:1\"", &format!("[raft]\n{key} = \"5\""));
        let message = ClusterConfig::from_toml_str(&text).unwrap_err().to_string();
        assert_mentions(&message, &[&format!("raft.{key}: invalid type: string \"5\", expected u32")]);
    }

    let message = ClusterConfig::from_toml_str(&two_nodes("id = \"n2\"\nraft = \"b:1\"\nhtpp = \"b:2\"", ""))
        .unwrap_err()
        .to_string();
    assert_mentions(&message, &["unknown field", "htpp", "line"]);

    let json = r#"{"cluster": {"name": "x", "nmae": "y"}, "node": [{"id": "n1", "raft": "a:1"}]}"#;
    let message = ClusterConfig::from_json_str(json).unwrap_err().to_string();
    assert_mentions(&message, &["cluster config: invalid JSON", "unknown field", "nmae"]);
}

#[test]
fn missing_required_fields_are_named() {
    let message = ClusterConfig::from_toml_str("[[node]]\nid = \"n1\"\nraft = \"a:1\"").unwrap_err().to_string();
    assert_mentions(&message, &["missing field", "cluster"]);
    let message = ClusterConfig::from_toml_str(&two_nodes("id = \"n2\"", "")).unwrap_err().to_string();
    assert_mentions(&message, &["missing field", "raft"]);
}

#[test]
fn empty_cluster_name() {
    let message = invalid("[cluster]\nname = \" \"\n[[node]]\nid = \"n1\"\nraft = \"a:1\"");
    assert_mentions(&message, &["cluster config: cluster.name is empty"]);
}

#[test]
fn no_nodes() {
    let message = invalid("[cluster]\nname = \"x\"");
    assert_mentions(&message, &["no nodes are listed", "[[node]]"]);
}

#[test]
fn bad_node_ids() {
    for id in ["node1", "n", "", "-1", "+1", "n+1", "N1", "n1.5", "n18446744073709551616"] {
        let message = invalid(&two_nodes(&format!("id = {id:?}\nraft = \"b:1\""), ""));
        assert_mentions(&message, &["node entry 2", &format!("id {id:?} is not a node id"), "n<number>"]);
    }
}

#[test]
fn parse_node_id_maps_to_the_core_id() {
    assert_eq!(parse_node_id("n1").unwrap(), NodeId(1));
    assert_eq!(parse_node_id("1").unwrap(), NodeId(1));
    assert_eq!(parse_node_id("n0").unwrap(), NodeId(0));
    assert_eq!(parse_node_id("18446744073709551615").unwrap(), NodeId(u64::MAX));
    let message = parse_node_id("x7").unwrap_err().to_string();
    assert_mentions(&message, &["\"x7\" is not a node id"]);
}

#[test]
fn duplicate_ids_in_either_spelling() {
    let text = two_nodes("id = \"n2\"\nraft = \"b:1\"\n[[node]]\nid = \"n2\"\nraft = \"c:1\"", "");
    let message = invalid(&text);
    assert_mentions(&message, &["node n2 is listed twice (entries 2 and 3)"]);

    let message = invalid(&two_nodes("id = \"1\"\nraft = \"b:1\"", ""));
    assert_mentions(&message, &["node n1 is listed twice (entries 1 and 2, written \"n1\" and \"1\")"]);
}

#[test]
fn duplicate_addresses() {
    let message = invalid(&two_nodes("id = \"n2\"\nraft = \"127.0.0.1:7001\"", ""));
    assert_mentions(&message, &["address 127.0.0.1:7001 is both node n1's raft address and node n2's raft address"]);

    let nodes = "id = \"n2\"\nraft = \"b:1\"\nhttp = \"b:8\"\n[[node]]\nid = \"n3\"\nraft = \"c:1\"\nhttp = \"B:8\"";
    let message = invalid(&two_nodes(nodes, ""));
    assert_mentions(&message, &["address B:8 is both node n2's http address and node n3's http address"]);

    let nodes = "id = \"n2\"\nraft = \"b:1\"\nredis = \"[::1]:6001\"\n[[node]]\nid = \"n3\"\nraft = \"c:1\"\nredis = \"[0:0::1]:6001\"";
    let message = invalid(&two_nodes(nodes, ""));
    assert_mentions(&message, &["node n2's redis address and node n3's redis address"]);

    // One node, two fields.
    let message = invalid(&two_nodes("id = \"n2\"\nraft = \"b:1\"\nhttp = \"b:1\"", ""));
    assert_mentions(&message, &["node n2: address b:1 is both its raft and its http address"]);

    // Another node's advertised peer address, even when this one binds elsewhere.
    let message =
        invalid(&two_nodes("id = \"n2\"\nraft = \"b:1\"\nraft_listen = \"0.0.0.0:1\"\nhttp = \"127.0.0.1:7001\"", ""));
    assert_mentions(&message, &["node n1's raft address and node n2's http address"]);
}

#[test]
fn wildcards() {
    // Binding a wildcard on every node is fine: each node is on its own machine.
    let text = "[cluster]\nname = \"x\"\n\
        [[node]]\nid = \"n1\"\nraft = \"10.0.0.1:7001\"\nraft_listen = \"0.0.0.0:7001\"\nhttp = \"0.0.0.0:8001\"\n\
        [[node]]\nid = \"n2\"\nraft = \"10.0.0.2:7001\"\nraft_listen = \"0.0.0.0:7001\"\nhttp = \"0.0.0.0:8001\"";
    let config = ClusterConfig::from_toml_str(text).unwrap();
    assert_eq!(config.node[0].raft_listen_address(), "0.0.0.0:7001");

    let message = invalid(&two_nodes("id = \"n2\"\nraft = \"0.0.0.0:7002\"", ""));
    assert_mentions(&message, &["node n2: raft address 0.0.0.0:7002 is a wildcard", "raft_listen"]);

    let message =
        invalid(&two_nodes("id = \"n2\"\nraft = \"b:1\"\nraft_listen = \"[::]:7002\"\nhttp = \"127.0.0.1:7002\"", ""));
    assert_mentions(&message, &["node n2: raft_listen [::]:7002 and http 127.0.0.1:7002 both listen on port 7002"]);
}

#[test]
fn bad_addresses() {
    let cases = [
        ("127.0.0.1", "has no port"),
        ("127.0.0.1:", "has no port after ':'"),
        ("127.0.0.1:0", "has port 0"),
        ("127.0.0.1:65536", "not a number from 1 to 65535"),
        ("127.0.0.1:+80", "not a number from 1 to 65535"),
        ("host:http", "not a number from 1 to 65535"),
        (":7002", "has no host"),
        ("", "is empty"),
        ("a b:1", "contains whitespace"),
        ("::1:7002", "IPv6 address without brackets"),
        ("[::1]", "no port after the IPv6 address"),
        ("[nope]:1", "not an IPv6 address"),
        ("[::1:1", "without a matching ']'"),
        ("300.1.1.1:1", "neither an IPv4 address nor a host name"),
        ("bad_host:1", "neither an IPv4 address nor a host name"),
        ("-a.example:1", "neither an IPv4 address nor a host name"),
        ("a..example:1", "neither an IPv4 address nor a host name"),
    ];
    for (address, reason) in cases {
        let message = invalid(&two_nodes(&format!("id = \"n2\"\nraft = {address:?}"), ""));
        assert_mentions(&message, &[&format!("node n2: raft address {address:?}"), reason]);
    }
    // Other fields are checked too, and a node whose id is bad is named by its entry.
    let message = invalid(&two_nodes("id = \"two\"\nraft = \"b:1\"\nhttp = \"b\"", ""));
    assert_mentions(&message, &["node entry 2: http address \"b\" has no port"]);
}

#[test]
fn good_addresses() {
    let nodes = "id = \"n2\"\nraft = \"[fe80::1]:7002\"\nhttp = \"node-2.example.COM:80\"\nredis = \"localhost:6379\"";
    ClusterConfig::from_toml_str(&two_nodes(nodes, "")).unwrap();
}

#[test]
fn raft_settings() {
    let node2 = "id = \"n2\"\nraft = \"b:1\"";
    let message = invalid(&two_nodes(node2, "[raft]\nheartbeat_interval_ticks = 5\nelection_timeout_ticks = 5"));
    assert_mentions(&message, &["raft.election_timeout_ticks (5) must be greater than heartbeat_interval_ticks (5)"]);

    let message = invalid(&two_nodes(node2, "[raft]\ntick_ms = 0"));
    assert_mentions(&message, &["raft.tick_ms is 0", "default 10"]);

    let message = invalid(&two_nodes(node2, "[raft]\nmax_inflight = 0"));
    assert_mentions(&message, &["raft.max_inflight is 0", "default 64"]);

    let message = invalid(&two_nodes(node2, "[raft]\nlease_reads = true\ncheck_quorum = false"));
    assert_mentions(&message, &["raft.lease_reads is on but check_quorum is off"]);
}

#[test]
fn the_core_validation_error_surfaces_naming_the_field() {
    let node2 = "id = \"n2\"\nraft = \"b:1\"";
    let Err(ConfigError::Invalid { problems, .. }) =
        ClusterConfig::from_toml_str(&two_nodes(node2, "[raft]\nmax_uncommitted_bytes = 0"))
    else {
        panic!("max_uncommitted_bytes = 0 is refused");
    };
    let zero = InvalidConfig::Zero { field: "max_uncommitted_bytes", default: 64 << 20 };
    assert_eq!(problems, [ConfigProblem::Core(zero.clone())]);
    // The same error, word for word, as the core gives when it is built directly.
    let core = skiff_raft::Config { max_uncommitted_bytes: 0, ..skiff_raft::Config::new(NodeId(1)) };
    assert_eq!(core.validate(), Err(zero));
    assert_eq!(problems[0].to_string(), format!("raft.{}", core.validate().unwrap_err()));
}

#[test]
fn defaults_come_from_the_core() {
    let section = RaftSection::default();
    assert_eq!(section.core, skiff_raft::Config::default());
    let parsed =
        ClusterConfig::from_toml_str(&two_nodes("id = \"n2\"\nraft = \"b:1\"", "[raft]\ntick_ms = 20")).unwrap();
    assert_eq!(parsed.raft.core, skiff_raft::Config::default(), "keys left out take the core's defaults");
    assert_eq!(parsed.raft_config(NodeId(2)), skiff_raft::Config::new(NodeId(2)));
    // The runtime starts from the same defaults.
    let options = skiff::NodeOptions::new(NodeId(3));
    assert_eq!(options.raft, skiff_raft::Config::new(NodeId(3)));
    assert_eq!(options.tick, section.tick());
    assert_eq!(options.snapshot_after_entries, section.snapshot_after_entries);
    // An election timeout in time is the configured ticks times the tick.
    let options = skiff::NodeOptions::from_section(&parsed.raft, NodeId(2));
    assert_eq!(options.max_election_timeout(), Duration::from_millis(20 * 60));
}

#[test]
fn old_key_names_still_parse() {
    let node2 = "id = \"n2\"\nraft = \"b:1\"";
    let old =
        ClusterConfig::from_toml_str(&two_nodes(node2, "[raft]\nheartbeat_ticks = 3\nelection_ticks = 12")).unwrap();
    let new = ClusterConfig::from_toml_str(&two_nodes(
        node2,
        "[raft]\nheartbeat_interval_ticks = 3\nelection_timeout_ticks = 12",
    ))
    .unwrap();
    assert_eq!(old, new);
    assert_eq!((old.raft.core.heartbeat_interval_ticks, old.raft.core.election_timeout_ticks), (3, 12));
    // Written back, a file uses the core's names.
    let text = old.to_toml_string().unwrap();
    assert_mentions(&text, &["heartbeat_interval_ticks = 3", "election_timeout_ticks = 12"]);
    assert!(!text.contains("heartbeat_ticks") && !text.contains("seed"), "{text}");
}

#[test]
fn overrides_replace_file_settings_before_validation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.toml");
    let file = two_nodes("id = \"n2\"\nraft = \"b:1\"", "[raft]\nelection_ticks = 5\npre_vote = false");
    std::fs::write(&path, &file).unwrap();
    // The file alone is refused; an override of the same setting repairs it.
    assert!(ClusterConfig::load(&path).is_err());
    let overrides =
        [("election_timeout_ticks".to_string(), "50".to_string()), ("tick_ms".to_string(), "7".to_string())];
    let config = ClusterConfig::load_with_overrides(&path, &overrides).unwrap();
    assert_eq!(config.raft.core.election_timeout_ticks, 50);
    assert_eq!(config.raft.tick_ms, 7);
    assert!(!config.raft.core.pre_vote, "settings not overridden keep the file's value");
    // Applied in order: the last one wins (flags come after environment variables).
    let overrides = [("tick_ms".to_string(), "7".to_string()), ("tick_ms".to_string(), "9".to_string())];
    let mut section = RaftSection::default();
    for (key, value) in &overrides {
        section.set(key, value).unwrap();
    }
    assert_eq!(section.tick_ms, 9);
    // An override is validated like the file.
    let overrides = [("election_timeout_ticks".to_string(), "4".to_string())];
    let message = ClusterConfig::load_with_overrides(&path, &overrides).unwrap_err().to_string();
    assert_mentions(&message, &["cluster.toml", "raft.election_timeout_ticks (4) must be greater"]);
}

#[test]
fn overrides_are_refused_by_name() {
    let mut section = RaftSection::default();
    let message = section.set("election_tick", "50").unwrap_err().to_string();
    assert_mentions(&message, &["raft.election_tick", "no such setting", "election_timeout_ticks", "tick_ms"]);
    let message = section.set("pre_vote", "yes").unwrap_err().to_string();
    assert_mentions(&message, &["cannot set raft.pre_vote to \"yes\""]);
    let message = section.set("max_inflight", "-1").unwrap_err().to_string();
    assert_mentions(&message, &["cannot set raft.max_inflight to \"-1\""]);
    assert_eq!(section, RaftSection::default(), "a refused value changes nothing");
    // Flags use the current names only.
    assert!(section.set("heartbeat_ticks", "3").is_err());
}

#[test]
fn every_setting_is_listed_once_with_its_default() {
    let keys = RaftSection::keys_and_defaults();
    let names: Vec<&str> = keys.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(
        names,
        [
            "check_quorum",
            "election_timeout_ticks",
            "heartbeat_interval_ticks",
            "lease_reads",
            "max_append_bytes",
            "max_committed_bytes_per_ready",
            "max_inflight",
            "max_inflight_bytes",
            "max_uncommitted_bytes",
            "pre_vote",
            "snapshot_after_entries",
            "tick_ms",
        ]
    );
    let mut section = RaftSection::default();
    for (key, default) in &keys {
        section.set(key, default).unwrap();
    }
    assert_eq!(section, RaftSection::default());
    // docs/configuration.md has a row for each, with the same default.
    let page = include_str!("../../../docs/configuration.md");
    for (key, default) in &keys {
        let row = page.lines().find(|line| line.starts_with(&format!("| `{key}`")));
        let row = row.unwrap_or_else(|| panic!("docs/configuration.md has no row for {key}"));
        assert!(row.contains(&format!("`{default}`")), "docs/configuration.md: {key} defaults to {default}: {row}");
        assert!(row.contains(&format!("`--{}`", key.replace('_', "-"))), "{row}");
        assert!(row.contains(&format!("`SKIFF_{}`", key.to_uppercase())), "{row}");
    }
}

#[test]
fn every_problem_is_reported() {
    let text = "[cluster]\nname = \"\"\n[[node]]\nid = \"x\"\nraft = \"a\"\n[raft]\ntick_ms = 0";
    let Err(ConfigError::Invalid { problems, .. }) = ClusterConfig::from_toml_str(text) else { panic!() };
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert_eq!(problems[0], ConfigProblem::EmptyClusterName);
    assert!(matches!(problems[1], ConfigProblem::BadNodeId { entry: 1, .. }));
    assert!(matches!(problems[2], ConfigProblem::BadAddress { field: "raft", .. }));
    assert!(matches!(problems[3], ConfigProblem::ZeroSetting { field: "tick_ms", default: 10 }));
    let message = ClusterConfig::from_toml_str(text).unwrap_err().to_string();
    assert!(message.starts_with("cluster config has 4 problems:\n  - cluster.name is empty"), "{message}");
}

#[test]
fn demo_validates() {
    let demo = ClusterConfig::demo();
    demo.validate().unwrap();
    assert_eq!(demo.cluster.name, "demo");
    let addresses: Vec<_> = demo.node.iter().map(|node| (node.id.as_str(), node.raft.as_str())).collect();
    assert_eq!(addresses, [("n1", "127.0.0.1:7001"), ("n2", "127.0.0.1:7002"), ("n3", "127.0.0.1:7003")]);
    assert_eq!(demo.node[1].http.as_deref(), Some("127.0.0.1:8002"));
    assert_eq!(demo.node[2].redis.as_deref(), Some("127.0.0.1:6003"));
}

#[test]
fn node_lookup_and_peers() {
    let demo = ClusterConfig::demo();
    assert_eq!(demo.node(NodeId(2)).unwrap().raft, "127.0.0.1:7002");
    let message = demo.node(NodeId(9)).unwrap_err().to_string();
    assert_mentions(&message, &["node n9 is not in cluster \"demo\"", "n1, n2, n3", "--id"]);

    let voters = demo.voters();
    assert_eq!(voters.voters, Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]).voters);
    let address = "raft=127.0.0.1:7002 http=127.0.0.1:8002 redis=127.0.0.1:6002";
    assert_eq!(voters.address(NodeId(2)), Some(address), "the initial membership records each address");
    let peers: BTreeMap<NodeId, String> =
        [(NodeId(1), "127.0.0.1:7001".to_string()), (NodeId(3), "127.0.0.1:7003".to_string())].into();
    assert_eq!(demo.peers_of(NodeId(2)), peers);
}

#[test]
fn raft_config_maps_settings() {
    let text = two_nodes(
        "id = \"n2\"\nraft = \"b:1\"",
        "[raft]\ntick_ms = 20\nheartbeat_interval_ticks = 3\nelection_timeout_ticks = 12\npre_vote = false\n\
         lease_reads = true\nmax_inflight = 8\nmax_inflight_bytes = 1000\nmax_append_bytes = 100\n\
         max_uncommitted_bytes = 5000",
    );
    let config = ClusterConfig::from_toml_str(&text).unwrap();
    let core = config.raft_config(NodeId(2));
    assert_eq!(core.id, NodeId(2));
    assert_eq!(core.heartbeat_interval_ticks, 3);
    assert_eq!(core.election_timeout_ticks, 12);
    assert!(!core.pre_vote && core.check_quorum && core.lease_reads);
    assert_eq!((core.max_inflight, core.max_inflight_bytes, core.max_append_bytes), (8, 1000, 100));
    assert_eq!(core.max_uncommitted_bytes, 5000);
    assert_ne!(core.seed, config.raft_config(NodeId(1)).seed);
    core.validate().unwrap();
    assert_eq!(config.tick_interval(), Duration::from_millis(20));

    let defaults = ClusterConfig::demo().raft_config(NodeId(1));
    assert_eq!(defaults, skiff_raft::Config::new(NodeId(1)), "the [raft] defaults are the core's");
}

#[test]
fn toml_round_trip() {
    let mut config = ClusterConfig::demo();
    config.node.push(NodeConfig {
        id: "n4".to_string(),
        raft: "node4.example:7004".to_string(),
        raft_listen: Some("0.0.0.0:7004".to_string()),
        http: None,
        redis: None,
        join: true,
        cert: None,
        key: None,
    });
    config.raft.core.lease_reads = true;
    let text = config.to_toml_string().unwrap();
    assert_eq!(ClusterConfig::from_toml_str(&text).unwrap(), config, "{text}");
    assert!(!text.contains("redis = \"\""), "None fields are left out:\n{text}");
}

#[test]
fn nodes_that_join_later_are_not_initial_voters() {
    let text = r#"
        [cluster]
        name = "grow"
        [[node]]
        id = "n1"
        raft = "127.0.0.1:7001"
        [[node]]
        id = "n2"
        raft = "127.0.0.1:7002"
        join = true
    "#;
    let config = ClusterConfig::from_toml_str(text).unwrap();
    assert_eq!(config.voters().voters, Membership::with_voters([NodeId(1)]).voters);
    assert_eq!(config.voters().address(NodeId(2)), None, "a joiner is not an initial member");
    assert_eq!(config.peers_of(NodeId(1)).len(), 1, "a joiner's address is known from the start");
    let error = ClusterConfig::from_toml_str(&text.replace("id = \"n1\"", "id = \"n1\"\njoin = true")).unwrap_err();
    assert!(error.to_string().contains("every node has join = true"), "{error}");
}

#[test]
fn tls_and_auth_paths_are_relative_to_the_cluster_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
        [cluster]
        name = "secure"
        [tls]
        dir = "certs"
        verify_clients = true
        [auth]
        tokens = "tokens.toml"
        [[node]]
        id = "n1"
        raft = "10.0.0.1:7001"
        http = "10.0.0.1:8001"
        [[node]]
        id = "n2"
        raft = "10.0.0.2:7001"
        cert = "/etc/skiff/n2.pem"
        key = "n2-key.pem"
    "#;
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    let config = ClusterConfig::load(&path).unwrap();
    let n1 = config.tls_files(NodeId(1)).unwrap();
    assert_eq!(n1.ca, dir.path().join("certs/ca.pem"));
    assert_eq!(n1.cert, dir.path().join("certs/n1.pem"));
    assert_eq!(n1.key, dir.path().join("certs/n1-key.pem"));
    assert!(n1.verify_clients);
    let n2 = config.tls_files(NodeId(2)).unwrap();
    assert_eq!(n2.cert, std::path::PathBuf::from("/etc/skiff/n2.pem"), "absolute paths stay");
    assert_eq!(n2.key, dir.path().join("n2-key.pem"));
    assert_eq!(config.auth.as_ref().unwrap().tokens, dir.path().join("tokens.toml"));
    assert_eq!(config.exposure(NodeId(1)), None, "TLS and tokens: may listen anywhere");
    assert_eq!(ClusterConfig::demo().tls_files(NodeId(1)), None);
}

#[test]
fn tls_needs_a_ca_and_each_node_a_certificate() {
    let base = "[cluster]\nname = \"c\"\n[[node]]\nid = \"n1\"\nraft = \"127.0.0.1:7001\"\n";
    let error = ClusterConfig::from_toml_str(&format!("{base}[tls]\nverify_clients = true\n")).unwrap_err().to_string();
    assert!(error.contains("[tls] needs dir") && error.contains("node n1: [tls] has no dir"), "{error}");
    let error = ClusterConfig::from_toml_str(&format!("{base}[tls]\ndirectory = \"x\"\n")).unwrap_err().to_string();
    assert!(error.contains("unknown field `directory`"), "{error}");
    let explicit = base.replace("7001\"\n", "7001\"\ncert = \"n1.pem\"\nkey = \"n1.key\"\n");
    let config = ClusterConfig::from_toml_str(&format!("{explicit}[tls]\nca = \"ca.pem\"\n")).unwrap();
    assert_eq!(config.tls_files(NodeId(1)).unwrap().cert, std::path::PathBuf::from("n1.pem"));
}

#[test]
fn a_node_beyond_loopback_needs_tls_and_tokens_or_insecure() {
    let file = |extra: &str, http: &str| {
        ClusterConfig::from_toml_str(&format!(
            "[cluster]\nname = \"c\"\n{extra}\n[[node]]\nid = \"n1\"\nraft = \"127.0.0.1:7001\"\nhttp = \"{http}\"\nredis = \"[::1]:6001\"\n"
        ))
        .unwrap()
    };
    assert_eq!(file("", "127.0.0.1:8001").exposure(NodeId(1)), None, "loopback only");
    assert_eq!(file("", "localhost:8001").exposure(NodeId(1)), None);
    let open = file("", "0.0.0.0:8001").exposure(NodeId(1)).unwrap();
    assert!(
        open.contains("http 0.0.0.0:8001") && !open.contains("redis") && open.contains("[tls] and [auth]"),
        "{open}"
    );
    let named = file("", "db1.example:8001").exposure(NodeId(1)).unwrap();
    assert!(named.contains("http db1.example:8001"), "{named}");
    let tls_only = file("[tls]\ndir = \"certs\"", "0.0.0.0:8001").exposure(NodeId(1)).unwrap();
    assert!(tls_only.contains("no [auth]"), "{tls_only}");
    assert_eq!(file("insecure = true", "0.0.0.0:8001").exposure(NodeId(1)), None);
}
