//! SEND (destinations, property mapping, `reply-to` rewriting, temp
//! queues) and transactions (BEGIN / COMMIT / ABORT over SEND, ACK, NACK).

use super::subscribe::queue_arguments;
use super::{AckMode, Outcome, Session, StompError, Subscription, errors};
use crate::codec::{Command, Frame};
use crate::convert;
use crate::destination::Destination;
use std::sync::Arc;
use switchyard_engine::connections::MessageCounters;
use switchyard_engine::{Command as Topology, Consumer, ConsumerSpec, QueueSpec, Vhost};
use switchyard_model::{FieldTable, Message};

/// Exchange `/topic/` destinations live on (shared with MQTT).
pub(super) const TOPIC_EXCHANGE: &str = "amq.topic";

pub(super) fn destination(frame: &Frame) -> Result<Destination, StompError> {
    let d = frame
        .get("destination")
        .ok_or_else(|| errors::missing_destination(frame.command))?;
    Ok(Destination::parse(d)?)
}

/// A transaction-control frame's `transaction` header.
fn transaction(frame: &Frame) -> Result<&str, StompError> {
    frame
        .get("transaction")
        .ok_or_else(|| errors::missing_transaction(frame.command))
}

/// Headers RabbitMQ refuses on SEND, checked before anything else.
const NOT_ON_SEND: &[&str] = &["message-id"];

impl Session {
    pub(super) fn vhost(&self) -> Result<Arc<Vhost>, StompError> {
        self.vhost
            .clone()
            .ok_or_else(|| StompError::new("not connected", "no virtual host"))
    }

    pub(super) fn send_frame(&mut self, frame: Frame) -> Outcome {
        // Check the frame now, even for a transaction, so a bad frame is
        // refused where it was sent.
        if let Some(h) = NOT_ON_SEND.iter().find(|h| frame.get(h).is_some()) {
            return Err(errors::header_not_allowed(h, Command::Send));
        }
        destination(&frame)?;
        match self.hold_in_tx(frame)? {
            Some(frame) => self.publish(&frame),
            None => Ok(None),
        }
    }

    /// A frame with a `transaction` header is kept for COMMIT (`None`);
    /// one without is handed back to be applied now.
    pub(super) fn hold_in_tx(&mut self, frame: Frame) -> Result<Option<Frame>, StompError> {
        let Some(tx) = frame.get("transaction") else {
            return Ok(Some(frame));
        };
        let Some(list) = self.txs.get_mut(tx) else {
            return Err(errors::bad_transaction(tx));
        };
        list.push(frame);
        Ok(None)
    }

    /// Route one SEND; returns the durability ticket of a persistent one.
    fn publish(&mut self, frame: &Frame) -> Outcome {
        let vhost = self.vhost()?;
        let (exchange, routing_key, default_persistent) = match destination(frame)? {
            Destination::Queue(q) => {
                self.ensure_queue(&vhost, &q, queue_arguments(frame))?;
                (String::new(), q, true)
            }
            Destination::AmqQueue(q) => (String::new(), q, true),
            Destination::Topic(k) => (TOPIC_EXCHANGE.to_owned(), k, false),
            Destination::Exchange { exchange, key } => (exchange, key, false),
            Destination::TempQueue(t) => (String::new(), self.temp_queue(&vhost, &t)?, false),
            Destination::ReplyQueue(q) => (String::new(), q, false),
        };
        let reply_to = match frame.get("reply-to") {
            Some(r) => Some(self.rewrite_reply_to(&vhost, r)?),
            None => None,
        };
        let properties =
            convert::properties_from_send(&frame.headers, default_persistent, reply_to);
        // `user-id` must name who logged in, as AMQP's is checked.
        if let Some(claimed) = properties.user_id.as_deref()
            && claimed != self.user
        {
            return Err(errors::user_id_mismatch(claimed, &self.user));
        }
        let persistent = properties.delivery_mode == Some(2);
        let message = Message {
            exchange,
            routing_key,
            properties,
            body: frame.body.clone(),
        };
        let published = vhost.publish(message, persistent)?;
        self.throttle.note(&published);
        MessageCounters::bump(&self.registry.counters.published);
        if published.queues == 0 {
            MessageCounters::bump(&self.registry.counters.dropped);
        }
        // A full queue refused it (`x-overflow: reject-publish`): a client
        // waiting for a RECEIPT must not take silence for success.
        if published.rejected && frame.get("receipt").is_some() {
            return Err(errors::message_rejected());
        }
        Ok(published.durable)
    }

