//! SEND (destinations, property mapping, `reply-to` rewriting, temp
//! queues) and transactions (BEGIN / COMMIT / ABORT over SEND, ACK, NACK).

use super::{AckMode, Outcome, Session, StompError, Subscription};
use crate::codec::{Command, Frame};
use crate::convert;
use crate::destination::Destination;
use std::sync::Arc;
use switchyard_engine::{Command as Topology, Consumer, ConsumerSpec, QueueSpec, Vhost};
use switchyard_model::{FieldTable, Message};

/// Exchange `/topic/` destinations live on (shared with MQTT).
pub(super) const TOPIC_EXCHANGE: &str = "amq.topic";

pub(super) fn required<'a>(frame: &'a Frame, name: &str) -> Result<&'a str, StompError> {
    frame.get(name).ok_or_else(|| {
        StompError::new(
            "missing header",
            format!("{} needs a '{name}' header", frame.command.as_str()),
        )
    })
}

pub(super) fn destination(frame: &Frame) -> Result<Destination, StompError> {
    Destination::parse(required(frame, "destination")?)
        .map_err(|e| StompError::new("invalid destination", e.to_string()))
}

impl Session {
    pub(super) fn vhost(&self) -> Result<Arc<Vhost>, StompError> {
        self.vhost
            .clone()
            .ok_or_else(|| StompError::new("not connected", "no virtual host"))
    }

    pub(super) fn send_frame(&mut self, frame: Frame) -> Outcome {
        // Check the destination now, even for a transaction, so a bad frame
        // is refused where it was sent.
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
            return Err(unknown_tx(tx));
        };
        list.push(frame);
        Ok(None)
    }

    /// Route one SEND; returns the durability ticket of a persistent one.
    fn publish(&mut self, frame: &Frame) -> Outcome {
        let vhost = self.vhost()?;
        let (exchange, routing_key, default_persistent) = match destination(frame)? {
            Destination::Queue(q) => {
                self.ensure_queue(&vhost, &q, FieldTable::new())?;
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
        let persistent = properties.delivery_mode == Some(2);
        let message = Message {
            exchange,
            routing_key,
            properties,
            body: frame.body.clone(),
        };
        let published = vhost.publish(message, persistent)?;
        self.throttle.note(&published);
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
        if vhost.queue(name, self.conn_id).is_ok() {
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
        let tx = required(frame, "transaction")?;
        if self.txs.contains_key(tx) {
            return Err(StompError::new(
                "invalid transaction",
                format!("transaction '{tx}' is already open"),
            ));
        }
        self.txs.insert(tx.to_owned(), Vec::new());
        Ok(None)
    }

    /// Apply a transaction's frames in order. The RECEIPT for COMMIT waits
    /// for every persistent SEND in it.
    pub(super) fn commit(&mut self, frame: &Frame) -> Outcome {
        let tx = required(frame, "transaction")?;
        let frames = self.txs.remove(tx).ok_or_else(|| unknown_tx(tx))?;
        let mut last = None;
        for f in frames {
            let ticket = match f.command {
                Command::Send => self.publish(&f)?,
                _ => self.settle_frame(&f)?,
            };
            if let Some(earlier) = ticket.and_then(|t| last.replace(t)) {
                self.owe(None, Some(earlier));
            }
        }
        Ok(last)
    }

    pub(super) fn abort(&mut self, frame: &Frame) -> Outcome {
        let tx = required(frame, "transaction")?;
        self.txs.remove(tx).ok_or_else(|| unknown_tx(tx))?;
        Ok(None)
    }
}

fn unknown_tx(tx: &str) -> StompError {
    StompError::new(
        "invalid transaction",
        format!("transaction '{tx}' is not open"),
    )
}
