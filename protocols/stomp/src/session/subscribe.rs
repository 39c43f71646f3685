//! SUBSCRIBE / UNSUBSCRIBE (which queue each destination consumes),
//! deliveries as MESSAGE frames, and ACK / NACK.

use super::send::{TOPIC_EXCHANGE, destination, required};
use super::{AckMode, Outcome, Phase, Session, StompError, Subscription, Unacked};
use crate::codec::{Command, Frame, Version};
use crate::convert;
use crate::destination::Destination as StompDestination;
use std::sync::Arc;
use switchyard_engine::exchange::Binding;
use switchyard_engine::{
    Command as Topology, Consumer, ConsumerSpec, Delivery, Destination, OutboxEvent, Queue,
    QueueSpec,
};
use switchyard_model::{FieldTable, FieldValue};

/// SUBSCRIBE headers passed on as queue arguments, as RabbitMQ's plugin.
const QUEUE_ARGUMENTS: &[&str] = &[
    "x-queue-type",
    "x-max-length",
    "x-max-length-bytes",
    "x-message-ttl",
    "x-expires",
    "x-max-priority",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-overflow",
    "x-single-active-consumer",
    "x-queue-mode",
];

fn queue_arguments(frame: &Frame) -> FieldTable {
    let mut args = FieldTable::new();
    for &name in QUEUE_ARGUMENTS {
        if let Some(v) = frame.get(name) {
            let value = if let Ok(n) = v.parse::<i64>() {
                FieldValue::I64(n)
            } else if let Ok(b) = v.parse::<bool>() {
                FieldValue::Bool(b)
            } else {
                FieldValue::string(v)
            };
            args.insert(name.to_owned(), value);
        }
    }
    args
}

fn is_true(frame: &Frame, name: &str) -> bool {
    frame.get(name) == Some("true")
}

impl Session {
    pub(super) fn subscribe(&mut self, frame: &Frame) -> Outcome {
        let vhost = self.vhost()?;
        let dest = destination(frame)?;
        // STOMP 1.0 made `id` optional: the destination names the
        // subscription then.
        let id = match (frame.get("id"), self.version) {
            (Some(id), _) => id.to_owned(),
            (None, Version::V1_0) => dest.to_string(),
            (None, _) => required(frame, "id")?.to_owned(),
        };
        if self.subs.contains_key(&id) {
            return Err(StompError::new(
                "duplicate subscription",
                format!("subscription id '{id}' is already in use"),
            ));
        }
        if self.subs.len() >= self.config.max_subscriptions {
            return Err(StompError::new(
                "resource_limit",
                format!(
                    "at most {} subscriptions per connection",
                    self.config.max_subscriptions
                ),
            ));
        }
        let ack = match frame.get("ack").unwrap_or("auto") {
            "auto" => AckMode::Auto,
            "client" => AckMode::Client,
            "client-individual" => AckMode::ClientIndividual,
            other => {
                return Err(StompError::new(
                    "invalid ack mode",
                    format!("ack:{other} is not auto, client or client-individual"),
                ));
            }
        };
        let prefetch = match frame.get("prefetch-count") {
            None => 0,
            Some(p) => p.trim().parse::<u32>().map_err(|_| {
                StompError::new(
                    "invalid header",
                    format!("prefetch-count:{p} is not a count"),
                )
            })?,
        };
        // Never unbounded: a client that takes MESSAGEs and never ACKs them
        // holds at most this many (auto-ack deliveries are settled as soon as
        // they are written, so the cap only bites client acks).
        let cap = self.config.max_unacked.max(1);
        let prefetch = if prefetch == 0 {
            cap
        } else {
            prefetch.min(cap)
        };
        // `persistent:true` is the older RabbitMQ spelling of `durable:true`.
        let durable = is_true(frame, "durable") || is_true(frame, "persistent");
        let arguments = queue_arguments(frame);
        let (queue_name, delete_queue) = match &dest {
            StompDestination::Queue(q) => {
                self.ensure_queue(&vhost, q, arguments)?;
                (q.clone(), false)
            }
            StompDestination::AmqQueue(q) => (q.clone(), false),
            StompDestination::Topic(_) | StompDestination::Exchange { .. } => {
                let (exchange, key) = match &dest {
                    StompDestination::Topic(k) => (TOPIC_EXCHANGE.to_owned(), k.clone()),
                    StompDestination::Exchange { exchange, key } => (exchange.clone(), key.clone()),
                    _ => unreachable!("matched above"),
                };
                let name = frame.get("x-queue-name").map_or_else(
                    || {
                        if durable {
                            format!("stomp-subscription-{id}")
                        } else {
                            format!("stomp-subscription-{}-{id}", self.conn_id)
                        }
                    },
                    str::to_owned,
                );
                let auto_delete = frame.get("auto-delete").map_or(!durable, |v| v == "true");
                let spec = QueueSpec {
                    name: name.clone(),
                    durable,
                    exclusive_owner: (!durable).then_some(self.conn_id),
                    auto_delete,
                    arguments,
                };
                vhost.apply(Topology::DeclareQueue(spec), self.conn_id)?;
                let binding = Binding {
                    destination: Destination::queue(&name),
                    routing_key: key,
                    arguments: FieldTable::new(),
                };
                vhost.apply(
                    Topology::Bind {
                        source: exchange,
                        binding,
                    },
                    self.conn_id,
                )?;
                (name, !durable)
            }
            StompDestination::TempQueue(_) | StompDestination::ReplyQueue(_) => {
                return Err(StompError::new(
                    "invalid destination",
                    format!("cannot SUBSCRIBE to {dest}: it is for reply-to and SEND only"),
                ));
            }
        };
        let queue = vhost.queue(&queue_name, self.conn_id)?;
        let spec = ConsumerSpec {
            tag: id.clone(),
            channel: 0,
            // Auto-ack deliveries are settled once written, not when the
            // queue hands them over, so none is lost if the subscription
            // ends while they wait in the outbox.
            no_ack: false,
            exclusive: is_true(frame, "exclusive"),
            prefetch,
            arguments: FieldTable::new(),
        };
        let consumer = Arc::new(Consumer::new(
            spec,
            self.credit.clone(),
            self.outbox.clone(),
        ));
        queue.add_consumer(consumer.clone())?;
        self.subs.insert(
            id,
            Subscription {
                queue,
                consumer,
                ack,
                destination: dest.to_string(),
                fixed_destination: false,
                delete_queue,
            },
        );
        Ok(None)
    }