    /// Declare `/queue/<name>` (durable, shared) unless it exists already —
    /// in whatever form another protocol declared it.
    pub(super) fn ensure_queue(
        &self,
        vhost: &Vhost,
        name: &str,
        arguments: FieldTable,
    ) -> Result<(), StompError> {
        if let Ok(q) = vhost.queue(name, self.conn_id) {
            // Declared already, in whatever form another protocol chose;
            // queue arguments given here must agree with it, as a
            // redeclare's (a bare SEND or SUBSCRIBE names no arguments).
            if !arguments.is_empty() {
                q.check_arguments(&arguments)?;
            }
            q.touch();
            return Ok(());
        }
        let spec = QueueSpec {
            name: name.to_owned(),
            durable: true,
            exclusive_owner: None,
            auto_delete: false,
            arguments,
        };
        vhost.apply(Topology::DeclareQueue(spec), self.conn_id)?;
        Ok(())
    }

    /// A `reply-to` as AMQP and MQTT services will see it: a temp queue
    /// becomes its queue name (reply with the default exchange, as usual
    /// in AMQP RPC), `/reply-queue/q` becomes `q`; anything else is kept.
    fn rewrite_reply_to(&mut self, vhost: &Vhost, r: &str) -> Result<String, StompError> {
        match Destination::parse(r) {
            Ok(Destination::TempQueue(t)) => self.temp_queue(vhost, &t),
            Ok(Destination::ReplyQueue(q)) => Ok(q),
            _ => Ok(r.to_owned()),
        }
    }

    /// The queue behind `/temp-queue/<t>`: private to this connection,
    /// created on first use and consumed at once (auto ack) so replies
    /// arrive with `subscription:/temp-queue/<t>` without a SUBSCRIBE.
    fn temp_queue(&mut self, vhost: &Vhost, t: &str) -> Result<String, StompError> {
        if let Some(name) = self.temp_queues.get(t) {
            return Ok(name.clone());
        }
        let name = format!("stomp-temp-{}-{t}", self.conn_id);
        let spec = QueueSpec {
            name: name.clone(),
            durable: false,
            exclusive_owner: Some(self.conn_id),
            auto_delete: false,
            arguments: FieldTable::new(),
        };
        vhost.apply(Topology::DeclareQueue(spec), self.conn_id)?;
        let queue = vhost.queue(&name, self.conn_id)?;
        let id = format!("/temp-queue/{t}");
        let spec = ConsumerSpec {
            tag: id.clone(),
            channel: 0,
            no_ack: false,
            exclusive: true,
            prefetch: 0,
            arguments: FieldTable::new(),
        };
        let consumer = Arc::new(Consumer::new(
            spec,
            self.credit.clone(),
            self.outbox.clone(),
        ));
        self.subs.insert(
            id.clone(),
            Subscription {
                queue: queue.clone(),
                consumer: consumer.clone(),
                ack: AckMode::Auto,
                destination: id,
                fixed_destination: true,
                delete_queue: true,
            },
        );
        queue.add_consumer(consumer)?;
        self.temp_queues.insert(t.to_owned(), name.clone());
        Ok(name)
    }

    pub(super) fn begin(&mut self, frame: &Frame) -> Outcome {
        let tx = transaction(frame)?;
        if self.txs.contains_key(tx) {
            return Err(errors::transaction_open(tx));
        }
        self.txs.insert(tx.to_owned(), Vec::new());
        Ok(None)
    }

    /// Apply a transaction's frames in order. A SEND's own RECEIPT goes out
    /// once it is routed (and durable, if persistent), as RabbitMQ confirms
    /// it; the RECEIPT for COMMIT waits for every persistent SEND in it.
    pub(super) fn commit(&mut self, frame: &Frame) -> Outcome {
        let tx = transaction(frame)?;
        let frames = self
            .txs
            .remove(tx)
            .ok_or_else(|| errors::bad_transaction(tx))?;
        let mut last = None;
        for f in frames {
            let ticket = match f.command {
                Command::Send => self.publish(&f)?,
                _ => self.settle_frame(&f)?,
            };
            let receipt = (f.command == Command::Send)
                .then(|| f.get("receipt"))
                .flatten();
            if let Some(r) = receipt {
                if let Some(earlier) = last.take() {
                    self.owe(None, Some(earlier));
                }
                self.owe(Some(r.to_owned()), ticket);
            } else if let Some(earlier) = ticket.and_then(|t| last.replace(t)) {
                self.owe(None, Some(earlier));
            }
        }
        Ok(last)
    }

    pub(super) fn abort(&mut self, frame: &Frame) -> Outcome {
        let tx = transaction(frame)?;
        self.txs
            .remove(tx)
            .ok_or_else(|| errors::bad_transaction(tx))?;
        Ok(None)
    }
}
