//! Per-channel state: content being assembled, consumers, unacked
//! deliveries, qos, confirm and tx modes.

use amq_protocol::protocol::basic;
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use switchyard_engine::{ChannelCredit, Consumer, Durable, Queue, Settle, Settlement, Unsettled};
use switchyard_model::{Message, Properties};

/// A publish whose content is still arriving.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) publish: basic::Publish,
    /// Set once the content header arrived.
    pub(crate) header: Option<(Properties, u64)>,
    pub(crate) body: BytesMut,
    /// The single body frame, kept without copying when there is only one.
    pub(crate) single: Option<Bytes>,
}

/// Work buffered by a transactional channel until commit.
#[derive(Debug, Default)]
pub(crate) struct TxBuffer {
    pub(crate) publishes: Vec<(Message, bool)>,
    /// (delivery tag, multiple, settle kind)
    pub(crate) settles: Vec<(Vec<u64>, Settle)>,
}

/// A publisher confirm not yet sent.
#[derive(Debug)]
pub(crate) struct PendingConfirm {
    pub(crate) channel: u16,
    /// Which opening of the channel number published it.
    pub(crate) epoch: u64,
    pub(crate) tag: u64,
    /// `None` once durable (or never needed to be).
    pub(crate) ticket: Option<Durable>,
    /// Confirm with nack (the store failed).
    pub(crate) nack: bool,
    /// The ticket is being awaited by the connection task.
    pub(crate) held: bool,
}

/// One open channel.
#[derive(Debug, Default)]
pub(crate) struct Channel {
    /// Distinguishes successive channels that reuse one number, so a late
    /// confirm never reaches a reopened channel.
    pub(crate) epoch: u64,
    /// A `channel.close` was sent; wait for close-ok, drop everything else.
    pub(crate) closing: bool,
    pub(crate) incoming: Option<Incoming>,
    pub(crate) consumers: HashMap<String, (Arc<Consumer>, Arc<Queue>)>,
    /// The window shared by the channel's manual-ack consumers: the global
    /// prefetch, never above `max_unacked`.
    pub(crate) credit: Arc<ChannelCredit>,
    /// `amqp.max_unacked_per_channel`: the channel's window when the client
    /// asked for no global prefetch, and the most it may ask for.
    pub(crate) max_unacked: u32,
    /// basic.qos global=false: applies to consumers created afterwards.
    pub(crate) consumer_prefetch: u32,
    pub(crate) next_tag: u64,
    /// Deliveries (and gets) by delivery tag, with when they were handed
    /// over (for the consumer timeout), until the client settles them.
    pub(crate) unacked: BTreeMap<u64, (Unsettled, std::time::Instant)>,
    pub(crate) confirm: bool,
    pub(crate) next_publish_seq: u64,
    pub(crate) tx: Option<TxBuffer>,
    /// Last queue declared on this channel (empty queue names refer to it).
    pub(crate) last_queue: Option<String>,
    /// The queue behind this channel's direct reply-to consumer.
    pub(crate) reply_queue: Option<String>,
}

impl Channel {
    /// A newly opened channel: no global prefetch, so its window is
    /// `max_unacked` (0: no cap, the window is unlimited).
    pub(crate) fn new(epoch: u64, max_unacked: u32) -> Self {
        let ch = Self {
            epoch,
            max_unacked,
            ..Self::default()
        };
        ch.credit.set_prefetch(max_unacked);
        ch
    }

    /// `basic.qos global=true`: `count` unacked deliveries for the channel,
    /// 0 meaning none beyond `max_unacked`.
    pub(crate) fn set_global_prefetch(&mut self, count: u16) {
        // In `ChannelCredit`, 0 is unlimited.
        let window = match (u32::from(count), self.max_unacked) {
            (0, cap) => cap,
            (asked, 0) => asked,
            (asked, cap) => asked.min(cap),
        };
        self.credit.set_prefetch(window);
    }

    /// Allocate the next delivery tag.
    pub(crate) fn next_delivery_tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    /// The tags an ack/nack/reject refers to, or None if the tag is unknown.
    pub(crate) fn select(&self, tag: u64, multiple: bool) -> Option<Vec<u64>> {
        if multiple {
            let tags: Vec<u64> = if tag == 0 {
                self.unacked.keys().copied().collect()
            } else {
                self.unacked.range(..=tag).map(|(t, _)| *t).collect()
            };
            (tag == 0 || !tags.is_empty()).then_some(tags)
        } else {
            self.unacked.contains_key(&tag).then(|| vec![tag])
        }
    }

    /// Remove and settle the given tags through the engine; their queues
    /// and every queue the channel consumes (the channel's shared credit
    /// may have freed) are dispatched.
    pub(crate) fn settle(&mut self, tags: &[u64], how: Settle) {
        let mut settlement = Settlement::default();
        for tag in tags {
            if let Some((u, _)) = self.unacked.remove(tag) {
                settlement.add(u);
            }
        }
        settlement.apply_with(how, &self.consumed_queues());
    }

    /// Queues this channel consumes from (to re-dispatch after credit frees).
    pub(crate) fn consumed_queues(&self) -> Vec<Arc<Queue>> {
        let mut v: Vec<Arc<Queue>> = Vec::new();
        for (_, q) in self.consumers.values() {
            if !v.iter().any(|o| Arc::ptr_eq(o, q)) {
                v.push(q.clone());
            }
        }
        v
    }
}

/// Confirms waiting to be sent, in publish order across channels.
pub(crate) type ConfirmQueue = VecDeque<PendingConfirm>;
