//! Many seeds of whole clusters under faults, each checked after every event: no seed may
//! break a safety property, panic the core, or fail to make progress once faults stop.

use skiff_sim::{DEFAULT_STEPS, SweepOptions, SweepReport, run_sweep};

fn sweep(start_seed: u64, seeds: u64, nodes: u64) -> SweepReport {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    run_sweep(&SweepOptions { start_seed, seeds, nodes, steps: DEFAULT_STEPS, threads })
}

fn assert_no_violations(report: &SweepReport) {
    let failures: Vec<String> = report.failures.iter().map(ToString::to_string).collect();
    assert!(failures.is_empty(), "{}\n\n{}", failures.join("\n\n"), report.summary_line());
}

#[test]
fn three_node_clusters_keep_every_property_over_1000_seeds() {
    let report = sweep(0, 1000, 3);
    assert_no_violations(&report);
    assert!(report.stats.proposals_committed > 0, "{}", report.summary_line());
}

#[test]
fn five_node_clusters_keep_every_property_over_300_seeds() {
    let report = sweep(100_000, 300, 5);
    assert_no_violations(&report);
    assert!(report.stats.proposals_committed > 0, "{}", report.summary_line());
}
