//! SUBSCRIBE / UNSUBSCRIBE (which queue each destination consumes),
//! deliveries as MESSAGE frames, and ACK / NACK.

use super::send::{TOPIC_EXCHANGE, destination};
use super::{AckMode, Outcome, Phase, Session, StompError, Subscription, errors};
use crate::codec::{Command, Frame, FrameWriter, Version, boolean};
use crate::convert;
use crate::destination::Destination as StompDestination;
use std::sync::Arc;
use switchyard_engine::connections::MessageCounters;
use switchyard_engine::exchange::Binding;
use switchyard_engine::{
    Command as Topology, Consumer, ConsumerSpec, Delivery, Destination, OutboxEvent,
    QUEUE_ARGUMENTS, QueueSpec, Settle, Settlement, Unsettled,
};
use switchyard_model::{FieldTable, FieldValue, Properties};

/// SUBSCRIBE and SEND headers passed on as queue arguments when they
/// declare a queue, as RabbitMQ's plugin: the engine's [`QUEUE_ARGUMENTS`].
pub(super) fn queue_arguments(frame: &Frame) -> FieldTable {
    let mut args = FieldTable::new();
    for &name in QUEUE_ARGUMENTS {
        if let Some(v) = frame.get(name) {
            let value = if let Ok(n) = v.parse::<i64>() {
                FieldValue::I64(n)
            } else if let Some(b) = boolean(v) {
                FieldValue::Bool(b)
            } else {
                FieldValue::string(v)
            };
            args.insert(name.to_owned(), value);
        }
    }
    args
}

/// SUBSCRIBE headers passed on as consumer arguments, as RabbitMQ's
/// plugin: `x-priority` (an integer).
fn consumer_arguments(frame: &Frame) -> Result<FieldTable, StompError> {
    let mut args = FieldTable::new();
    if let Some(p) = frame.get("x-priority") {
        let n = p
            .trim()
            .parse::<i64>()
            .map_err(|_| errors::invalid_value("x-priority", p, "an integer"))?;
        args.insert("x-priority".to_owned(), FieldValue::I64(n));
    }
    Ok(args)
}

fn is_true(frame: &Frame, name: &str) -> bool {
    frame.flag(name) == Some(true)
}

/// `durable:true` (or the older `persistent:true`): a durable topic
/// subscription, which must be named by an `id`.
fn durable(frame: &Frame) -> Result<bool, StompError> {
    let durable = is_true(frame, "durable") || is_true(frame, "persistent");
    if durable && frame.get("id").is_none() {
        return Err(errors::durable_needs_id());
    }
    Ok(durable)
}

/// A subscription's id: the `id` header, or in STOMP 1.0 (where it is
/// optional) the destination.
fn subscription_id(frame: &Frame, version: Version) -> Result<String, StompError> {
    match (frame.get("id"), version) {
        (Some(id), _) => Ok(id.to_owned()),
        (None, Version::V1_0) => Ok(destination(frame)?.to_string()),
        (None, _) => Err(errors::missing_header(frame.command, "id")),
    }
}

impl Session {
    pub(super) fn subscribe(&mut self, frame: &Frame) -> Outcome {
        let vhost = self.vhost()?;
        let durable = durable(frame)?;
        let dest = destination(frame)?;
        let id = subscription_id(frame, self.version)?;
        if self.subs.contains_key(&id) {
            // RabbitMQ's consumer tag: `T_<id>`, or `Q_<destination>`.
            let tag = match frame.get("id") {
                Some(_) => format!("T_{id}"),
                None => format!("Q_{id}"),
            };
            return Err(errors::duplicate_subscription(&tag));
        }
        if self.subs.len() >= self.config.max_subscriptions {
            return Err(errors::too_many_subscriptions(
                self.config.max_subscriptions,
            ));
        }
        let ack = match frame.get("ack").unwrap_or("auto") {
            "auto" => AckMode::Auto,
            "client" => AckMode::Client,
            "client-individual" => AckMode::ClientIndividual,
            other => {
                return Err(errors::invalid_value(
                    "ack",
                    other,
                    "auto, client or client-individual",
                ));
            }
        };
        let prefetch = match frame.get("prefetch-count") {
            None => 0,
            Some(p) => p
                .trim()
                .parse::<u32>()
                .map_err(|_| errors::invalid_value("prefetch-count", p, "a count"))?,
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
                let auto_delete = frame.flag("auto-delete").unwrap_or(!durable);
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
                return Err(errors::not_a_source(
                    frame.get("destination").unwrap_or_default(),
                    Command::Subscribe,
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
            arguments: consumer_arguments(frame)?,
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
        // A durable subscription's queue is only deleted when asked.
        let delete_durable = durable(frame)?;
        let id = subscription_id(frame, self.version)?;
        if !self.subs.contains_key(&id) {
            return Err(errors::no_subscription(&id));
        }
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
            .filter(|(_, (u, _))| held_by(u, &sub.consumer))
            .map(|(&k, _)| k)
            .collect();
        let mut back = Settlement::default();
        for k in mine {
            if let Some((u, _)) = self.unacked.remove(&k) {
                back.add(u);
            }
        }
        back.apply(Settle::Requeue);
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
        self.ack_id(&frame)?;
        match self.hold_in_tx(frame)? {
            Some(frame) => self.settle_frame(&frame),
            None => Ok(None),
        }
    }

    /// The header an ACK / NACK names its message by: `id` in 1.2 (which
    /// the 1.2 MESSAGE calls `ack`), `message-id` in 1.0 and 1.1 (where
    /// `id` is taken too, as some 1.1 clients send it).
    fn ack_id<'f>(&self, frame: &'f Frame) -> Result<&'f str, StompError> {
        let found = match self.version {
            Version::V1_2 => frame.get("id"),
            _ => frame.get("message-id").or_else(|| frame.get("id")),
        };
        found.ok_or_else(|| errors::missing_header(frame.command, self.ack_header()))
    }

    fn ack_header(&self) -> &'static str {
        match self.version {
            Version::V1_2 => "id",
            _ => "message-id",
        }
    }

