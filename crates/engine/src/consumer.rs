//! Consumers, their credit, and the outbox through which queues hand
//! deliveries to a connection.
//!
//! Credit is what keeps memory bounded: a queue hands a consumer a message
//! only while the consumer has credit — its prefetch window (per consumer and
//! per channel) is not full *and* fewer than [`PENDING_LIMIT`] deliveries sit
//! unwritten in its connection's outbox. A connection that stops writing
//! (slow socket) therefore stops receiving, and other consumers get the
//! messages instead.

use crate::queue::Queue;
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use switchyard_model::{FieldTable, FieldValue, Message};
use tokio::sync::Notify;

/// Deliveries a consumer may have queued in its outbox but not yet written.
pub const PENDING_LIMIT: u32 = 512;

/// Prefetch shared by all consumers of one channel (AMQP `global` qos).
#[derive(Debug, Default)]
pub struct ChannelCredit {
    /// Channel-wide unacked limit; 0 is unlimited.
    prefetch: AtomicU32,
    /// Unacked deliveries on the channel.
    unacked: AtomicU32,
}

impl ChannelCredit {
    /// The channel-wide limit (0 = unlimited).
    pub fn prefetch(&self) -> u32 {
        self.prefetch.load(Ordering::Relaxed)
    }

    /// Set the channel-wide limit (0 = unlimited).
    pub fn set_prefetch(&self, n: u32) {
        self.prefetch.store(n, Ordering::Relaxed);
    }

