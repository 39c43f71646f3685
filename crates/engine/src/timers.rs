//! What must happen at a time without anyone asking: a queue's expired
//! head is dropped or dead-lettered within its TTL, an unused queue with
//! `x-expires` is deleted, a delayed message is released.
//!
//! One thread per broker, started the first time anything is scheduled (a
//! broker whose queues use no TTL never starts it), sleeps until the
//! earliest deadline and calls [`Timed::fire`]. A queue schedules at most
//! one deadline at a time ahead of the one it already has, so the schedule
//! holds about one entry per queue with a timed head. Entries are weak: a
//! deleted queue's deadline fires into nothing.

use parking_lot::{Condvar, Mutex};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

/// Something the timers call back.
pub(crate) trait Timed: Send + Sync {
    /// A deadline it scheduled has come.
    fn fire(self: Arc<Self>);
}

#[derive(Default)]
struct Inner {
    /// Deadlines, ordered; the `u64` keeps equal instants apart.
    due: Mutex<BTreeMap<(Instant, u64), Weak<dyn Timed>>>,
    wake: Condvar,
    stop: AtomicBool,
    started: OnceLock<()>,
    /// Tie-breaker for equal deadlines.
    next: AtomicU64,
}

/// A broker's timer thread (see the module docs). Dropping it stops the
/// thread.
#[derive(Clone, Default)]
pub(crate) struct Timers {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Timers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Timers")
    }
}

impl Timers {
    /// Call `target.fire()` at `at` (or soon after).
    pub(crate) fn schedule(&self, at: Instant, target: Weak<dyn Timed>) {
        self.start();
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let mut due = self.inner.due.lock();
        let earliest = due.keys().next().is_none_or(|&(first, _)| at < first);
        due.insert((at, n), target);
        drop(due);
        if earliest {
            self.inner.wake.notify_one();
        }
    }

    /// Stop the thread (the broker is going away).
    pub(crate) fn stop(&self) {
        self.inner.stop.store(true, Ordering::Release);
        self.inner.wake.notify_one();
    }

    fn start(&self) {
        self.inner.started.get_or_init(|| {
            let inner = Arc::downgrade(&self.inner);
            let spawned = std::thread::Builder::new()
                .name("switchyard-timers".into())
                .spawn(move || run(&inner));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the timer thread; TTL and x-expires act only when a queue is used");
            }
        });
    }
}

fn run(inner: &Weak<Inner>) {
    loop {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut fired = Vec::new();
        {
            let mut due = inner.due.lock();
            loop {
                if inner.stop.load(Ordering::Acquire) {
                    return;
                }
                let now = Instant::now();
                while let Some(entry) = due.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    fired.push(entry.remove());
                }
                if !fired.is_empty() {
                    break;
                }
                match due.keys().next() {
                    Some(&(at, _)) => {
                        inner.wake.wait_until(&mut due, at);
                    }
                    None => {
                        // Nothing scheduled: wait for a schedule (or stop),
                        // waking now and then so a dropped broker's thread
                        // ends.
                        inner
                            .wake
                            .wait_for(&mut due, std::time::Duration::from_secs(1));
                        if Arc::strong_count(&inner) == 1 {
                            return;
                        }
                    }
                }
            }
        }
        drop(inner);
        for t in fired {
            if let Some(t) = t.upgrade() {
                t.fire();
            }
        }
    }
}
