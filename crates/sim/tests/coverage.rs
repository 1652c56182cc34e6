//! The simulator must not quietly test nothing: over a handful of seeds, every kind of fault
//! and every part of the workload actually happens.

use skiff_sim::{SweepOptions, run_sweep};

#[test]
fn faults_and_workload_are_all_exercised() {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let report = run_sweep(&SweepOptions { start_seed: 500, seeds: 40, nodes: 3, steps: 4000, threads });
    let stats = report.stats;
    let summary = report.summary_line();
    assert!(report.failures.is_empty(), "{summary}");
    let counts = [
        ("crashes", stats.crashes),
        ("crashes inside a Ready", stats.mid_ready_crashes),
        ("restarts", stats.restarts),
        ("partitions", stats.partitions),
        ("pauses", stats.pauses),
        ("dropped messages", stats.drops),
        ("duplicated messages", stats.duplicates),
        ("elections", stats.elections),
        ("committed proposals", stats.proposals_committed),
        ("linearizable reads served", stats.reads),
        ("compactions", stats.compactions),
        ("snapshots sent", stats.snapshots_sent),
        ("snapshots installed", stats.snapshots_installed),
        ("membership changes", stats.membership_changes),
        ("leader transfers", stats.transfers),
    ];
    for (what, count) in counts {
        assert!(count > 0, "no {what} in 40 seeds: {summary}");
    }
}
