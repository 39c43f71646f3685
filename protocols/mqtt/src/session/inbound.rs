//! Messages from the client: PUBLISH at QoS 0/1/2 (exactly-once inbound by
//! packet id), retained messages, wills, and PUBACK/PUBREC released only
//! once the message is durable.

use super::connect::TOPIC_EXCHANGE;
use super::props::{self, Carried};
use super::{Session, qos_num};
use crate::codec::{Packet, Protocol};
use crate::topic;
use bytes::Bytes;
use mqttbytes::QoS;
use mqttbytes::v5::{self, DisconnectReasonCode, PubAckReason, PubRecReason};
use switchyard_engine::connections::MessageCounters;
use switchyard_engine::{Durable, Vhost};
use switchyard_model::{FieldTable, FieldValue, Message, Properties};

/// Header carrying the MQTT QoS a message was published with.
pub(super) const QOS_HEADER: &str = "x-mqtt-publish-qos";
/// Header set on messages published with the retain flag (for MQTT 5
/// "retain as published" subscriptions).
pub(super) const RETAIN_HEADER: &str = "x-mqtt-retain";
/// Inbound topic aliases an MQTT 5 client may use.
pub(super) const TOPIC_ALIAS_MAX: u16 = 64;

/// Where a QoS 1/2 publish went: it decides the reason code of its PUBACK
/// or PUBREC.
enum Routed {
    /// Into at least one queue (0x00).
    Queued,
    /// Into no queue (0x10, No matching subscribers: not an error).
    Nowhere,
    /// A queue it routes to is full and refuses publishes (`x-overflow:
    /// reject-publish`): 0x97, Quota exceeded. A 3.1.1 client just gets
    /// its PUBACK (it has no way to hear more), as RabbitMQ does.
    Refused,
    /// Routing failed (0x80, Unspecified error), for this reason.
    Failed(String),
}

impl Routed {
    /// What an error reason code's Reason String would say.
    fn why(&self) -> &str {
        match self {
            Self::Failed(why) => why,
            Self::Refused => "a queue it routes to is full (x-overflow: reject-publish)",
            Self::Queued | Self::Nowhere => "",
        }
    }
}

impl Session {
    fn message(
        &self,
        topic_name: &str,
        qos: QoS,
        payload: Bytes,
        carried: Option<Carried<'_>>,
        retain: bool,
    ) -> Message {
        let mut headers = FieldTable::new();
        let mut properties = Properties::default();
        if let Some(c) = &carried {
            props::apply(c, &mut properties, &mut headers);
        }
        if retain {
            headers.insert(RETAIN_HEADER.into(), FieldValue::Bool(true));
        }
        headers.insert(QOS_HEADER.into(), FieldValue::U8(qos_num(qos)));
        // AMQP consumers can tell which device sent a message.
        headers.insert(
            "x-mqtt-client-id".into(),
            FieldValue::string(&self.client_id),
        );
        headers.insert("x-mqtt-username".into(), FieldValue::string(&self.username));
        properties.delivery_mode = Some(if qos == QoS::AtMostOnce { 1 } else { 2 });
        properties.headers = Some(headers);
        Message {
            exchange: TOPIC_EXCHANGE.into(),
            routing_key: topic::to_routing_key(topic_name),
            properties,
            body: payload,
        }
    }

    /// Route a message: the durability ticket for QoS ≥ 1, and how it went.
    fn route(&mut self, vhost: &Vhost, msg: Message, qos: QoS) -> (Option<Durable>, Routed) {
        match vhost.publish(msg, qos != QoS::AtMostOnce) {
            Ok(p) => {
                self.throttle.note(&p);
                MessageCounters::bump(&self.counters().published);
                if p.queues == 0 {
                    MessageCounters::bump(&self.counters().dropped);
                }
                let routed = match p.queues {
                    _ if p.rejected => Routed::Refused,
                    0 => Routed::Nowhere,
                    _ => Routed::Queued,
                };
                (p.durable, routed)
            }
            Err(e) => {
                tracing::warn!(error = %e, "MQTT publish failed");
                (None, Routed::Failed(format!("publish failed: {e}")))
            }
        }
    }

