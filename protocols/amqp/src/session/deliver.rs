//! Output driven by the engine and the store: deliveries and server-side
//! consumer cancellations from the outbox, and publisher confirms released
//! once the store says the message is durable.

use super::Session;
use crate::codec::{Deliver, Encoder};
use crate::convert::delivery_out;
use amq_protocol::protocol::{AMQPClass, basic};
use std::sync::Arc;
use switchyard_engine::connections::MessageCounters;
use switchyard_engine::{Durable, OutboxEvent, Settle};
use switchyard_model::Properties;
use tokio::sync::oneshot::error::TryRecvError;

impl Session {
    /// Turn everything waiting in the outbox into frames.
    pub fn handle_outbox(&mut self) {
        let mut drain = std::mem::take(&mut self.drain);
        drain.fill(&self.outbox);
        let now = self.clock;
        for ev in drain.by_ref() {
            match ev {
                OutboxEvent::Deliver(d) => {
                    let id = d.consumer.spec.channel;
                    let live = self.channels.get_mut(&id).filter(|ch| {
                        !ch.closing
                            && ch
                                .consumers
                                .get(&d.consumer.spec.tag)
                                .is_some_and(|(c, _)| Arc::ptr_eq(c, &d.consumer))
                    });
                    let Some(ch) = live else {
                        // Cancelled meanwhile: give the message back (a
                        // no-ack one was settled when handed over).
                        d.settle(Settle::Requeue);
                        continue;
                    };
                    let tag = ch.next_delivery_tag();
                    let m = &d.message;
                    // Most messages carry no properties and a short key:
                    // nothing to convert. Otherwise convert and encode once.
                    let plain = m.routing_key.len() <= usize::from(u8::MAX)
                        && m.properties == Properties::default();
                    let cut = if plain {
                        self.props.clear();
                        self.props.extend_from_slice(&[0, 0]);
                        None
                    } else {
                        let (key, properties) = delivery_out(m);
                        self.enc.properties(properties, &mut self.props);
                        Some(key)
                    };
                    let deliver = Deliver {
                        consumer_tag: &d.consumer.spec.tag,
                        delivery_tag: tag,
                        redelivered: d.redelivered,
                        exchange: &m.exchange,
                        routing_key: cut.as_ref().map_or(&m.routing_key, |k| k.as_str()),
                    };
                    if Encoder::deliver(id, &deliver, &mut self.out).is_none() {
                        // A name no AMQP short string holds (another
                        // protocol's exchange): nothing is written, not even
                        // the content, and the message is rejected.
                        tracing::error!(
                            exchange = %m.exchange,
                            "delivery not encodable as basic.deliver; rejected"
                        );
                        d.settle(Settle::Reject);
                        continue;
                    }
                    MessageCounters::bump(&self.registry.counters.delivered);
                    if !d.consumer.spec.no_ack {
                        ch.unacked.insert(tag, (d.unsettled(), now));
                    }
                    Encoder::content_encoded(
                        id,
                        &self.props,
                        &d.message.body,
                        self.frame_max,
                        &mut self.out,
                    );
                }
                OutboxEvent::Cancelled(c) => {
                    let id = c.spec.channel;
                    let Some(ch) = self.channels.get_mut(&id) else {
                        continue;
                    };
                    let ours = ch
                        .consumers
                        .get(&c.spec.tag)
                        .is_some_and(|(mine, _)| Arc::ptr_eq(mine, &c));
                    if ours && !ch.closing {
                        ch.consumers.remove(&c.spec.tag);
                        if self.cancel_notify {
                            let cancel = basic::Cancel {
                                consumer_tag: c.spec.tag.as_str().into(),
                                nowait: true,
                            };
                            self.send(id, AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel)));
                        }
                    }
                }
            }
        }
        // Writing freed credit: let the queues hand over more.
        drain.finish();
        self.drain = drain;
    }

    /// A durability ticket for the connection task to await, if the oldest
    /// pending confirm is waiting on one.
    pub fn take_ticket(&mut self) -> Option<Durable> {
        let front = self.confirms.front_mut()?;
        if front.held {
            return None;
        }
        let ticket = front.ticket.take()?;
        front.held = true;
        Some(ticket)
    }

    /// The ticket from [`Session::take_ticket`] resolved; `ok` is false if
    /// the store failed (the publish is nacked).
    pub fn handle_durable(&mut self, ok: bool) {
        if let Some(front) = self.confirms.front_mut().filter(|f| f.held) {
            front.held = false;
            front.nack |= !ok;
        }
        self.flush_confirms();
    }

    /// Send every confirm whose message is durable, coalescing consecutive
    /// acks on one channel into a `multiple` ack.
    pub(super) fn flush_confirms(&mut self) {
        let mut run: Option<(u16, u64, u64, bool, u64)> = None; // channel, first, last, nack, epoch
        while let Some(front) = self.confirms.front_mut() {
            if front.held {
                break;
            }
            if let Some(t) = front.ticket.as_mut() {
                match t.try_recv() {
                    Ok(()) => front.ticket = None,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => {
                        front.ticket = None;
                        front.nack = true;
                    }
                }
            }
            let Some(c) = self.confirms.pop_front() else {
                break;
            };
            run = match run {
                Some((ch, first, last, nack, epoch))
                    if ch == c.channel
                        && nack == c.nack
                        && c.tag == last + 1
                        && epoch == c.epoch =>
                {
                    Some((ch, first, c.tag, nack, epoch))
                }
                Some(prev) => {
                    self.send_confirm(prev);
                    Some((c.channel, c.tag, c.tag, c.nack, c.epoch))
                }
                None => Some((c.channel, c.tag, c.tag, c.nack, c.epoch)),
            };
        }
        if let Some(prev) = run {
            self.send_confirm(prev);
        }
    }

    fn send_confirm(&mut self, (id, first, last, nack, epoch): (u16, u64, u64, bool, u64)) {
        if self
            .channels
            .get(&id)
            .is_none_or(|ch| ch.closing || ch.epoch != epoch)
        {
            return;
        }
        // A multiple ack covers every earlier tag; only use it when the run
        // starts right after the last confirmed tag, which holds because
        // confirms leave in publish order per channel.
        let multiple = first != last;
        if !nack {
            self.registry
                .counters
                .confirmed
                .fetch_add(last + 1 - first, std::sync::atomic::Ordering::Relaxed);
        }
        let m = if nack {
            basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag: last,
                multiple,
                requeue: false,
            })
        } else {
            basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: last,
                multiple,
            })
        };
        self.send(id, AMQPClass::Basic(m));
    }
}
