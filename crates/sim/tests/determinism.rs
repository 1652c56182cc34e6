//! A seed is a complete description of a run: running it twice gives the same trace, event
//! for event, so any failing seed can be replayed and debugged.

use skiff_sim::{SimOptions, TraceMode, run_seed};

fn full_run(seed: u64, nodes: u64) -> skiff_sim::SeedReport {
    run_seed(&SimOptions { seed, nodes, steps: 3000, trace: TraceMode::Full })
}

#[test]
fn the_same_seed_gives_the_same_trace_twice() {
    for (seed, nodes) in [(7, 3), (8, 5)] {
        let first = full_run(seed, nodes);
        let second = full_run(seed, nodes);
        assert!(first.failure.is_none(), "{:?}", first.failure);
        assert!(first.trace.len() > 100, "the trace has only {} lines", first.trace.len());
        assert_eq!(first.trace, second.trace, "seed {seed} ran differently twice");
        assert_eq!(first.stats, second.stats);
    }
}

#[test]
fn different_seeds_give_different_runs() {
    assert_ne!(full_run(1, 3).trace, full_run(2, 3).trace);
}