    /// Resolve an MQTT 5 topic alias: a topic with an alias sets it, an
    /// empty topic uses it. `None`: the alias is invalid (the caller closes).
    fn resolve_alias(&mut self, p: &mut v5::Publish) -> Option<()> {
        let Some(alias) = p.properties.as_ref().and_then(|pr| pr.topic_alias) else {
            return (!p.topic.is_empty()).then_some(());
        };
        if alias == 0 || alias > TOPIC_ALIAS_MAX || self.protocol != Protocol::V5 {
            return None;
        }
        if p.topic.is_empty() {
            p.topic = self.aliases.get(&alias)?.clone();
        } else {
            self.aliases.insert(alias, p.topic.clone());
        }
        Some(())
    }

    pub(super) fn publish(&mut self, mut p: v5::Publish) {
        if self.resolve_alias(&mut p).is_none() {
            return self.close(
                DisconnectReasonCode::TopicAliasInvalid,
                "invalid topic alias".into(),
            );
        }
        if topic::check_name(&p.topic).is_err() {
            return self.close(
                DisconnectReasonCode::TopicNameInvalid,
                format!("invalid topic name {:?}", p.topic),
            );
        }
        if self.exceeds_receive_maximum(&p) {
            return self.close(
                DisconnectReasonCode::ReceiveMaximumExceeded,
                format!(
                    "more than {} QoS 1/2 publishes unacknowledged (Receive Maximum)",
                    self.config.max_inflight
                ),
            );
        }
        let Some(vhost) = self.vhost.clone() else {
            return;
        };
        let retained = p.retain;
        let carried = p.properties.as_ref().map(Carried::from);
        let msg = self.message(&p.topic, p.qos, p.payload.clone(), carried, retained);
        if retained {
            self.retain(&vhost, &p.topic, msg.clone());
        }
        match p.qos {
            QoS::AtMostOnce => {
                self.route(&vhost, msg, p.qos);
            }
            QoS::AtLeastOnce => {
                let (ticket, routed) = self.route(&vhost, msg, p.qos);
                let ticket = self.cover_retained(ticket, retained);
                let mut ack = v5::PubAck::new(p.pkid);
                ack.reason = match routed {
                    Routed::Queued => PubAckReason::Success,
                    Routed::Nowhere => PubAckReason::NoMatchingSubscribers,
                    Routed::Refused => PubAckReason::QuotaExceeded,
                    Routed::Failed(_) => PubAckReason::UnspecifiedError,
                };
                ack.properties = self
                    .ack_reason_string(ack.reason as u8, routed.why())
                    .map(|r| v5::PubAckProperties {
                        reason_string: Some(r),
                        user_properties: Vec::new(),
                    });
                self.owed_pubacks = self.owed_pubacks.saturating_add(1);
                self.owe(Packet::PubAck(ack), ticket);
            }
            QoS::ExactlyOnce => {
                // A retransmission of a packet id we hold is not routed again.
                let mut rec = v5::PubRec::new(p.pkid);
                let ticket = if self.inbound_qos2.insert(p.pkid) {
                    let (ticket, routed) = self.route(&vhost, msg, p.qos);
                    rec.reason = match routed {
                        Routed::Queued => PubRecReason::Success,
                        Routed::Nowhere => PubRecReason::NoMatchingSubscribers,
                        // An error PUBREC ends the exchange: no PUBREL
                        // follows (4.3.3).
                        Routed::Refused => {
                            self.inbound_qos2.remove(&p.pkid);
                            PubRecReason::QuotaExceeded
                        }
                        Routed::Failed(_) => {
                            self.inbound_qos2.remove(&p.pkid);
                            PubRecReason::UnspecifiedError
                        }
                    };
                    rec.properties =
                        self.ack_reason_string(rec.reason as u8, routed.why())
                            .map(|r| v5::PubRecProperties {
                                reason_string: Some(r),
                                user_properties: Vec::new(),
                            });
                    self.cover_retained(ticket, retained)
                } else {
                    // Sent again on this connection: it counts against this
                    // connection's Receive Maximum from now on.
                    self.uncarry_qos2(p.pkid);
                    None
                };
                self.owe(Packet::PubRec(rec), ticket);
            }
        }
    }