    /// Apply an ACK or NACK.
    pub(super) fn settle_frame(&mut self, frame: &Frame) -> Outcome {
        let raw = self.ack_id(frame)?;
        // Ids are `<connection>-<n>`: unique across the broker.
        let (conn, n) = raw
            .split_once('-')
            .and_then(|(c, n)| Some((c.parse::<u64>().ok()?, n.parse::<u64>().ok()?)))
            .ok_or_else(|| errors::invalid_header(frame.command, self.ack_header()))?;
        let ack_id = Some(n).filter(|_| conn == self.conn_id);
        // The subscription is the consumer's (its tag is the id).
        let consumer = ack_id.and_then(|k| self.unacked.get(&k)?.0.consumer.clone());
        let (Some(ack_id), Some(consumer)) = (ack_id, consumer) else {
            return Err(errors::message_not_found(raw));
        };
        let cumulative = self.subs.get(&consumer.spec.tag).map(|s| s.ack) == Some(AckMode::Client);
        let ids: Vec<u64> = if cumulative {
            self.unacked
                .range(..=ack_id)
                .filter(|(_, (u, _))| held_by(u, &consumer))
                .map(|(&k, _)| k)
                .collect()
        } else {
            vec![ack_id]
        };
        // NACK requeues unless `requeue:false`, which rejects (and so may
        // dead-letter), as RabbitMQ's plugin maps it to basic.nack.
        let how = match (frame.command, frame.flag("requeue")) {
            (Command::Nack, Some(false)) => Settle::Reject,
            (Command::Nack, _) => Settle::Requeue,
            _ => Settle::Ack,
        };
        let mut settlement = Settlement::default();
        for k in ids {
            if let Some((u, _)) = self.unacked.remove(&k) {
                if matches!(how, Settle::Ack) {
                    MessageCounters::bump(&self.registry.counters.acked);
                }
                settlement.add(u);
            }
        }
        settlement.apply(how);
        Ok(None)
    }

    /// Turn waiting deliveries into MESSAGE frames.
    pub fn handle_outbox(&mut self) {
        let mut drain = std::mem::take(&mut self.drain);
        drain.fill(&self.outbox);
        // Auto-ack deliveries are settled once written, all at once.
        let mut written = Settlement::default();
        for ev in drain.by_ref() {
            match ev {
                OutboxEvent::Deliver(d) => {
                    if let Some(u) = self.deliver(d) {
                        written.add(u);
                    }
                }
                OutboxEvent::Cancelled(c) => {
                    let id = c.spec.tag.clone();
                    let ours = self
                        .subs
                        .get(&id)
                        .is_some_and(|s| Arc::ptr_eq(&s.consumer, &c));
                    if ours && self.phase == Phase::Connected {
                        self.error(&errors::server_cancelled(&id), None);
                    }
                }
            }
        }
        written.apply(Settle::AutoAck);
        drain.finish();
        self.drain = drain;
    }

    /// Write one delivery; returns it if it is settled now (auto ack).
    fn deliver(&mut self, d: Delivery) -> Option<Unsettled> {
        let live = self
            .subs
            .get(&d.consumer.spec.tag)
            .filter(|s| Arc::ptr_eq(&s.consumer, &d.consumer));
        let Some(sub) = live.filter(|_| self.phase == Phase::Connected) else {
            d.settle(Settle::Requeue);
            return None;
        };
        self.next_ack_id += 1;
        let ack_id = format_args!("{}-{}", self.conn_id, self.next_ack_id);
        let auto = sub.ack == AckMode::Auto;
        let m = &d.message;
        MessageCounters::bump(&self.registry.counters.delivered);
        let mut w = FrameWriter::begin(Command::Message, self.version, &mut self.out);
        w.header("subscription", &d.consumer.spec.tag);
        if sub.fixed_destination {
            w.header("destination", &sub.destination);
        } else {
            let destination = StompDestination::of_message(&m.exchange, &m.routing_key);
            w.header("destination", &destination);
        }
        w.header_plain("message-id", ack_id);
        if !auto && self.version == Version::V1_2 {
            w.header_plain("ack", ack_id);
        }
        w.header("redelivered", if d.redelivered { "true" } else { "false" });
        if m.properties != Properties::default() {
            let mut headers = Vec::new();
            convert::headers_for_message(&m.properties, &mut headers);
            for (name, value) in &headers {
                w.header(name, value);
            }
        }
        w.header_plain("content-length", format_args!("{}", m.body.len()));
        w.finish(&m.body);
        let held = d.unsettled();
        if auto {
            return Some(held);
        }
        self.unacked.insert(self.next_ack_id, (held, self.clock));
        None
    }

    /// Deliveries still in the outbox when the session ends go back.
    pub(super) fn requeue_outbox(&mut self) {
        self.drain.requeue_all(&self.outbox);
    }
}

/// Whether an unacked delivery belongs to `consumer`.
fn held_by(u: &Unsettled, consumer: &Arc<Consumer>) -> bool {
    u.consumer
        .as_ref()
        .is_some_and(|c| Arc::ptr_eq(c, consumer))
}
