//! The key-value fuzz targets' checks (`fuzz/src/kv_restore.rs` and `fuzz/src/http.rs`,
//! see `docs/fuzzing.md`) as property tests, so `cargo test` runs them on stable:
//!
//! - the snapshot decoder (`KvStore::restore`) on random bytes and on the snapshots of
//!   stores built from random writes, whole or changed a little: no panic, a snapshot
//!   restores to the same store, and a restored store snapshots to bytes that restore to it;
//! - the HTTP API on random and built requests (routes, keys, query strings of the API's
//!   parameters with edge-case values, headers, bodies) against an in-process node: no
//!   panic and never a 500.
//!
//! The RESP parser's property tests are `resp_properties.rs`.

// Each target's module brings its own copy of the shared helpers (`cursor.rs`), so that
// it stands alone in the fuzz crate and here.
#![allow(clippy::duplicate_mod)]

use proptest::prelude::*;

#[path = "../../../fuzz/src/http.rs"]
mod http;
#[path = "../../../fuzz/src/kv_restore.rs"]
mod kv_restore;

fn input(mode: u8, rest: Vec<u8>) -> Vec<u8> {
    let mut input = vec![mode];
    input.extend(rest);
    input
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Mode: bit 0 set builds a store (else raw bytes, after a version byte if bit 1 is clear).
    #[test]
    fn kv_snapshots(mode in any::<u8>(), rest in prop::collection::vec(any::<u8>(), 0..768)) {
        kv_restore::check(&input(mode, rest));
    }

    /// Mode: bit 0 set builds the request target (else raw bytes).
    #[test]
    fn http_requests(mode in any::<u8>(), rest in prop::collection::vec(any::<u8>(), 0..256)) {
        http::check(&input(mode, rest));
    }
}

/// Found by the `http_request` fuzz target: a log page from past the end of the log (on a
/// node with a `MemLogStore`) panicked the node's driver thread, and every later request
/// failed. Now it is an empty page, and the node goes on answering.
#[test]
fn a_log_page_from_past_the_end_is_empty() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    let get = |target: &str| {
        let request = Request::get(target).body(Body::empty()).unwrap();
        http::send(http::harness(), request, std::time::Duration::from_secs(10)).expect("an answer in time")
    };
    for target in ["/v1/skiff/log?from=18446744073709550614", "/v1/skiff/log?from=18446744073709551615&limit=3"] {
        let (status, body) = get(target);
        assert_eq!(status, StatusCode::OK, "{target}: {}", String::from_utf8_lossy(&body));
        let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(page["entries"], serde_json::json!([]), "{target}");
    }
    assert_eq!(get("/v1/skiff/status").0, StatusCode::OK);
}

/// The inputs libFuzzer found (`fuzz/regressions/kv_restore/`): key and value lengths that
/// add up past `u64::MAX` panicked the snapshot decoder; they are refused.
#[test]
fn kv_restore_regressions() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/kv_restore");
    let files = std::fs::read_dir(&dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
    let mut checked = 0;
    for file in files {
        kv_restore::check(&std::fs::read(file.expect("a directory entry").path()).expect("an input"));
        checked += 1;
    }
    assert!(checked > 0, "no inputs in {}", dir.display());
}
