//! Messages to the client: deliveries from the session queue at the QoS of
//! the best matching subscription (capped by the publish QoS), retained
//! messages on subscribe, and the PUBACK / PUBREC / PUBCOMP that settle them.

use super::inbound::{QOS_HEADER, RETAIN_HEADER};
use super::{InFlight, Phase, Session, Stage, props};
use crate::codec::{Packet, Protocol};
use crate::topic;
use mqttbytes::QoS;
use mqttbytes::v5::{self, DisconnectReasonCode};
use std::sync::Arc;
use switchyard_engine::connections::MessageCounters;
use switchyard_engine::{Delivery, OutboxDrain, OutboxEvent, Settle};
use switchyard_model::{FieldValue, Message};

/// What the subscriptions matching one message want.
struct Matched {
    qos: QoS,
    retain_as_published: bool,
    ids: Vec<usize>,
}

/// Whether the message was published with the retain flag.
fn retained_when_published(m: &Message) -> bool {
    m.properties
        .headers
        .as_ref()
        .and_then(|h| h.get(RETAIN_HEADER))
        .and_then(FieldValue::as_bool)
        .unwrap_or(false)
}

/// The lower of two QoS levels (`QoS` is only `PartialOrd`).
fn min_qos(a: QoS, b: QoS) -> QoS {
    if a < b { a } else { b }
}

