//! CONNECT (authentication, client id, takeover, the session queue) and
//! SUBSCRIBE / UNSUBSCRIBE (bindings of that queue to `amq.topic`).

use super::inbound::TOPIC_ALIAS_MAX;
use super::{Phase, Session, SubOptions, qos_num};
use crate::codec::{Packet, Protocol};
use crate::topic;
use mqttbytes::QoS;
use mqttbytes::v5::{
    self, ConnectReturnCode, DisconnectReasonCode, RetainForwardRule, SubscribeReasonCode,
    UnsubAckReason,
};
use std::sync::Arc;
use switchyard_engine::exchange::Binding;
use switchyard_engine::{
    Command, Consumer, ConsumerSpec, DEFAULT_VHOST, Destination, EngineError, QueueSpec, Refused,
};
use switchyard_model::{FieldTable, FieldValue};

/// Exchange every MQTT topic lives on.
pub(super) const TOPIC_EXCHANGE: &str = "amq.topic";

impl Session {
    fn refuse(&mut self, code: ConnectReturnCode, why: &str) {
        tracing::info!(peer = %self.peer, client_id = %self.client_id, why, "MQTT CONNECT refused");
        let mut ack = v5::ConnAck::new(code, false);
        if let Some(r) = self.reason_string(why, true) {
            let mut p = v5::ConnAckProperties::new();
            p.reason_string = Some(r);
            ack.properties = Some(p);
        }
        self.send(Packet::ConnAck(ack));
        self.phase = Phase::Closed;
    }

