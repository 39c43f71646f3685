//! Backpressure on publishers, the same for every protocol adapter: a
//! connection stops reading its socket while a queue it publishes to is
//! over its high-water mark (until it drains below the low-water mark),
//! while its consumers are past the flow mark (publishers that consume
//! nothing only), or while the store has too many writes queued.
//! [`Relief`] wakes paused publishers when a reason may have cleared, so
//! nothing polls. Also the wait on a durability ticket that connection
//! drivers use.

use crate::queue::Queue;
use crate::store::{Durable, Store};
use crate::vhost::Published;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Store writes queued above which publishers are paused.
pub(crate) const STORE_HIGH_WATER: usize = 200_000;

/// How long a publisher held back by a queue's flow mark waits for that
/// queue to deliver anything before it is let go: consumers that stopped
/// (a hung application) must not stop publishers, only slow ones do.
pub const FLOW_STALL: Duration = Duration::from_millis(250);

/// One publishing connection's view of the queues it filled.
#[derive(Debug, Default)]
pub struct Throttle {
    /// Queues holding the publisher back, each with the delivery count it
    /// last saw and since when that count stood still.
    held: Vec<Held>,
    /// Behind queues whose consumers stalled, at that delivery count: their
    /// flow mark holds nobody back until they deliver again.
    stalled: Vec<(Arc<Queue>, u64)>,
}

#[derive(Debug)]
struct Held {
    queue: Arc<Queue>,
    /// Delivery count and since when it stood still (`None`: not watched
    /// yet, or the queue is full rather than behind).
    watch: Option<(u64, Instant)>,
}

impl Throttle {
    /// Note what a publish reported: the queues it found full or behind.
    pub fn note(&mut self, published: &Published) {
        if published.throttle.is_empty() {
            return;
        }
        self.stalled.retain(|(q, _)| !q.is_deleted());
        for q in &published.throttle {
            if let Some(i) = self.stalled.iter().position(|(s, _)| Arc::ptr_eq(s, q)) {
                if self.stalled[i].1 == q.dispatched() && !q.is_full() {
                    continue;
                }
                // It delivered again (or filled up): it may hold again.
                self.stalled.swap_remove(i);
            }
            if !self.held.iter().any(|h| Arc::ptr_eq(&h.queue, q)) {
                self.held.push(Held {
                    queue: q.clone(),
                    watch: None,
                });
            }
        }
    }

    /// Whether a queue this connection published to still holds it back at
    /// `now`: full, or (unless the connection consumes) behind with
    /// consumers that still deliver. Queues that drained, were deleted or
    /// stalled are let go.
    pub fn queue_full(&mut self, consuming: impl FnOnce() -> bool, now: Instant) -> bool {
        if self.held.is_empty() {
            return false;
        }
        let consuming = consuming();
        let stalled = &mut self.stalled;
        self.held.retain_mut(|h| {
            let q = &h.queue;
            if q.is_deleted() {
                return false;
            }
            if q.is_full() {
                return true;
            }
            if consuming || !q.is_behind() {
                return false;
            }
            let n = q.dispatched();
            match h.watch {
                Some((seen, since)) if seen == n => {
                    if now >= since + FLOW_STALL {
                        stalled.push((q.clone(), n));
                        return false;
                    }
                    true
                }
                _ => {
                    h.watch = Some((n, now));
                    true
                }
            }
        });
        !self.held.is_empty()
    }

    /// Whether the publisher must pause at `now`: a queue it filled, or the
    /// store is behind. `consuming` (asked only while a queue holds it):
    /// the connection also consumes, so its reads carry acks; the flow mark
    /// never pauses it (the memory marks do).
    pub fn paused(
        &mut self,
        store: &dyn Store,
        consuming: impl FnOnce() -> bool,
        now: Instant,
    ) -> bool {
        store.backlog() > STORE_HIGH_WATER || self.queue_full(consuming, now)
    }
}

/// Wakes connections paused by backpressure when a reason to pause may
/// have cleared: a full queue drained below its low-water mark, or the
/// store committed a batch. One per broker. A paused connection registers
/// with [`Relief::notified`] (and `enable`s it) before it checks
/// [`Throttle::paused`] again, so a relief in between is never missed.
#[derive(Debug, Default)]
pub struct Relief {
    notify: tokio::sync::Notify,
}

