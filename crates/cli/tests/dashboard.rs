//! The dashboard in a real browser: headless Chromium, driven by Selenium from
//! `tests/browser/dashboard.py`, against a `skiff demo` on free ports. The page must show a
//! leader, let a person kill it and see another take over, put a key and see its entry
//! committed in every node's log view, and restart the killed node and see it catch up.
//! Screenshots of each state are saved in `<target>/tmp/dashboard-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (or `SKIFF_CHROMIUM` and
//! `SKIFF_CHROMEDRIVER`, their paths) and Python's `selenium` (in `SKIFF_PYTHON`, default
//! `python3`); without them the test is skipped with a message, or fails under
//! `SKIFF_REQUIRE_REAL_CLIENTS=1`, as the testkit's `real_clients` has it.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{Demo, stderr, stdout};
use skiff::NodeId;
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::real_clients;

/// Whether Chromium, its driver and Selenium are here; if not, `test` is skipped, or fails
/// when real clients are required.
fn browser_present(test: &str) -> bool {
    let chromium = std::env::var("SKIFF_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    let driver = std::env::var("SKIFF_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".to_string());
    let checks = [
        installed("Chromium", &chromium, "chromium"),
        installed("chromedriver", &driver, "chromium-driver"),
        real_clients::python_modules(&["selenium"], "pip install selenium"),
    ];
    real_clients::present(test, &checks)
}

/// `path`, if there is a file there; otherwise that `what` is missing, and the Debian
/// package that installs it.
fn installed(what: &str, path: &str, package: &str) -> Result<String, String> {
    if Path::new(path).exists() {
        return Ok(path.to_string());
    }
    Err(format!("no {what} at {path} (install with: apt-get install {package})"))
}

#[test]
fn a_person_sees_an_election_kills_the_leader_and_writes_through_the_dashboard() {
    if !browser_present("a_person_sees_an_election_kills_the_leader_and_writes_through_the_dashboard") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = ClusterFile::builder("dashboard", 3).http().redis().build();
    let demo = Demo::start(dir.path(), &file, &[]);
    let first = file.node(NodeId(1)).http.clone().expect("an http address");
    let url = format!("http://{first}/");
    assert!(demo.banner.contains(&url), "the banner names the dashboard's address {url}:\n{}", demo.banner);
    let addresses: Vec<String> =
        (1..=3).map(|id| format!("n{id}={}", file.node(NodeId(id)).http.clone().expect("an http address"))).collect();
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.py");
    let output = Command::new(real_clients::python())
        .arg(&script)
        .arg(&url)
        .arg(&shots)
        .arg(addresses.join(","))
        .stdin(Stdio::null())
        .output()
        .expect("run the browser test");
    assert!(
        output.status.success(),
        "the browser test failed ({:?}); screenshots in {}\nstdout:\n{}\nstderr:\n{}\ndemo's log:\n{}",
        output.status,
        shots.display(),
        stdout(&output),
        stderr(&output),
        demo.log()
    );
    eprintln!("{}", stderr(&output));
    let (status, rest) = demo.stop();
    assert_eq!(status.code(), Some(0), "the demo stops cleanly after the kill and restart: {rest:?}");
}
