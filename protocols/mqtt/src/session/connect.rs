//! CONNECT (authentication, client id, takeover, the session queue) and
//! SUBSCRIBE / UNSUBSCRIBE (bindings of that queue to `amq.topic`).

use super::{Phase, Session, qos_num};
use crate::codec::Packet;
use crate::topic;
use mqttbytes::QoS;
use mqttbytes::v4::{self, ConnectReturnCode, SubscribeReasonCode};
use std::sync::Arc;
use switchyard_engine::exchange::Binding;
use switchyard_engine::{
    Command, Consumer, ConsumerSpec, DEFAULT_VHOST, Destination, EngineError, QueueSpec,
};
use switchyard_model::{FieldTable, FieldValue};

/// Exchange every MQTT topic lives on.
pub(super) const TOPIC_EXCHANGE: &str = "amq.topic";

impl Session {
    fn refuse(&mut self, code: ConnectReturnCode, why: &str) {
        tracing::info!(peer = %self.peer, client_id = %self.client_id, why, "MQTT CONNECT refused");
        self.send(Packet::ConnAck(v4::ConnAck::new(code, false)));
        self.phase = Phase::Closed;
    }

    pub(super) fn connect(&mut self, c: v4::Connect) {
        // `vhost:user` selects a vhost, as RabbitMQ's MQTT plugin allows.
        let (vhost_name, user, pass) = match &c.login {
            Some(l) => match l.username.split_once(':') {
                Some((v, u)) => (v.to_owned(), u.to_owned(), l.password.clone()),
                None => (
                    DEFAULT_VHOST.to_owned(),
                    l.username.clone(),
                    l.password.clone(),
                ),
            },
            // Anonymous clients act as guest, as RabbitMQ's default does.
            None => (
                DEFAULT_VHOST.to_owned(),
                "guest".to_owned(),
                "guest".to_owned(),
            ),
        };
        self.client_id = c.client_id.clone();
        if user != "guest" || pass != "guest" {
            return self.refuse(ConnectReturnCode::BadUserNamePassword, "bad credentials");
        }
        if !self.peer.ip().is_loopback() {
            return self.refuse(ConnectReturnCode::NotAuthorized, "guest is loopback-only");
        }
        let Some(vhost) = self.shared.broker.vhost(&vhost_name) else {
            return self.refuse(ConnectReturnCode::NotAuthorized, "no such vhost");
        };
        if c.client_id.is_empty() {
            if !c.clean_session {
                return self.refuse(
                    ConnectReturnCode::BadClientId,
                    "empty id needs clean session",
                );
            }
            self.client_id = format!("switchyard-{}", self.conn_id);
        }
        self.username = user;
        self.keep_alive = c.keep_alive;
        self.will = c.last_will;
        self.vhost = Some(vhost.clone());

        // Takeover: a second connection with this id ends the first.
        let key = (vhost.name.clone(), self.client_id.clone());
        let me = super::Client {
            conn_id: self.conn_id,
            stop: self.takeover.clone(),
            finished: self.finished.clone(),
        };
        if let Some(old) = self.shared.clients.lock().insert(key.clone(), me) {
            old.stop.cancel();
        }
        // Persistent-session protocol state (§4.1) resumes; a clean
        // session discards it.
        let saved = self.shared.saved.lock().remove(&key);
        let saved = if c.clean_session { None } else { saved };
        self.persistent = !c.clean_session;

        let durable_name = format!("mqtt-session-{}", self.client_id);
        let existed = vhost.queue(&durable_name, self.conn_id).is_ok();
        let spec = if c.clean_session {
            if existed {
                let del = Command::DeleteQueue {
                    name: durable_name,
                    if_unused: false,
                    if_empty: false,
                };
                let _ = vhost.apply(del, self.conn_id);
            }
            // A clean session lives and dies with this connection.
            QueueSpec {
                name: format!("mqtt-session-{}-{}", self.client_id, self.conn_id),
                durable: false,
                exclusive_owner: Some(self.conn_id),
                auto_delete: false,
                arguments: FieldTable::new(),
            }
        } else {
            QueueSpec {
                name: durable_name,
                durable: true,
                exclusive_owner: None,
                auto_delete: false,
                arguments: FieldTable::new(),
            }
        };
        let name = spec.name.clone();
        let queue = vhost
            .apply(Command::DeclareQueue(spec), self.conn_id)
            .and_then(|_| vhost.queue(&name, self.conn_id));
        let queue = match queue {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create MQTT session queue");
                return self.refuse(ConnectReturnCode::ServiceUnavailable, "session queue");
            }
        };
        for (source, b) in vhost.bindings_to(&Destination::queue(&name)) {
            let filter = b
                .arguments
                .get("x-mqtt-filter")
                .and_then(FieldValue::as_str);
            let qos = b.arguments.get("x-mqtt-qos").and_then(FieldValue::as_i64);
            let qos = qos
                .and_then(|q| u8::try_from(q).ok())
                .and_then(|q| mqttbytes::qos(q).ok());
            if let (true, Some(filter), Some(qos)) = (source == TOPIC_EXCHANGE, filter, qos) {
                self.matcher.insert(&b.routing_key, filter.to_owned());
                self.subs.insert(filter.to_owned(), qos);
            }
        }
        let consumer_spec = ConsumerSpec {
            tag: format!("mqtt-{}", self.conn_id),
            channel: 0,
            no_ack: false,
            exclusive: false,
            prefetch: u32::from(self.config.max_inflight),
            arguments: FieldTable::new(),
        };
        let consumer = Arc::new(Consumer::new(
            consumer_spec,
            self.credit.clone(),
            self.outbox.clone(),
        ));
        self.send(Packet::ConnAck(v4::ConnAck::new(
            ConnectReturnCode::Success,
            existed && !c.clean_session,
        )));
        if let Some(saved) = saved {
            self.inbound_qos2 = saved.inbound_qos2;
            self.next_pkid = saved.next_pkid;
            self.saved_pkids = saved.pkids;
            // Resume QoS 2 deliveries the client already received (4.4).
            for pkid in saved.pending_pubrel {
                self.inflight.insert(
                    pkid,
                    super::InFlight {
                        target: None,
                        stage: super::Stage::Pubcomp,
                    },
                );
                self.send(Packet::PubRel(v4::PubRel::new(pkid)));
            }
        }
        self.queue = Some(queue.clone());
        self.consumer = Some(consumer.clone());
        self.phase = Phase::Connected;
        if let Err(e) = queue.add_consumer(consumer) {
            tracing::warn!(error = %e, "cannot consume MQTT session queue");
            self.phase = Phase::Closed;
        }
    }

    fn binding(&self, filter: &str, qos: QoS) -> Binding {
        let mut arguments = FieldTable::new();
        arguments.insert("x-mqtt-filter".into(), FieldValue::string(filter));
        arguments.insert("x-mqtt-qos".into(), FieldValue::U8(qos_num(qos)));
        let name = self.queue.as_ref().map_or("", |q| q.name());
        Binding {
            destination: Destination::queue(name),
            routing_key: topic::filter_to_binding_key(filter),
            arguments,
        }
    }

    fn apply_binding(&self, bind: bool, binding: Binding) -> Result<(), EngineError> {
        let Some(vhost) = &self.vhost else {
            return Ok(());
        };
        let source = TOPIC_EXCHANGE.to_owned();
        let cmd = if bind {
            Command::Bind { source, binding }
        } else {
            Command::Unbind { source, binding }
        };
        vhost.apply(cmd, self.conn_id).map(|_| ())
    }

    pub(super) fn subscribe(&mut self, s: v4::Subscribe) {
        if s.filters.is_empty() {
            // MQTT-3.8.3-3: a SUBSCRIBE without filters is a protocol violation
            // (found by fuzzing: answering it wrote an empty, invalid SUBACK).
            return self.close("SUBSCRIBE without topic filters".into());
        }
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut granted = Vec::new();
        for f in &s.filters {
            if topic::check_filter(&f.path).is_err() {
                codes.push(SubscribeReasonCode::Failure);
                continue;
            }
            let qos = f.qos;
            if let Some(old) = self.subs.get(&f.path).copied()
                && old != qos
            {
                let _ = self.apply_binding(false, self.binding(&f.path, old));
            }
            match self.apply_binding(true, self.binding(&f.path, qos)) {
                Ok(()) => {
                    if self.subs.insert(f.path.clone(), qos).is_none() {
                        self.matcher
                            .insert(&topic::filter_to_binding_key(&f.path), f.path.clone());
                    }
                    codes.push(SubscribeReasonCode::Success(qos));
                    granted.push((f.path.clone(), qos));
                }
                Err(e) => {
                    tracing::warn!(error = %e, filter = %f.path, "subscribe failed");
                    codes.push(SubscribeReasonCode::Failure);
                }
            }
        }
        self.send(Packet::SubAck(v4::SubAck::new(s.pkid, codes)));
        for (filter, qos) in granted {
            self.send_retained(&filter, qos);
        }
    }

    pub(super) fn unsubscribe(&mut self, u: v4::Unsubscribe) {
        if u.topics.is_empty() {
            // MQTT-3.10.3-2: at least one topic filter.
            return self.close("UNSUBSCRIBE without topic filters".into());
        }
        for filter in &u.topics {
            if let Some(qos) = self.subs.remove(filter) {
                let _ = self.apply_binding(false, self.binding(filter, qos));
                self.matcher
                    .remove(&topic::filter_to_binding_key(filter), filter);
            }
        }
        self.send(Packet::UnsubAck(v4::UnsubAck::new(u.pkid)));
    }
}