    /// Whether `p` is one more QoS 1/2 publish than the Receive Maximum
    /// announced in CONNACK allows unacknowledged (MQTT-3.3.4-9; MQTT 5
    /// only: 3.1.1 has no such limit). Unacknowledged are QoS 1 publishes
    /// whose PUBACK is not written yet (it may wait for the store) and QoS 2
    /// publishes of this connection whose PUBCOMP is not: those awaiting
    /// PUBREL, whether or not their PUBREC left. A QoS 2 retransmission of
    /// an id already counted takes no more room.
    fn exceeds_receive_maximum(&self, p: &v5::Publish) -> bool {
        if self.protocol != Protocol::V5 {
            return false;
        }
        let takes_room = match p.qos {
            QoS::AtMostOnce => false,
            QoS::AtLeastOnce => true,
            QoS::ExactlyOnce => {
                !self.inbound_qos2.contains(&p.pkid)
                    || self.carried_qos2.binary_search(&p.pkid).is_ok()
            }
        };
        let unacknowledged = usize::from(self.owed_pubacks)
            + self
                .inbound_qos2
                .len()
                .saturating_sub(self.carried_qos2.len());
        takes_room && unacknowledged >= usize::from(self.config.max_inflight)
    }

    /// Inbound QoS 2 id `pkid` is no longer one a previous connection left.
    fn uncarry_qos2(&mut self, pkid: u16) {
        if let Ok(i) = self.carried_qos2.binary_search(&pkid) {
            self.carried_qos2.remove(i);
            if self.carried_qos2.is_empty() {
                // Give the allocation back.
                self.carried_qos2 = Vec::new();
            }
        }
    }

    pub(super) fn pubrel(&mut self, pkid: u16) {
        let mut comp = v5::PubComp::new(pkid);
        self.uncarry_qos2(pkid);
        // 0x92 says no more than that: no Reason String, so a client that
        // retries PUBREL after a reconnect reads the short form.
        if !self.inbound_qos2.remove(&pkid) && self.protocol == Protocol::V5 {
            comp.reason = v5::PubCompReason::PacketIdentifierNotFound;
        }
        self.send(Packet::PubComp(comp));
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
    fn retain(&self, vhost: &Vhost, topic_name: &str, message: Message) {
        let message = (!message.body.is_empty()).then_some(message);
        self.shared
            .broker
            .retained()
            .put(&vhost.name, topic_name, message);
    }

    /// Publish the will now, or — for an MQTT 5 will delay on a session
    /// that outlives the connection — hand it to [`Session::take_deferred`]
    /// (published when the delay or the session ends, unless the client
    /// reconnects first; MQTT-3.1.3-9).
    pub(super) fn publish_will(&mut self, vhost: &Vhost, will: v5::LastWill) {
        if topic::check_name(&will.topic).is_err() {
            return;
        }
        let delay = will
            .properties
            .as_ref()
            .and_then(|p| p.delay_interval)
            .unwrap_or(0);
        let carried = will.properties.as_ref().map(Carried::from);
        let msg = self.message(&will.topic, will.qos, will.message, carried, will.retain);
        let deferred = super::DeferredWill {
            topic: will.topic,
            retain: will.retain,
            message: msg,
        };
        if delay > 0 && self.persistent && self.session_expiry > 0 {
            let after = std::time::Duration::from_secs(u64::from(delay.min(self.session_expiry)));
            self.deferred_will = Some(Box::new((after, deferred)));
        } else {
            self.shared.publish_will(&vhost.name, deferred);
        }
    }

    /// Queue an acknowledgement behind earlier ones, released when durable.
    fn owe(&mut self, reply: Packet, ticket: Option<Durable>) {
        self.acks.push(reply, ticket);
        self.flush_acks();
    }

    /// A durability ticket for the connection task to await.
    pub fn take_ticket(&mut self) -> Option<Durable> {
        self.acks.take_ticket()
    }

    /// The ticket from [`Session::take_ticket`] resolved. MQTT 3.1.1 has
    /// no negative acknowledgement, so if the store failed the client must
    /// not be told the message is safe: the connection is closed.
    pub fn handle_durable(&mut self, ok: bool) {
        if self.acks.resolved(ok).is_err() {
            return self.store_failed();
        }
        self.flush_acks();
    }

    fn flush_acks(&mut self) {
        let mut ready = Vec::new();
        let result = self.acks.ready(|p| ready.push(p));
        for p in ready {
            if matches!(p, Packet::PubAck(_)) {
                self.owed_pubacks = self.owed_pubacks.saturating_sub(1);
            }
            if matches!(p, Packet::PubAck(_) | Packet::PubRec(_)) {
                MessageCounters::bump(&self.counters().confirmed);
            }
            self.send(p);
        }
        if result.is_err() {
            self.store_failed();
        }
    }

    fn store_failed(&mut self) {
        self.close(
            DisconnectReasonCode::UnspecifiedError,
            "store failed; publish not acknowledged".into(),
        );
    }
}