    pub(super) fn unsubscribe(&mut self, frame: &Frame) -> Outcome {
        let id = match (frame.get("id"), self.version) {
            (Some(id), _) => id.to_owned(),
            (None, Version::V1_0) => destination(frame)?.to_string(),
            (None, _) => required(frame, "id")?.to_owned(),
        };
        if !self.subs.contains_key(&id) {
            return Err(StompError::new(
                "unknown subscription",
                format!("no subscription with id '{id}'"),
            ));
        }
        // A durable subscription's queue is only deleted when asked.
        let delete_durable = is_true(frame, "durable") || is_true(frame, "persistent");
        self.end_subscription(&id, delete_durable);
        Ok(None)
    }

    /// Cancel a subscription: its unacked deliveries go back to the queue,
    /// and a per-subscription queue is deleted.
    pub(super) fn end_subscription(&mut self, id: &str, delete_durable: bool) {
        let Some(sub) = self.subs.remove(id) else {
            return;
        };
        if let Some(t) = id.strip_prefix("/temp-queue/") {
            self.temp_queues.remove(t);
        }
        let auto_delete = sub.queue.remove_consumer(&sub.consumer);
        let mine: Vec<u64> = self
            .unacked
            .iter()
            .filter(|(_, u)| Arc::ptr_eq(&u.consumer, &sub.consumer))
            .map(|(&k, _)| k)
            .collect();
        let mut seqs = Vec::with_capacity(mine.len());
        for k in mine {
            if let Some(u) = self.unacked.remove(&k) {
                u.consumer.settled();
                seqs.push(u.seq);
            }
        }
        seqs.sort_unstable();
        sub.queue.requeue(&seqs);
        let Some(vhost) = self.vhost.clone() else {
            return;
        };
        if sub.delete_queue || (delete_durable && sub.queue.spec.durable) {
            let cmd = Topology::DeleteQueue {
                name: sub.queue.name().to_owned(),
                if_unused: false,
                if_empty: false,
            };
            let _ = vhost.apply(cmd, self.conn_id);
        } else if auto_delete {
            vhost.auto_delete_queue(&sub.queue);
        }
    }

    pub(super) fn ack_frame(&mut self, frame: Frame) -> Outcome {
        // 1.2 acks by `id`; 1.0 and 1.1 by `message-id` (+ `subscription`).
        if frame
            .get("id")
            .or_else(|| frame.get("message-id"))
            .is_none()
        {
            return Err(StompError::new(
                "missing header",
                format!("{} needs an 'id' header", frame.command.as_str()),
            ));
        }
        match self.hold_in_tx(frame)? {
            Some(frame) => self.settle_frame(&frame),
            None => Ok(None),
        }
    }