fn qos_from(n: i64) -> QoS {
    match n {
        i64::MIN..=0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// The QoS a message was published with: MQTT's own header, else AMQP
/// persistence (persistent = at least once).
fn published_qos(m: &Message) -> QoS {
    match m
        .properties
        .headers
        .as_ref()
        .and_then(|h| h.get(QOS_HEADER))
        .and_then(FieldValue::as_i64)
    {
        Some(n) => qos_from(n),
        None if m.is_persistent() => QoS::AtLeastOnce,
        None => QoS::AtMostOnce,
    }
}

/// Bytes `p` takes on the wire, counting the packet id a QoS 1/2 publish
/// is given just before it is sent.
fn wire_size(p: &v5::Publish) -> usize {
    let mut len = p.len();
    if p.qos != QoS::AtMostOnce && p.pkid == 0 {
        len += 2;
    }
    let len_len = match len {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + len_len + len
}

impl Session {
    fn next_pkid(&mut self) -> u16 {
        // At most `max_inflight` (< 65535) ids are in use, so this ends.
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            if !self.inflight.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    /// What the subscriptions matching a message ask for: the best granted
    /// QoS, whether any wants the retain flag as published, and their
    /// subscription identifiers. `None` if none matches. Topics starting
    /// with `$` are not matched by filters starting with a wildcard
    /// (MQTT-4.7.2-1), although the `amq.topic` binding routed them here;
    /// `no_local` subscriptions skip the client's own messages.
    /// `name` is the message's topic (its routing key translated).
    fn matching(&self, m: &Message, name: &str) -> Option<Matched> {
        let routing_key = &m.routing_key;
        let dollar = routing_key.starts_with('$');
        let own = self.protocol == Protocol::V5
            && m.properties
                .headers
                .as_ref()
                .and_then(|h| h.get("x-mqtt-client-id"))
                .and_then(FieldValue::as_str)
                == Some(self.client_id.as_str());
        let mut best: Option<Matched> = None;
        let mut consider = |filter: &String| {
            if dollar && filter.starts_with(['+', '#']) {
                return;
            }
            let Some(o) = self.subs.get(filter) else {
                return;
            };
            if own && o.no_local {
                return;
            }
            let b = best.get_or_insert(Matched {
                qos: o.qos,
                retain_as_published: false,
                ids: Vec::new(),
            });
            if o.qos > b.qos {
                b.qos = o.qos;
            }
            b.retain_as_published |= o.retain_as_published;
            b.ids.extend(o.id);
        };
        match &self.matcher {
            Some(m) => m.for_each_match(routing_key, consider),
            None => {
                for filter in self.subs.keys() {
                    if topic::matches(filter, name) {
                        consider(filter);
                    }
                }
            }
        }
        best
    }

    /// Turn waiting deliveries into PUBLISH packets.
    pub fn handle_outbox(&mut self) {
        // Not kept in the session: an idle device's session stays small.
        let mut drain = OutboxDrain::default();
        drain.fill(&self.outbox);
        for ev in drain.by_ref() {
            match ev {
                OutboxEvent::Deliver(d) => self.deliver(d),
                OutboxEvent::Cancelled(c) => {
                    // A shared subscription's queue was deleted: that
                    // subscription ends, the session goes on.
                    let before = self.shared_subs.len();
                    self.shared_subs
                        .retain(|_, s| !Arc::ptr_eq(&s.consumer, &c));
                    if self.shared_subs.len() < before {
                        continue;
                    }
                    self.close(
                        DisconnectReasonCode::AdministrativeAction,
                        "session queue deleted".into(),
                    );
                }
            }
        }
        drain.finish();
    }

    fn deliver(&mut self, d: Delivery) {
        if self.phase != Phase::Connected {
            d.settle(Settle::Requeue);
            return;
        }
        // A shared subscription's delivery is its own; others match the
        // session's filters.
        let shared = self
            .shared_subs
            .values()
            .find(|s| Arc::ptr_eq(&s.consumer, &d.consumer))
            .map(|s| Matched {
                qos: s.options.qos,
                retain_as_published: s.options.retain_as_published,
                ids: s.options.id.into_iter().collect(),
            });
        // The PUBLISH's topic, and what the session's filters match.
        let name = topic::from_routing_key(&d.message.routing_key);
        let Some(matched) = shared.or_else(|| self.matching(&d.message, &name)) else {
            // No live subscription wants it (a `$` topic under a wildcard,
            // a no-local subscription, or a binding made by another
            // protocol): settle it unsent.
            d.settle(Settle::AutoAck);
            return;
        };
        let qos = min_qos(published_qos(&d.message), matched.qos);
        let mut p = v5::Publish::from_bytes(name, qos, d.message.body.clone());
        if self.protocol == Protocol::V5 {
            p.properties = props::for_delivery(&d.message, matched.ids, d.expires_at);
            p.retain = matched.retain_as_published && retained_when_published(&d.message);
            // Larger than the client accepts: dropped as if delivered
            // (MQTT-3.1.2-25).
            if wire_size(&p) > self.client_max_packet {
                d.settle(Settle::AutoAck);
                return;
            }
            self.alias_topic(&mut p);
        }
        MessageCounters::bump(&self.counters().delivered);
        if qos == QoS::AtMostOnce {
            self.send(Packet::Publish(p));
            d.settle(Settle::AutoAck);
            return;
        }
        // A redelivery keeps the packet id it was first sent with (4.4).
        p.pkid = match self.saved_pkids.remove(&d.seq) {
            Some(id) if d.redelivered && !self.inflight.contains_key(&id) => id,
            _ => self.next_pkid(),
        };
        p.dup = d.redelivered;
        let stage = if qos == QoS::AtLeastOnce {
            Stage::Puback
        } else {
            Stage::Pubrec
        };
        self.inflight.insert(
            p.pkid,
            InFlight {
                target: Some(d.unsettled()),
                stage,
            },
        );
        self.send(Packet::Publish(p));
    }

    pub(super) fn send_retained(&mut self, filter: &str, granted: QoS, id: Option<usize>) {
        let Some(vhost) = self.vhost.clone() else {
            return;
        };
        let retained = self
            .shared
            .broker
            .retained()
            .scan(&vhost.name, |t| topic::matches(filter, t));
        for r in retained {
            let m = r.message;
            let qos = min_qos(published_qos(&m), granted);
            let mut p = v5::Publish::from_bytes(r.key, qos, m.body.clone());
            p.retain = true;
            if self.protocol == Protocol::V5 {
                p.properties = props::for_delivery(&m, id.into_iter().collect(), r.expires_at);
                // Too large for the client: not sent (MQTT-3.1.2-24).
                if wire_size(&p) > self.client_max_packet {
                    continue;
                }
                self.alias_topic(&mut p);
            }
            if qos != QoS::AtMostOnce {
                p.pkid = self.next_pkid();
                let stage = if qos == QoS::AtLeastOnce {
                    Stage::Puback
                } else {
                    Stage::Pubrec
                };
                self.inflight.insert(
                    p.pkid,
                    InFlight {
                        target: None,
                        stage,
                    },
                );
            }
            self.send(Packet::Publish(p));
        }
    }

    /// Outbound topic alias (MQTT 5, 3.3.2.3.4): the first PUBLISH of a topic
    /// carries it with a new alias while the client's Topic Alias Maximum
    /// allows; later ones carry the alias and an empty topic. Topics past the
    /// maximum go by name.
    fn alias_topic(&mut self, p: &mut v5::Publish) {
        if self.out_alias_max == 0 || p.topic.is_empty() {
            return;
        }
        let alias = match self.out_aliases.get(&p.topic) {
            Some(&a) => {
                p.topic.clear();
                a
            }
            None => {
                let Ok(n) = u16::try_from(self.out_aliases.len() + 1) else {
                    return;
                };
                if n > self.out_alias_max {
                    return;
                }
                self.out_aliases.insert(p.topic.clone(), n);
                n
            }
        };
        p.properties
            .get_or_insert_with(props::empty_publish_properties)
            .topic_alias = Some(alias);
    }

    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) completes a delivery.
    pub(super) fn settle(&mut self, pkid: u16, stage: Stage) {
        if !self.inflight.get(&pkid).is_some_and(|f| f.stage == stage) {
            return;
        }
        let Some(f) = self.inflight.remove(&pkid) else {
            return;
        };
        if let Some(t) = f.target {
            t.settle(Settle::Ack);
        }
        MessageCounters::bump(&self.counters().acked);
    }

    pub(super) fn pubrec(&mut self, pkid: u16) {
        if let Some(f) = self.inflight.get_mut(&pkid)
            && f.stage == Stage::Pubrec
        {
            f.stage = Stage::Pubcomp;
        }
        self.send(Packet::PubRel(v5::PubRel::new(pkid)));
    }

    /// Deliveries still in the outbox go back to their queue.
    pub(super) fn requeue_outbox(&mut self) {
        OutboxDrain::default().requeue_all(&self.outbox);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode;
    use bytes::BytesMut;

    #[test]
    fn wire_size_matches_the_encoding() {
        for payload in [0usize, 100, 130, 16_370, 16_400, 70_000] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let mut p = v5::Publish::from_bytes("a/b", qos, vec![b'x'; payload].into());
                let predicted = wire_size(&p);
                if qos != QoS::AtMostOnce {
                    p.pkid = 7;
                }
                let mut out = BytesMut::new();
                encode(&Packet::Publish(p), Protocol::V5, &mut out);
                assert_eq!(predicted, out.len(), "payload {payload} at {qos:?}");
            }
        }
    }
}
