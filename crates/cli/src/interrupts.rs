//! Ctrl-C for the long-running commands (`bench`, `check`): the first signal asks the
//! command to wind down and report; what the second does is the command's choice.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::signal::unix::{SignalKind, signal};

/// Counts `kinds` on a thread of its own. The first prints `first` on standard error; with
/// `exit_on_second`, the second exits the process with that code at once (otherwise the
/// command reads the count and stops its waits).
pub fn count(kinds: &[SignalKind], first: String, exit_on_second: Option<u8>) -> std::io::Result<Arc<AtomicUsize>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let listeners = {
        let _context = runtime.enter();
        kinds.iter().map(|&kind| signal(kind)).collect::<std::io::Result<Vec<_>>>()?
    };
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        runtime.block_on(async move {
            let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
            for mut listener in listeners {
                let arrived = arrived.clone();
                tokio::spawn(async move { while listener.recv().await.is_some() && arrived.send(()).is_ok() {} });
            }
            while arrivals.recv().await.is_some() {
                if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    use std::io::Write as _;
                    let _ = writeln!(std::io::stderr(), "{first}");
                } else if let Some(code) = exit_on_second {
                    std::process::exit(i32::from(code));
                }
            }
        })
    })?;
    Ok(count)
}

/// Delivers `kinds` as they arrive, as signal numbers, from a thread of its own (`skiff
/// lock` passes them on to its command).
pub fn listen(kinds: &[SignalKind]) -> std::io::Result<std::sync::mpsc::Receiver<i32>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let listeners = {
        let _context = runtime.enter();
        kinds.iter().map(|&kind| Ok((kind.as_raw_value(), signal(kind)?))).collect::<std::io::Result<Vec<_>>>()?
    };
    let (sender, arrivals) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        runtime.block_on(async move {
            let mut tasks = Vec::new();
            for (number, mut listener) in listeners {
                let sender = sender.clone();
                tasks.push(tokio::spawn(async move {
                    while listener.recv().await.is_some() && sender.send(number).is_ok() {}
                }));
            }
            for task in tasks {
                let _ = task.await;
            }
        })
    })?;
    Ok(arrivals)
}
