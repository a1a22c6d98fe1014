//! Removes finished actions' exec directories on a background thread, off the critical
//! path of the build.
//!
//! An exec directory holds every input's link, the output directory, a home and a temp
//! directory: removing it is a couple of dozen `unlink`/`rmdir` calls, a large share of a
//! trivial action's cost, and nothing waits for it. So the slot of the action is freed at
//! once, and one thread removes the directories; a build waits for it only
//! at its end ([`drain`]), so it leaves no scratch behind. A build killed before that
//! leaves its directories to `Store::reclaim_scratch`, as any crash does. Main functions:
//! [`remove_later`], [`drain`].

use std::path::PathBuf;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Condvar, Mutex, OnceLock};

struct Trash {
    queue: Mutex<Sender<PathBuf>>,
    /// Directories queued and not yet removed.
    pending: Mutex<usize>,
    emptied: Condvar,
}

fn trash() -> Option<&'static Trash> {
    static TRASH: OnceLock<Option<Trash>> = OnceLock::new();
    TRASH
        .get_or_init(|| {
            let (tx, rx) = channel::<PathBuf>();
            let spawned = std::thread::Builder::new()
                .name("mlbuild-trash".into())
                // Not at a lower priority: on a loaded machine a niced thread starves,
                // and the build's final `drain` then waits for it (measured: a 1,000-action
                // build 35% slower under load 14).
                .spawn(move || {
                    for dir in rx {
                        // What cannot be removed now is reclaimed with the process's
                        // scratch.
                        let _ = mlbuild_store::remove_tree(&dir);
                        let t = trash().expect("the thread exists only with its queue");
                        let mut pending = t.pending.lock().unwrap_or_else(|e| e.into_inner());
                        *pending -= 1;
                        if *pending == 0 {
                            t.emptied.notify_all();
                        }
                    }
                });
            spawned.ok().map(|_| Trash {
                queue: Mutex::new(tx),
                pending: Mutex::new(0),
                emptied: Condvar::new(),
            })
        })
        .as_ref()
}

/// Queues `dir` for removal; removes it right here if no thread could be started.
pub(crate) fn remove_later(dir: PathBuf) {
    let Some(t) = trash() else {
        let _ = mlbuild_store::remove_tree(&dir);
        return;
    };
    *t.pending.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    let sent = t.queue.lock().unwrap_or_else(|e| e.into_inner()).send(dir);
    if let Err(returned) = sent {
        let _ = mlbuild_store::remove_tree(&returned.0);
        *t.pending.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
    }
}

/// Waits until every queued directory is removed.
pub(crate) fn drain() {
    let Some(t) = trash() else { return };
    let mut pending = t.pending.lock().unwrap_or_else(|e| e.into_inner());
    while *pending > 0 {
        pending = t.emptied.wait(pending).unwrap_or_else(|e| e.into_inner());
    }
}
