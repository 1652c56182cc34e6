//! The real clients some integration tests drive against Skiff: binaries such as
//! `redis-cli`, Chromium and its driver, and Python modules such as `redis` (redis-py),
//! `consul` (py-consul) and `selenium`.
//!
//! A test asks [`present`] whether what it needs is here, from checks such as
//! [`program_version`] and [`python_modules`]. When something is missing the test is
//! skipped: [`present`] prints why, and how to install it, to the test's stderr and returns
//! false, and the test returns. With `SKIFF_REQUIRE_REAL_CLIENTS=1` (as `.ci/run` sets,
//! after installing them) a missing client fails the test instead, so CI cannot pass
//! without running them.
//!
//! The Python interpreter is `SKIFF_PYTHON`, or `python3` ([`python`]): the checks and the
//! tests' scripts use the same one.

use std::process::{Command, Output, Stdio};

/// What [`python_modules`] runs, with the modules' names as arguments: imports each (a
/// failed import exits non-zero) and prints the versions, `?` for a module that declares
/// none.
const VERSIONS: &str = r#"
import importlib, sys
shown = ["Python " + sys.version.split()[0]]
for name in sys.argv[1:]:
    shown.append(name + " " + str(getattr(importlib.import_module(name), "__version__", "?")))
print(", ".join(shown))
"#;

/// The Python interpreter the tests run: `SKIFF_PYTHON`, or `python3`.
pub fn python() -> String {
    std::env::var("SKIFF_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Whether `SKIFF_REQUIRE_REAL_CLIENTS=1`: a missing client fails the test instead of
/// skipping it.
fn required() -> bool {
    std::env::var("SKIFF_REQUIRE_REAL_CLIENTS").is_ok_and(|value| value == "1")
}

/// `program --version`, which must succeed: the first line it prints, or why it cannot
/// run and `install`, the command that installs it.
pub fn program_version(program: &str, install: &str) -> Result<String, String> {
    let problem = match run(Command::new(program).arg("--version")) {
        Ok(output) if output.status.success() => return Ok(first_line(&output.stdout)),
        Ok(output) => format!("`{program} --version` failed ({}): {}", output.status, last_line(&output.stderr)),
        Err(error) => format!("{program} not found ({error})"),
    };
    Err(format!("{problem} (install with: {install})"))
}

/// Which interpreter [`python`] is and the versions of `modules`, which it must import
/// ("python3: Python 3.11.2, redis 8.1.0"), or why it cannot and `install`, the command
/// that installs them.
pub fn python_modules(modules: &[&str], install: &str) -> Result<String, String> {
    let python = python();
    let names = modules.join(", ");
    let problem = match run(Command::new(&python).args(["-c", VERSIONS]).args(modules)) {
        Ok(output) if output.status.success() => {
            return Ok(format!("{python}: {}", first_line(&output.stdout)));
        }
        Ok(output) => format!("{python} cannot import {names}: {}", last_line(&output.stderr)),
        Err(error) => format!("{python} not found ({error}); set SKIFF_PYTHON to a Python 3 with {names}"),
    };
    Err(format!("{problem} (install with: {install})"))
}

/// True when every one of `checks` passed (and then prints what `test` uses). Otherwise
/// the clients are missing: prints that `test` is skipped and why, and returns false for
/// the test to return; or, with `SKIFF_REQUIRE_REAL_CLIENTS=1`, panics.
pub fn present(test: &str, checks: &[Result<String, String>]) -> bool {
    let problems: Vec<&str> = checks.iter().filter_map(|check| check.as_ref().err()).map(String::as_str).collect();
    if problems.is_empty() {
        let versions: Vec<&str> = checks.iter().filter_map(|check| check.as_ref().ok()).map(String::as_str).collect();
        eprintln!("{test}: using {}", versions.join("; "));
        return true;
    }
    let problems = problems.join("; ");
    assert!(
        !required(),
        "{test}: cannot run: {problems}; SKIFF_REQUIRE_REAL_CLIENTS=1 makes this a failure, not a skip"
    );
    eprintln!("{test}: skipped: {problems}");
    false
}

/// Runs `command` to completion with no stdin, its output captured.
fn run(command: &mut Command) -> std::io::Result<Output> {
    command.stdin(Stdio::null()).output()
}

/// The first line of `bytes`, trimmed: what a program's `--version` says.
fn first_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).lines().next().unwrap_or("").trim().to_string()
}

/// The last line of `bytes`, trimmed: where Python and most tools say what went wrong.
fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().lines().last().unwrap_or("").trim().to_string()
}