    /// Apply an ACK or NACK.
    pub(super) fn settle_frame(&mut self, frame: &Frame) -> Outcome {
        let raw = frame
            .get("id")
            .or_else(|| frame.get("message-id"))
            .unwrap_or_default();
        let unknown = || {
            StompError::new(
                "unknown ack id",
                format!(
                    "{} of '{raw}': no such unacknowledged message",
                    frame.command.as_str()
                ),
            )
        };
        // Ids are `<connection>-<n>`: unique across the broker.
        let ack_id: u64 = raw
            .split_once('-')
            .filter(|(conn, _)| conn.parse() == Ok(self.conn_id))
            .and_then(|(_, n)| n.parse().ok())
            .ok_or_else(unknown)?;
        // The subscription is the consumer's (its tag is the id).
        let Some(consumer) = self.unacked.get(&ack_id).map(|u| u.consumer.clone()) else {
            return Err(unknown());
        };
        let cumulative = self.subs.get(&consumer.spec.tag).map(|s| s.ack) == Some(AckMode::Client);
        let ids: Vec<u64> = if cumulative {
            self.unacked
                .range(..=ack_id)
                .filter(|(_, u)| Arc::ptr_eq(&u.consumer, &consumer))
                .map(|(&k, _)| k)
                .collect()
        } else {
            vec![ack_id]
        };
        let requeue = frame.command == Command::Nack && frame.get("requeue") != Some("false");
        let mut touched: Vec<(Arc<Queue>, Vec<u64>)> = Vec::new();
        for k in ids {
            let Some(u) = self.unacked.remove(&k) else {
                continue;
            };
            u.consumer.settled();
            match touched.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &u.queue)) {
                Some((_, seqs)) => seqs.push(u.seq),
                None => touched.push((u.queue, vec![u.seq])),
            }
        }
        for (q, seqs) in touched {
            if requeue {
                q.requeue(&seqs);
            } else {
                q.ack(&seqs);
                q.dispatch();
            }
        }
        Ok(None)
    }

    /// Turn waiting deliveries into MESSAGE frames.
    pub fn handle_outbox(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        self.outbox.drain_into(&mut events);
        let mut touched: Vec<(Arc<Queue>, Vec<u64>)> = Vec::new();
        for ev in events.drain(..) {
            match ev {
                OutboxEvent::Deliver(d) => {
                    d.consumer.written();
                    let i = match touched.iter().position(|(q, _)| Arc::ptr_eq(q, &d.queue)) {
                        Some(i) => i,
                        None => {
                            touched.push((d.queue.clone(), Vec::new()));
                            touched.len() - 1
                        }
                    };
                    if let Some(seq) = self.deliver(d) {
                        touched[i].1.push(seq);
                    }
                }
                OutboxEvent::Cancelled(c) => {
                    let id = c.spec.tag.clone();
                    let ours = self
                        .subs
                        .get(&id)
                        .is_some_and(|s| Arc::ptr_eq(&s.consumer, &c));
                    if ours && self.phase == Phase::Connected {
                        let e = StompError::new(
                            "subscription cancelled",
                            format!("the queue of subscription '{id}' was deleted"),
                        );
                        self.error(&e, None);
                    }
                }
            }
        }
        self.events = events;
        for (q, auto_acked) in touched {
            if !auto_acked.is_empty() {
                q.ack(&auto_acked);
            }
            q.dispatch();
        }
    }

    /// Write one delivery; returns its queue position if it is settled now
    /// (auto ack).
    fn deliver(&mut self, d: Delivery) -> Option<u64> {
        let live = self
            .subs
            .get(&d.consumer.spec.tag)
            .filter(|s| Arc::ptr_eq(&s.consumer, &d.consumer));
        let Some(sub) = live.filter(|_| self.phase == Phase::Connected) else {
            d.consumer.settled();
            d.queue.requeue(&[d.seq]);
            return None;
        };
        self.next_ack_id += 1;
        let ack_id = format!("{}-{}", self.conn_id, self.next_ack_id);
        let destination = if sub.fixed_destination {
            sub.destination.clone()
        } else {
            StompDestination::of_message(&d.message.exchange, &d.message.routing_key)
        };
        let auto = sub.ack == AckMode::Auto;
        let mut headers = Vec::with_capacity(8);
        headers.push(("subscription".to_owned(), d.consumer.spec.tag.clone()));
        headers.push(("destination".to_owned(), destination));
        headers.push(("message-id".to_owned(), ack_id.clone()));
        if !auto && self.version == Version::V1_2 {
            headers.push(("ack".to_owned(), ack_id));
        }
        headers.push(("redelivered".to_owned(), d.redelivered.to_string()));
        convert::headers_for_message(&d.message.properties, &mut headers);
        headers.push((
            "content-length".to_owned(),
            d.message.body.len().to_string(),
        ));
        let frame = Frame {
            command: Command::Message,
            headers,
            body: d.message.body.clone(),
        };
        self.send(&frame);
        if auto {
            d.consumer.settled();
            return Some(d.seq);
        }
        self.unacked.insert(
            self.next_ack_id,
            Unacked {
                queue: d.queue,
                seq: d.seq,
                consumer: d.consumer,
            },
        );
        None
    }

    /// Deliveries still in the outbox when the session ends go back.
    pub(super) fn requeue_outbox(&mut self) {
        let mut events = Vec::new();
        self.outbox.drain_into(&mut events);
        for ev in events {
            if let OutboxEvent::Deliver(d) = ev {
                d.consumer.written();
                d.consumer.settled();
                d.queue.requeue(&[d.seq]);
            }
        }
    }
}