    pub(super) fn connect(&mut self, c: v5::Connect) {
        self.protocol = c.protocol;
        let props = c.properties.clone();
        if props
            .as_ref()
            .is_some_and(|p| p.authentication_method.is_some())
        {
            return self.refuse(
                ConnectReturnCode::BadAuthenticationMethod,
                "enhanced authentication is not offered",
            );
        }
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
        let broker = self.shared.broker.clone();
        let user = match broker.authenticate(&user, &pass, self.peer.ip()) {
            Ok(id) => id.user,
            Err(Refused::BadCredentials) => {
                tracing::warn!(peer = %self.peer, %user, "MQTT login refused: invalid credentials");
                return self.refuse(ConnectReturnCode::BadUserNamePassword, "bad credentials");
            }
            Err(Refused::LoopbackOnly) => {
                return self.refuse(
                    ConnectReturnCode::NotAuthorized,
                    "user can only connect via localhost",
                );
            }
        };
        let Some(vhost) = broker
            .vhost(&vhost_name)
            .filter(|_| broker.may_use_vhost(&user, &vhost_name))
        else {
            return self.refuse(ConnectReturnCode::NotAuthorized, "access to vhost refused");
        };
        let mut assigned = None;
        // MQTT 3.1 client identifiers are 1 to 23 characters (3.1 §3.1);
        // longer ones are accepted, as 3.1.1 allows.
        if c.client_id.is_empty() && self.mqtt31 {
            return self.refuse(
                ConnectReturnCode::ClientIdentifierNotValid,
                "MQTT 3.1 needs a client identifier",
            );
        }
        if c.client_id.is_empty() {
            // 3.1.1 demands a clean session for an empty id; MQTT 5 assigns
            // one and says which in CONNACK.
            if !c.clean_session && self.protocol == Protocol::V4 {
                return self.refuse(
                    ConnectReturnCode::ClientIdentifierNotValid,
                    "empty id needs clean session",
                );
            }
            self.client_id = format!("switchyard-{}", self.conn_id);
            assigned = Some(self.client_id.clone());
        }
        // MQTT 5: the session outlives the connection when its expiry
        // interval is non-zero (not counted down yet: it lasts until a
        // clean start). 3.1.1: when clean session is 0.
        let persistent = match self.protocol {
            Protocol::V5 => {
                props
                    .as_ref()
                    .and_then(|p| p.session_expiry_interval)
                    .unwrap_or(0)
                    > 0
            }
            Protocol::V4 => !c.clean_session,
        };
        // Only a clean start discards what a previous session left
        // (MQTT-3.1.2-4). Otherwise an existing session is resumed whatever
        // the new expiry (MQTT-3.1.2-5): an interval of 0 only means it now
        // ends with this connection (`release` deletes it then).
        let discard = c.clean_session;
        let receive_max = props
            .as_ref()
            .and_then(|p| p.receive_maximum)
            .unwrap_or(u16::MAX);
        if receive_max == 0 {
            return self.refuse(ConnectReturnCode::ProtocolError, "receive maximum of 0");
        }
        // All the session's consumers (its queue and shared subscriptions)
        // together stay within the client's receive maximum.
        self.receive_max = receive_max;
        self.credit.set_prefetch(self.window());
        self.client_max_packet = props
            .as_ref()
            .and_then(|p| p.max_packet_size)
            .map_or(usize::MAX, |m| m as usize);
        self.out_alias_max = props.as_ref().and_then(|p| p.topic_alias_max).unwrap_or(0);
        self.problem_info = props
            .as_ref()
            .and_then(|p| p.request_problem_info)
            .is_none_or(|v| v != 0);
        // A keep-alive above the server's limit (or none, when there is a
        // limit): MQTT 5 clients are told the one to use (3.2.2.3.14);
        // 3.1.1 has no way to say so, and such a client is refused, as
        // Mosquitto does.
        let max_keep_alive = self.config.max_keep_alive;
        let mut server_keep_alive = None;
        if max_keep_alive > 0 && (c.keep_alive == 0 || c.keep_alive > max_keep_alive) {
            if self.protocol == Protocol::V4 {
                return self.refuse(
                    ConnectReturnCode::ClientIdentifierNotValid,
                    "keep-alive above the server's maximum",
                );
            }
            server_keep_alive = Some(max_keep_alive);
        }
        self.username = user;
        self.keep_alive = server_keep_alive.unwrap_or(c.keep_alive);
        self.will = c.last_will.map(Box::new);
        self.vhost = Some(vhost.clone());

        // Takeover: a second connection with this id ends the first.
        let key = (vhost.name.clone(), self.client_id.clone());
        // A delayed will or session expiry of a previous connection is
        // called off: the client is back (MQTT-3.1.3-9).
        self.shared.cancel_pending(&key);
        let me = super::Client {
            conn_id: self.conn_id,
            signal: self.signal.clone(),
        };
        let old = self
            .shared
            .clients
            .lock()
            .insert(super::client_key(&key), me);
        if let Some(old) = old {
            self.shared.stop_client(&old.signal);
        }
        // Persistent-session protocol state (§4.1) resumes; a clean
        // start discards it. The stored copy goes too: this connection
        // owns the state now (saved again on release if the session
        // outlives it).
        let saved = self.shared.take_saved(&key);
        let saved = if discard { None } else { saved };
        self.persistent = persistent;
        self.session_expiry = match self.protocol {
            Protocol::V5 => props
                .as_ref()
                .and_then(|p| p.session_expiry_interval)
                .unwrap_or(0),
            // 3.1.1 persistent sessions never expire.
            Protocol::V4 => u32::MAX,
        };

        let durable_name = format!("mqtt-session-{}", self.client_id);
        let existed = vhost.queue(&durable_name, self.conn_id).is_ok();
        if discard && existed {
            let del = Command::DeleteQueue {
                name: durable_name.clone(),
                if_unused: false,
                if_empty: false,
            };
            let _ = vhost.apply(del, self.conn_id);
        }
        let resumed = existed && !discard;
        if resumed && !persistent {
            // Should the broker stop without releasing this connection (a
            // crash), the session must still end with it: a stored deadline
            // of now ends it at the next start (`Shared::resume_deferred`).
            // `release` takes it back.
            let ends = super::Saved {
                expires: Some(super::unix_ms()),
                ..super::Saved::default()
            };
            self.shared.save(key, ends);
        }
        // A persistent or resumed session's queue exists now (it may hold
        // messages and subscriptions); a new session that ends with the
        // connection gets one at its first SUBSCRIBE, so an idle device
        // that only publishes costs no queue.
        if persistent || resumed {
            let spec = QueueSpec {
                name: durable_name,
                durable: true,
                exclusive_owner: None,
                auto_delete: false,
                arguments: FieldTable::new(),
            };
            if let Err(e) = self.open_session_queue(spec) {
                tracing::warn!(error = %e, "cannot create MQTT session queue");
                return self.refuse(ConnectReturnCode::ServerUnavailable, "session queue");
            }
            self.restore_subscriptions();
        }
        // MQTT 3.1 has no session-present flag (the byte is reserved).
        let present = resumed && !self.mqtt31;
        let mut ack = v5::ConnAck::new(ConnectReturnCode::Success, present);
        if self.protocol == Protocol::V5 {
            let mut p = v5::ConnAckProperties::new();
            p.receive_max = Some(self.config.max_inflight);
            p.max_packet_size = u32::try_from(self.config.max_packet_size).ok();
            p.assigned_client_identifier = assigned;
            p.topic_alias_max = Some(TOPIC_ALIAS_MAX);
            p.retain_available = Some(1);
            p.wildcard_subscription_available = Some(1);
            p.subscription_identifiers_available = Some(1);
            p.shared_subscription_available = Some(1);
            p.server_keep_alive = server_keep_alive;
            ack.properties = Some(p);
        }
        self.send(Packet::ConnAck(ack));
        self.register();
        if let Some(saved) = saved {
            self.carried_qos2 = saved.inbound_qos2.iter().copied().collect();
            self.carried_qos2.sort_unstable();
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
                self.send(Packet::PubRel(v5::PubRel::new(pkid)));
            }
        }
        self.phase = Phase::Connected;
    }

    /// A consumer delivering into this session's outbox. The client's
    /// receive maximum bounds what is in flight to it (per consumer here,
    /// and over all of the session's consumers through `credit`).
    /// Deliveries in flight to the client at most: our limit and its
    /// receive maximum.
    pub(super) fn window(&self) -> u32 {
        u32::from(self.config.max_inflight.min(self.receive_max))
    }

    fn new_consumer(&self, tag: String) -> Arc<Consumer> {
        let spec = ConsumerSpec {
            tag,
            channel: 0,
            no_ack: false,
            exclusive: false,
            prefetch: self.window(),
            arguments: FieldTable::new(),
        };
        Arc::new(Consumer::new(
            spec,
            self.credit.clone(),
            self.outbox.clone(),
        ))
    }

    /// Declare the session queue and consume it.
    fn open_session_queue(&mut self, spec: QueueSpec) -> Result<(), EngineError> {
        let Some(vhost) = self.vhost.clone() else {
            return Ok(());
        };
        let name = spec.name.clone();
        vhost.apply(Command::DeclareQueue(spec), self.conn_id)?;
        let queue = vhost.queue(&name, self.conn_id)?;
        let consumer = self.new_consumer(format!("mqtt-{}", self.conn_id));
        queue.add_consumer(consumer.clone())?;
        self.queue = Some(queue);
        self.consumer = Some(consumer);
        Ok(())
    }

    /// A clean session's queue, made on first use (exclusive to the
    /// connection, deleted with it).
    fn ensure_session_queue(&mut self) -> Result<(), EngineError> {
        if self.queue.is_some() {
            return Ok(());
        }
        let spec = QueueSpec {
            name: format!("mqtt-session-{}-{}", self.client_id, self.conn_id),
            durable: false,
            exclusive_owner: Some(self.conn_id),
            auto_delete: false,
            arguments: FieldTable::new(),
        };
        self.open_session_queue(spec)
    }

    /// Take back the subscriptions a persistent session's queue is bound
    /// with (their options are in the binding arguments).
    fn restore_subscriptions(&mut self) {
        let (Some(vhost), Some(queue)) = (self.vhost.clone(), self.queue.clone()) else {
            return;
        };
        for (source, b) in vhost.bindings_to(&Destination::queue(queue.name())) {
            let filter = b
                .arguments
                .get("x-mqtt-filter")
                .and_then(FieldValue::as_str);
            let qos = b.arguments.get("x-mqtt-qos").and_then(FieldValue::as_i64);
            let qos = qos
                .and_then(|q| u8::try_from(q).ok())
                .and_then(|q| mqttbytes::qos(q).ok());
            if let (true, Some(filter), Some(qos)) = (source == TOPIC_EXCHANGE, filter, qos) {
                let flag = |k: &str| b.arguments.get(k).and_then(FieldValue::as_bool) == Some(true);
                let options = SubOptions {
                    qos,
                    no_local: flag("x-mqtt-no-local"),
                    retain_as_published: flag("x-mqtt-retain-as-published"),
                    id: b
                        .arguments
                        .get("x-mqtt-subscription-id")
                        .and_then(FieldValue::as_i64)
                        .and_then(|i| usize::try_from(i).ok()),
                };
                self.subs.insert(filter.to_owned(), options);
                self.match_filter(filter);
            }
        }
    }

    fn binding(&self, filter: &str, o: SubOptions) -> Binding {
        let mut arguments = FieldTable::new();
        arguments.insert("x-mqtt-filter".into(), FieldValue::string(filter));
        arguments.insert("x-mqtt-qos".into(), FieldValue::U8(qos_num(o.qos)));
        if o.no_local {
            arguments.insert("x-mqtt-no-local".into(), FieldValue::Bool(true));
        }
        if o.retain_as_published {
            arguments.insert("x-mqtt-retain-as-published".into(), FieldValue::Bool(true));
        }
        if let Some(id) = o.id.and_then(|i| i64::try_from(i).ok()) {
            arguments.insert("x-mqtt-subscription-id".into(), FieldValue::I64(id));
        }
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

    pub(super) fn subscribe(&mut self, s: v5::Subscribe) {
        if s.filters.is_empty() {
            // MQTT-3.8.3-3: a SUBSCRIBE without filters is a protocol violation
            // (found by fuzzing: answering it wrote an empty, invalid SUBACK).
            return self.close(
                DisconnectReasonCode::ProtocolError,
                "SUBSCRIBE without topic filters".into(),
            );
        }
        let id = s.properties.as_ref().and_then(|p| p.id);
        if id == Some(0) {
            return self.close(
                DisconnectReasonCode::ProtocolError,
                "subscription identifier 0".into(),
            );
        }
        let v5 = self.protocol == Protocol::V5;
        let needs_queue = s.filters.iter().any(|f| topic::shared(&f.path).is_none());
        let queue_failed = needs_queue && self.ensure_session_queue().is_err();
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut granted = Vec::new();
        for f in &s.filters {
            if let Some(shared) = topic::shared(&f.path) {
                let options = SubOptions {
                    qos: f.qos,
                    no_local: v5 && f.nolocal,
                    retain_as_published: v5 && f.preserve_retain,
                    id,
                };
                let code = match shared {
                    // No Local on a shared subscription is a protocol
                    // error (MQTT-3.8.3-4).
                    Ok(_) if options.no_local => {
                        return self.close(
                            DisconnectReasonCode::ProtocolError,
                            "no-local on a shared subscription".into(),
                        );
                    }
                    Ok((group, filter)) => self.subscribe_shared(&f.path, group, filter, options),
                    Err(_) if v5 => SubscribeReasonCode::TopicFilterInvalid,
                    Err(_) => SubscribeReasonCode::Unspecified,
                };
                codes.push(code);
                continue;
            }
            if queue_failed {
                codes.push(SubscribeReasonCode::Unspecified);
                continue;
            }
            if topic::check_filter(&f.path).is_err() {
                codes.push(if v5 {
                    SubscribeReasonCode::TopicFilterInvalid
                } else {
                    SubscribeReasonCode::Unspecified
                });
                continue;
            }
            let options = SubOptions {
                qos: f.qos,
                no_local: v5 && f.nolocal,
                retain_as_published: v5 && f.preserve_retain,
                id,
            };
            let old = self.subs.get(&f.path).copied();
            if let Some(old) = old.filter(|o| *o != options) {
                let _ = self.apply_binding(false, self.binding(&f.path, old));
            }
            match self.apply_binding(true, self.binding(&f.path, options)) {
                Ok(()) => {
                    if self.subs.insert(f.path.clone(), options).is_none() {
                        self.match_filter(&f.path);
                    }
                    codes.push(match f.qos {
                        QoS::AtMostOnce => SubscribeReasonCode::QoS0,
                        QoS::AtLeastOnce => SubscribeReasonCode::QoS1,
                        QoS::ExactlyOnce => SubscribeReasonCode::QoS2,
                    });
                    // Retain handling (MQTT 5): 0 always, 1 only for a new
                    // subscription, 2 never. 3.1.1 always sends them.
                    let send = match f.retain_forward_rule {
                        _ if !v5 => true,
                        RetainForwardRule::OnEverySubscribe => true,
                        RetainForwardRule::OnNewSubscribe => old.is_none(),
                        RetainForwardRule::Never => false,
                    };
                    if send {
                        granted.push((f.path.clone(), f.qos));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, filter = %f.path, "subscribe failed");
                    codes.push(SubscribeReasonCode::Unspecified);
                }
            }
        }
        self.send(Packet::SubAck(v5::SubAck::new(s.pkid, codes)));
        for (filter, qos) in granted {
            self.send_retained(&filter, qos, id);
        }
    }

    /// Join the shared subscription `group` of `filter`: its queue
    /// (`mqtt-shared/<group>/<filter>`, created by the first member, deleted
    /// with the last) is bound to `amq.topic` and consumed by every member,
    /// so each message goes to one of them. Retained messages are not sent
    /// on a shared subscription (MQTT-3.8.4-4 note). Shared subscriptions
    /// live with the connection; a persistent session does not keep them.
    fn subscribe_shared(
        &mut self,
        full: &str,
        group: &str,
        filter: &str,
        options: SubOptions,
    ) -> SubscribeReasonCode {
        let granted = match options.qos {
            QoS::AtMostOnce => SubscribeReasonCode::QoS0,
            QoS::AtLeastOnce => SubscribeReasonCode::QoS1,
            QoS::ExactlyOnce => SubscribeReasonCode::QoS2,
        };
        if let Some(existing) = self.shared_subs.get_mut(full) {
            existing.options = options;
            return granted;
        }
        let Some(vhost) = self.vhost.clone() else {
            return SubscribeReasonCode::Unspecified;
        };
        let name = format!("mqtt-shared/{group}/{filter}");
        let spec = QueueSpec {
            name: name.clone(),
            durable: false,
            exclusive_owner: None,
            auto_delete: true,
            arguments: FieldTable::new(),
        };
        let binding = Binding {
            destination: Destination::queue(&name),
            routing_key: topic::filter_to_binding_key(filter),
            arguments: FieldTable::new(),
        };
        let joined = vhost
            .apply(Command::DeclareQueue(spec), self.conn_id)
            .and_then(|_| {
                let source = TOPIC_EXCHANGE.to_owned();
                vhost.apply(Command::Bind { source, binding }, self.conn_id)
            })
            .and_then(|_| vhost.queue(&name, self.conn_id))
            .and_then(|queue| {
                let consumer = self.new_consumer(format!("mqtt-{}-{full}", self.conn_id));
                queue.add_consumer(consumer.clone())?;
                Ok(super::SharedSub {
                    queue,
                    consumer,
                    options,
                })
            });
        match joined {
            Ok(sub) => {
                self.shared_subs.insert(full.to_owned(), sub);
                granted
            }
            Err(e) => {
                tracing::warn!(error = %e, filter = %full, "shared subscribe failed");
                SubscribeReasonCode::Unspecified
            }
        }
    }

    pub(super) fn unsubscribe(&mut self, u: v5::Unsubscribe) {
        if u.filters.is_empty() {
            // MQTT-3.10.3-2: at least one topic filter.
            return self.close(
                DisconnectReasonCode::ProtocolError,
                "UNSUBSCRIBE without topic filters".into(),
            );
        }
        let mut reasons = Vec::with_capacity(u.filters.len());
        for filter in &u.filters {
            if let Some(s) = self.shared_subs.remove(filter) {
                if s.queue.remove_consumer(&s.consumer)
                    && let Some(vhost) = &self.vhost
                {
                    vhost.auto_delete_queue(&s.queue);
                }
                reasons.push(UnsubAckReason::Success);
            } else if let Some(o) = self.subs.remove(filter) {
                let _ = self.apply_binding(false, self.binding(filter, o));
                self.unmatch_filter(filter);
                reasons.push(UnsubAckReason::Success);
            } else {
                reasons.push(UnsubAckReason::NoSubscriptionExisted);
            }
        }
        let mut ack = v5::UnsubAck::new(u.pkid);
        ack.reasons = reasons;
        self.send(Packet::UnsubAck(ack));
    }
}