impl Relief {
    /// Wake every paused connection (each checks again and may pause again).
    pub fn relieve(&self) {
        self.notify.notify_waiters();
    }

    /// Completes at the next [`Relief::relieve`] after it is enabled.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
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

/// Replies owed to a client in the order it asked for them (acknowledgements
/// of publishes, receipts), each held back until the write it covers is
/// durable.
/// The connection task awaits one ticket at a time
/// ([`OwedReplies::take_ticket`], then [`OwedReplies::resolved`]); replies
/// whose tickets have resolved come out of [`OwedReplies::ready`] in order.
#[derive(Debug)]
pub struct OwedReplies<T> {
    owed: std::collections::VecDeque<Owed<T>>,
}

#[derive(Debug)]
struct Owed<T> {
    reply: T,
    ticket: Option<Durable>,
    /// Its ticket is with the connection task.
    held: bool,
}

/// The store failed: an owed reply can never be sent truthfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreFailed;

impl<T> Default for OwedReplies<T> {
    fn default() -> Self {
        Self {
            owed: std::collections::VecDeque::new(),
        }
    }
}

impl<T> OwedReplies<T> {
    /// Owe `reply`, due once `ticket` (if any) resolves and every earlier
    /// reply is out.
    pub fn push(&mut self, reply: T, ticket: Option<Durable>) {
        self.owed.push_back(Owed {
            reply,
            ticket,
            held: false,
        });
    }

    /// The oldest unresolved ticket, for the connection task to await.
    pub fn take_ticket(&mut self) -> Option<Durable> {
        let front = self.owed.front_mut()?;
        if front.held {
            return None;
        }
        let t = front.ticket.take()?;
        front.held = true;
        Some(t)
    }

    /// The ticket from [`OwedReplies::take_ticket`] resolved (`ok`: the
    /// write is durable).
    pub fn resolved(&mut self, ok: bool) -> Result<(), StoreFailed> {
        if let Some(front) = self.owed.front_mut().filter(|f| f.held) {
            front.held = false;
            if !ok {
                return Err(StoreFailed);
            }
        }
        Ok(())
    }

    /// Hand every reply now due to `send`, oldest first.
    pub fn ready(&mut self, mut send: impl FnMut(T)) -> Result<(), StoreFailed> {
        use tokio::sync::oneshot::error::TryRecvError;
        while let Some(front) = self.owed.front_mut() {
            if front.held {
                return Ok(());
            }
            if let Some(t) = front.ticket.as_mut() {
                match t.try_recv() {
                    Ok(()) => front.ticket = None,
                    Err(TryRecvError::Empty) => return Ok(()),
                    Err(TryRecvError::Closed) => return Err(StoreFailed),
                }
            }
            if let Some(o) = self.owed.pop_front() {
                send(o.reply);
            }
        }
        Ok(())
    }

    /// Whether nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.owed.is_empty()
    }

    /// Forget everything owed (the connection is ending in error).
    pub fn clear(&mut self) {
        self.owed.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[test]
    fn replies_leave_in_order_once_durable() {
        let mut owed = OwedReplies::default();
        let (tx, rx) = oneshot::channel();
        owed.push("a", Some(rx));
        owed.push("b", None);
        let mut out = Vec::new();
        owed.ready(|r| out.push(r)).unwrap();
        assert!(out.is_empty(), "b waits behind a");
        let mut ticket = owed.take_ticket().expect("a's ticket");
        assert!(owed.take_ticket().is_none(), "one at a time");
        tx.send(()).unwrap();
        assert_eq!(ticket.try_recv(), Ok(()));
        owed.resolved(true).unwrap();
        owed.ready(|r| out.push(r)).unwrap();
        assert_eq!(out, ["a", "b"]);
        assert!(owed.is_empty());
    }

    #[test]
    fn a_failed_store_is_reported() {
        let mut owed = OwedReplies::default();
        let (tx, rx) = oneshot::channel::<()>();
        owed.push(1, Some(rx));
        drop(tx);
        assert_eq!(owed.ready(|_| {}), Err(StoreFailed));
        let (_tx, rx) = oneshot::channel::<()>();
        owed.push(2, Some(rx));
        owed.clear();
        let (_tx2, rx2) = oneshot::channel::<()>();
        owed.push(3, Some(rx2));
        let _ = owed.take_ticket();
        assert_eq!(owed.resolved(false), Err(StoreFailed));
    }
}
