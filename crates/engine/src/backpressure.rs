//! Backpressure on publishers, the same for every protocol adapter: a
//! connection stops reading its socket while a queue it publishes to is
//! over its high-water mark (until it drains below the low-water mark) or
//! while the store has too many writes queued. Also the wait on a
//! durability ticket that connection tasks use in their `select!` loops.

use crate::queue::Queue;
use crate::store::{Durable, Store};
use crate::vhost::Published;
use std::sync::Arc;

/// Store writes queued above which publishers are paused.
pub const STORE_HIGH_WATER: usize = 200_000;

/// One publishing connection's view of the queues it filled.
#[derive(Debug, Default)]
pub struct Throttle {
    full: Option<Arc<Queue>>,
}

impl Throttle {
    /// Note what a publish reported: the queue it found full, if any.
    pub fn note(&mut self, published: &Published) {
        if published.throttle.is_some() {
            self.full.clone_from(&published.throttle);
        }
    }

    /// Whether a queue this connection published to is still full; clears
    /// itself once the queue drains (or is deleted).
    pub fn queue_full(&mut self) -> bool {
        if self
            .full
            .as_ref()
            .is_some_and(|q| q.is_full() && !q.is_deleted())
        {
            return true;
        }
        self.full = None;
        false
    }

    /// Whether the publisher must pause: a queue it filled, or the store is
    /// behind.
    pub fn paused(&mut self, store: &dyn Store) -> bool {
        store.backlog() > STORE_HIGH_WATER || self.queue_full()
    }
}

/// Wait for the durability ticket in `ticket`: `true` once the write is
/// on disk, `false` if the store failed. With no ticket it never returns,
/// so a `select!` branch on it simply stays idle.
pub async fn wait_durable(ticket: &mut Option<Durable>) -> bool {
    match ticket.as_mut() {
        Some(t) => t.await.is_ok(),
        None => std::future::pending().await,
    }
}
