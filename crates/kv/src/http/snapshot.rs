//! `GET /v1/snapshot` (Consul's route): a backup of the whole keyspace, streamed.
//!
//! The state is taken at a linearizable point: a read barrier (ReadIndex, as a consistent
//! read), then, on the apply thread, a copy-on-write view of the state at the index applied
//! there, with that index's term and membership ([`skiff::Node::snapshot_now`]). The view
//! is written out on a blocking thread into a backup file ([`skiff_storage::BackupWriter`],
//! the format in `docs/operations.md`), which flows to the client through a small bounded
//! channel: the node never holds the encoded state, and a slow client slows the writer,
//! not the node. Writes go on meanwhile; the backup does not see them.
//!
//! The answer is 200 once the barrier passed; a failure after that (rare: the writer's own
//! error) cuts the stream short, and the backup then has no trailer, which every reader
//! refuses. With `[auth]` the route needs a management token: it reads every key.

use std::io::{self, BufWriter, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use skiff_storage::{BackupHeader, BackupWriter};
use tokio::sync::mpsc;

use super::*;

/// What the backup's header names as the data's format: the KV store's snapshot.
pub const STATE_MACHINE: &str = "skiff-kv";

/// Chunks in flight between the writer thread and the connection (each up to the buffer's
/// size): the memory a backup takes beyond the state's view.
const CHANNEL_CHUNKS: usize = 4;
const CHUNK_BYTES: usize = 256 << 10;

pub(super) async fn snapshot(State(api): Shared) -> ApiResult {
    let (meta, data) = api.node.snapshot_now().await.map_err(|error| api.fail(error))?;
    let created_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64);
    let header = BackupHeader {
        last_log_id: meta.last_log_id,
        cluster: api.cluster.cluster.name.clone(),
        membership: meta.membership,
        node: api.node.id(),
        created_unix_ms,
        state_machine: STATE_MACHINE.to_string(),
    };
    let (sender, mut receiver) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
    let index = header.last_log_id.index.0;
    let term = header.last_log_id.term.0;
    tokio::task::spawn_blocking(move || {
        let written = (|| {
            let out = BufWriter::with_capacity(CHUNK_BYTES, ChannelWriter(sender.clone()));
            let mut backup = BackupWriter::new(out, &header)?;
            data(&mut backup)?;
            backup.finish().map(|_| ())
        })();
        if let Err(error) = written {
            // The client hung up (nothing to tell), or the writer failed: cut the stream.
            tracing::warn!(%error, index, "a backup stream stopped early");
            let _ = sender.blocking_send(Err(error));
        }
    });
    let stream = futures_util::stream::poll_fn(move |context| receiver.poll_recv(context));
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (header::CONTENT_DISPOSITION, format!("attachment; filename=\"skiff-{index}.snap\"")),
        (header::HeaderName::from_static("x-consul-index"), index.to_string()),
        (header::HeaderName::from_static("x-skiff-index"), index.to_string()),
        (header::HeaderName::from_static("x-skiff-term"), term.to_string()),
    ];
    Ok((headers, Body::from_stream(stream)).into_response())
}

/// Sends what is written to the connection's body, waiting while the channel is full.
struct ChannelWriter(mpsc::Sender<io::Result<Bytes>>);

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(data)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client closed the connection"))?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
