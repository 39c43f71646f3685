//! Messages from the client: PUBLISH at QoS 0/1/2 (exactly-once inbound by
//! packet id), retained messages, wills, and PUBACK/PUBREC released only
//! once the message is durable.

use super::connect::TOPIC_EXCHANGE;
use super::{PendingAck, Session, qos_num};
use crate::codec::Packet;
use crate::topic;
use bytes::Bytes;
use mqttbytes::QoS;
use mqttbytes::v4;
use switchyard_engine::{Durable, Vhost};
use switchyard_model::{FieldTable, FieldValue, Message, Properties};
use tokio::sync::oneshot::error::TryRecvError;

/// Header carrying the MQTT QoS a message was published with.
pub(super) const QOS_HEADER: &str = "x-mqtt-publish-qos";

impl Session {
    fn message(&self, topic_name: &str, qos: QoS, payload: Bytes) -> Message {
        let mut headers = FieldTable::new();
        headers.insert(QOS_HEADER.into(), FieldValue::U8(qos_num(qos)));
        // AMQP consumers can tell which device sent a message.
        headers.insert(
            "x-mqtt-client-id".into(),
            FieldValue::string(&self.client_id),
        );
        headers.insert("x-mqtt-username".into(), FieldValue::string(&self.username));
        Message {
            exchange: TOPIC_EXCHANGE.into(),
            routing_key: topic::to_routing_key(topic_name),
            properties: Properties {
                delivery_mode: Some(if qos == QoS::AtMostOnce { 1 } else { 2 }),
                headers: Some(headers),
                ..Properties::default()
            },
            body: payload,
        }
    }

    /// Route a message; returns the durability ticket for QoS ≥ 1.
    fn route(&mut self, vhost: &Vhost, msg: Message, qos: QoS) -> Option<Durable> {
        match vhost.publish(msg, qos != QoS::AtMostOnce) {
            Ok(p) => {
                if p.throttle.is_some() {
                    self.throttle = p.throttle;
                }
                p.durable
            }
            Err(e) => {
                tracing::warn!(error = %e, "MQTT publish failed");
                None
            }
        }
    }

    pub(super) fn publish(&mut self, p: v4::Publish) {
        if topic::check_name(&p.topic).is_err() {
            return self.close(format!("invalid topic name {:?}", p.topic));
        }
        let Some(vhost) = self.vhost.clone() else {
            return;
        };
        let retained = p.retain;
        if retained {
            self.retain(&vhost, &p.topic, p.qos, p.payload.clone());
        }
        match p.qos {
            QoS::AtMostOnce => {
                let msg = self.message(&p.topic, p.qos, p.payload);
                self.route(&vhost, msg, p.qos);
            }
            QoS::AtLeastOnce => {
                let msg = self.message(&p.topic, p.qos, p.payload);
                let ticket = self.route(&vhost, msg, p.qos);
                let ticket = self.cover_retained(ticket, retained);
                self.owe(Packet::PubAck(v4::PubAck::new(p.pkid)), ticket);
            }
            QoS::ExactlyOnce => {
                // A retransmission of a packet id we hold is not routed again.
                let ticket = if self.inbound_qos2.insert(p.pkid) {
                    let msg = self.message(&p.topic, p.qos, p.payload);
                    let ticket = self.route(&vhost, msg, p.qos);
                    self.cover_retained(ticket, retained)
                } else {
                    None
                };
                self.owe(Packet::PubRec(v4::PubRec::new(p.pkid)), ticket);
            }
        }
    }

    pub(super) fn pubrel(&mut self, pkid: u16) {
        self.inbound_qos2.remove(&pkid);
        self.send(Packet::PubComp(v4::PubComp::new(pkid)));
    }

    /// A retained write was submitted before routing; if routing gave no
    /// ticket (no durable queue matched), wait for a store barrier so the
    /// acknowledgement still follows the retained write to disk.
    fn cover_retained(&self, ticket: Option<Durable>, retained: bool) -> Option<Durable> {
        if ticket.is_some() || !retained {
            return ticket;
        }
        Some(self.shared.broker.barrier())
    }

    /// Retain (or with an empty payload, clear) the message of a topic.
    fn retain(&self, vhost: &Vhost, topic_name: &str, qos: QoS, payload: Bytes) {
        let message = (!payload.is_empty()).then(|| self.message(topic_name, qos, payload));
        self.shared
            .broker
            .retained()
            .put(&vhost.name, topic_name, message);
    }

    pub(super) fn publish_will(&mut self, vhost: &Vhost, will: v4::LastWill) {
        if will.retain {
            self.retain(vhost, &will.topic, will.qos, will.message.clone());
        }
        if topic::check_name(&will.topic).is_ok() {
            let msg = self.message(&will.topic, will.qos, will.message);
            let _ = vhost.publish(msg, false);
        }
    }

    /// Queue an acknowledgement behind earlier ones, released when durable.
    fn owe(&mut self, reply: Packet, ticket: Option<Durable>) {
        self.acks.push_back(PendingAck {
            reply,
            ticket,
            held: false,
        });
        self.flush_acks();
    }

    /// A durability ticket for the connection task to await.
    pub fn take_ticket(&mut self) -> Option<Durable> {
        let front = self.acks.front_mut()?;
        if front.held {
            return None;
        }
        let t = front.ticket.take()?;
        front.held = true;
        Some(t)
    }

    /// The ticket from [`Session::take_ticket`] resolved. MQTT 3.1.1 has
    /// no negative acknowledgement, so if the store failed the client must
    /// not be told the message is safe: the connection is closed.
    pub fn handle_durable(&mut self, ok: bool) {
        if let Some(front) = self.acks.front_mut().filter(|f| f.held) {
            front.held = false;
            if !ok {
                return self.close("store failed; publish not acknowledged".into());
            }
        }
        self.flush_acks();
    }

    fn flush_acks(&mut self) {
        while let Some(front) = self.acks.front_mut() {
            if front.held {
                return;
            }
            if let Some(t) = front.ticket.as_mut() {
                match t.try_recv() {
                    Ok(()) => front.ticket = None,
                    Err(TryRecvError::Empty) => return,
                    Err(TryRecvError::Closed) => {
                        return self.close("store failed; publish not acknowledged".into());
                    }
                }
            }
            if let Some(ack) = self.acks.pop_front() {
                self.send(ack.reply);
            }
        }
    }
}
