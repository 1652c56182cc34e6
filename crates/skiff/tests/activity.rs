//! `Node::activity`, what the dashboard's event stream shows of a node: the log's tail it
//! reports agrees with the status it comes with, even when writes arrive with the request.

use skiff::activity::Seen;
use skiff_testkit::node::{Command, Journal, MemoryCluster};

/// The tail ends at `last_log_id`: entries proposed in the same batch of requests are
/// written before the tail is read (else a frame shows a last entry its log row lacks, or
/// a follower's stale tail under a newer last entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_tail_ends_at_the_last_log_id_while_writes_arrive() {
    let cluster = MemoryCluster::<Journal>::new(3);
    let leader = cluster.leader().await;
    let node = cluster.node(leader);
    for round in 0..50 {
        let writes =
            futures_util::future::join_all((0..4).map(|i| node.propose(Command::Push(format!("{round}/{i}")))));
        let (written, activity) = tokio::join!(writes, node.activity(Seen::default()));
        assert!(written.iter().all(Result::is_ok), "round {round}: {written:?}");
        let activity = activity.expect("activity");
        let last = activity.status.last_log_id;
        assert_eq!(activity.log_tail.last().copied(), Some(last), "round {round}: {:?}", activity.log_tail);
        assert!(activity.log_tail.len() <= 24 && activity.status.commit <= last.index, "round {round}");
    }
    cluster.shutdown().await;
}