    /// Reserve one unacked slot if the limit allows.
    fn try_take(&self) -> bool {
        let limit = self.prefetch.load(Ordering::Relaxed);
        self.unacked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (limit == 0 || n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        let _ = self
            .unacked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Unacked deliveries counted on the channel.
    pub fn unacked(&self) -> u32 {
        self.unacked.load(Ordering::Relaxed)
    }
}

/// Parameters of a new consumer.
#[derive(Debug, Clone, Default)]
pub struct ConsumerSpec {
    /// Consumer tag, unique per channel.
    pub tag: String,
    /// Adapter-defined channel number the deliveries belong to.
    pub channel: u16,
    /// Deliveries are settled as soon as they are written.
    pub no_ack: bool,
    /// No other consumer may share the queue.
    pub exclusive: bool,
    /// Per-consumer unacked limit; 0 = unlimited.
    pub prefetch: u32,
    /// Consumer arguments.
    pub arguments: FieldTable,
}

/// A subscription of one channel to one queue.
#[derive(Debug)]
pub struct Consumer {
    /// What the client asked for.
    pub spec: ConsumerSpec,
    /// Unacked deliveries of this consumer.
    unacked: AtomicU32,
    /// Deliveries in the outbox, not yet written to the socket.
    pending: AtomicU32,
    /// `x-priority`: higher-priority consumers of a queue are served first
    /// while they have credit.
    priority: i64,
    /// The channel's shared window.
    pub channel_credit: Arc<ChannelCredit>,
    /// Where deliveries go.
    pub outbox: Arc<Outbox>,
}

impl Consumer {
    /// A consumer that delivers into `outbox`.
    pub fn new(
        spec: ConsumerSpec,
        channel_credit: Arc<ChannelCredit>,
        outbox: Arc<Outbox>,
    ) -> Self {
        let priority = spec
            .arguments
            .get("x-priority")
            .and_then(FieldValue::as_i64)
            .unwrap_or(0);
        Self {
            spec,
            unacked: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            priority,
            channel_credit,
            outbox,
        }
    }

    /// Take credit for one delivery, if there is any. Called by the queue
    /// under its lock.
    pub(crate) fn try_take_credit(&self) -> bool {
        if self.pending.load(Ordering::Acquire) >= PENDING_LIMIT {
            return false;
        }
        if !self.spec.no_ack {
            let limit = self.spec.prefetch;
            if limit != 0 && self.unacked.load(Ordering::Acquire) >= limit {
                return false;
            }
            if !self.channel_credit.try_take() {
                return false;
            }
            self.unacked.fetch_add(1, Ordering::AcqRel);
        }
        self.pending.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// The connection wrote one delivery of this consumer to its socket.
    pub fn written(&self) {
        let _ = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// One unacked delivery of this consumer was settled.
    pub fn settled(&self) {
        if self.spec.no_ack {
            return;
        }
        let _ = self
            .unacked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        self.channel_credit.release();
    }

    /// Its `x-priority` (0 by default).
    pub fn priority(&self) -> i64 {
        self.priority
    }

    /// Unacked deliveries of this consumer.
    pub fn unacked(&self) -> u32 {
        self.unacked.load(Ordering::Relaxed)
    }
}

/// A message handed to a consumer.
#[derive(Debug)]
pub struct Delivery {
    /// Who receives it.
    pub consumer: Arc<Consumer>,
    /// Where it came from (needed to settle it).
    pub queue: Arc<Queue>,
    /// Its position in the queue.
    pub seq: u64,
    /// The message.
    pub message: Arc<Message>,
    /// Delivered before and not acknowledged.
    pub redelivered: bool,
    /// When it expires, if it has a time to live (an adapter may tell the
    /// client the time left).
    pub expires_at: Option<std::time::Instant>,
}

/// Something a connection must tell its client.
#[derive(Debug)]
pub enum OutboxEvent {
    /// Deliver a message.
    Deliver(Delivery),
    /// The server cancelled the consumer (its queue went away).
    Cancelled(Arc<Consumer>),
}

/// Per-connection mailbox filled by queues, drained by the connection task.
/// Its size is bounded by the credit of the connection's consumers.
#[derive(Debug, Default)]
pub struct Outbox {
    events: Mutex<Vec<OutboxEvent>>,
    notify: Notify,
    /// Called when an event arrives in an empty outbox, for a connection
    /// that is not waiting on [`Outbox::ready`] (one parked without a task).
    waker: Mutex<Option<OutboxWaker>>,
    /// The engine id of the connection it belongs to (0: not said), so
    /// a consumer can be traced to its connection.
    owner: std::sync::atomic::AtomicU64,
}

/// See [`Outbox::set_waker`].
pub struct OutboxWaker(Box<dyn Fn() + Send + Sync>);

impl OutboxWaker {
    /// Wraps `f`.
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> Self {
        Self(Box::new(f))
    }
}

impl std::fmt::Debug for OutboxWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutboxWaker")
    }
}

impl Outbox {
    /// Says which connection (engine id) drains this outbox.
    pub fn set_owner(&self, connection: u64) {
        self.owner.store(connection, Ordering::Relaxed);
    }

    /// The connection that drains this outbox (0: not said).
    pub fn owner(&self) -> u64 {
        self.owner.load(Ordering::Relaxed)
    }

    /// Add an event and wake the connection.
    pub fn push(&self, ev: OutboxEvent) {
        let mut events = self.events.lock();
        let was_empty = events.is_empty();
        events.push(ev);
        drop(events);
        if was_empty {
            self.notify.notify_one();
            if let Some(w) = self.waker.lock().as_ref() {
                (w.0)();
            }
        }
    }

    /// Sets (or clears) what [`Outbox::push`] calls besides waking
    /// [`Outbox::ready`]. Check [`Outbox::has_events`] after setting one:
    /// an event that came before it woke nothing.
    pub fn set_waker(&self, waker: Option<OutboxWaker>) {
        *self.waker.lock() = waker;
    }

    /// Move every waiting event into `into`, oldest first.
    pub fn drain_into(&self, into: &mut Vec<OutboxEvent>) {
        let mut events = self.events.lock();
        if into.is_empty() {
            std::mem::swap(&mut *events, into);
        } else {
            into.append(&mut events);
        }
    }

    /// Wait until an event may be waiting (cancel-safe).
    pub async fn ready(&self) {
        self.notify.notified().await;
    }

    /// Whether an event is waiting.
    pub fn has_events(&self) -> bool {
        !self.events.lock().is_empty()
    }
}
