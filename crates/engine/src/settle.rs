//! The delivery contract, owned by the engine: how a delivery leaves an
//! outbox and how a client settles it.
//!
//! An adapter drains its [`Outbox`] through an [`OutboxDrain`], which does
//! the bookkeeping every delivery owes once it leaves the outbox (its
//! consumer's outbox credit is freed, its queue is dispatched once the
//! adapter has written the batch). What the client has not settled yet the
//! adapter keeps as an [`Unsettled`] — queue, position, and the consumer
//! whose credit it holds — and settles with one [`Settle`] through
//! [`Unsettled::settle`] or, for many at once, a [`Settlement`].
//!
//! Every way a delivered message leaves its queue other than an ack
//! (a reject or nack without requeue) is [`Settle::Reject`], which reaches
//! [`Queue::settle`]: the one place that can dead-letter it.

use crate::consumer::{Consumer, Delivery, Outbox, OutboxEvent};
use crate::queue::Queue;
use std::sync::Arc;

/// How the client disposes of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Processed: the message leaves the queue.
    Ack,
    /// Settled by the broker on delivery, for a consumer that acknowledges
    /// nothing (STOMP `ack:auto`, MQTT QoS 0): leaves the queue as with
    /// [`Settle::Ack`], but counts as a delivery without ack, not as an ack.
    AutoAck,
    /// Give it back: the message returns to its position, redelivered.
    Requeue,
    /// Refused without requeue: the message leaves the queue, dead-lettered
    /// if the queue says so.
    Reject,
}

/// A delivery (or a `basic.get`) the client has not settled yet.
#[derive(Debug, Clone)]
pub struct Unsettled {
    /// The queue it came from.
    pub queue: Arc<Queue>,
    /// Its position there.
    pub seq: u64,
    /// The consumer whose credit it holds; `None` for a get.
    pub consumer: Option<Arc<Consumer>>,
}

impl Unsettled {
    /// Settle just this one (its queue is dispatched after).
    pub fn settle(self, how: Settle) {
        if let Some(c) = &self.consumer {
            c.settled();
        }
        self.queue.settle(std::slice::from_ref(&self.seq), how);
        self.queue.dispatch();
    }
}

impl Delivery {
    /// What settling this delivery later needs.
    pub fn unsettled(&self) -> Unsettled {
        Unsettled {
            queue: self.queue.clone(),
            seq: self.seq,
            consumer: Some(self.consumer.clone()),
        }
    }

    /// Settle a delivery taken from an [`OutboxDrain`] now, without keeping
    /// it (its consumer went away, or the client is never asked: auto-ack,
    /// QoS 0). No dispatch here, no allocation: its queue is among those
    /// [`OutboxDrain::finish`] dispatches.
    pub fn settle(self, how: Settle) {
        self.consumer.settled();
        self.queue.settle(std::slice::from_ref(&self.seq), how);
    }
}

/// Many deliveries settled alike: each frees its consumer's credit, each
/// queue is settled under one lock, then dispatched. Reusable.
#[derive(Debug, Default)]
pub struct Settlement {
    by_queue: Vec<(Arc<Queue>, Vec<u64>)>,
}

impl Settlement {
    /// Add one delivery: its consumer's credit is released now.
    pub fn add(&mut self, u: Unsettled) {
        if let Some(c) = &u.consumer {
            c.settled();
        }
        match self
            .by_queue
            .iter_mut()
            .find(|(q, _)| Arc::ptr_eq(q, &u.queue))
        {
            Some((_, seqs)) => seqs.push(u.seq),
            None => self.by_queue.push((u.queue, vec![u.seq])),
        }
    }

    /// Whether nothing was added since the last [`Settlement::apply`].
    pub fn is_empty(&self) -> bool {
        self.by_queue.is_empty()
    }

    /// Settle everything added, then dispatch the queues (credit was freed).
    pub fn apply(&mut self, how: Settle) {
        self.apply_with(how, &[]);
    }

    /// As [`Settlement::apply`], and dispatch `also` too (each queue once):
    /// the other queues a freed shared credit (a channel's prefetch) may
    /// now feed.
    pub fn apply_with(&mut self, how: Settle, also: &[Arc<Queue>]) {
        for (q, seqs) in &mut self.by_queue {
            seqs.sort_unstable();
            q.settle(seqs, how);
            q.dispatch();
        }
        for q in also {
            if !self.by_queue.iter().any(|(s, _)| Arc::ptr_eq(s, q)) {
                q.dispatch();
            }
        }
        self.by_queue.clear();
    }
}

/// Drained events, oldest first.
impl Iterator for OutboxDrain {
    type Item = OutboxEvent;

    fn next(&mut self) -> Option<OutboxEvent> {
        self.events.pop()
    }
}

/// An adapter's view of its outbox: drained in order, with the
/// bookkeeping done. Keep one per connection so its buffers are reused.
#[derive(Debug, Default)]
pub struct OutboxDrain {
    /// Drained events, newest first (so `next` pops).
    events: Vec<OutboxEvent>,
    /// Queues whose deliveries were drained: dispatched by `finish`.
    touched: Vec<Arc<Queue>>,
    /// An empty buffer with capacity, handed to the outbox at each fill so
    /// neither side allocates in steady state.
    spare: Vec<OutboxEvent>,
}

impl OutboxDrain {
    /// Take every event waiting in `outbox`. Each delivery is marked
    /// written (its consumer may be handed more) and its queue remembered.
    pub fn fill(&mut self, outbox: &Outbox) {
        let mut fresh = std::mem::take(&mut self.spare);
        outbox.drain_into(&mut fresh);
        for ev in &fresh {
            if let OutboxEvent::Deliver(d) = ev {
                d.consumer.written();
                if !self.touched.iter().any(|q| Arc::ptr_eq(q, &d.queue)) {
                    self.touched.push(d.queue.clone());
                }
            }
        }
        fresh.reverse();
        // Older events still waiting stay ahead of the new ones.
        fresh.append(&mut self.events);
        self.spare = std::mem::replace(&mut self.events, fresh);
    }

    /// Dispatch the queues the drained deliveries came from: writing them
    /// freed credit. Call once the batch is written.
    pub fn finish(&mut self) {
        for q in self.touched.drain(..) {
            q.dispatch();
        }
    }

    /// Drain `outbox` and give every delivery back to its queue (the
    /// connection is ending); cancellations are dropped.
    pub fn requeue_all(&mut self, outbox: &Outbox) {
        self.fill(outbox);
        let mut back = Settlement::default();
        for ev in self.by_ref() {
            if let OutboxEvent::Deliver(d) = ev {
                back.add(d.unsettled());
            }
        }
        back.apply(Settle::Requeue);
        self.touched.clear();
    }
}
