//! Runs the logic of `examples/embedded.rs` and checks what a user of it relies on: every
//! node reports the same latest committed entry, the fifth one n1 proposed. The example's
//! cluster file, with ports from the testkit.

#[path = "../examples/embedded.rs"]
mod embedded;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_reports_the_same_latest_committed_entry() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let cluster = skiff_testkit::cluster_file::ClusterFile::builder("embedded", 3).build().config();
    let latest = embedded::run_cluster(&cluster, data_dir.path()).await.expect("the example runs");
    assert_eq!(latest.len(), 3);
    for (id, entry) in &latest {
        let (_, text) = entry.as_ref().unwrap_or_else(|| panic!("{id} has nothing committed"));
        assert_eq!(text, "entry 5 from n1", "{id}");
    }
    assert!(latest.windows(2).all(|pair| pair[0].1 == pair[1].1), "{latest:?}");
}
